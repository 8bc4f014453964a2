"""Connections and failures: pooling, retries, IGNORE_EXCEPTIONS, the
circuit breaker, auth, options, shard lists.

Nothing here waits on the clock: fake servers answer in a scripted way, the
circuit breaker's clock is replaced, and what is asserted is the number of
connection attempts and requests.
"""

import asyncio
import http.server
import io
import json
import logging
import pickle
import socket
import threading
import time

import pytest
from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured

from diskcache_client import (Cache, CacheServerError, ServerUnavailable, Timeout,
                              Unauthorized)
from diskcache_client.djangocache import DjangoCache

from conftest import TOKEN, accepts_token, hold_the_only_connection


def make_cache(location, **options):
    # The fake servers here script HTTP answers: HTTP, not frames
    # (test_frames.py covers frames).
    opts = {'TOKEN': TOKEN, 'RETRIES': 2, 'RETRY_BACKOFF': 0.001, 'SOCKET_TIMEOUT': 5.0,
            'FRAMES': False}
    opts.update(options)
    return DjangoCache(location, {'OPTIONS': opts})


class Unpicklable:
    def __reduce__(self):
        raise pickle.PicklingError('cannot pickle this')


@pytest.fixture
def connections(monkeypatch):
    """Every TCP connection attempt of the blocking client."""
    attempts = []
    real = socket.create_connection

    def counting(address, *args, **kwargs):
        attempts.append(address)
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, 'create_connection', counting)
    return attempts


@pytest.fixture
def blackhole():
    """A port that accepts TCP connections and never answers."""
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    sock.listen(64)
    yield 'http://127.0.0.1:%d' % sock.getsockname()[1]
    sock.close()


class ScriptedServer:
    """An HTTP/1.1 server answering from a script: a list of
    (status, headers, body); the last entry repeats."""

    def __init__(self, script):
        self.script = list(script)
        self.requests = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'

            def log_message(self, *args):
                pass

            def setup(self):
                super().setup()
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def _answer(self):
                length = int(self.headers.get('Content-Length') or 0)
                if length:
                    self.rfile.read(length)
                outer.requests.append((self.command, self.path, self.headers.get('Authorization')))
                index = min(len(outer.requests), len(outer.script)) - 1
                status, headers, body = outer.script[index]
                if isinstance(body, (dict, list)):
                    body = json.dumps(body).encode()
                    headers = dict(headers, **{'Content-Type': 'application/json'})
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header('Content-Length', str(len(body)))
                self.end_headers()
                if self.command != 'HEAD':
                    self.wfile.write(body)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = _answer

        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    @property
    def url(self):
        return 'http://127.0.0.1:%d' % self.httpd.server_address[1]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def scripted():
    servers = []

    def start(script):
        srv = ScriptedServer(script)
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.close()


BUSY = (503, {'Retry-After': '1'}, {'error': 'timeout', 'message': 'database busy'})
INTERNAL = (500, {}, {'error': 'internal', 'message': 'internal error; see the server log'})


# -- connections ------------------------------------------------------------------

def test_connections_are_kept_alive(cache):
    cache.set('k', 'v')
    before = cache.client.connect_attempts
    for _ in range(20):
        assert cache.get('k') == 'v'
        cache.set('k', 'v')
    assert cache.client.connect_attempts == before


def test_one_pool_per_process_shared_by_threads(cache):
    clients = []

    def worker():
        clients.append(caches['default'].client)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert clients[0] is cache.client


def test_thread_safety(cache):
    errors = []
    before = cache.client.connect_attempts

    def worker(n):
        try:
            for i in range(40):
                key = 'w%d-%d' % (n, i)
                cache.set(key, i)
                assert cache.get(key) == i
                cache.incr('shared')
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    cache.set('shared', 0)
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert cache.get('shared') == 240
    # At most one connection per concurrent thread was opened.
    assert cache.client.connect_attempts - before <= 6


def test_close_keeps_the_pool(cache):
    cache.set('k', 1)
    before = cache.client.connect_attempts
    cache.close()
    assert cache.get('k') == 1
    assert cache.client.connect_attempts == before


def test_forked_child_does_not_reuse_parent_connections(cache):
    cache.set('k', 1)
    endpoint = cache.client.endpoints[0]
    before = cache.client.connect_attempts
    endpoint._pid = -1  # as seen from a forked child
    assert cache.get('k') == 1
    assert cache.client.connect_attempts == before + 1


def test_stale_keepalive_connection_is_replaced_once(connections):
    """A server that closes every connection after one answer, as an idle
    keep-alive connection gets closed: the pooled connection fails and the
    request goes again on a fresh one, even for add() and without RETRIES."""
    listener = socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen(8)
    served = []

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                data = b''
                while b'\r\n\r\n' not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                if not data:
                    continue
                head, _, body = data.partition(b'\r\n\r\n')
                length = 0
                for line in head.split(b'\r\n')[1:]:
                    name, _, value = line.partition(b':')
                    if name.strip().lower() == b'content-length':
                        length = int(value)
                while len(body) < length:
                    body += conn.recv(65536)
                served.append(head.split(b'\r\n')[0])
                answer = b'{"added": true}'
                conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n'
                             b'Content-Length: %d\r\n\r\n%s' % (len(answer), answer))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        url = 'http://127.0.0.1:%d' % listener.getsockname()[1]
        c = make_cache(url, RETRIES=0)
        assert c.add('a', 1) is True
        assert c.add('b', 1) is True
        assert c.add('c', 1) is True
        assert len(served) == 3
        assert len(connections) == 3

        async def scenario():
            assert await c.aadd('d', 1) is True
            assert await c.aadd('e', 1) is True
            await c.aclose()

        before = c.client.connect_attempts
        asyncio.run(scenario())
        assert len(served) == 5
        assert c.client.connect_attempts == before + 2
    finally:
        listener.close()


# -- server down ------------------------------------------------------------------

def test_server_down_raises(dead_url, connections):
    c = make_cache(dead_url, RETRIES=0)
    with pytest.raises(ServerUnavailable) as info:
        c.get('k')
    assert isinstance(info.value, ConnectionError)
    assert info.value.code == 'unreachable'
    assert len(connections) == 1
    # Circuit open: every call fails at once without a connection attempt.
    for call in [lambda: c.get('k'), lambda: c.set('k', 1), lambda: c.add('k', 1),
                 lambda: c.incr('k'), lambda: c.get_many(['a']), lambda: c.clear(),
                 lambda: c.cache('named').get('x')]:
        with pytest.raises(ServerUnavailable) as info:
            call()
        assert info.value.code == 'circuit_open'
    assert len(connections) == 1
    assert c.client.endpoints[0].breaker.state == 'open'


def test_server_down_ignored(dead_url, connections, caplog):
    caplog.set_level(logging.WARNING, logger='diskcache_client')
    c = make_cache(dead_url, IGNORE_EXCEPTIONS=True, RETRIES=2)
    assert c.get('k', 'default') == 'default'
    # A refused connection is retried for an idempotent call, then the
    # circuit opens.
    assert len(connections) == 3
    assert 'IGNORE_EXCEPTIONS' in caplog.text

    # The cache behaves as an empty cache that refuses writes.
    assert c.get('k') is None
    assert c.get('k', 'd', expire_time=True, tag=True) == ('d', None, None)
    assert c.set('k', 1) is False
    assert c.add('k', 1) is False
    assert c.touch('k') is False
    assert c.delete('k') is False
    assert c.has_key('k') is False
    assert ('k' in c) is False
    assert c.get_many(['a', 'b']) == {}
    assert c.set_many({'a': 1, 'b': 2}) == ['a', 'b']
    assert c.delete_many(['a']) is None
    assert c.incr('n') is None
    assert c.decr('n') is None
    assert c.pop('k', 'd') == 'd'
    assert c.get_or_set('g', lambda: 'computed') == 'computed'
    with pytest.raises(ValueError):
        c.incr_version('k')
    assert c.clear() == 0
    assert c.expire() == 0
    assert c.cull() == 0
    assert c.evict('tag') == 0
    assert c.stats() == (0, 0)
    with pytest.raises(KeyError):
        c.read('k')

    async def scenario():
        assert await c.aget('k', 'd') == 'd'
        assert await c.aset('k', 1) is False
        assert await c.aget_many(['a']) == {}

    asyncio.run(scenario())
    # All of that cost no connection attempt.
    assert len(connections) == 3
    assert c.client.connect_attempts == 3

    # Errors that are the caller's still reach it.
    with pytest.raises(pickle.PicklingError):
        c.set('bad', Unpicklable())

    # After the cool-down one call probes the server (add: not retried).
    breaker = c.client.endpoints[0].breaker
    now = breaker.clock() + breaker.cooldown + 1
    breaker.clock = lambda: now
    assert breaker.state == 'half-open'
    assert c.add('k', 1) is False
    assert len(connections) == 4
    assert breaker.state == 'open'
    assert c.get('k', 'd') == 'd'
    assert len(connections) == 4


def test_hung_server_costs_one_timeout(blackhole, connections):
    c = make_cache(blackhole, IGNORE_EXCEPTIONS=True, SOCKET_TIMEOUT=0.3, RETRIES=2)
    assert c.get('k', 'd') == 'd'
    # A timeout is not retried, even for an idempotent call.
    assert len(connections) == 1
    for _ in range(20):
        assert c.get('k', 'd') == 'd'
        assert c.set('k', 1) is False

    async def scenario():
        for _ in range(5):
            assert await c.aget('k', 'd') == 'd'

    asyncio.run(scenario())
    assert len(connections) == 1
    assert c.client.connect_attempts == 1


def test_hung_server_raises_without_ignore(blackhole):
    c = make_cache(blackhole, SOCKET_TIMEOUT=0.3)
    with pytest.raises(ServerUnavailable) as info:
        c.get('k')
    assert isinstance(info.value.__cause__, socket.timeout)
    with pytest.raises(ServerUnavailable):
        c.get('k')
    assert c.client.connect_attempts == 1


def test_async_hung_server_costs_one_timeout(blackhole):
    c = make_cache(blackhole, IGNORE_EXCEPTIONS=True, SOCKET_TIMEOUT=0.3)

    async def scenario():
        results = [await c.aget('k', 'd') for _ in range(10)]
        await c.aclose()
        return results

    assert asyncio.run(scenario()) == ['d'] * 10
    assert c.client.connect_attempts == 1


def test_breaker_closes_after_successful_probe(server, connections):
    c = make_cache(server.url)
    c.set('k', 'v')
    breaker = c.client.endpoints[0].breaker
    now = [breaker.clock()]
    breaker.clock = lambda: now[0]
    breaker.failure()  # as after a failed request
    with pytest.raises(ServerUnavailable):
        c.get('k')
    now[0] += breaker.cooldown + 1
    assert c.get('k') == 'v'
    assert breaker.state == 'closed'
    assert c.get('k') == 'v'


# -- answers ----------------------------------------------------------------------

def test_busy_server_retries_idempotent_calls(scripted):
    srv = scripted([BUSY, BUSY, (200, {'Diskcache-Value-Type': 'text'}, b'hello')])
    c = make_cache(srv.url, RETRIES=2)
    assert c.get('k') == 'hello'
    assert len(srv.requests) == 3
    assert srv.requests[0][:2] == ('GET', '/v1/keys/:1:k')
    assert srv.requests[0][2] == 'Bearer ' + TOKEN


def test_busy_server_is_a_miss_like_python_diskcache(scripted):
    srv = scripted([BUSY])
    c = make_cache(srv.url, RETRIES=2)
    assert c.get('k', 'd') == 'd'
    assert len(srv.requests) == 3
    assert c.set('k', 1) is False
    assert len(srv.requests) == 6
    # add, incr and pop are not idempotent: never retried.
    assert c.add('k', 1) is False
    assert len(srv.requests) == 7
    assert c.incr('k', default=0) is None
    assert len(srv.requests) == 8
    assert c.pop('k', 'd') == 'd'
    assert len(srv.requests) == 9
    # The server answered: the circuit stays closed.
    assert c.client.endpoints[0].breaker.state == 'closed'
    # A named cache raises Timeout, as python-diskcache's Cache does.
    with pytest.raises(Timeout):
        c.cache('n').get('k')


def test_bulk_removal_continues_after_partial_timeout(scripted):
    partial = (503, {}, {'error': 'timeout', 'message': 'busy', 'removed': 7})
    srv = scripted([partial, partial, (200, {}, {'removed': 5})])
    c = make_cache(srv.url)
    assert c.clear() == 19
    assert [r[:2] for r in srv.requests] == [('POST', '/v1/clear')] * 3


def test_incr_version_keeps_the_value_when_the_new_one_is_not_stored(scripted):
    # The new version's set fails (IGNORE_EXCEPTIONS turns it into False):
    # the old version is not deleted, or the value would be under neither.
    srv = scripted([(200, {'Diskcache-Value-Type': 'text'}, b'v'), INTERNAL])
    c = make_cache(srv.url, IGNORE_EXCEPTIONS=True)
    assert c.incr_version('k') == 2
    keys = [r[:2] for r in srv.requests if r[1].startswith('/v1/keys/')]
    assert keys == [('GET', '/v1/keys/:1:k'), ('PUT', '/v1/keys/:2:k')]


def test_set_many_reports_failed_keys(scripted):
    srv = scripted([(200, {}, {'stored': 2, 'failed': [
        {'index': 1, 'key': ':1:b', 'error': 'timeout', 'message': 'busy'}]})])
    c = make_cache(srv.url)
    assert c.set_many({'a': 1, 'b': 2, 'c': 3}) == ['b']


def test_batches_are_split(cache):
    data = {'k%d' % n: n for n in range(2500)}
    assert cache.set_many(data) == []
    assert cache.get_many(list(data) + ['missing']) == data
    cache.delete_many(list(data)[:1200])
    assert len(cache.get_many(list(data))) == 1300


def test_server_error_raises_unless_ignored(scripted):
    srv = scripted([INTERNAL])
    c = make_cache(srv.url, RETRIES=2)
    with pytest.raises(CacheServerError) as info:
        c.get('k')
    assert info.value.status == 500 and info.value.code == 'internal'
    assert len(srv.requests) == 1  # a 500 is not retried
    ignoring = make_cache(srv.url, IGNORE_EXCEPTIONS=True)
    assert ignoring.get('k', 'd') == 'd'
    assert ignoring.set('k', 1) is False


def test_client_errors_are_raised_even_when_ignoring(scripted):
    srv = scripted([(400, {}, {'error': 'bad_key', 'message': 'key is too large'})])
    c = make_cache(srv.url, IGNORE_EXCEPTIONS=True)
    with pytest.raises(CacheServerError) as info:
        c.get('k')
    assert info.value.code == 'bad_key'
    assert 'key is too large' in str(info.value)


def test_key_too_large_for_the_server(cache):
    import warnings
    from django.core.cache import CacheKeyWarning
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', CacheKeyWarning)
        with pytest.raises(CacheServerError) as info:
            cache.set('k' * 70000, 1)
    assert info.value.code == 'key_too_large'


def test_wrong_token(server):
    c = DjangoCache(server.url, {'OPTIONS': {'TOKEN': 'wrong', 'IGNORE_EXCEPTIONS': True}})
    with pytest.raises(Unauthorized):
        c.get('k')


def test_token_file_is_reread_after_401(server, tmp_path):
    token_file = tmp_path / 'token'
    token_file.write_text('stale-token\n')
    c = DjangoCache(server.url, {'OPTIONS': {'TOKEN_FILE': str(token_file)}})
    with pytest.raises(Unauthorized):
        c.get('k')
    token_file.write_text(TOKEN + '\n')  # the Secret was rotated
    assert c.set('rotated', 1) is True
    assert c.get('rotated') == 1


def test_no_token(scripted):
    srv = scripted([(200, {'Diskcache-Value-Type': 'int'}, b'1')])
    c = DjangoCache(srv.url, {})
    assert c.get('k') == 1
    assert srv.requests[0][2] is None


# -- configuration ------------------------------------------------------------------

def test_bad_configuration():
    with pytest.raises(ImproperlyConfigured, match='LOCATION'):
        DjangoCache('', {})
    with pytest.raises(ImproperlyConfigured, match='SOCKET_TIMOUT'):
        DjangoCache('http://127.0.0.1:1', {'OPTIONS': {'SOCKET_TIMOUT': 1}})
    with pytest.raises(ImproperlyConfigured, match='http://host:port'):
        DjangoCache('cache:8080', {})
    # python-diskcache's DjangoCache OPTIONS are the server's settings: the
    # error says where each goes.
    with pytest.raises(ImproperlyConfigured,
                       match=r'size_limit, statistics are python-diskcache settings.*'
                             r'size_limit: spec.sizeLimit, statistics: spec.statistics'):
        DjangoCache('http://127.0.0.1:1', {'OPTIONS': {'size_limit': 2**30, 'statistics': 1}})


def test_options_reach_the_client(dead_url):
    c = DjangoCache(dead_url, {'OPTIONS': {
        'TOKEN': 't', 'SOCKET_TIMEOUT': 1.5, 'CONNECT_TIMEOUT': 0.5, 'RETRIES': 4,
        'RETRY_BACKOFF': 0.01, 'CIRCUIT_BREAKER_COOLDOWN': 7, 'MAX_IDLE_CONNECTIONS': 3,
        'IDLE_TIMEOUT': 20, 'IGNORE_EXCEPTIONS': True, 'MAX_ENTRIES': 1000}})
    client = c.client
    endpoint = client.endpoints[0]
    assert client.retries == 4
    assert (endpoint.socket_timeout, endpoint.connect_timeout) == (1.5, 0.5)
    assert endpoint.breaker.cooldown == 7
    assert (endpoint.max_idle, endpoint.idle_ttl) == (3, 20)


# -- shard lists --------------------------------------------------------------------

def test_location_list_routes_keys_by_jump_hash(start_server):
    a, b = start_server(), start_server()
    c = DjangoCache([a.url, b.url], {'OPTIONS': {'TOKEN': TOKEN}})
    same = DjangoCache('%s;%s' % (a.url, b.url), {'OPTIONS': {'TOKEN': TOKEN}})
    assert same.client is c.client
    shards = [Cache(a.url, token=TOKEN), Cache(b.url, token=TOKEN)]

    data = {'key%d' % n: n for n in range(60)}
    assert c.set_many(data) == []
    counts = [len(s) for s in shards]
    assert sum(counts) == 60 and min(counts) > 10
    for key, value in data.items():
        made = c.make_key(key)
        owner = c.client.shard_of(made.encode())
        assert shards[owner].get(made) == value
        assert shards[1 - owner].get(made) is None
        assert c.get(key) == value
    assert c.get_many(list(data) + ['nope']) == data
    assert c.incr('key1') == 2
    c.set('tagged-a', 1, tag='t')
    c.set('tagged-b', 2, tag='t')
    assert c.evict('t') == 2
    named = c.cache('shared-name')
    named.set_many({n: n for n in range(20)})
    assert len(named) == 20
    c.delete_many(['key%d' % n for n in range(10)])
    assert c.clear() == 50
    assert sum(len(s) for s in shards) == 0


def test_token_rotation_costs_no_failed_call(cacheserver_bin, tmp_path):
    """The operator's rotation as the server and the client see it: the
    server accepts token.next and token.previous beside its token file; the
    client, reading TOKEN_FILE, fails no call at any step."""
    from conftest import CacheServer  # pylint: disable=import-outside-toplevel
    server_dir = tmp_path / 'server'
    server_dir.mkdir()
    client_file = tmp_path / 'client-token'

    def server_files(**files):
        for name in ('token', 'token.next', 'token.previous'):
            path = server_dir / name
            if name.replace('.', '_') in files:
                path.write_text(files[name.replace('.', '_')])
            elif path.exists():
                path.unlink()

    def wait(cond):
        deadline = time.monotonic() + 30
        while not cond():  # the server reads its files once a second
            assert time.monotonic() < deadline, 'server did not take its token files'
            time.sleep(0.05)

    server_files(token='old-token')
    client_file.write_text('old-token\n')
    srv = CacheServer(cacheserver_bin, tmp_path / 'data', server_dir / 'token').start()
    try:
        c = DjangoCache(srv.url, {'OPTIONS': {'TOKEN_FILE': str(client_file)}})
        now = [time.monotonic()]
        c.client.clock = lambda: now[0]  # when the client looks at its file again
        assert c.set('k', 0) is True
        server_files(token='old-token', token_next='new-token')
        wait(lambda: accepts_token(srv.url, 'new-token'))
        assert c.set('k', 1) is True
        client_file.write_text('new-token\n')  # the Secret's token is the new one
        server_files(token='new-token', token_previous='old-token')
        assert c.set('k', 2) is True
        server_files(token='new-token')
        wait(lambda: not accepts_token(srv.url, 'old-token'))
        # A streamed value cannot be sent again after a 401: the client has
        # looked at its changed file before sending it.
        now[0] += 2
        assert c.set('blob', io.BytesIO(b'x' * 3000), read=True) is True
        assert c.set('k', 3) is True
        assert c.get('k') == 3

        # Changed in place, without an overlap, and not looked at yet: the
        # streamed write that gets the 401 fails, and the next one has the
        # new token. The value is larger than the socket buffers: the
        # server answers 401 and closes before it is sent, and the client
        # reads that answer rather than failing on the broken pipe.
        client_file.write_text('third-token\n')
        server_files(token='third-token')
        wait(lambda: not accepts_token(srv.url, 'new-token'))
        with pytest.raises(Unauthorized):
            c.set('blob', io.BytesIO(b'y' * (8 << 20)), read=True)
        assert c.set('blob', io.BytesIO(b'z' * 3000), read=True) is True
        assert c.get('blob') == b'z' * 3000
    finally:
        srv.stop()


def test_incr_refused_connection_is_sent_again(start_server, monkeypatch):
    # A server at its --max-connections answers 503 too_many_connections
    # on accept, before reading the request: even an incr (not idempotent)
    # is sent again, and counts once.
    srv = start_server(None, '--max-connections', '1')
    c = DjangoCache(srv.url, {'OPTIONS': {'TOKEN': TOKEN, 'RETRIES': 8, 'RETRY_BACKOFF': 0.01,
                                          'FRAMES': False}})
    c.set('n', 0)
    c.client.close()  # its pooled connection gives the slot back
    hold = hold_the_only_connection(srv)
    sleeps = []
    real_sleep = time.sleep

    def sleep(delay):
        # The server refused a connection: give the slot back. The server
        # frees it once it has seen the close, so later tries back off for
        # real (the client's own backoff, up to 8 tries).
        if not sleeps:
            hold.close()
        else:
            real_sleep(delay)
        sleeps.append(delay)

    from diskcache_client import transport as transport_mod
    monkeypatch.setattr(transport_mod.time, 'sleep', sleep)
    try:
        assert c.incr('n') == 1
    finally:
        hold.close()
    assert sleeps, 'the first connection was not refused'
    monkeypatch.undo()
    assert c.get('n') == 1


@pytest.mark.parametrize('frames', [False, True])
def test_late_request_over_the_connection_cap_is_sent_again(start_server, monkeypatch, frames):
    # A connection over --max-connections that sends nothing for 100 ms is
    # answered 408 too_many_connections (Go's transport takes it for an
    # idle close); a client slowed down between connect and send (a busy
    # machine) reads it and must send the incr again, as after the 503, and
    # keep frames (a 408 to the upgrade turned them off for good).
    srv = start_server(None, '--max-connections', '1')
    c = DjangoCache(srv.url, {'OPTIONS': {'TOKEN': TOKEN, 'RETRIES': 8, 'RETRY_BACKOFF': 0.01,
                                          'FRAMES': frames}})
    c.set('n', 0)
    c.client.close()  # its pooled connection gives the slot back
    hold = hold_the_only_connection(srv)
    from diskcache_client import pool as pool_mod
    real_connect = pool_mod.socket.create_connection
    answers = []

    def slow_connect(*args, **kwargs):
        sock = real_connect(*args, **kwargs)
        if not answers:
            # The first connection: wait past the server's 100 ms, then
            # give the slot back for the next one.
            sock.settimeout(5)
            answers.append(sock.recv(4096, socket.MSG_PEEK))
            hold.close()
        return sock

    monkeypatch.setattr(pool_mod.socket, 'create_connection', slow_connect)
    try:
        assert c.incr('n') == 1
    finally:
        hold.close()
    assert answers and answers[0].startswith(b'HTTP/1.1 408'), answers
    monkeypatch.undo()
    assert c.get('n') == 1
    if frames:
        assert all(ep.frames is not False for ep in c.client.endpoints), 'frames turned off'


# -- logs of swallowed failures ------------------------------------------------------

FULL = (507, {}, {'error': 'insufficient_storage',
                  'message': 'the data volume is full; delete items or grow the volume'})


def _failure_records(caplog):
    return [r for r in caplog.records if r.name == 'diskcache_client.djangocache'
            and r.levelno >= logging.WARNING]


def _assert_no_key(records, keys):
    for record in records:
        message = record.getMessage()
        assert '/v1/keys' not in message, message
        for key in keys:
            assert key not in message, message


def test_refused_writes_are_logged_once_per_interval(scripted, caplog):
    # A shard whose volume is full refuses every write (507): set answers
    # False each time, as before, and the log gets the first refusal, then
    # one line per interval that counts the refusals not logged; no key.
    caplog.set_level(logging.WARNING, logger='diskcache_client')
    srv = scripted([FULL])
    c = make_cache(srv.url)
    now = [1000.0]
    c._failures.clock = lambda: now[0]
    keys = ['s%d' % i for i in range(330)]
    for i, key in enumerate(keys):
        assert c.set(key, i) is False
        now[0] += 0.1  # 33 s in all: within the interval
    assert len(srv.requests) == 330  # each one went to the server
    records = _failure_records(caplog)
    assert len(records) == 1, [r.getMessage() for r in records]
    assert records[0].getMessage() == (
        'cache set: value refused: %s (507 insufficient_storage: '
        'the data volume is full; delete items or grow the volume)' % srv.url)

    # Another kind (add, or the server busy) has a line of its own.
    assert c.add('a', 1) is False
    assert c.add('b', 1) is False
    assert len(_failure_records(caplog)) == 2

    now[0] = 1000.0 + 60
    assert c.set('later', 1) is False
    records = _failure_records(caplog)
    assert len(records) == 3
    assert records[2].getMessage().endswith('; 329 more like it in the last 60s, not logged')
    # Asynchronous writes are the same kind.
    assert asyncio.run(c.aset('async', 1)) is False
    assert len(_failure_records(caplog)) == 3
    _assert_no_key(_failure_records(caplog), [':1:s', 'later', 'async'])


def test_busy_and_ignored_failures_are_logged_once_per_interval(scripted, caplog):
    caplog.set_level(logging.WARNING, logger='diskcache_client')
    busy = scripted([BUSY])
    c = make_cache(busy.url, RETRIES=0)
    now = [0.0]
    c._failures.clock = lambda: now[0]
    for i in range(100):
        assert c.get('secret%d' % i, 'd') == 'd'
        assert c.set('secret%d' % i, i) is False
    assert asyncio.run(c.aget('secret', 'd')) == 'd'
    records = _failure_records(caplog)
    assert sorted(r.getMessage() for r in records) == [
        'cache %s: server busy, treated as a miss/failed write: %s (503 timeout: database busy)'
        % (what, busy.url) for what in ('get', 'set')]

    # IGNORE_EXCEPTIONS: a 500 is a miss, and logged once per interval.
    internal = scripted([INTERNAL])
    ignoring = make_cache(internal.url, IGNORE_EXCEPTIONS=True)
    ignoring._failures.clock = lambda: now[0]
    for i in range(100):
        assert ignoring.get('secret%d' % i, 'd') == 'd'
    records = _failure_records(caplog)[2:]
    assert [r.getMessage() for r in records] == [
        'cache get: failed, ignored (IGNORE_EXCEPTIONS): %s '
        '(500 internal: internal error; see the server log)' % internal.url]
    now[0] += 60
    assert ignoring.get('secret', 'd') == 'd'
    records = _failure_records(caplog)[2:]
    assert len(records) == 2
    assert records[1].getMessage().endswith('; 99 more like it in the last 60s, not logged')
    # Without IGNORE_EXCEPTIONS the error is raised each time, as before.
    plain = make_cache(internal.url)
    for _ in range(3):
        with pytest.raises(CacheServerError):
            plain.get('secret')
    _assert_no_key(_failure_records(caplog), ['secret'])


def test_failure_log_is_shared_by_the_threads_backends(scripted, caplog):
    # Django makes a backend instance per thread: they share the client,
    # and its failure log, so the bound holds for the process.
    caplog.set_level(logging.WARNING, logger='diskcache_client')
    srv = scripted([FULL])
    caches_of_threads = [make_cache(srv.url) for _ in range(4)]
    assert len({id(c._failures) for c in caches_of_threads}) == 1
    results = []
    threads = [threading.Thread(target=lambda c=c: results.extend(
        c.set('k%d' % i, i) for i in range(20))) for c in caches_of_threads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [False] * 80
    assert len(_failure_records(caplog)) == 1
