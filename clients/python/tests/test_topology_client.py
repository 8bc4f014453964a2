"""The client given one URL follows the cache's topology (fake servers).

Fake shard servers on loopback answer by path, with the ``Diskcache-Epoch``
header a server that belongs to a topology sends; they record every request,
so the tests assert where each request went. Nothing waits on the clock.
The same behaviour against real cacheserver shards is in
``test_shards.py``.
"""

import asyncio
import http.server
import json
import socket
import threading
from urllib.parse import unquote

import pytest

from diskcache_client import Cache, Client, Deque, ServerUnavailable
from diskcache_client.routing import owner
from diskcache_client.djangocache import DjangoCache

from conftest import TOKEN


class FakeShard:
    """An HTTP/1.1 server that answers every request through ``answer(method,
    path, headers)`` -> (status, headers, body) and records (method, path,
    headers) of each request. By default a key read answers the text
    ``'<name>:<key>'``, and every answer carries ``Diskcache-Epoch`` when
    ``epoch`` is set."""

    def __init__(self, name, epoch=None):
        self.name = name
        self.epoch = epoch
        self.topology = None  # the document GET /v1/topology answers (dict)
        self.requests = []
        self.answer = self.default_answer
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'

            def log_message(self, *args):
                pass

            def _serve(self):
                length = int(self.headers.get('Content-Length') or 0)
                if length:
                    self.rfile.read(length)
                outer.requests.append((self.command, self.path, dict(self.headers)))
                status, headers, body = outer.answer(self.command, self.path, self.headers)
                if isinstance(body, (dict, list)):
                    body = json.dumps(body).encode()
                    headers = dict(headers, **{'Content-Type': 'application/json'})
                self.send_response(status)
                if outer.epoch is not None:
                    self.send_header('Diskcache-Epoch', str(outer.epoch))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header('Content-Length', str(len(body)))
                self.end_headers()
                if self.command != 'HEAD':
                    self.wfile.write(body)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = _serve

        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,),
                                       daemon=True)
        self.thread.start()

    @property
    def url(self):
        return 'http://127.0.0.1:%d' % self.httpd.server_address[1]

    def default_answer(self, method, path, headers):
        path = path.split('?')[0]
        if path == '/v1/topology':
            if self.topology is None:
                return 404, {}, {'error': 'not_found', 'message': 'no topology'}
            return 200, {}, self.topology
        if '/keys/' in path:
            if method in ('GET', 'POST') and path.endswith(('/incr', '/decr')):
                return 200, {'Diskcache-Value-Type': 'int'}, b'1'
            if method == 'GET':
                key = unquote(path.rsplit('/', 1)[1])
                return 200, {'Diskcache-Value-Type': 'text'}, ('%s:%s' % (self.name, key)).encode()
            if method == 'PUT':
                return 204, {}, b''
        if path.endswith(('/clear', '/evict', '/expire', '/cull')):
            return 200, {}, {'removed': 7}
        if path.endswith('/stats'):
            return 200, {}, {'hits': 1, 'misses': 2}
        return 404, {}, {'error': 'not_found', 'message': 'no route for %s %s' % (method, path)}

    def paths(self, method=None):
        return [path for m, path, _ in self.requests if method is None or m == method]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fakes():
    started = []

    def start(name, epoch=None):
        srv = FakeShard(name, epoch)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.close()


def layout(epoch, shards):
    return {'epoch': epoch, 'shards': [s if isinstance(s, str) else s.url for s in shards],
            'self': 0, 'previous': None, 'rebalancing': False, 'progress': {}}


def make_cache(location, **options):
    # The fake servers here script HTTP answers: HTTP, not frames
    # (test_frames.py covers frames).
    opts = {'TOKEN': TOKEN, 'RETRIES': 2, 'RETRY_BACKOFF': 0.001, 'SOCKET_TIMEOUT': 5.0,
            'FRAMES': False}
    opts.update(options)
    return DjangoCache(location, {'OPTIONS': opts})


@pytest.fixture
def cluster(fakes):
    """A Service and three shards of topology epoch 1."""
    service = fakes('svc', epoch=1)
    shards = [fakes('s%d' % i, epoch=1) for i in range(3)]
    service.topology = layout(1, shards)
    return service, shards


def key_path(key):
    return '/v1/keys/' + key


def owner_of(cache, key, n=3):
    return owner(cache.make_key(key).encode(), n)


def test_a_server_without_topology_is_used_as_before(fakes):
    srv = fakes('one')  # sends no Diskcache-Epoch
    c = make_cache(srv.url)
    for _ in range(3):
        assert c.get('k') == 'one::1:k'
    assert srv.paths() == [key_path(':1:k')] * 3
    assert c.client.topology is None


def test_keys_go_straight_to_their_owner(cluster):
    service, shards = cluster
    c = make_cache(service.url)
    # The first call goes to the URL; its answer's epoch makes the client
    # read the topology before the next call.
    assert c.get('first') == 'svc::1:first'
    keys = ['key%d' % n for n in range(30)]
    for key in keys:
        want = shards[owner_of(c, key)]
        assert c.get(key) == '%s::1:%s' % (want.name, key)
    assert service.paths() == [key_path(':1:first'), '/v1/topology']
    assert sorted(p for s in shards for p in s.paths()) == sorted(key_path(':1:' + k) for k in keys)
    assert c.client.topology.epoch == 1
    assert all(shards)  # every shard got some: 30 keys over 3


def test_cluster_wide_operations_go_to_the_url_once(cluster):
    service, shards = cluster
    c = make_cache(service.url)
    c.get('warm-up')
    assert c.clear() == 7  # the server's fan-out result, not added up
    assert c.evict('tag') == 7
    assert c.stats() == (1, 2)
    assert [p.split('?')[0] for p in service.paths('POST')] == ['/v1/clear', '/v1/evict', '/v1/stats']
    assert all(s.paths() == [] for s in shards)
    assert all('Diskcache-Scope' not in h for _, _, h in service.requests)


def test_a_named_cache_lives_on_the_owner_of_its_name(cluster):
    service, shards = cluster
    c = make_cache(service.url)
    c.get('warm-up')
    pages = c.cache('pages')
    home = shards[owner(b'pages', 3)]
    for key in ('a', 'b', 'c', 'd', 'e', 'f'):
        assert pages.get(key) == '%s:%s' % (home.name, key)
    assert pages.clear() == 7
    assert len(home.paths()) == 7
    assert all(s.paths() == [] for s in shards if s is not home)
    deque_home = shards[owner(b'jobs', 3)]
    deque_home.answer = lambda m, p, h: (200, {}, {'len': 5})
    assert len(Deque(c.client, 'jobs')) == 5
    assert deque_home.paths()[-1] == '/v1/deques/jobs'


def test_a_newer_epoch_makes_the_client_read_the_topology_again(cluster, fakes):
    service, shards = cluster
    c = make_cache(service.url)
    c.get('warm-up')
    c.get('k')
    # Epoch 2: a fourth shard. The next answer anyone gives says so.
    extra = fakes('s3', epoch=2)
    service.topology = layout(2, shards + [extra])
    for s in [service] + shards:
        s.epoch = 2
    c.get('k')
    reads = service.paths().count('/v1/topology')
    c.get('k')
    assert service.paths().count('/v1/topology') == reads + 1
    assert c.client.topology.epoch == 2 and len(c.client.topology.shards) == 4
    keys = ['key%d' % n for n in range(40)]
    for key in keys:
        want = ([*shards, extra])[owner_of(c, key, 4)]
        assert c.get(key) == '%s::1:%s' % (want.name, key)
    assert extra.paths()  # some keys moved to the new shard
    assert service.paths().count('/v1/topology') == reads + 1


def test_an_older_epoch_is_not_followed(cluster):
    service, shards = cluster
    c = make_cache(service.url)
    c.get('warm-up')
    c.get('k')  # reads the topology first
    service.topology = layout(1, shards[:1])
    for s in shards:
        s.epoch = 0  # a server behind on the announcement
    for n in range(10):
        c.get('key%d' % n)
    assert service.paths().count('/v1/topology') == 1
    assert len(c.client.topology.shards) == 3


def test_wrong_epoch_answer_adopts_its_topology_and_goes_through_the_url(cluster, fakes):
    service, shards = cluster
    c = make_cache(service.url)
    c.get('warm-up')
    newer = layout(2, [fakes('n0', epoch=2), fakes('n1', epoch=2)])
    key = 'moved'
    old_owner = shards[owner_of(c, key)]
    old_owner.answer = lambda m, p, h: (409, {}, {'error': 'wrong_epoch', 'message': 'epoch 2',
                                                  'topology': newer})
    assert c.get(key) == 'svc::1:moved'  # asked again through the URL
    assert c.client.topology.epoch == 2
    assert old_owner.paths() == [key_path(':1:moved')]


def test_an_unreachable_shard_is_reached_through_the_url(cluster, dead_url):
    service, shards = cluster
    service.topology = layout(1, [shards[0], dead_url, shards[2]])
    c = make_cache(service.url, CIRCUIT_BREAKER_COOLDOWN=60)
    c.get('warm-up')
    dead_keys = [k for k in ('key%d' % n for n in range(40)) if owner_of(c, k) == 1][:4]
    # A read, and an incr that must not be sent twice: the connection was
    # refused, so the shard never saw it.
    assert c.get(dead_keys[0]) == 'svc::1:%s' % dead_keys[0]
    assert c.incr(dead_keys[1]) == 1
    dead = c.client.endpoints[2]
    assert dead.url == dead_url and dead.connect_attempts == 1  # then its breaker is open
    for key in dead_keys[2:]:
        assert c.get(key) == 'svc::1:%s' % key
    assert dead.connect_attempts == 1
    assert [p.split('?')[0] for p in service.paths()[2:]] == [
        key_path(':1:' + dead_keys[0]), key_path(':1:' + dead_keys[1]) + '/incr',
        key_path(':1:' + dead_keys[2]), key_path(':1:' + dead_keys[3])]


@pytest.fixture
def blackhole():
    """A port that accepts TCP connections and never answers."""
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    sock.listen(64)
    yield 'http://127.0.0.1:%d' % sock.getsockname()[1]
    sock.close()


def test_a_hung_shard_is_reached_through_the_url(cluster, blackhole):
    service, shards = cluster
    service.topology = layout(1, [shards[0], shards[1], blackhole])
    c = make_cache(service.url, SOCKET_TIMEOUT=0.3, CIRCUIT_BREAKER_COOLDOWN=60)
    c.get('warm-up')
    hung = [k for k in ('key%d' % n for n in range(40)) if owner_of(c, k) == 2][:3]
    # A read times out at the shard (once), then goes through the URL.
    assert c.get(hung[0]) == 'svc::1:%s' % hung[0]
    # Its breaker is open now: the shard is not tried again, even for an
    # incr, which the shard then never saw.
    assert c.incr(hung[1]) == 1
    assert c.get(hung[2]) == 'svc::1:%s' % hung[2]
    assert c.client.endpoints[3].connect_attempts == 1
    assert len(service.paths()) == 2 + 3


def test_an_incr_that_timed_out_at_its_shard_is_not_sent_again(cluster, blackhole):
    service, shards = cluster
    service.topology = layout(1, [shards[0], shards[1], blackhole])
    c = make_cache(service.url, SOCKET_TIMEOUT=0.3)
    c.get('warm-up')
    key = [k for k in ('key%d' % n for n in range(40)) if owner_of(c, k) == 2][0]
    with pytest.raises(ServerUnavailable) as err:
        c.incr(key)  # the shard may have applied it
    assert err.value.url == blackhole
    assert len(service.paths()) == 2


def test_a_pod_name_that_does_not_resolve_is_reached_through_the_url(cluster):
    # Outside the cluster the headless Service's names do not resolve.
    service, shards = cluster
    service.topology = layout(1, ['http://dc-%d.dc-peers.invalid:8080' % i for i in range(3)])
    c = make_cache(service.url)
    c.get('warm-up')
    for n in range(6):
        assert c.get('key%d' % n) == 'svc::1:key%d' % n
    assert len(service.paths()) == 2 + 6


def test_a_write_that_may_have_reached_its_shard_is_not_sent_twice(cluster, monkeypatch):
    service, shards = cluster
    c = make_cache(service.url)
    c.get('warm-up')
    key = 'counter'
    home = shards[owner_of(c, key)]
    c.get(key)  # a pooled connection to the owner

    def drop(method, path, headers):
        raise ConnectionResetError('dropped part way')

    home.answer = drop
    with pytest.raises(ServerUnavailable):
        c.incr(key)
    assert not [p for p in service.paths() if p.startswith(key_path(':1:' + key))]
    # An idempotent read after the same failure goes through the URL.
    c.client.endpoints[1 + owner_of(c, key)].breaker.reset()
    assert c.get(key) == 'svc::1:counter'


def test_a_list_location_asks_each_server_for_its_own_part(fakes):
    a, b = fakes('a', epoch=1), fakes('b', epoch=1)
    c = make_cache([a.url, b.url])
    assert c.clear() == 14  # added up by the client
    assert c.stats() == (2, 4)
    for srv in (a, b):
        assert srv.paths('POST')[0].startswith('/v1/clear')
        assert all(h.get('Diskcache-Scope') == 'shard' for _, _, h in srv.requests)
        assert '/v1/topology' not in srv.paths()  # a list is never re-routed


def test_topology_option_off_sends_everything_to_the_url(cluster):
    service, shards = cluster
    c = make_cache(service.url, TOPOLOGY=False)
    for n in range(5):
        c.get('key%d' % n)
    assert len(service.paths()) == 5 and all(s.paths() == [] for s in shards)


def test_asyncio_calls_follow_the_topology_too(cluster):
    service, shards = cluster
    c = make_cache(service.url)

    async def main():
        assert await c.aget('warm-up') == 'svc::1:warm-up'
        got = {}
        for n in range(12):
            got['key%d' % n] = await c.aget('key%d' % n)
        await c.aclose()
        return got

    got = asyncio.run(main())
    for key, value in got.items():
        assert value == '%s::1:%s' % (shards[owner_of(c, key)].name, key)
    assert service.paths() == [key_path(':1:warm-up'), '/v1/topology']


def test_asyncio_unreachable_shard_goes_through_the_url(cluster, dead_url):
    service, shards = cluster
    service.topology = layout(1, [dead_url, shards[1], shards[2]])
    c = make_cache(service.url)

    async def main():
        await c.aget('warm-up')
        out = []
        for n in range(20):
            out.append(await c.aget('key%d' % n))
        await c.aclose()
        return out

    got = asyncio.run(main())
    for n, value in enumerate(got):
        key = 'key%d' % n
        home = owner_of(c, key)
        assert value == '%s::1:%s' % ('svc' if home == 0 else shards[home].name, key)
