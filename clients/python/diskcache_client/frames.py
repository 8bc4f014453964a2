"""The frames transport: a compact binary framing of the same requests on
a connection upgraded with ``GET /v1/frames`` (docs/api/frames.md).

A request frame is built with one ``struct.pack`` and a bytes join; an
answer frame is parsed off the connection's receive buffer (the usual
small answer arrives in one ``recv``). This module knows nothing of pools
or retries: :class:`~diskcache_client.pool.Endpoint` decides when to use it.
"""

import asyncio
import struct

from .http11 import Connection, Disconnected, ProtocolError

PROTOCOL = 'diskcache-frames/1'

# Request bodies up to this size go in frames (the server takes frames of
# up to 1 MiB); larger ones, and streamed bodies and answers, go over HTTP.
MAX_BODY = 1 << 16

_METHOD = {'GET': 1, 'HEAD': 2, 'PUT': 3, 'POST': 4, 'DELETE': 5, 'PATCH': 6}

_START = struct.Struct('>IBI')  # frame length, method, target length
_U32 = struct.Struct('>I')
_HEAD = struct.Struct('>IHB')  # head length, status, header count
_RECV_SIZE = 1 << 16
# Decoded answer heads by their bytes (status, header count, headers), shared
# by the answers that carry them: a Response's headers are read, never
# changed.
_HEADS = {}
_HEADS_MAX = 512
_MAX_HEAD = 1 << 21


class FrameConnection(Connection):
    """A connection upgraded to frames, with the header lines (token) it
    was upgraded with: a changed token needs a new connection."""

    __slots__ = ('fixed',)

    def __init__(self, sock, fixed):
        super().__init__(sock)
        self.fixed = fixed


def upgrade_bytes(target, fixed):
    """The upgrade request; ``fixed`` holds the Host, User-Agent and
    Authorization lines."""
    return ('GET %s HTTP/1.1\r\n%sConnection: Upgrade\r\nUpgrade: %s\r\n\r\n'
            % (target, fixed, PROTOCOL)).encode('latin-1')


def upgrade_status(head):
    """The status of an upgrade answer's head (bytes up to its blank line)."""
    line = head[:head.find(b'\r\n')]
    parts = line.split(b' ', 2)
    if len(parts) < 2 or not parts[0].startswith(b'HTTP/1.') or not parts[1].isdigit():
        raise ProtocolError('malformed status line in the upgrade answer: %r' % line[:200])
    return int(parts[1])


def read_upgrade(conn):
    """The status of the answer to the upgrade; on 101 ``conn.buf`` holds
    what followed its head (nothing, as the server waits for frames)."""
    buf = conn.buf or conn.sock.recv(_RECV_SIZE)
    while True:
        end = buf.find(b'\r\n\r\n')
        if end >= 0:
            break
        if len(buf) > _MAX_HEAD:
            raise ProtocolError('upgrade answer head too long')
        data = conn.sock.recv(_RECV_SIZE)
        if not data:
            raise Disconnected('server closed the connection without an answer')
        buf += data
    status = upgrade_status(buf[:end + 2])
    conn.buf = buf[end + 4:]
    return status


def request_frame(method, target, headers, body):
    """A request frame as bytes (``target`` escaped, ASCII)."""
    t = target.encode('latin-1')
    if headers:
        parts = [bytes((len(headers),))]
        for name, value in headers.items():
            n = name.encode('latin-1')
            v = str(value).encode('latin-1')
            parts.append(bytes((len(n),)) + n + _U32.pack(len(v)) + v)
        h = b''.join(parts)
    else:
        h = b'\x00'
    if body is None:
        body = b''
    return b''.join((_START.pack(5 + len(t) + len(h) + len(body), _METHOD[method], len(t)),
                     t, h, body))


def _headers(buf, pos, count, end):
    """The ``count`` headers of an answer head in ``buf[pos:end]``."""
    headers = {}
    try:
        for _ in range(count):
            n = buf[pos]
            name = buf[pos + 1:pos + 1 + n].decode('latin-1').lower()
            pos += 1 + n
            v = _U32.unpack_from(buf, pos)[0]
            pos += 4
            headers[name] = buf[pos:pos + v].decode('latin-1')
            pos += v
    except (IndexError, struct.error) as exc:
        raise ProtocolError('malformed answer frame head') from exc
    if pos != end:
        raise ProtocolError('malformed answer frame head')
    return headers


def _more(conn, buf, started=True):
    data = conn.sock.recv(_RECV_SIZE)
    if not data:
        conn.buf = b''
        if buf or started:
            raise ProtocolError('connection closed in the middle of an answer frame')
        raise Disconnected('server closed the connection without an answer')
    return buf + data


def read_frame(conn):
    """Read one answer frame: ``(status, headers, body)`` with header names
    lower-cased."""
    buf = conn.buf or _more(conn, b'', False)
    while len(buf) < 7:
        buf = _more(conn, buf)
    size, status, count = _HEAD.unpack_from(buf)
    if size > _MAX_HEAD:
        raise ProtocolError('answer frame head of %d bytes' % size)
    end = 4 + size
    while len(buf) < end + 4:
        buf = _more(conn, buf)
    # Answers of one kind repeat their heads: decode each one once.
    head = buf[4:end]  # status, header count and headers
    headers = _HEADS.get(head)
    if headers is None:
        headers = _headers(buf, 7, count, end)
        if len(_HEADS) >= _HEADS_MAX:
            _HEADS.clear()
        _HEADS[head] = headers
    pos = end
    parts = []
    while True:
        while len(buf) < pos + 4:
            buf = _more(conn, buf)
        n = _U32.unpack_from(buf, pos)[0]
        pos += 4
        if not n:
            break
        if len(buf) >= pos + n:
            parts.append(buf[pos:pos + n])
            pos += n
        else:
            conn.buf = buf[pos:]
            parts.append(conn.read_exact(n))
            buf, pos = conn.buf, 0
    conn.buf = buf[pos:]
    if not parts:
        return status, headers, b''
    return status, headers, parts[0] if len(parts) == 1 else b''.join(parts)


# -- asyncio -----------------------------------------------------------------------

async def aread_upgrade(reader, within):
    """The status of the answer to the upgrade, read off an asyncio stream."""
    try:
        head = await within(reader.readuntil(b'\r\n\r\n'))
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise Disconnected('server closed the connection without an answer') from exc
        raise ProtocolError('connection closed in the middle of the upgrade answer') from exc
    except asyncio.LimitOverrunError as exc:
        raise ProtocolError('upgrade answer head too long') from exc
    return upgrade_status(head)


async def aread_frame(reader, within, progress):
    """Read one answer frame off an asyncio stream: ``(status, headers,
    body)``. ``within`` bounds each read; ``progress()`` is called after
    each body chunk (to push a deadline back)."""
    try:
        head = await within(reader.readexactly(7))
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise Disconnected('server closed the connection without an answer') from exc
        raise ProtocolError('connection closed in the middle of an answer frame') from exc
    try:
        size, status, count = _HEAD.unpack(head)
        if size > _MAX_HEAD or size < 3:
            raise ProtocolError('answer frame head of %d bytes' % size)
        rest = head + (await within(reader.readexactly(size - 3)) if size > 3 else b'')
        headers = _headers(rest, 7, count, 4 + size)
        parts = []
        while True:
            n = _U32.unpack(await within(reader.readexactly(4)))[0]
            if not n:
                break
            parts.append(await within(reader.readexactly(n)))
            progress()
    except asyncio.IncompleteReadError as exc:
        raise ProtocolError('connection closed in the middle of an answer frame') from exc
    if not parts:
        return status, headers, b''
    return status, headers, parts[0] if len(parts) == 1 else b''.join(parts)
