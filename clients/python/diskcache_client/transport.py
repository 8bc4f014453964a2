"""HTTP transport: keep-alive connection pools, retries, circuit breaker.

Operations (see :mod:`diskcache_client.ops`) are written as generators that
yield :class:`Request` objects (or lists of them, one per shard) and receive
:class:`Response` objects, so the same code runs over blocking ``http.client``
connections (:meth:`Client.run`) and over asyncio streams
(:meth:`Client.arun`).

Failure handling, per server (endpoint):

* Idempotent requests (GET, HEAD, PUT, DELETE and the batch/bulk POSTs) are
  retried up to ``retries`` times, with exponential backoff, after a refused
  or reset connection and after a 503 answer. ``incr``, ``decr``, ``add`` and
  ``pop`` are never retried.
* A pooled keep-alive connection that the server closed while it was idle
  is replaced by a fresh one once, for any request: the server did not see
  the request.
* Circuit breaker: when a request to a server fails at the connection level
  (after its retries) or times out, the server is marked down for
  ``cooldown`` seconds and every call to it fails at once with
  :class:`~diskcache_client.errors.ServerUnavailable`, without touching the
  network. After the cool-down one call probes the server; its success
  closes the breaker, its failure opens it again. A timeout is never
  retried: a dead server costs one timeout, not one per call.
"""

import asyncio
import atexit
import collections.abc
import hashlib
import http.client
import io
import logging
import os
import random
import socket
import ssl
import threading
import time
from urllib.parse import urlsplit

from .errors import ServerUnavailable

log = logging.getLogger('diskcache_client')

USER_AGENT = 'diskcache-client-python/0.1'

# Errors of a reused keep-alive connection that the server closed while idle.
_STALE_ERRORS = (
    http.client.RemoteDisconnected,
    http.client.BadStatusLine,
    ConnectionResetError,
    ConnectionAbortedError,
    BrokenPipeError,
)


class Request:
    """One HTTP request of an operation."""

    __slots__ = (
        'method', 'path', 'query', 'headers', 'body', 'shard',
        'idempotent', 'stream', 'retry_unavailable',
    )

    def __init__(self, method, path, *, query='', headers=None, body=None,
                 shard=0, idempotent=False, stream=False,
                 retry_unavailable=True):
        self.method = method
        self.path = path  # escaped, e.g. /v1/keys/%3A1%3Afoo
        self.query = query  # escaped, without '?'
        self.headers = headers or {}
        self.body = body  # None, bytes, or an iterable of bytes (streamed)
        self.shard = shard
        self.idempotent = idempotent
        self.stream = stream  # a 200 answer's body is returned unread
        self.retry_unavailable = retry_unavailable

    @property
    def replayable(self):
        return self.body is None or isinstance(self.body, (bytes, bytearray))

    def target(self, base):
        return base + self.path + ('?' + self.query if self.query else '')

    def __repr__(self):
        return '<Request %s %s%s>' % (
            self.method, self.path, '?' + self.query if self.query else '')


class Response:
    """An answer: status, lower-cased headers and the body (bytes), or for
    streamed requests a binary file object in ``stream``."""

    __slots__ = ('status', 'headers', 'body', 'stream', 'url')

    def __init__(self, status, headers, body=b'', stream=None, url=''):
        self.status = status
        self.headers = headers
        self.body = body
        self.stream = stream
        self.url = url

    def header(self, name, default=None):
        return self.headers.get(name.lower(), default)

    def __repr__(self):
        return '<Response %d %s>' % (self.status, self.url)


class CircuitBreaker:
    """Fail fast for ``cooldown`` seconds after a connection failure.

    ``clock`` is a monotonic clock (tests may replace it). A ``cooldown`` of
    0 disables the breaker.
    """

    def __init__(self, cooldown, clock=time.monotonic):
        self.cooldown = cooldown
        self.clock = clock
        self.trips = 0
        self._lock = threading.Lock()
        self._open_until = None
        self._probing = False

    @property
    def state(self):
        with self._lock:
            if self._open_until is None:
                return 'closed'
            if self._probing or self.clock() >= self._open_until:
                return 'half-open'
            return 'open'

    def allow(self):
        """Whether a call may go to the server now."""
        if self.cooldown <= 0:
            return True
        with self._lock:
            if self._open_until is None:
                return True
            if self._probing or self.clock() < self._open_until:
                return False
            self._probing = True  # this caller probes
            return True

    def success(self):
        with self._lock:
            self._open_until = None
            self._probing = False

    def failure(self):
        with self._lock:
            self._open_until = self.clock() + self.cooldown
            self._probing = False
            self.trips += 1

    def abandon(self):
        """A call ended without telling whether the server is up."""
        with self._lock:
            self._probing = False

    def reset(self):
        self.success()


class _Unreachable(Exception):
    """A request failed below HTTP (connect, send or receive)."""

    def __init__(self, cause, timeout=False):
        super().__init__(str(cause) or type(cause).__name__)
        self.cause = cause
        self.timeout = timeout


class _Disconnected(ConnectionError):
    """The server closed the connection without an answer."""


class _HTTPConnection(http.client.HTTPConnection):
    endpoint = None

    def connect(self):
        self.endpoint.note_connect()
        self.timeout = self.endpoint.connect_timeout
        super().connect()
        self.sock.settimeout(self.endpoint.socket_timeout)
        try:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # pragma: no cover
            pass


class _HTTPSConnection(http.client.HTTPSConnection):
    endpoint = None

    def connect(self):
        self.endpoint.note_connect()
        self.timeout = self.endpoint.connect_timeout
        super().connect()
        self.sock.settimeout(self.endpoint.socket_timeout)


class Endpoint:
    """One cacheserver: its URL, connection pools and circuit breaker."""

    def __init__(self, url, *, socket_timeout, connect_timeout, cooldown,
                 max_idle, idle_ttl, ssl_context=None):
        parts = urlsplit(url)
        if parts.scheme not in ('http', 'https') or not parts.hostname:
            raise ValueError(
                'cache server URL %r must look like http://host:port' % url)
        self.url = url.rstrip('/')
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == 'https' else 80)
        self.netloc = parts.netloc.rpartition('@')[2]
        self.base = parts.path.rstrip('/')
        self.socket_timeout = socket_timeout
        self.connect_timeout = connect_timeout
        self.max_idle = max_idle
        self.idle_ttl = idle_ttl
        self.ssl_context = ssl_context
        if self.scheme == 'https' and self.ssl_context is None:
            self.ssl_context = ssl.create_default_context()
        self.breaker = CircuitBreaker(cooldown)
        self.connect_attempts = 0
        self._lock = threading.Lock()
        self._idle = []  # [(connection, last_used)]
        self._aidle = {}  # {event loop: [(reader, writer, last_used)]}
        self._pid = os.getpid()

    def __repr__(self):
        return '<Endpoint %s>' % self.url

    def note_connect(self):
        with self._lock:
            self.connect_attempts += 1

    # -- blocking connections ------------------------------------------------

    def _check_fork(self):
        # Called with the lock held: a forked child must not share sockets.
        if self._pid != os.getpid():
            self._pid = os.getpid()
            idle, self._idle = self._idle, []
            self._aidle = {}
            for conn, _ in idle:
                conn.close()

    def _acquire(self, fresh=False):
        now = time.monotonic()
        stale = []
        conn = None
        with self._lock:
            self._check_fork()
            while self._idle and not fresh:
                candidate, used = self._idle.pop()
                if now - used > self.idle_ttl:
                    stale.append(candidate)
                    continue
                conn = candidate
                break
        for old in stale:
            old.close()
        if conn is not None:
            return conn, True
        if self.scheme == 'https':
            conn = _HTTPSConnection(self.host, self.port, timeout=self.socket_timeout,
                                    context=self.ssl_context)
        else:
            conn = _HTTPConnection(self.host, self.port, timeout=self.socket_timeout)
        conn.endpoint = self
        conn.blocksize = 1 << 16
        return conn, False

    def release(self, conn):
        with self._lock:
            if self._pid == os.getpid() and len(self._idle) < self.max_idle:
                self._idle.append((conn, time.monotonic()))
                return
        conn.close()

    def exchange(self, req, headers):
        """Send one request and read its answer (blocking)."""
        target = req.target(self.base)
        body = req.body
        for stale_try in (0, 1):
            # A streamed body cannot be sent twice: give it a fresh connection.
            conn, reused = self._acquire(fresh=not req.replayable)
            try:
                conn.request(req.method, target, body=body, headers=headers)
                resp = conn.getresponse()
            except socket.timeout as exc:
                conn.close()
                raise _Unreachable(exc, timeout=True) from exc
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                if reused and stale_try == 0 and isinstance(exc, _STALE_ERRORS):
                    continue
                raise _Unreachable(exc) from exc
            resp_headers = {k.lower(): v for k, v in resp.getheaders()}
            url = self.url + req.path
            if req.stream and resp.status == 200:
                stream = io.BufferedReader(_ResponseStream(resp, conn, self), 1 << 16)
                return Response(resp.status, resp_headers, None, stream, url)
            try:
                data = resp.read()
            except socket.timeout as exc:
                conn.close()
                raise _Unreachable(exc, timeout=True) from exc
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise _Unreachable(exc) from exc
            if resp.will_close:
                conn.close()
            else:
                self.release(conn)
            return Response(resp.status, resp_headers, data, None, url)
        raise AssertionError('unreachable')  # pragma: no cover

    # -- asyncio connections -------------------------------------------------

    def _apool(self, loop):
        # Called with the lock held. Drops the pools of closed loops.
        self._check_fork()
        for other in [l for l in self._aidle if l.is_closed()]:
            for _, writer, _ in self._aidle.pop(other):
                _discard_writer(writer)
        return self._aidle.setdefault(loop, [])

    def _aacquire(self, loop):
        now = time.monotonic()
        stale = []
        found = None
        with self._lock:
            pool = self._apool(loop)
            while pool:
                reader, writer, used = pool.pop()
                if now - used > self.idle_ttl or writer.is_closing():
                    stale.append(writer)
                    continue
                found = (reader, writer)
                break
        for writer in stale:
            _discard_writer(writer)
        return found

    def _arelease(self, loop, reader, writer):
        with self._lock:
            pool = self._apool(loop)
            if len(pool) < self.max_idle and not loop.is_closed():
                pool.append((reader, writer, time.monotonic()))
                return
        _discard_writer(writer)

    def aclose_loop(self, loop):
        """Close the pooled connections of one event loop."""
        with self._lock:
            pool = self._aidle.pop(loop, [])
        for _, writer, _ in pool:
            _discard_writer(writer)

    async def aexchange(self, req, headers):
        """Send one request and read its answer over asyncio streams."""
        loop = asyncio.get_running_loop()
        data = _encode_request(req.method, req.target(self.base), self.netloc,
                               headers, req.body)
        timeout = self.socket_timeout
        for stale_try in (0, 1):
            found = self._aacquire(loop)
            reused = found is not None
            writer = None
            try:
                if found is None:
                    self.note_connect()
                    kwargs = {}
                    if self.scheme == 'https':
                        kwargs = {'ssl': self.ssl_context, 'server_hostname': self.host}
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection(self.host, self.port, **kwargs),
                        self.connect_timeout)
                    sock = writer.get_extra_info('socket')
                    if sock is not None and self.scheme == 'http':
                        try:
                            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        except OSError:  # pragma: no cover
                            pass
                else:
                    reader, writer = found
                writer.write(data)
                await asyncio.wait_for(writer.drain(), timeout)
                status, resp_headers, body, keep = await _aread_response(
                    reader, req.method, timeout)
            except asyncio.TimeoutError as exc:
                if writer is not None:
                    _discard_writer(writer)
                raise _Unreachable(exc, timeout=True) from exc
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                if writer is not None:
                    _discard_writer(writer)
                if reused and stale_try == 0 and isinstance(
                        exc, (_Disconnected, ConnectionError, asyncio.IncompleteReadError)):
                    continue
                raise _Unreachable(exc) from exc
            except BaseException:
                # Cancelled part way: the connection is in an unknown state.
                if writer is not None:
                    _discard_writer(writer)
                raise
            if keep:
                self._arelease(loop, reader, writer)
            else:
                _discard_writer(writer)
            return Response(status, resp_headers, body, None, self.url + req.path)
        raise AssertionError('unreachable')  # pragma: no cover

    def close(self):
        """Close every pooled blocking connection."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn, _ in idle:
            conn.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # pylint: disable=broad-except  # pragma: no cover
            pass


def _discard_writer(writer):
    transport = writer.transport
    try:
        transport.abort()
    except RuntimeError:
        # The event loop is closed, so the transport cannot close itself:
        # close its socket directly.
        sock = getattr(transport, '_sock', None)
        if sock is not None:
            transport._sock = None  # pylint: disable=protected-access
            sock.close()


class _ResponseStream(io.RawIOBase):
    """A streamed response body; returns its connection to the pool once
    read to the end, and closes it if abandoned part way."""

    def __init__(self, resp, conn, endpoint):
        super().__init__()
        self._resp = resp
        self._conn = conn
        self._endpoint = endpoint
        self._done = False

    def readable(self):
        return True

    def readinto(self, buf):
        if self._done:
            return 0
        n = self._resp.readinto(buf)
        if n == 0:
            self._finish(complete=True)
        return n

    def _finish(self, complete):
        if self._done:
            return
        self._done = True
        if complete and not self._resp.will_close:
            self._endpoint.release(self._conn)
        else:
            self._resp.close()
            self._conn.close()

    def close(self):
        if not self.closed:
            self._finish(complete=self._resp.isclosed() and not self._resp.will_close)
        super().close()


def _encode_request(method, target, netloc, headers, body):
    lines = ['%s %s HTTP/1.1' % (method, target), 'Host: ' + netloc]
    for name, value in headers.items():
        lines.append('%s: %s' % (name, value))
    if body is not None or method in ('POST', 'PUT', 'PATCH'):
        lines.append('Content-Length: %d' % len(body or b''))
    head = ('\r\n'.join(lines) + '\r\n\r\n').encode('latin-1')
    return head + bytes(body or b'')


async def _aread_response(reader, method, timeout):
    """Read one HTTP/1.x response: (status, headers, body, keep_alive)."""

    async def readline():
        return await asyncio.wait_for(reader.readline(), timeout)

    async def readexactly(n):
        parts = []
        while n > 0:
            piece = await asyncio.wait_for(reader.readexactly(min(n, 1 << 18)), timeout)
            parts.append(piece)
            n -= len(piece)
        return b''.join(parts)

    while True:
        line = await readline()
        if not line:
            raise _Disconnected('server closed the connection without an answer')
        version, _, rest = line.decode('latin-1').rstrip('\r\n').partition(' ')
        status = int(rest.split(' ', 1)[0])
        headers = {}
        while True:
            line = await readline()
            if not line:
                raise _Disconnected('connection closed in response headers')
            if line in (b'\r\n', b'\n'):
                break
            name, _, value = line.decode('latin-1').partition(':')
            headers[name.strip().lower()] = value.strip()
        if 100 <= status < 200:
            continue
        break
    keep = version == 'HTTP/1.1' and headers.get('connection', '').lower() != 'close'
    if method == 'HEAD' or status in (204, 304):
        body = b''
    elif 'chunked' in headers.get('transfer-encoding', '').lower():
        chunks = []
        while True:
            size_line = await readline()
            if not size_line:
                raise _Disconnected('connection closed in chunked body')
            size = int(size_line.split(b';', 1)[0].strip(), 16)
            if size == 0:
                while True:
                    trailer = await readline()
                    if trailer in (b'\r\n', b'\n', b''):
                        break
                break
            chunks.append(await readexactly(size))
            await readexactly(2)
        body = b''.join(chunks)
    elif 'content-length' in headers:
        body = await readexactly(int(headers['content-length']))
    else:
        body = await asyncio.wait_for(reader.read(), timeout)
        keep = False
    return status, headers, body, keep


def jump_hash(key, buckets):
    """Jump consistent hash (Lamping & Veach) of a 64-bit key."""
    b, j = -1, 0
    while j < buckets:
        b = j
        key = (key * 2862933555777941757 + 1) & 0xFFFFFFFFFFFFFFFF
        j = int((b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b


def key_hash(raw):
    """64-bit hash of a key's wire bytes: BLAKE2b with an 8-byte digest,
    read little-endian."""
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), 'little')


class Client:
    """Talks to one cacheserver, or to several shard servers.

    With several URLs each key goes to ``jump_hash(key_hash(raw), n)`` where
    ``raw`` is the key's wire bytes (:func:`diskcache_client.wire.encode_key`);
    operations on the whole cache (clear, expire, stats, ...) go to every
    shard and their results are added up.
    """

    def __init__(self, locations, *, token=None, token_file=None,
                 socket_timeout=5.0, connect_timeout=None, retries=2,
                 retry_backoff=0.05, cooldown=2.0, max_idle=16, idle_ttl=60.0,
                 ssl_context=None):
        if isinstance(locations, str):
            locations = [locations]
        locations = [loc for loc in locations if loc]
        if not locations:
            raise ValueError('no cache server URL given')
        self.retries = max(0, int(retries))
        self.retry_backoff = float(retry_backoff)
        self._token = token
        self._token_file = token_file
        if token is None and token_file:
            self._token = _read_token(token_file)
        connect_timeout = socket_timeout if connect_timeout is None else connect_timeout
        self.endpoints = [
            Endpoint(url, socket_timeout=socket_timeout, connect_timeout=connect_timeout,
                     cooldown=cooldown, max_idle=max_idle, idle_ttl=idle_ttl,
                     ssl_context=ssl_context)
            for url in locations
        ]

    @property
    def shards(self):
        return len(self.endpoints)

    @property
    def connect_attempts(self):
        """Connections opened (or tried) so far, over every endpoint."""
        return sum(ep.connect_attempts for ep in self.endpoints)

    def shard_of(self, raw):
        if len(self.endpoints) == 1:
            return 0
        return jump_hash(key_hash(raw), len(self.endpoints))

    def _headers(self, req):
        headers = {'User-Agent': USER_AGENT}
        if self._token:
            headers['Authorization'] = 'Bearer ' + self._token
        headers.update(req.headers)
        return headers

    def _reload_token(self):
        """Re-read TOKEN_FILE after a 401; True if the token changed."""
        if not self._token_file:
            return False
        try:
            token = _read_token(self._token_file)
        except OSError:
            return False
        if token == self._token:
            return False
        self._token = token
        return True

    def _delay(self, attempt):
        base = self.retry_backoff * (2 ** (attempt - 1))
        return base + random.uniform(0, base / 2)

    # -- blocking --------------------------------------------------------------

    def send(self, req):
        """Send a request with retries and the circuit breaker."""
        ep = self.endpoints[req.shard]
        _check_breaker(ep)
        try:
            resp = self._send_attempts(ep, req)
        except _Unreachable as exc:
            raise _tripped(ep, exc) from exc.cause
        except BaseException:
            ep.breaker.abandon()
            raise
        ep.breaker.success()
        return resp

    def _send_attempts(self, ep, req):
        attempts = 1 + (self.retries if req.idempotent and req.replayable else 0)
        token_retry = True
        attempt = 0
        while True:
            try:
                resp = ep.exchange(req, self._headers(req))
            except _Unreachable as exc:
                attempt += 1
                if exc.timeout or attempt >= attempts:
                    raise
                time.sleep(self._delay(attempt))
                continue
            if resp.status == 401 and token_retry and req.replayable:
                token_retry = False
                if self._reload_token():
                    continue
            if resp.status == 503 and req.retry_unavailable and attempt + 1 < attempts:
                attempt += 1
                time.sleep(self._delay(attempt))
                continue
            return resp

    def run(self, op):
        """Drive an operation generator to its result (blocking)."""
        try:
            req = next(op)
            while True:
                if isinstance(req, list):
                    resp = [self.send(r) for r in req]
                else:
                    resp = self.send(req)
                req = op.send(resp)
        except StopIteration as stop:
            return stop.value
        finally:
            op.close()

    # -- asyncio ---------------------------------------------------------------

    async def asend(self, req):
        if not req.replayable or req.stream:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(None, self.send, req)
        ep = self.endpoints[req.shard]
        _check_breaker(ep)
        try:
            resp = await self._asend_attempts(ep, req)
        except _Unreachable as exc:
            raise _tripped(ep, exc) from exc.cause
        except BaseException:
            ep.breaker.abandon()
            raise
        ep.breaker.success()
        return resp

    async def _asend_attempts(self, ep, req):
        attempts = 1 + (self.retries if req.idempotent else 0)
        token_retry = True
        attempt = 0
        while True:
            try:
                resp = await ep.aexchange(req, self._headers(req))
            except _Unreachable as exc:
                attempt += 1
                if exc.timeout or attempt >= attempts:
                    raise
                await asyncio.sleep(self._delay(attempt))
                continue
            if resp.status == 401 and token_retry:
                token_retry = False
                if self._reload_token():
                    continue
            if resp.status == 503 and req.retry_unavailable and attempt + 1 < attempts:
                attempt += 1
                await asyncio.sleep(self._delay(attempt))
                continue
            return resp

    async def arun(self, op):
        """Drive an operation generator to its result over asyncio."""
        try:
            req = next(op)
            while True:
                if isinstance(req, list):
                    resp = list(await asyncio.gather(*(self.asend(r) for r in req)))
                else:
                    resp = await self.asend(req)
                req = op.send(resp)
        except StopIteration as stop:
            return stop.value
        finally:
            op.close()

    async def aclose(self):
        """Close the pooled connections of the running event loop."""
        loop = asyncio.get_running_loop()
        for ep in self.endpoints:
            ep.aclose_loop(loop)
        # Let the aborted transports run their connection_lost callbacks,
        # which close the sockets, before the loop may be closed.
        await asyncio.sleep(0)

    def close(self):
        """Close every pooled blocking connection (they reopen on demand)."""
        for ep in self.endpoints:
            ep.close()


def _check_breaker(ep):
    if not ep.breaker.allow():
        raise ServerUnavailable(
            'not trying: the server was unreachable less than %gs ago '
            '(circuit breaker open)' % ep.breaker.cooldown,
            code='circuit_open', url=ep.url)


def _tripped(ep, exc):
    ep.breaker.failure()
    log.warning('cache server %s unreachable (%s); failing fast for %gs',
                ep.url, exc, ep.breaker.cooldown)
    return ServerUnavailable(str(exc), code='unreachable', url=ep.url)


def _read_token(path):
    with open(path, encoding='utf-8') as f:
        return f.read().strip()


_registry = {}
_registry_lock = threading.Lock()


@atexit.register
def _close_shared_clients():
    with _registry_lock:
        clients = list(_registry.values())
    for client in clients:
        client.close()


def shared_client(locations, **options):
    """A process-wide :class:`Client` per configuration, so that every
    thread's backend instance shares one pool and one circuit breaker."""
    key = (tuple(locations),) + tuple(sorted(
        (k, v if isinstance(v, collections.abc.Hashable) else repr(v))
        for k, v in options.items()))
    with _registry_lock:
        client = _registry.get(key)
        if client is None:
            client = _registry[key] = Client(locations, **options)
        return client
