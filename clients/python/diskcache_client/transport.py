"""HTTP transport: keep-alive connection pools, retries, circuit breaker.

Operations (see :mod:`diskcache_client.ops`) are written as generators that
yield :class:`Request` objects (or lists of them, one per shard) and receive
:class:`Response` objects, so the same code runs over blocking sockets
(:meth:`Client.run`) and over asyncio streams (:meth:`Client.arun`).

HTTP/1.1 is spoken directly on the sockets (no ``http.client``), because the
client's CPU per call is most of a cache call's cost:

* A request is built as one bytes object -- request line, headers (the fixed
  ``Host``, ``User-Agent``, ``Authorization`` lines are formatted once) and,
  up to :data:`COALESCE_MAX` bytes, the body -- and sent with one
  ``sendall``. A streamed body (``read=True`` uploads: an iterable of bytes)
  goes with ``Transfer-Encoding: chunked`` on a fresh connection.
* Each connection keeps its own receive buffer: a typical answer arrives in
  one ``recv``, its head is split and parsed in one pass (status line,
  headers into a dict with lower-cased names) and its body sliced off the
  same buffer. ``Content-Length``, ``chunked`` and read-until-close bodies
  are understood; interim 1xx answers are skipped; ``Connection: close``
  (and HTTP/1.0 without keep-alive) closes the connection after the answer.
  An answer that is not HTTP/1.x raises :class:`ProtocolError`.
* Streamed answers (``get(read=True)``) hand the connection to a file object
  that reads the body off it and returns the connection to the pool once
  the body was read to the end.

Failure handling, per server (endpoint):

* Idempotent requests (GET, HEAD, PUT, DELETE and the batch/bulk POSTs) are
  retried up to ``retries`` times, with exponential backoff, after a refused
  or reset connection, a malformed answer and after a 503 answer. ``incr``,
  ``decr``, ``add`` and ``pop`` are never retried.
* A pooled keep-alive connection that the server closed while it was idle
  (closed or reset before any byte of the answer) is replaced by a fresh one
  once, for any request: the server did not see the request.
* Circuit breaker: when a request to a server fails at the connection level
  (after its retries) or times out, the server is marked down for
  ``cooldown`` seconds and every call to it fails at once with
  :class:`~diskcache_client.errors.ServerUnavailable`, without touching the
  network. After the cool-down one call probes the server; its success
  closes the breaker, its failure opens it again. A timeout is never
  retried: a dead server costs one timeout, not one per call.

Thread safety: the pools of idle connections are lists whose ``pop`` and
``append`` are atomic, so checking a connection out or in takes no lock; a
connection belongs to one call (or one streamed answer) at a time.
"""

import asyncio
import atexit
import collections.abc
import hashlib
import io
import logging
import os
import random
import socket
import ssl
import threading
import time
import types
from urllib.parse import urlsplit

from .errors import ServerUnavailable

log = logging.getLogger('diskcache_client')

USER_AGENT = 'diskcache-client-python/0.1'

# Request bodies up to this size are sent in the same sendall as the head.
COALESCE_MAX = 1 << 16
# Bytes asked of recv() at a time.
_RECV_SIZE = 1 << 16
# Longest answer head (status line and headers) accepted. Headers can carry
# a percent-encoded key (Diskcache-Key), up to about 200 KB.
_MAX_HEAD = 1 << 20
# Longest chunk-size or trailer line accepted.
_MAX_LINE = 1 << 16
# Body bytes read per step on the asyncio path (each step restarts the
# socket timeout).
_APIECE = 1 << 18

# Methods whose request carries Content-Length even without a body.
_BODY_METHODS = frozenset(['POST', 'PUT', 'PATCH'])

_NO_HEADERS = types.MappingProxyType({})

# How an answer's body is delimited.
_NONE, _LENGTH, _CHUNKED, _EOF = range(4)

# The pid of this process, updated in a forked child; endpoints compare it
# with the pid that owns their pools instead of calling os.getpid() per call.
_PID = [os.getpid()]


def _after_fork():
    _PID[0] = os.getpid()


if hasattr(os, 'register_at_fork'):
    os.register_at_fork(after_in_child=_after_fork)

try:
    _async_timeout = asyncio.timeout  # Python 3.11+
except AttributeError:  # pragma: no cover - Python < 3.11
    _async_timeout = None


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
        self.headers = _NO_HEADERS if headers is None else headers
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
    0 disables the breaker. While the breaker is closed, :meth:`allow` and
    :meth:`success` read one attribute and take no lock.
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
        if self._open_until is None or self.cooldown <= 0:
            return True
        with self._lock:
            if self._open_until is None:
                return True
            if self._probing or self.clock() < self._open_until:
                return False
            self._probing = True  # this caller probes
            return True

    def success(self):
        if self._open_until is None and not self._probing:
            return
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
        if not self._probing:
            return
        with self._lock:
            self._probing = False

    def reset(self):
        self.success()


class _Unreachable(Exception):
    """A request failed below HTTP (connect, send or receive), or its
    answer was not HTTP."""

    def __init__(self, cause, timeout=False):
        super().__init__(str(cause) or type(cause).__name__)
        self.cause = cause
        self.timeout = timeout


class ProtocolError(ConnectionError):
    """The server's answer is not well-formed HTTP/1.x (a malformed status
    line, header, chunk size or Content-Length; an answer head that is too
    long), or the connection closed part way through an answer."""


class _Disconnected(ConnectionError):
    """The server closed the connection before any byte of an answer."""


# Errors of a reused keep-alive connection that the server closed while it
# was idle: the request never reached the server, so it can go again once.
_STALE_ERRORS = (
    _Disconnected,
    ConnectionResetError,
    ConnectionAbortedError,
    BrokenPipeError,
)


# -- HTTP/1.1 codec (shared by the blocking and the asyncio path) ------------

def _encode_head(method, target, fixed, headers, length):
    """The request head as bytes. ``fixed`` holds the preformatted header
    lines of the endpoint and client; ``length`` is the Content-Length, None
    for none, or -1 for ``Transfer-Encoding: chunked``."""
    head = '%s %s HTTP/1.1\r\n%s' % (method, target, fixed)
    if headers:
        for name, value in headers.items():
            head += '%s: %s\r\n' % (name, value)
    if length is None:
        head += '\r\n'
    elif length >= 0:
        head += 'Content-Length: %d\r\n\r\n' % length
    else:
        head += 'Transfer-Encoding: chunked\r\n\r\n'
    return head.encode('latin-1')


def _request_bytes(method, target, fixed, headers, body):
    """A whole request with a bytes body (or none) as one bytes object."""
    if body is None:
        return _encode_head(method, target, fixed, headers,
                            0 if method in _BODY_METHODS else None)
    return _encode_head(method, target, fixed, headers, len(body)) + body


def _find_head(buf):
    """Find the end of an answer head in ``buf``: ``(head, rest)`` where
    ``head`` is the lines before the blank line (each with its line ending)
    and ``buf[rest:]`` what follows the blank line; ``(None, 0)`` while the
    blank line has not arrived."""
    end = buf.find(b'\r\n\r\n')
    if end >= 0 and buf.find(b'\n\n', 0, end) < 0:
        return buf[:end + 2], end + 4
    # Lines ending in a bare LF (tolerated, as RFC 9112 allows).
    pos = 0
    while True:
        newline = buf.find(b'\n', pos)
        if newline < 0:
            return None, 0
        if newline == pos or (newline == pos + 1 and buf[pos] == 13):
            return buf[:pos], newline + 1
        pos = newline + 1


# Status lines parsed so far (a server sends few distinct ones): line ->
# (version, status).
_STATUS_LINES = {}


def _parse_status(line):
    """``(version, status)`` of a status line, remembered in
    ``_STATUS_LINES``."""
    version, _, rest = line.partition(' ')
    code = rest[:3]
    if (version[:7] != 'HTTP/1.' or len(code) != 3 or not (code.isdigit() and code.isascii())
            or code[0] == '0' or rest[3:4] not in ('', ' ')):
        raise ProtocolError('malformed status line in the answer: %r' % line[:200])
    parsed = (10 if version == 'HTTP/1.0' else 11), int(code)
    if len(_STATUS_LINES) < 256:
        _STATUS_LINES[line] = parsed
    return parsed


def _parse_head(head):
    """Parse an answer head (:func:`_find_head`): ``(version, status,
    headers)`` with version 10 or 11 and header names lower-cased (the last
    of repeated headers wins)."""
    text = head.decode('latin-1')
    lines = text.split('\r\n')
    if len(lines) != text.count('\n') + 1:
        # Some lines end in a bare LF.
        lines = text.replace('\r\n', '\n').split('\n')
    version, status = _STATUS_LINES.get(lines[0]) or _parse_status(lines[0])
    if '\n ' in text or '\n\t' in text:
        return version, status, _parse_folded(lines)
    headers = {}
    for line in lines[1:-1]:
        name, colon, value = line.partition(':')
        if not colon:
            raise ProtocolError('malformed header line in the answer: %r' % line[:200])
        headers[name.lower()] = value.strip()
    return version, status, headers


def _parse_folded(lines):
    """Headers of a head with obsolete line folding (continuation lines
    that start with a space or tab)."""
    headers = {}
    name = None
    for line in lines[1:-1]:
        if line[:1] in (' ', '\t') and name is not None:
            headers[name] = (headers[name] + ' ' + line.strip()).strip()
            continue
        name, colon, value = line.partition(':')
        if not colon:
            raise ProtocolError('malformed header line in the answer: %r' % line[:200])
        name = name.lower()
        headers[name] = value.strip()
    return headers


def _framing(method, status, version, headers):
    """``(mode, length, keep_alive)`` of an answer: how its body is
    delimited and whether the connection can carry another request."""
    connection = headers.get('connection')
    if connection is None:
        keep = version == 11
    else:
        tokens = [t.strip() for t in connection.lower().split(',')]
        keep = 'keep-alive' in tokens if version == 10 else 'close' not in tokens
    if method == 'HEAD' or status == 204 or status == 304:
        return _NONE, 0, keep
    coding = headers.get('transfer-encoding')
    if coding is not None:
        if coding.lower().rpartition(',')[2].strip() == 'chunked':
            return _CHUNKED, 0, keep
        return _EOF, 0, False
    length = headers.get('content-length')
    if length is None:
        return _EOF, 0, False
    if not (length.isdigit() and length.isascii()):
        # Repeated identical values ("5, 5") are one length.
        values = {v.strip() for v in length.split(',')}
        length = values.pop() if len(values) == 1 else ''
        if not (length.isdigit() and length.isascii()):
            raise ProtocolError('malformed Content-Length in the answer: %r'
                                % headers['content-length'][:100])
    return _LENGTH, int(length), keep


def _chunk_size(line):
    """The size in a chunk-size line (chunk extensions ignored)."""
    size = line.split(b';', 1)[0].strip()
    if not size or size.strip(b'0123456789abcdefABCDEF'):
        raise ProtocolError('malformed chunk size in the answer: %r' % line[:100])
    return int(size, 16)


def _is_blank(line):
    return line == b'\r\n' or line == b'\n'


# -- blocking connections ------------------------------------------------------

class _Connection:
    """A blocking keep-alive connection: its socket and the bytes received
    past what was consumed (``buf``)."""

    __slots__ = ('sock', 'buf', 'used')

    def __init__(self, sock):
        self.sock = sock
        self.buf = b''
        self.used = 0.0  # time.monotonic() when last put back in the pool

    def close(self):
        self.buf = b''
        self.sock.close()

    def read_head(self):
        """Read the next final answer's head: ``(version, status,
        headers)``; ``buf`` is left at its body. Interim 1xx answers are
        skipped."""
        buf = self.buf or self.sock.recv(_RECV_SIZE)
        while True:
            end = buf.find(b'\r\n\r\n')
            if end >= 0 and buf.find(b'\n\n', 0, end) < 0:
                head, rest = buf[:end + 2], end + 4  # the usual case
            else:
                head, rest = _find_head(buf)
            if head is None:
                if len(buf) > _MAX_HEAD:
                    raise ProtocolError('answer head longer than %d bytes' % _MAX_HEAD)
                data = self.sock.recv(_RECV_SIZE)
                if not data:
                    self.buf = b''
                    if buf:
                        raise ProtocolError('connection closed in the middle of an answer head')
                    raise _Disconnected('server closed the connection without an answer')
                buf += data
                continue
            version, status, headers = _parse_head(head)
            buf = buf[rest:]
            if status >= 200:
                self.buf = buf
                return version, status, headers
            if status == 101:
                raise ProtocolError('unexpected 101 Switching Protocols answer')
            # 1xx interim answer (100 Continue, 103 Early Hints, ...): skip.

    def read_exact(self, n):
        """Exactly ``n`` body bytes."""
        buf = self.buf
        if len(buf) >= n:
            self.buf = buf[n:]
            return buf[:n]
        out = bytearray(n)
        have = len(buf)
        out[:have] = buf
        self.buf = b''
        view = memoryview(out)
        recv_into = self.sock.recv_into
        while have < n:
            got = recv_into(view[have:])
            if not got:
                raise ProtocolError('connection closed %d bytes before the end of the '
                                    'answer body' % (n - have))
            have += got
        view.release()
        return bytes(out)

    def readline(self):
        """One line (chunk size or trailer), its line ending included."""
        buf = self.buf
        while True:
            newline = buf.find(b'\n')
            if newline >= 0:
                self.buf = buf[newline + 1:]
                return buf[:newline + 1]
            if len(buf) > _MAX_LINE:
                raise ProtocolError('line longer than %d bytes in the answer body' % _MAX_LINE)
            data = self.sock.recv(_RECV_SIZE)
            if not data:
                self.buf = b''
                raise ProtocolError('connection closed in the middle of a chunked body')
            buf += data
            self.buf = buf

    def readinto(self, view):
        """Up to ``len(view)`` bytes into ``view``: buffered bytes first,
        else one ``recv_into``; 0 at the end of the stream."""
        buf = self.buf
        if buf:
            n = min(len(buf), len(view))
            view[:n] = buf[:n]
            self.buf = buf[n:]
            return n
        return self.sock.recv_into(view)


class _Body:
    """Reads one answer body off a connection: by Content-Length, chunked
    or up to the end of the connection. For streamed answers and the bodies
    that are not a plain Content-Length."""

    __slots__ = ('conn', 'mode', 'left', 'crlf', 'done')

    def __init__(self, conn, mode, length):
        self.conn = conn
        self.mode = mode
        self.left = length if mode == _LENGTH else 0  # chunked: left in this chunk
        self.crlf = False  # chunked: a CRLF ends the current chunk's data
        self.done = mode == _NONE or (mode == _LENGTH and length == 0)

    def _next_chunk(self):
        conn = self.conn
        if self.crlf and not _is_blank(conn.readline()):
            raise ProtocolError('chunk data not followed by CRLF in the answer')
        size = _chunk_size(conn.readline())
        if size:
            self.left = size
            self.crlf = True
            return
        # Last chunk: skip the trailer section up to its blank line.
        for _ in range(1000):
            if _is_blank(conn.readline()):
                self.done = True
                return
        raise ProtocolError('too many trailer lines in the answer')

    def readinto(self, b):
        if self.done:
            return 0
        mode = self.mode
        if mode == _CHUNKED and not self.left:
            self._next_chunk()
            if self.done:
                return 0
        view = memoryview(b).cast('B')
        if mode != _EOF and len(view) > self.left:
            view = view[:self.left]
        n = self.conn.readinto(view)
        if not n:
            if mode == _EOF:
                self.done = True
                return 0
            raise ProtocolError('connection closed before the end of the answer body')
        if mode != _EOF:
            self.left -= n
            if mode == _LENGTH and not self.left:
                self.done = True
        return n

    def read_all(self):
        conn = self.conn
        parts = []
        if self.mode == _LENGTH:
            parts.append(conn.read_exact(self.left))
        elif self.mode == _CHUNKED:
            while True:
                if not self.left:
                    self._next_chunk()
                    if self.done:
                        break
                parts.append(conn.read_exact(self.left))
                self.left = 0
        elif self.mode == _EOF:
            if conn.buf:
                parts.append(conn.buf)
                conn.buf = b''
            while True:
                data = conn.sock.recv(_RECV_SIZE)
                if not data:
                    break
                parts.append(data)
        self.done = True
        return b''.join(parts)


class _ResponseStream(io.RawIOBase):
    """A streamed answer body; returns its connection to the pool once the
    body was read to the end, and closes it if abandoned part way or on an
    error."""

    def __init__(self, body, endpoint, keep):
        super().__init__()
        self._body = body
        self._endpoint = endpoint
        self._keep = keep
        self._done = False
        if body.done:
            self._finish()

    def readable(self):
        return True

    def readinto(self, b):
        if self._done:
            return 0
        try:
            n = self._body.readinto(b)
        except BaseException:
            self._finish()
            raise
        if self._body.done:
            self._finish()
        return n

    def _finish(self):
        if self._done:
            return
        self._done = True
        conn = self._body.conn
        if self._body.done and self._keep:
            self._endpoint.release(conn)
        else:
            conn.close()

    def close(self):
        if not self.closed:
            self._finish()
        super().close()


def _send_chunked(sock, chunks):
    """Send an iterable of bytes with chunked transfer coding."""
    for chunk in chunks:
        if chunk:
            sock.sendall(b'%X\r\n' % len(chunk) + chunk + b'\r\n')
    sock.sendall(b'0\r\n\r\n')


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
        try:
            host = self.netloc.encode('ascii').decode('ascii')
        except UnicodeEncodeError:  # an internationalized host name
            host = self.netloc.encode('idna').decode('ascii')
        self.host_line = 'Host: %s\r\n' % host
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
        self._idle = []  # [_Connection], the most recently used last
        self._aidle = {}  # {event loop: [(reader, writer, last_used)]}
        self._pid = _PID[0]

    def __repr__(self):
        return '<Endpoint %s>' % self.url

    def note_connect(self):
        with self._lock:
            self.connect_attempts += 1

    def _check_fork(self):
        # A forked child must not share its parent's sockets: close its
        # copies and start with empty pools.
        if self._pid != _PID[0]:
            self._pid = _PID[0]
            idle, self._idle = self._idle, []
            self._aidle = {}
            for conn in idle:
                conn.close()

    # -- blocking connections ------------------------------------------------

    def _checkout(self):
        """A pooled connection that is not older than ``idle_ttl``, or None."""
        if self._pid != _PID[0]:
            self._check_fork()
        idle = self._idle
        if not idle:
            return None
        now = time.monotonic()
        while True:
            try:
                conn = idle.pop()
            except IndexError:
                return None
            if now - conn.used <= self.idle_ttl:
                return conn
            conn.close()

    def release(self, conn):
        """Put a connection whose last answer was read completely back in
        the pool (or close it if the pool is full)."""
        if self._pid == _PID[0] and len(self._idle) < self.max_idle:
            conn.used = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()

    def _connect(self):
        self.note_connect()
        sock = socket.create_connection((self.host, self.port), self.connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.scheme == 'https':
                # The TLS handshake runs under the connect timeout.
                sock = self.ssl_context.wrap_socket(sock, server_hostname=self.host)
            sock.settimeout(self.socket_timeout)
        except BaseException:
            sock.close()
            raise
        return _Connection(sock)

    def exchange(self, req, fixed):
        """Send one request and read its answer (blocking). ``fixed`` is the
        client's preformatted header lines."""
        method = req.method
        body = req.body
        target = self.base + req.path
        if req.query:
            target += '?' + req.query
        fixed = self.host_line + fixed
        streamed = body is not None and not isinstance(body, (bytes, bytearray))
        if streamed:
            data = _encode_head(method, target, fixed, req.headers, -1)
        elif body is not None and len(body) > COALESCE_MAX:
            data = _encode_head(method, target, fixed, req.headers, len(body))
        else:
            data = _request_bytes(method, target, fixed, req.headers, body)
            body = None
        for stale_try in (0, 1):
            # A streamed body cannot be sent twice: give it a fresh connection.
            conn = None if streamed else self._checkout()
            reused = conn is not None
            try:
                if conn is None:
                    conn = self._connect()
                sock = conn.sock
                sock.sendall(data)
                if body is not None:
                    if streamed:
                        _send_chunked(sock, body)
                    else:
                        sock.sendall(body)
                return self._read_response(conn, req)
            except socket.timeout as exc:
                if conn is not None:
                    conn.close()
                raise _Unreachable(exc, timeout=True) from exc
            except OSError as exc:
                if conn is not None:
                    conn.close()
                if reused and stale_try == 0 and isinstance(exc, _STALE_ERRORS):
                    continue
                raise _Unreachable(exc) from exc
            except BaseException:
                # Interrupted part way: the connection is in an unknown state.
                if conn is not None:
                    conn.close()
                raise
        raise AssertionError('unreachable')  # pragma: no cover

    def _read_response(self, conn, req):
        version, status, headers = conn.read_head()
        mode, length, keep = _framing(req.method, status, version, headers)
        url = self.url + req.path
        if req.stream and status == 200:
            stream = io.BufferedReader(_ResponseStream(_Body(conn, mode, length), self, keep),
                                       1 << 16)
            return Response(status, headers, None, stream, url)
        if mode == _LENGTH:
            body = conn.read_exact(length)
        elif mode == _NONE:
            body = b''
        else:
            body = _Body(conn, mode, length).read_all()
        if keep:
            self.release(conn)
        else:
            conn.close()
        return Response(status, headers, body, None, url)

    # -- asyncio connections -------------------------------------------------

    def _apool(self, loop):
        pool = self._aidle.get(loop)
        if pool is None:
            with self._lock:
                # Drop the pools of closed loops.
                for other in [l for l in self._aidle if l.is_closed()]:
                    for _, writer, _ in self._aidle.pop(other):
                        _discard_writer(writer)
                pool = self._aidle.setdefault(loop, [])
        return pool

    def _aacquire(self, loop):
        if self._pid != _PID[0]:
            self._check_fork()
        pool = self._apool(loop)
        if not pool:
            return None
        now = time.monotonic()
        while True:
            try:
                reader, writer, used = pool.pop()
            except IndexError:
                return None
            if now - used <= self.idle_ttl and not writer.is_closing():
                return reader, writer
            _discard_writer(writer)

    def _arelease(self, loop, reader, writer):
        pool = self._apool(loop)
        if self._pid == _PID[0] and len(pool) < self.max_idle and not loop.is_closed():
            pool.append((reader, writer, time.monotonic()))
        else:
            _discard_writer(writer)

    def aclose_loop(self, loop):
        """Close the pooled connections of one event loop."""
        with self._lock:
            pool = self._aidle.pop(loop, [])
        for _, writer, _ in pool:
            _discard_writer(writer)

    async def _aconnect(self):
        self.note_connect()
        kwargs = {}
        if self.scheme == 'https':
            kwargs = {'ssl': self.ssl_context, 'server_hostname': self.host}
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port, limit=_MAX_HEAD, **kwargs),
            self.connect_timeout)
        sock = writer.get_extra_info('socket')
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:  # pragma: no cover
                pass
        return reader, writer

    async def aexchange(self, req, fixed):
        """Send one request (with a bytes body or none) and read its answer
        over asyncio streams."""
        loop = asyncio.get_running_loop()
        target = self.base + req.path
        if req.query:
            target += '?' + req.query
        data = _request_bytes(req.method, target, self.host_line + fixed, req.headers,
                              req.body)
        timeout = self.socket_timeout
        for stale_try in (0, 1):
            found = self._aacquire(loop)
            reused = found is not None
            writer = None
            try:
                if found is None:
                    reader, writer = await self._aconnect()
                else:
                    reader, writer = found
                if _async_timeout is not None:
                    # One deadline for the exchange, pushed back as a large
                    # body makes progress.
                    async with _async_timeout(timeout) as deadline:
                        writer.write(data)
                        await writer.drain()
                        status, headers, body, keep = await _aread_response(
                            reader, req.method, timeout, deadline)
                else:  # pragma: no cover - Python < 3.11
                    writer.write(data)
                    await asyncio.wait_for(writer.drain(), timeout)
                    status, headers, body, keep = await _aread_response(
                        reader, req.method, timeout, None)
            except asyncio.TimeoutError as exc:
                if writer is not None:
                    _discard_writer(writer)
                raise _Unreachable(exc, timeout=True) from exc
            except OSError as exc:
                if writer is not None:
                    _discard_writer(writer)
                if reused and stale_try == 0 and isinstance(exc, _STALE_ERRORS):
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
            return Response(status, headers, body, None, self.url + req.path)
        raise AssertionError('unreachable')  # pragma: no cover

    def close(self):
        """Close every pooled blocking connection."""
        idle = self._idle
        while True:
            try:
                conn = idle.pop()
            except IndexError:
                return
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


# -- asyncio answers -------------------------------------------------------------

async def _aread_head(reader):
    """The lines of an answer head before its blank line (bytes)."""
    lines = []
    size = 0
    while True:
        try:
            line = await reader.readline()
        except ValueError as exc:  # a line longer than the stream's limit
            raise ProtocolError('answer head line too long') from exc
        if not line.endswith(b'\n'):
            if not lines and not line:
                raise _Disconnected('server closed the connection without an answer')
            raise ProtocolError('connection closed in the middle of an answer head')
        if _is_blank(line):
            return b''.join(lines)
        lines.append(line)
        size += len(line)
        if size > _MAX_HEAD:
            raise ProtocolError('answer head longer than %d bytes' % _MAX_HEAD)


async def _aread_response(reader, method, timeout, deadline):
    """Read one answer: ``(status, headers, body, keep_alive)``.

    With ``deadline`` (an :func:`asyncio.timeout` around the exchange) the
    reads are awaited directly and each piece of a large body pushes the
    deadline back by ``timeout``; without it (Python < 3.11) each read is
    wrapped in :func:`asyncio.wait_for`.
    """
    loop = asyncio.get_running_loop()

    def within(awaitable):
        return awaitable if deadline is not None else asyncio.wait_for(awaitable, timeout)

    async def exactly(n):
        try:
            if n <= _APIECE:
                return await within(reader.readexactly(n))
            parts = []
            while n > 0:
                piece = await within(reader.readexactly(min(n, _APIECE)))
                parts.append(piece)
                n -= len(piece)
                if deadline is not None:
                    deadline.reschedule(loop.time() + timeout)
            return b''.join(parts)
        except asyncio.IncompleteReadError as exc:
            raise ProtocolError('connection closed before the end of the answer body') from exc

    async def line():
        try:
            got = await within(reader.readline())
        except ValueError as exc:
            raise ProtocolError('line too long in the answer body') from exc
        if not got.endswith(b'\n'):
            raise ProtocolError('connection closed in the middle of a chunked body')
        return got

    while True:
        version, status, headers = _parse_head(await within(_aread_head(reader)))
        if status >= 200:
            break
        if status == 101:
            raise ProtocolError('unexpected 101 Switching Protocols answer')
    mode, length, keep = _framing(method, status, version, headers)
    if mode == _LENGTH:
        body = await exactly(length)
    elif mode == _NONE:
        body = b''
    elif mode == _CHUNKED:
        chunks = []
        while True:
            size = _chunk_size(await line())
            if size == 0:
                for _ in range(1000):
                    if _is_blank(await line()):
                        break
                else:
                    raise ProtocolError('too many trailer lines in the answer')
                break
            chunks.append(await exactly(size))
            if not _is_blank(await line()):
                raise ProtocolError('chunk data not followed by CRLF in the answer')
        body = b''.join(chunks)
    else:
        body = await within(reader.read())
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
        self._fixed = None  # the header lines every request carries
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

    def _fixed_headers(self):
        """The header lines of every request (after ``Host``), formatted
        once per token."""
        fixed = self._fixed
        if fixed is None:
            token = self._token
            fixed = 'User-Agent: %s\r\nAccept-Encoding: identity\r\n' % USER_AGENT
            if token:
                if '\r' in token or '\n' in token:
                    raise ValueError('invalid token: it contains a line break')
                fixed += 'Authorization: Bearer %s\r\n' % token
            self._fixed = fixed
        return fixed

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
        self._fixed = None
        return True

    def _delay(self, attempt):
        base = self.retry_backoff * (2 ** (attempt - 1))
        return base + random.uniform(0, base / 2)

    # -- blocking --------------------------------------------------------------

    def send(self, req):
        """Send a request with retries and the circuit breaker."""
        ep = self.endpoints[req.shard]
        breaker = ep.breaker
        if not breaker.allow():
            raise _circuit_open(ep)
        try:
            resp = self._send_attempts(ep, req)
        except _Unreachable as exc:
            raise _tripped(ep, exc) from exc.cause
        except BaseException:
            breaker.abandon()
            raise
        breaker.success()
        return resp

    def _send_attempts(self, ep, req):
        replayable = req.body is None or isinstance(req.body, (bytes, bytearray))
        attempts = 1 + (self.retries if req.idempotent and replayable else 0)
        token_retry = True
        attempt = 0
        while True:
            try:
                resp = ep.exchange(req, self._fixed or self._fixed_headers())
            except _Unreachable as exc:
                attempt += 1
                if exc.timeout or attempt >= attempts:
                    raise
                time.sleep(self._delay(attempt))
                continue
            status = resp.status
            if status == 401 and token_retry and replayable:
                token_retry = False
                if self._reload_token():
                    continue
            if status == 503 and req.retry_unavailable and attempt + 1 < attempts:
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
        breaker = ep.breaker
        if not breaker.allow():
            raise _circuit_open(ep)
        try:
            resp = await self._asend_attempts(ep, req)
        except _Unreachable as exc:
            raise _tripped(ep, exc) from exc.cause
        except BaseException:
            breaker.abandon()
            raise
        breaker.success()
        return resp

    async def _asend_attempts(self, ep, req):
        attempts = 1 + (self.retries if req.idempotent else 0)
        token_retry = True
        attempt = 0
        while True:
            try:
                resp = await ep.aexchange(req, self._fixed or self._fixed_headers())
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


def _circuit_open(ep):
    return ServerUnavailable(
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
