"""The HTTP/1.1 client on raw sockets (diskcache_client.http11 and .pool).

Two kinds of servers, neither waiting on the clock:

* ``fake_net``: ``socket.create_connection`` returns scripted in-memory
  sockets. Each request sent takes the next scripted answer, which the
  client then receives in the scripted pieces (one piece per ``recv``), so
  an answer can be split at every byte position deterministically. When the
  pieces run out the socket reads as closed by the server.
* ``RawServer``: a real loopback TCP server in a thread that reads each
  request and writes the next scripted answer bytes, optionally closing the
  connection after it. The asyncio path and TLS use real sockets.
"""

import asyncio
import io
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading

import pytest

from diskcache_client import Cache, CacheServerError, ServerUnavailable, pool
from diskcache_client.transport import ProtocolError

from conftest import TOKEN

URL = 'http://cache.test:8080'


def answer(status=200, reason='OK', headers=(), body=b'', version='HTTP/1.1',
           length=True, eol=b'\r\n'):
    """An answer's bytes; ``length`` adds Content-Length."""
    lines = [('%s %d %s' % (version, status, reason)).rstrip().encode('latin-1')]
    for name, value in headers:
        lines.append(('%s: %s' % (name, value)).encode('latin-1'))
    if length:
        lines.append(b'Content-Length: %d' % len(body))
    return eol.join(lines) + eol + eol + body


def value_answer(value, value_type='bytes', **kwargs):
    return answer(headers=[('Diskcache-Value-Type', value_type)], body=value, **kwargs)


def chunked(*chunks, trailers=b''):
    """A chunked body: hex sizes (one with an extension), then trailers."""
    out = b''
    for i, chunk in enumerate(chunks):
        out += b'%x%s\r\n%s\r\n' % (len(chunk), b';ext=1' if i == 0 else b'', chunk)
    return out + b'0\r\n' + trailers + b'\r\n'


def decode_chunked(data):
    out = b''
    while True:
        line, _, data = data.partition(b'\r\n')
        size = int(line, 16)
        if size == 0:
            assert data == b'\r\n'
            return out
        out += data[:size]
        assert data[size:size + 2] == b'\r\n'
        data = data[size + 2:]


# -- in-memory sockets ------------------------------------------------------------

_REQUEST_LINE = re.compile(rb'[A-Z]+ /[^ ]* HTTP/1\.1\r\n')

class FakeSocket:
    """One scripted connection. Every ``sendall`` that starts a request
    takes the next answer (a list of pieces) off the network's script."""

    def __init__(self, net):
        self.net = net
        self.sent = []
        self.pending = []
        self.closed = False

    def sendall(self, data):
        data = bytes(data)
        self.sent.append(data)
        if _REQUEST_LINE.match(data):
            self.net.requests.append(data)
            if self.net.script:
                self.pending.extend(self.net.script.pop(0))

    def recv(self, size):
        if not self.pending:
            return b''  # closed by the server
        piece = self.pending.pop(0)
        if len(piece) > size:
            self.pending.insert(0, piece[size:])
            piece = piece[:size]
        return piece

    def recv_into(self, view):
        piece = self.recv(len(view))
        view[:len(piece)] = piece
        return len(piece)

    def setsockopt(self, *args):
        pass

    def settimeout(self, timeout):
        pass

    def close(self):
        self.closed = True


class FakeNet:
    def __init__(self):
        self.script = []  # [[piece, ...]] per request
        self.requests = []  # the first sendall of each request
        self.sockets = []

    def add(self, *answers, split=None):
        """Script answers; ``split(data)`` gives the pieces of each."""
        for data in answers:
            self.script.append(list(split(data)) if split else [data])

    def connect(self, address, *args, **kwargs):
        sock = FakeSocket(self)
        self.sockets.append(sock)
        return sock


@pytest.fixture
def fake_net(monkeypatch):
    net = FakeNet()
    monkeypatch.setattr(socket, 'create_connection', net.connect)
    return net


def fake_cache(**options):
    # Scripted HTTP answers: HTTP, not frames (test_frames.py covers frames).
    opts = {'token': TOKEN, 'retries': 0, 'retry_backoff': 0.001, 'frames': False}
    opts.update(options)
    return Cache(URL, **opts)


def bytewise(data):
    return [data[i:i + 1] for i in range(len(data))]


# -- parsing --------------------------------------------------------------------

def test_answer_split_at_every_byte(fake_net):
    data = answer(headers=[('Diskcache-Value-Type', 'bytes'),
                           ('Diskcache-Expire-Time', '1700000000.5'),
                           ('Date', 'Wed, 25 Nov 2026 03:35:37 GMT')], body=b'hello world')
    c = fake_cache()
    for cut in range(1, len(data)):
        fake_net.add(data, split=lambda d: [d[:cut], d[cut:]])
        assert c.get('k', expire_time=True) == (b'hello world', 1700000000.5), cut
    fake_net.add(data, split=bytewise)
    assert c.get('k') == b'hello world'
    # All on one keep-alive connection.
    assert len(fake_net.sockets) == 1


def test_chunked_answer_in_any_pieces(fake_net):
    value = b'0123456789' * 20
    data = answer(headers=[('Diskcache-Value-Type', 'bytes'), ('Transfer-Encoding', 'chunked')],
                  body=chunked(value[:7], value[7:8], value[8:150], value[150:],
                               trailers=b'X-Trailer: yes\r\n'),
                  length=False)
    c = fake_cache()
    for cut in range(1, len(data), 7):
        fake_net.add(data, split=lambda d: [d[:cut], d[cut:]])
        assert c.get('k') == value, cut
    fake_net.add(data, split=bytewise)
    assert c.get('k') == value
    assert len(fake_net.sockets) == 1


def test_header_names_are_case_insensitive(fake_net):
    fake_net.add(answer(headers=[('dIsKcAcHe-VaLuE-tYpE', 'int'),
                                 ('DISKCACHE-TAG', 'red')], body=b'42', length=False)
                 .replace(b'\r\n\r\n', b'\r\nCONTENT-LENGTH: 2\r\n\r\n'))
    c = fake_cache()
    assert c.get('k', tag=True) == (42, 'red')


def test_interim_answers_are_skipped(fake_net):
    fake_net.add(answer(100, 'Continue', length=False)
                 + answer(103, 'Early Hints', headers=[('Link', '</x>')], length=False)
                 + value_answer(b'v'),
                 answer(204, 'No Content', length=False))
    c = fake_cache()
    assert c.get('k') == b'v'
    # The client never asks for 100 Continue: a body goes with its head,
    # and a server that never sends 100 is fine.
    assert c.set('k', b'v') is True
    put = fake_net.requests[1]
    assert b'expect' not in put.lower() and put.endswith(b'\r\n\r\nv')
    assert len(fake_net.sockets) == 1


def test_bare_lf_and_folded_headers(fake_net):
    fake_net.add(value_answer(b'lf', eol=b'\n'),
                 value_answer(b'mixed', eol=b'\n').replace(b'\n\nmixed', b'\n\r\nmixed'),
                 answer(headers=[('Diskcache-Value-Type', 'text'),
                                 ('Diskcache-Tag', 'a\r\n  folded')], body=b'ok'))
    c = fake_cache()
    assert c.get('k') == b'lf'
    assert c.get('k') == b'mixed'
    assert c.get('k', tag=True) == ('ok', 'a folded')
    assert len(fake_net.sockets) == 1


def test_body_without_length_is_read_to_the_close(fake_net):
    fake_net.add(value_answer(b'until-close', length=False),
                 answer(headers=[('Transfer-Encoding', 'gzip'), ('Diskcache-Value-Type', 'bytes')],
                        body=b'also-until-close', length=False),
                 value_answer(b'next'))
    c = fake_cache()
    assert c.get('k') == b'until-close'
    assert c.get('k') == b'also-until-close'
    assert c.get('k') == b'next'
    # Each such answer ended its connection, which was not tried again.
    assert [len(s.sent) for s in fake_net.sockets] == [1, 1, 1]
    assert fake_net.sockets[0].closed and fake_net.sockets[1].closed


def test_connection_close_and_http10(fake_net):
    fake_net.add(
        answer(headers=[('Connection', 'close'), ('Diskcache-Value-Type', 'bytes')], body=b'1'),
        value_answer(b'2', version='HTTP/1.0'),
        answer(headers=[('Connection', 'Keep-Alive'), ('Diskcache-Value-Type', 'bytes')],
               body=b'3', version='HTTP/1.0'),
        value_answer(b'4'),
    )
    c = fake_cache()
    assert [c.get('k') for _ in range(4)] == [b'1', b'2', b'3', b'4']
    # close, HTTP/1.0 without keep-alive: new connections; 1.0 keep-alive: reused.
    assert len(fake_net.sockets) == 3
    assert [s.closed for s in fake_net.sockets] == [True, True, False]


def test_bodiless_answers(fake_net):
    fake_net.add(answer(204, 'No Content', length=False),
                 answer(headers=[('Content-Length', '5')], length=False),  # HEAD
                 value_answer(b'after'))
    c = fake_cache()
    assert c.set('k', b'v') is True
    assert ('k' in c) is True
    assert c.get('k') == b'after'
    assert len(fake_net.sockets) == 1


@pytest.mark.parametrize('status_line', [
    b'HTTP/2 200 OK', b'ICY 200 OK', b'HTTP/1.1 2000 OK', b'HTTP/1.1 OK', b'HTTP/1.1 099 Odd',
    b'HTTP/1.1 20x OK', b'\x00garbage', b'',
])
def test_malformed_status_line_is_a_clear_error(fake_net, status_line):
    fake_net.add(status_line + b'\r\nContent-Length: 0\r\n\r\n')
    c = fake_cache()
    with pytest.raises(ServerUnavailable) as info:
        c.get('k')
    assert 'malformed status line' in str(info.value)
    assert isinstance(info.value.__cause__, ProtocolError)
    assert fake_net.sockets[0].closed
    # Like any failure below HTTP it trips the circuit breaker.
    assert c.client.endpoints[0].breaker.trips == 1


@pytest.mark.parametrize('data, message', [
    (b'HTTP/1.1 200 OK\r\nno colon here\r\n\r\n', 'malformed header line'),
    (b'HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n', 'malformed Content-Length'),
    (b'HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\nab', 'malformed Content-Length'),
    (b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n', 'malformed chunk size'),
    (b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY\r\n0\r\n\r\n',
     'not followed by CRLF'),
    (b'HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort', 'before the end of the answer'),
    (b'HTTP/1.1 200 OK\r\nContent-Len', 'in the middle of an answer head'),
    (b'HTTP/1.1 101 Switching Protocols\r\n\r\n', 'unexpected 101'),
])
def test_malformed_answers(fake_net, data, message):
    fake_net.add(data)
    c = fake_cache()
    with pytest.raises(ServerUnavailable) as info:
        c.get('k')
    assert message in str(info.value)
    assert isinstance(info.value.__cause__, ProtocolError)


def test_repeated_equal_content_lengths_are_one(fake_net):
    fake_net.add(value_answer(b'ab', length=False).replace(
        b'\r\n\r\n', b'\r\nContent-Length: 2, 2\r\n\r\n'))
    assert fake_cache().get('k') == b'ab'


def test_malformed_answer_retried_like_a_connection_failure(fake_net):
    fake_net.add(b'garbage\r\n\r\n', value_answer(b'ok'))
    c = fake_cache(retries=2)
    assert c.get('k') == b'ok'  # an idempotent call: retried on a new connection
    assert len(fake_net.sockets) == 2
    assert c.client.endpoints[0].breaker.state == 'closed'


# -- requests ---------------------------------------------------------------------

def test_each_request_is_one_write(fake_net):
    fake_net.add(answer(204, 'No Content', length=False), value_answer(b'v'),
                 answer(body=b'{"removed": 0}'))
    c = fake_cache()
    assert c.set('k', b'0123456789', expire=60) is True
    assert c.get('k') == b'v'
    assert c.clear() == 0
    sock = fake_net.sockets[0]
    assert len(sock.sent) == 3
    put, get, post = sock.sent
    head, _, body = put.partition(b'\r\n\r\n')
    lines = head.split(b'\r\n')
    assert lines[0] == b'PUT /v1/keys/k?expire=60.0 HTTP/1.1'
    assert lines[1] == b'Host: cache.test:8080'
    assert b'Authorization: Bearer ' + TOKEN.encode() in lines
    assert b'Diskcache-Value-Type: bytes' in lines
    assert b'Content-Length: 10' in lines
    assert body == b'0123456789'
    assert get.startswith(b'GET /v1/keys/k HTTP/1.1\r\n')
    assert b'content-length' not in get.lower() and get.endswith(b'\r\n\r\n')
    assert post.startswith(b'POST /v1/clear HTTP/1.1\r\n')
    assert b'Content-Length: 0\r\n' in post


def test_streamed_upload_is_chunked(fake_net):
    payload = os.urandom(150000)
    fake_net.add(answer(204, 'No Content', length=False))
    c = fake_cache()
    assert c.set('k', io.BytesIO(payload), read=True) is True
    sent = b''.join(fake_net.sockets[0].sent)
    head, _, body = sent.partition(b'\r\n\r\n')
    assert b'Transfer-Encoding: chunked' in head.split(b'\r\n')
    assert b'content-length' not in head.lower()
    assert decode_chunked(body) == payload


def test_large_body_is_sent_after_the_head(fake_net):
    payload = b'x' * 200000
    fake_net.add(answer(204, 'No Content', length=False))
    assert fake_cache().set('k', payload) is True
    sent = fake_net.sockets[0].sent
    assert len(sent) == 2
    assert sent[0].endswith(b'Content-Length: 200000\r\n\r\n') and sent[1] == payload


# -- streamed answers ---------------------------------------------------------------

def test_streamed_read_of_a_chunked_answer(fake_net):
    value = bytes(range(256)) * 100
    data = answer(headers=[('Diskcache-Value-Type', 'bytes'), ('Transfer-Encoding', 'chunked')],
                  body=chunked(value[:1000], value[1000:20000], value[20000:]), length=False)
    fake_net.add(data, split=lambda d: [d[i:i + 777] for i in range(0, len(d), 777)])
    fake_net.add(value_answer(b'next'))
    c = fake_cache()
    handle = c.read('k')
    assert handle.read(10) == value[:10]
    assert handle.read() == value[10:]
    handle.close()
    # Read to the end: the connection went back to the pool.
    assert c.get('k') == b'next'
    assert len(fake_net.sockets) == 1


def test_streamed_read_to_the_end_frees_the_connection(fake_net):
    fake_net.add(value_answer(b'0123456789'), value_answer(b'next'))
    c = fake_cache()
    handle = c.read('k')
    assert handle.read(10) == b'0123456789'
    # Not closed, yet every byte was read: the connection is free again.
    assert c.get('k') == b'next'
    assert len(fake_net.sockets) == 1
    assert handle.read() == b''
    handle.close()


def test_streamed_read_abandoned_closes_the_connection(fake_net):
    fake_net.add(value_answer(b'z' * 100000), value_answer(b'next'))
    c = fake_cache()
    with c.read('k') as handle:
        assert handle.read(3) == b'zzz'
    assert fake_net.sockets[0].closed
    assert c.get('k') == b'next'
    assert len(fake_net.sockets) == 2


def test_streamed_read_of_an_empty_value(fake_net):
    fake_net.add(value_answer(b''), value_answer(b'next'))
    c = fake_cache()
    with c.read('k') as handle:
        assert handle.read() == b''
    assert c.get('k') == b'next'
    assert len(fake_net.sockets) == 1


def test_streamed_read_cut_short_raises(fake_net):
    fake_net.add(value_answer(b'abcdef', length=False).replace(
        b'\r\n\r\n', b'\r\nContent-Length: 100\r\n\r\n'))
    c = fake_cache()
    handle = c.read('k')
    with pytest.raises(ProtocolError):
        handle.read()
    assert fake_net.sockets[0].closed


# -- real sockets ---------------------------------------------------------------------

class RawServer:
    """A loopback server that answers each request with the next scripted
    answer (the last one repeats): bytes, or (bytes, 'close') to close the
    connection after writing it."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.requests = []
        self.connections = 0
        self.listener = socket.socket()
        self.listener.bind(('127.0.0.1', 0))
        self.listener.listen(16)
        self.url = 'http://127.0.0.1:%d' % self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        buf = b''
        with conn:
            while True:
                while b'\r\n\r\n' not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b'\r\n\r\n')
                length = 0
                for line in head.split(b'\r\n')[1:]:
                    name, _, value = line.partition(b':')
                    if name.lower() == b'content-length':
                        length = int(value)
                while len(buf) < length:
                    buf += conn.recv(65536)
                self.requests.append(head.split(b'\r\n')[0])
                reply = self.answers[min(len(self.requests), len(self.answers)) - 1]
                close = isinstance(reply, tuple)
                conn.sendall(reply[0] if close else reply)
                if close:
                    return

    def close(self):
        self.listener.close()


@pytest.fixture
def raw_server():
    servers = []

    def start(*answers):
        srv = RawServer(answers)
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.close()


def test_server_closing_an_idle_keepalive_connection(raw_server):
    """The server closes each connection after its answer without saying
    so: every pooled connection is stale, and each call reconnects once."""
    srv = raw_server((value_answer(b'v'), 'close'))
    c = Cache(srv.url, token=TOKEN, retries=0, frames=False)
    for _ in range(3):
        assert c.get('k') == b'v'
    assert len(srv.requests) == 3
    assert srv.connections == c.client.connect_attempts == 3

    async def scenario():
        for _ in range(3):
            assert await c.client.arun(_get(c, 'k')) == b'v'
        await c.client.aclose()

    asyncio.run(scenario())
    assert len(srv.requests) == 6
    assert srv.connections == 6


def _get(cache, key):
    from diskcache_client import ops
    return ops.get(cache.client, '/v1', key)


@pytest.mark.parametrize('deadline', ['asyncio.timeout', 'wait_for'])
def test_async_parsing(raw_server, monkeypatch, deadline):
    if deadline == 'wait_for':  # as on Python < 3.11
        monkeypatch.setattr(pool, '_async_timeout', None)
    elif pool._async_timeout is None:  # pragma: no cover
        pytest.skip('asyncio.timeout needs Python 3.11')
    value = b'0123456789' * 50
    large = os.urandom(700000)  # read in several pieces
    srv = raw_server(
        value_answer(large),
        answer(headers=[('Diskcache-Value-Type', 'bytes'), ('Transfer-Encoding', 'chunked')],
               body=chunked(value[:3], value[3:], trailers=b'X-T: 1\r\n'), length=False),
        answer(100, 'Continue', length=False) + value_answer(b'after-100'),
        value_answer(b'lf', eol=b'\n'),
        (answer(headers=[('connection', 'CLOSE'), ('diskcache-value-type', 'bytes')],
                body=b'closing'), 'close'),
        (value_answer(b'until-close', length=False), 'close'),
        b'HTTP/1.1 2OO OK\r\n\r\n',
    )
    c = Cache(srv.url, token=TOKEN, retries=0, frames=False)

    async def scenario():
        got = [await c.client.arun(_get(c, 'k')) for _ in range(6)]
        with pytest.raises(ServerUnavailable) as info:
            await c.client.arun(_get(c, 'k'))
        await c.client.aclose()
        return got, info.value

    got, err = asyncio.run(scenario())
    assert got == [large, value, b'after-100', b'lf', b'closing', b'until-close']
    assert 'malformed status line' in str(err)
    assert isinstance(err.__cause__, ProtocolError)
    # The Connection: close and read-to-close answers ended their connections.
    assert srv.connections == 3


# -- TLS ----------------------------------------------------------------------------

@pytest.fixture(scope='module')
def tls_cert(tmp_path_factory):
    if not shutil.which('openssl'):
        if os.environ.get('DISKCACHE_REQUIRE_OPENSSL'):
            pytest.fail('openssl is needed to make a test certificate, and DISKCACHE_REQUIRE_OPENSSL is set')
        pytest.skip('openssl is needed to make a test certificate')
    out = tmp_path_factory.mktemp('tls')
    cert, key = str(out / 'cert.pem'), str(out / 'key.pem')
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt',
                    'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
                    '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1',
                    '-keyout', key, '-out', cert],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return cert, key


def test_tls(start_server, tls_cert):
    cert, key = tls_cert
    srv = start_server(None, '--tls-cert', cert, '--tls-key', key)
    url = 'https://' + srv.addr
    c = Cache(url, token=TOKEN, ssl_context=ssl.create_default_context(cafile=cert))
    payload = os.urandom(300000)
    assert c.set('k', b'v') is True
    assert c.get('k') == b'v'
    assert c.set('blob', io.BytesIO(payload), read=True) is True
    with c.read('blob') as handle:
        assert handle.read() == payload
    assert c.get('blob') == payload

    async def scenario():
        assert await c.client.arun(_get(c, 'k')) == b'v'
        await c.client.aclose()

    asyncio.run(scenario())
    # The pooled one, the streamed upload's fresh one, the asyncio one.
    assert c.client.connect_attempts == 3

    # Without the CA the certificate is refused.
    strict = Cache(url, token=TOKEN, retries=0)
    with pytest.raises(ServerUnavailable) as info:
        strict.get('k')
    assert isinstance(info.value.__cause__, ssl.SSLError)


def test_a_key_too_large_gets_the_servers_error_whatever_its_size(cache):
    # Past the server's --max-key-bytes (64 KiB here) it answers 400
    # key_too_large; past what any server takes (128 KiB) the client says so
    # without sending it: in a URL HTTP servers refuse it unread (431, no
    # JSON), in a frame past the server's 1 MiB it got 413 value_too_large.
    # The error names the URL's start, not megabytes of it.
    named = cache.cache('big-keys')
    for key in ['x' * 100_000, b'\xff' * 100_000, 'y' * 3 * 2**20, (None,) * 2**20,
                (None,) * 2**21]:
        for call in (lambda key=key: named.set(key, 1), lambda key=key: named.get(key)):
            with pytest.raises(CacheServerError) as err:
                call()
            assert (err.value.status, err.value.code) == (400, 'key_too_large'), str(err.value)
            assert len(str(err.value)) < 600
