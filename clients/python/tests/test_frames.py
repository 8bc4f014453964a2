"""The frames transport (diskcache_client.frames): the blocking client sends
small requests as frames on connections upgraded with GET /v1/frames, falls
back to HTTP for servers without frames, and follows a token change."""

import asyncio
import os
import signal
import socket
import struct
import sys
import threading
import time

import pytest

from diskcache_client import Cache, ServerUnavailable, frames
from diskcache_client.djangocache import DjangoCache
from diskcache_client.http11 import Connection, ProtocolError

from conftest import TOKEN, CacheServer, accepts_token


def test_key_operations_go_over_frames(start_server):
    srv = start_server()
    c = Cache(srv.url, token=TOKEN, retries=0)
    assert c.set('a', 'text') and c.get('a') == 'text'
    assert c.set(b'b', 12) and c.incr(b'b', 3) == 15
    assert c.add('a', 'x') is False and c.add('c', 2.5) is True and c.get('c') == 2.5
    assert c.touch('a', expire=60) is True and c.touch('zz') is False
    assert 'a' in c and 'zz' not in c
    assert c.get('a', expire_time=True, tag=True) == ('text', pytest.approx(time.time() + 60, abs=30), None)
    assert c.delete('a') is True and c.delete('a') is False
    assert c.get('missing', default='d') == 'd'
    # A value above frames.MAX_BODY goes up over HTTP and comes back over
    # frames in several chunks; a streamed read goes over HTTP.
    large = bytes(range(256)) * 2000
    assert c.set('large', large) and c.get('large') == large
    assert c.get('large', read=True).read() == large
    ep = c.client.endpoints[0]
    assert ep.frames is True
    assert ep._fidle and all(isinstance(conn, frames.FrameConnection) for conn in ep._fidle)
    # Frames on one connection: every call above reused it.
    assert len(ep._fidle) == 1


def test_frames_off_speaks_http(start_server):
    srv = start_server()
    c = Cache(srv.url, token=TOKEN, retries=0, frames=False)
    assert c.set('a', 1) and c.get('a') == 1
    ep = c.client.endpoints[0]
    assert ep.frames is False and not ep._fidle and ep._idle


class OldServer:
    """A loopback HTTP server that predates frames: 404 for GET /v1/frames,
    a value for every other request."""

    def __init__(self):
        self.requests = []
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
                line = head.split(b'\r\n')[0]
                self.requests.append(line)
                if line.startswith(b'GET /v1/frames '):
                    body = b'{"error":"not_found","message":"no route"}'
                    conn.sendall(b'HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n'
                                 b'Content-Length: %d\r\n\r\n%s' % (len(body), body))
                else:
                    conn.sendall(b'HTTP/1.1 200 OK\r\nDiskcache-Value-Type: bytes\r\n'
                                 b'Content-Length: 1\r\n\r\nv')

    def close(self):
        self.listener.close()


def test_a_server_without_frames_gets_http():
    srv = OldServer()
    try:
        c = Cache(srv.url, token=TOKEN, retries=0)
        for _ in range(3):
            assert c.get('k') == b'v'
        assert c.client.endpoints[0].frames is False
        # One upgrade asked, then plain HTTP.
        assert [r.split(b' ')[1].split(b'?')[0] for r in srv.requests] == [
            b'/v1/frames', b'/v1/keys/k', b'/v1/keys/k', b'/v1/keys/k']
    finally:
        srv.close()


def test_a_rotated_token_takes_a_new_frames_connection(cacheserver_bin, tmp_path):
    # As in the operator's rotation, the server accepts the new token
    # (token.next beside its token file) before the client reads it: no call
    # fails, and the connection upgraded with the old token is not used again.
    server_dir = tmp_path / 'server'
    server_dir.mkdir()
    (server_dir / 'token').write_text('first-token')
    client_file = tmp_path / 'client-token'
    client_file.write_text('first-token')
    srv = CacheServer(cacheserver_bin, tmp_path / 'data', server_dir / 'token').start()
    try:
        c = Cache(srv.url, token_file=str(client_file), retries=0)
        now = [time.monotonic()]
        c.client.clock = lambda: now[0]  # when the client looks at its file again
        assert c.set('k', 'v')
        first = c.client.endpoints[0]._fidle[0]
        (server_dir / 'token.next').write_text('second-token')
        deadline = time.monotonic() + 30
        while not accepts_token(srv.url, 'second-token'):  # the server reads its files once a second
            assert time.monotonic() < deadline, 'the server never took token.next'
            time.sleep(0.05)
        assert c.get('k') == 'v'
        client_file.write_text('second-token')
        now[0] += 2
        assert c.get('k') == 'v'
        assert c.client._token == 'second-token'
        conns = c.client.endpoints[0]._fidle
        assert conns and first not in conns and all('second-token' in x.fixed for x in conns)
    finally:
        srv.stop()


def test_async_calls_go_over_frames(start_server):
    srv = start_server()
    c = DjangoCache(srv.url, {'OPTIONS': {'TOKEN': TOKEN, 'RETRIES': 0}})
    large = bytes(range(256)) * 2000  # answered in several chunks

    async def scenario():
        assert await c.aset('a', 'text') is True
        assert await c.aget('a') == 'text'
        assert await c.aadd('a', 'x') is False
        assert await c.aset('n', 1) is True and await c.aincr('n', 2) == 3
        assert await c.ahas_key('a') is True and await c.ahas_key('zz') is False
        assert await c.adelete('a') is True
        ep = c._client.endpoints[0]
        loop = asyncio.get_running_loop()
        assert ep.frames is True
        assert len(ep._afidle.get(loop, [])) == 1 and not ep._aidle.get(loop)
        # Up over HTTP (above frames.MAX_BODY), back over frames in chunks.
        assert await c.aset('large', large) is True
        assert await c.aget('large') == large
        assert len(ep._afidle.get(loop, [])) == 1 and len(ep._aidle.get(loop, [])) == 1
        await c.aclose()
        assert not ep._afidle.get(loop)

    asyncio.run(scenario())


def test_async_calls_to_a_server_without_frames_get_http():
    srv = OldServer()
    try:
        c = Cache(srv.url, token=TOKEN, retries=0)

        async def scenario():
            from diskcache_client import ops
            for _ in range(3):
                assert await c.client.arun(ops.get(c.client, '/v1', 'k')) == b'v'
            await c.client.aclose()

        asyncio.run(scenario())
        assert c.client.endpoints[0].frames is False
        assert [r.split(b' ')[1].split(b'?')[0] for r in srv.requests] == [
            b'/v1/frames', b'/v1/keys/k', b'/v1/keys/k', b'/v1/keys/k']
    finally:
        srv.close()


# -- the answer decoder ---------------------------------------------------------

class PieceSocket:
    """Hands out scripted bytes one piece per recv."""

    def __init__(self, pieces):
        self.pieces = list(pieces)

    def recv(self, n):
        return self.pieces.pop(0) if self.pieces else b''

    def recv_into(self, view):
        data = self.recv(len(view))
        view[:len(data)] = data
        return len(data)


def answer_frame(status, headers, chunks):
    h = b''.join(bytes((len(n),)) + n + struct.pack('>I', len(v)) + v for n, v in headers)
    out = struct.pack('>IHB', 3 + len(h), status, len(headers)) + h
    for chunk in chunks:
        out += struct.pack('>I', len(chunk)) + chunk
    return out + b'\0\0\0\0'


def test_answer_frames_split_at_every_byte():
    data = answer_frame(200, [(b'Diskcache-Value-Type', b'text'), (b'X', b'')], [b'hel', b'lo'])
    data += answer_frame(404, [], [])
    conn = Connection(PieceSocket([data[i:i + 1] for i in range(len(data))]))
    assert frames.read_frame(conn) == (200, {'diskcache-value-type': 'text', 'x': ''}, b'hello')
    assert frames.read_frame(conn) == (404, {}, b'')
    assert conn.buf == b''


@pytest.mark.parametrize('data', [
    answer_frame(200, [], [b'abc'])[:-2],  # cut in the end mark
    answer_frame(200, [(b'N', b'v')], [])[:9],  # cut in the head
    struct.pack('>IHB', 3, 200, 1) + b'\0\0\0\0',  # a header the head does not hold
])
def test_malformed_answer_frames(data):
    with pytest.raises(ProtocolError):
        frames.read_frame(Connection(PieceSocket([data])))


def test_request_frame_layout():
    got = frames.request_frame('PUT', '/v1/keys/a?expire=1', {'Diskcache-Value-Type': 'int'}, b'12')
    target = b'/v1/keys/a?expire=1'
    header = b'\x01' + b'\x14Diskcache-Value-Type' + b'\0\0\0\x03int'
    rest = b'\x03' + struct.pack('>I', len(target)) + target + header + b'12'
    assert got == struct.pack('>I', len(rest)) + rest


def stop_process(pid):
    """SIGSTOP pid and return once every one of its threads has stopped:
    kill() only queues the signal, and a thread that has not stopped yet
    could still answer the next request."""
    os.kill(pid, signal.SIGSTOP)
    tasks = '/proc/%d/task' % pid
    if not os.path.isdir(tasks):
        return  # no procfs: the signal's delivery is all there is to go on
    deadline = time.monotonic() + 10
    while True:
        states = []
        for tid in os.listdir(tasks):
            try:
                with open('%s/%s/stat' % (tasks, tid)) as f:
                    # The state follows the command name, which is in
                    # parentheses and may hold spaces.
                    states.append(f.read().rsplit(')', 1)[1].split()[0])
            except FileNotFoundError:
                pass  # a thread that ended
        if states and all(s in ('T', 't') for s in states):
            return
        assert time.monotonic() < deadline, 'process %d did not stop: %s' % (pid, states)
        time.sleep(0.001)


def test_a_hung_server_times_out_a_frame(start_server):
    """A server that stops answering after the upgrade: the frame's receive
    times out after SOCKET_TIMEOUT (the kernel's timeout on Linux) and is
    reported as a timeout, which is not retried."""
    srv = start_server()
    c = Cache(srv.url, token=TOKEN, retries=2, socket_timeout=0.3)
    assert c.set('k', 1) and c.get('k') == 1
    ep = c.client.endpoints[0]
    (conn,) = ep._fidle
    if sys.platform.startswith('linux'):
        # Each send and receive is one system call: no Python timeout.
        assert conn.sock.gettimeout() is None
        assert struct.unpack('@ll', conn.sock.getsockopt(
            socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16)) == (0, 300000)
    assert c.client.connect_attempts == 1
    stop_process(srv.proc.pid)
    try:
        with pytest.raises(ServerUnavailable) as info:
            c.get('k')
    finally:
        os.kill(srv.proc.pid, signal.SIGCONT)
    assert isinstance(info.value.__cause__, socket.timeout)
    # A timeout is not retried: no second connection.
    assert c.client.connect_attempts == 1
