"""HTTP/1.1 framing over blocking sockets and asyncio streams.

HTTP/1.1 is spoken directly on the sockets (no ``http.client``), because the
client's CPU per call is most of a cache call's cost:

* A request is built as one bytes object -- request line, headers (the fixed
  ``Host``, ``User-Agent``, ``Authorization`` lines are formatted once) and,
  up to :data:`~diskcache_client.pool.COALESCE_MAX` bytes, the body -- and
  sent with one ``sendall``. A streamed body (``read=True`` uploads: an
  iterable of bytes) goes with ``Transfer-Encoding: chunked``.
* Each connection keeps its own receive buffer: a typical answer arrives in
  one ``recv``, its head is split and parsed in one pass (status line,
  headers into a dict with lower-cased names) and its body sliced off the
  same buffer. ``Content-Length``, ``chunked`` and read-until-close bodies
  are understood; interim 1xx answers are skipped; ``Connection: close``
  (and HTTP/1.0 without keep-alive) closes the connection after the answer.
  An answer that is not HTTP/1.x raises :class:`ProtocolError`.

This module knows nothing of pools, retries or servers: it turns requests
into bytes and bytes into answers.
"""

import asyncio
import types

# Bytes asked of recv() at a time.
_RECV_SIZE = 1 << 16
# Longest answer head (status line and headers) accepted. Headers can carry
# a percent-encoded key (Diskcache-Key), up to about 200 KB.
MAX_HEAD = 1 << 20
# Longest chunk-size or trailer line accepted.
_MAX_LINE = 1 << 16
# Body bytes read per step on the asyncio path (each step restarts the
# socket timeout).
_APIECE = 1 << 18

# Methods whose request carries Content-Length even without a body.
_BODY_METHODS = frozenset(['POST', 'PUT', 'PATCH'])

_NO_HEADERS = types.MappingProxyType({})

# How an answer's body is delimited.
NONE, LENGTH, CHUNKED, EOF = range(4)


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
        self.path = path  # escaped, e.g. /v1/keys/:1:foo
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


class ProtocolError(ConnectionError):
    """The server's answer is not well-formed HTTP/1.x (a malformed status
    line, header, chunk size or Content-Length; an answer head that is too
    long), or the connection closed part way through an answer."""


class Disconnected(ConnectionError):
    """The server closed the connection before any byte of an answer."""


# -- HTTP/1.1 codec (shared by the blocking and the asyncio path) ------------

def encode_head(method, target, fixed, headers, length):
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


def request_bytes(method, target, fixed, headers, body):
    """A whole request with a bytes body (or none) as one bytes object."""
    if body is None:
        return encode_head(method, target, fixed, headers,
                            0 if method in _BODY_METHODS else None)
    return encode_head(method, target, fixed, headers, len(body)) + body


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


def framing(method, status, version, headers):
    """``(mode, length, keep_alive)`` of an answer: how its body is
    delimited and whether the connection can carry another request."""
    connection = headers.get('connection')
    if connection is None:
        keep = version == 11
    else:
        tokens = [t.strip() for t in connection.lower().split(',')]
        keep = 'keep-alive' in tokens if version == 10 else 'close' not in tokens
    if method == 'HEAD' or status == 204 or status == 304:
        return NONE, 0, keep
    coding = headers.get('transfer-encoding')
    if coding is not None:
        if coding.lower().rpartition(',')[2].strip() == 'chunked':
            return CHUNKED, 0, keep
        return EOF, 0, False
    length = headers.get('content-length')
    if length is None:
        return EOF, 0, False
    if not (length.isdigit() and length.isascii()):
        # Repeated identical values ("5, 5") are one length.
        values = {v.strip() for v in length.split(',')}
        length = values.pop() if len(values) == 1 else ''
        if not (length.isdigit() and length.isascii()):
            raise ProtocolError('malformed Content-Length in the answer: %r'
                                % headers['content-length'][:100])
    return LENGTH, int(length), keep


def _chunk_size(line):
    """The size in a chunk-size line (chunk extensions ignored)."""
    size = line.split(b';', 1)[0].strip()
    if not size or size.strip(b'0123456789abcdefABCDEF'):
        raise ProtocolError('malformed chunk size in the answer: %r' % line[:100])
    return int(size, 16)


def _is_blank(line):
    return line == b'\r\n' or line == b'\n'


# -- blocking sockets ----------------------------------------------------------

class Connection:
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
                if len(buf) > MAX_HEAD:
                    raise ProtocolError('answer head longer than %d bytes' % MAX_HEAD)
                data = self.sock.recv(_RECV_SIZE)
                if not data:
                    self.buf = b''
                    if buf:
                        raise ProtocolError('connection closed in the middle of an answer head')
                    raise Disconnected('server closed the connection without an answer')
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


class Body:
    """Reads one answer body off a connection: by Content-Length, chunked
    or up to the end of the connection. For streamed answers and the bodies
    that are not a plain Content-Length."""

    __slots__ = ('conn', 'mode', 'left', 'crlf', 'done')

    def __init__(self, conn, mode, length):
        self.conn = conn
        self.mode = mode
        self.left = length if mode == LENGTH else 0  # chunked: left in this chunk
        self.crlf = False  # chunked: a CRLF ends the current chunk's data
        self.done = mode == NONE or (mode == LENGTH and length == 0)

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
        if mode == CHUNKED and not self.left:
            self._next_chunk()
            if self.done:
                return 0
        view = memoryview(b).cast('B')
        if mode != EOF and len(view) > self.left:
            view = view[:self.left]
        n = self.conn.readinto(view)
        if not n:
            if mode == EOF:
                self.done = True
                return 0
            raise ProtocolError('connection closed before the end of the answer body')
        if mode != EOF:
            self.left -= n
            if mode == LENGTH and not self.left:
                self.done = True
        return n

    def read_all(self):
        conn = self.conn
        parts = []
        if self.mode == LENGTH:
            parts.append(conn.read_exact(self.left))
        elif self.mode == CHUNKED:
            while True:
                if not self.left:
                    self._next_chunk()
                    if self.done:
                        break
                parts.append(conn.read_exact(self.left))
                self.left = 0
        elif self.mode == EOF:
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



def send_chunked(sock, chunks):
    """Send an iterable of bytes with chunked transfer coding."""
    for chunk in chunks:
        if chunk:
            sock.sendall(b'%X\r\n' % len(chunk) + chunk + b'\r\n')
    sock.sendall(b'0\r\n\r\n')


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
                raise Disconnected('server closed the connection without an answer')
            raise ProtocolError('connection closed in the middle of an answer head')
        if _is_blank(line):
            return b''.join(lines)
        lines.append(line)
        size += len(line)
        if size > MAX_HEAD:
            raise ProtocolError('answer head longer than %d bytes' % MAX_HEAD)


async def aread_response(reader, method, timeout, deadline):
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
    mode, length, keep = framing(method, status, version, headers)
    if mode == LENGTH:
        body = await exactly(length)
    elif mode == NONE:
        body = b''
    elif mode == CHUNKED:
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
