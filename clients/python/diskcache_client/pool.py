"""Connections to one cacheserver: blocking and asyncio keep-alive pools.

An :class:`Endpoint` is one server: its URL, a pool of idle blocking
connections, one pool of idle asyncio streams per event loop, and its
:class:`~diskcache_client.breaker.CircuitBreaker` (which the
:class:`~diskcache_client.transport.Client` consults). :meth:`Endpoint.exchange`
and :meth:`Endpoint.aexchange` send one request and read its answer; a
failure below HTTP raises :class:`Unreachable` for the client to retry or
trip the breaker on.

* A request body up to :data:`COALESCE_MAX` bytes goes in the same
  ``sendall`` as the head; a streamed body (an iterable of bytes) goes
  chunked on a fresh connection, since it cannot be sent twice.
* A pooled keep-alive connection that the server closed while it was idle
  (closed or reset before any byte of the answer) is replaced by a fresh one
  once, for any request: the server did not see the request.
* Streamed answers (``get(read=True)``) hand the connection to a file object
  that reads the body off it and returns the connection to the pool once
  the body was read to the end.
* With ``frames`` (the default), the blocking path sends requests with a
  body up to :data:`~diskcache_client.frames.MAX_BODY` (and no streamed
  answer) as frames on connections upgraded with ``GET /v1/frames``
  (:mod:`diskcache_client.frames`), kept in a pool of their own. A server
  that answers the upgrade with anything but 101, 401 or 503 (404: it
  predates frames) gets plain HTTP from then on; 401 and 503 send that call
  over HTTP. The asyncio path does the same with streams pooled per event loop.
* On Linux a plain-TCP frames connection leaves its socket timeout to the
  kernel (``SO_RCVTIMEO``/``SO_SNDTIMEO`` on a blocking socket), so that each
  send and receive is one system call instead of Python's ``poll`` then the
  call: about 4 µs less CPU per operation. A receive or send that times out
  is reported as :class:`socket.timeout`, as with Python's timeout.

Thread safety: the pools of idle connections are lists whose ``pop`` and
``append`` are atomic, so checking a connection out or in takes no lock; a
connection belongs to one call (or one streamed answer) at a time. A forked
child starts with empty pools.
"""

import asyncio
import io
import os
import socket
import ssl
import struct
import sys
import threading
import time
from urllib.parse import urlsplit

from . import frames as _frames
from .breaker import CircuitBreaker
from .http11 import (LENGTH, MAX_HEAD, NONE, Body, Connection, Disconnected, Response,
                     aread_response, encode_head, framing, request_bytes, send_chunked)

# Request bodies up to this size are sent in the same sendall as the head.
COALESCE_MAX = 1 << 16

# Whether frames connections take the kernel's socket timeouts (above).
_KERNEL_TIMEOUTS = sys.platform.startswith('linux')

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


class Unreachable(Exception):
    """A request failed below HTTP (connect, send or receive), or its
    answer was not HTTP."""

    def __init__(self, cause, timeout=False, sent=True):
        super().__init__(str(cause) or type(cause).__name__)
        self.cause = cause
        self.timeout = timeout
        # False when no connection could be made: the server never saw the
        # request, which can safely go elsewhere.
        self.sent = sent


# Errors of a reused keep-alive connection that the server closed while it
# was idle: the request never reached the server, so it can go again once.
_STALE_ERRORS = (
    Disconnected,
    ConnectionResetError,
    ConnectionAbortedError,
    BrokenPipeError,
)


class _BodyError(Exception):
    """A streamed request body (the caller's file) failed to read; its
    exception is the ``__cause__``."""


def _caller_chunks(body):
    """The chunks of a streamed body, an error reading them raised as
    :class:`_BodyError` so that it is told from the socket's."""
    it = iter(body)
    while True:
        try:
            chunk = next(it)
        except StopIteration:
            return
        except Exception as exc:
            raise _BodyError() from exc
        yield chunk


def _kernel_timeouts(sock, timeout):
    """Make ``sock`` blocking with the kernel enforcing ``timeout`` on each
    receive and send: a call that times out fails with EAGAIN
    (:class:`BlockingIOError`)."""
    usec = max(1, round(timeout * 1e6))  # {0, 0} would mean no timeout
    tv = struct.pack('@ll', usec // 1000000, usec % 1000000)
    sock.settimeout(None)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)


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


class Endpoint:
    """One cacheserver: its URL, connection pools and circuit breaker."""

    def __init__(self, url, *, socket_timeout, connect_timeout, cooldown,
                 max_idle, idle_ttl, ssl_context=None, frames=True, max_connections=100):
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
        self._idle = []  # [Connection], the most recently used last
        # Whether to try frames: None until a server answered the upgrade,
        # then True, or False for a server without frames (or frames=False).
        self.frames = None if frames else False
        self._fidle = []  # [FrameConnection], the most recently used last
        # {event loop: [(reader, writer, last_used, fixed)]}: asyncio frames
        self._afidle = {}
        self._upgrade_target = self.base + '/v1/frames'
        self._aidle = {}  # {event loop: [(reader, writer, last_used)]}
        # {event loop: asyncio.Semaphore}: at most max_connections exchanges
        # at once per event loop (0: no bound), so that a burst of
        # coroutines queues for connections instead of opening one each
        # (past the process's file limit, or the server's --max-connections).
        self.max_connections = max_connections
        self._asems = {}
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
            fidle, self._fidle = self._fidle, []
            self._aidle = {}
            self._afidle = {}
            self._asems = {}
            for conn in idle + fidle:
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
        try:
            sock = socket.create_connection((self.host, self.port), self.connect_timeout)
        except OSError as exc:
            raise Unreachable(exc, timeout=isinstance(exc, socket.timeout), sent=False) from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.scheme == 'https':
                # The TLS handshake runs under the connect timeout.
                sock = self.ssl_context.wrap_socket(sock, server_hostname=self.host)
            sock.settimeout(self.socket_timeout)
        except BaseException:
            sock.close()
            raise
        return Connection(sock)

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
        if (self.frames is not False and not streamed and not req.stream
                and (body is None or len(body) <= _frames.MAX_BODY)):
            resp = self._frame_exchange(req, target, fixed, body)
            if resp is not None:
                return resp
        if streamed:
            data = encode_head(method, target, fixed, req.headers, -1)
        elif body is not None and len(body) > COALESCE_MAX:
            data = encode_head(method, target, fixed, req.headers, len(body))
        else:
            data = request_bytes(method, target, fixed, req.headers, body)
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
                    try:
                        if streamed:
                            send_chunked(sock, _caller_chunks(body))
                        else:
                            sock.sendall(body)
                    except (BrokenPipeError, ConnectionResetError):
                        # The server may answer before it has read the
                        # body (401, 413) and close: read that answer,
                        # which says more than the broken pipe.
                        try:
                            return self._read_response(conn, req)
                        except OSError:
                            pass
                        raise
                return self._read_response(conn, req)
            except _BodyError as exc:
                # The caller's file failed to read (a cut upload): its own
                # error, not the server's, which must not trip the breaker.
                conn.close()
                raise exc.__cause__ from None
            except socket.timeout as exc:
                if conn is not None:
                    conn.close()
                raise Unreachable(exc, timeout=True) from exc
            except OSError as exc:
                if conn is not None:
                    conn.close()
                if reused and stale_try == 0 and isinstance(exc, _STALE_ERRORS):
                    continue
                raise Unreachable(exc) from exc
            except BaseException:
                # Interrupted part way: the connection is in an unknown state.
                if conn is not None:
                    conn.close()
                raise
        raise AssertionError('unreachable')  # pragma: no cover

    # -- frames ------------------------------------------------------------

    def _fcheckout(self, fixed):
        """A pooled frame connection upgraded with ``fixed``, or None."""
        idle = self._fidle
        if not idle:
            return None
        now = time.monotonic()
        while True:
            try:
                conn = idle.pop()
            except IndexError:
                return None
            if now - conn.used <= self.idle_ttl and conn.fixed == fixed:
                return conn
            conn.close()

    def _frelease(self, conn):
        if self._pid == _PID[0] and len(self._fidle) < self.max_idle:
            conn.used = time.monotonic()
            self._fidle.append(conn)
        else:
            conn.close()

    def _fconnect(self, fixed):
        """A new connection upgraded to frames, or None when the server
        refused the upgrade (remembered when it has no frames)."""
        conn = self._connect()
        try:
            conn.sock.sendall(_frames.upgrade_bytes(self._upgrade_target, fixed))
            status = _frames.read_upgrade(conn)
        except BaseException:
            conn.close()
            raise
        if status == 101:
            self.frames = True
            if _KERNEL_TIMEOUTS and self.socket_timeout and self.scheme == 'http':
                _kernel_timeouts(conn.sock, self.socket_timeout)
            return _frames.FrameConnection(conn.sock, fixed)
        conn.close()
        if status not in (401, 408, 503):
            # A server without frames (404, or an answer that is not the
            # upgrade); 401, 503 and 408 (over --max-connections) are this
            # call's to answer over HTTP.
            self.frames = False
        return None

    def _frame_exchange(self, req, target, fixed, body):
        """Send one request as a frame and read its answer; None when the
        server refused the upgrade (send it over HTTP)."""
        if self._pid != _PID[0]:
            self._check_fork()
        data = _frames.request_frame(req.method, target, req.headers, body)
        for stale_try in (0, 1):
            conn = self._fcheckout(fixed)
            reused = conn is not None
            try:
                if conn is None:
                    conn = self._fconnect(fixed)
                    if conn is None:
                        return None
                conn.sock.sendall(data)
                status, headers, rbody = _frames.read_frame(conn)
            except (socket.timeout, BlockingIOError) as exc:
                if conn is not None:
                    conn.close()
                if isinstance(exc, BlockingIOError):
                    # The kernel's timeout (_kernel_timeouts) ran out.
                    exc = socket.timeout('timed out')
                raise Unreachable(exc, timeout=True) from exc
            except OSError as exc:
                if conn is not None:
                    conn.close()
                if reused and stale_try == 0 and isinstance(exc, _STALE_ERRORS):
                    continue
                raise Unreachable(exc) from exc
            except BaseException:
                if conn is not None:
                    conn.close()
                raise
            self._frelease(conn)
            return Response(status, headers, rbody, None, self.url + req.path)
        raise AssertionError('unreachable')  # pragma: no cover

    def _read_response(self, conn, req):
        version, status, headers = conn.read_head()
        mode, length, keep = framing(req.method, status, version, headers)
        url = self.url + req.path
        if req.stream and status == 200:
            stream = io.BufferedReader(_ResponseStream(Body(conn, mode, length), self, keep),
                                       1 << 16)
            return Response(status, headers, None, stream, url)
        if mode == LENGTH:
            body = conn.read_exact(length)
        elif mode == NONE:
            body = b''
        else:
            body = Body(conn, mode, length).read_all()
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
                for other in [l for l in self._afidle if l.is_closed()]:
                    for _, writer, _, _ in self._afidle.pop(other):
                        _discard_writer(writer)
                for other in [l for l in self._asems if l.is_closed()]:
                    del self._asems[other]
                pool = self._aidle.setdefault(loop, [])
        return pool

    def _asem(self, loop):
        """The semaphore bounding this event loop's exchanges, or None."""
        if self.max_connections <= 0:
            return None
        sem = self._asems.get(loop)
        if sem is None:
            self._apool(loop)  # drops the semaphores of closed loops
            with self._lock:
                sem = self._asems.setdefault(loop, asyncio.Semaphore(self.max_connections))
        return sem

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
            fpool = self._afidle.pop(loop, [])
        for entry in pool + fpool:
            _discard_writer(entry[1])

    async def _aconnect(self):
        self.note_connect()
        kwargs = {}
        if self.scheme == 'https':
            kwargs = {'ssl': self.ssl_context, 'server_hostname': self.host}
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, limit=MAX_HEAD, **kwargs),
                self.connect_timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            raise Unreachable(exc, timeout=isinstance(exc, (socket.timeout, asyncio.TimeoutError)),
                              sent=False) from exc
        sock = writer.get_extra_info('socket')
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:  # pragma: no cover
                pass
        return reader, writer

    async def aexchange(self, req, fixed):
        """Send one request (with a bytes body or none) and read its answer
        over asyncio streams, on one of at most max_connections connections
        of the running event loop."""
        loop = asyncio.get_running_loop()
        if self._pid != _PID[0]:
            self._check_fork()
        sem = self._asem(loop)
        if sem is None:
            return await self._aexchange(loop, req, fixed)
        async with sem:
            return await self._aexchange(loop, req, fixed)

    async def _aexchange(self, loop, req, fixed):
        target = self.base + req.path
        if req.query:
            target += '?' + req.query
        if self.frames is not False and (req.body is None or len(req.body) <= _frames.MAX_BODY):
            resp = await self._aframe_exchange(loop, req, target, self.host_line + fixed)
            if resp is not None:
                return resp
        data = request_bytes(req.method, target, self.host_line + fixed, req.headers,
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
                        status, headers, body, keep = await aread_response(
                            reader, req.method, timeout, deadline)
                else:  # pragma: no cover - Python < 3.11
                    writer.write(data)
                    await asyncio.wait_for(writer.drain(), timeout)
                    status, headers, body, keep = await aread_response(
                        reader, req.method, timeout, None)
            except asyncio.TimeoutError as exc:
                if writer is not None:
                    _discard_writer(writer)
                raise Unreachable(exc, timeout=True) from exc
            except OSError as exc:
                if writer is not None:
                    _discard_writer(writer)
                if reused and stale_try == 0 and isinstance(exc, _STALE_ERRORS):
                    continue
                raise Unreachable(exc) from exc
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

    def _afacquire(self, loop, fixed):
        if self._pid != _PID[0]:
            self._check_fork()
        pool = self._afidle.get(loop)
        if not pool:
            return None
        now = time.monotonic()
        while True:
            try:
                reader, writer, used, was = pool.pop()
            except IndexError:
                return None
            if now - used <= self.idle_ttl and was == fixed and not writer.is_closing():
                return reader, writer
            _discard_writer(writer)

    def _afrelease(self, loop, reader, writer, fixed):
        self._apool(loop)  # drops the pools of closed loops
        pool = self._afidle.get(loop)
        if pool is None:
            with self._lock:
                pool = self._afidle.setdefault(loop, [])
        if self._pid == _PID[0] and len(pool) < self.max_idle and not loop.is_closed():
            pool.append((reader, writer, time.monotonic(), fixed))
        else:
            _discard_writer(writer)

    async def _aframe_exchange(self, loop, req, target, fixed):
        """Send one request as a frame over asyncio streams and read its
        answer; None when the server refused the upgrade."""
        data = _frames.request_frame(req.method, target, req.headers, req.body)
        timeout = self.socket_timeout
        for stale_try in (0, 1):
            found = self._afacquire(loop, fixed)
            reused = found is not None
            writer = None
            try:
                if found is None:
                    reader, writer = await self._aconnect()
                else:
                    reader, writer = found
                if _async_timeout is not None:
                    async with _async_timeout(timeout) as deadline:
                        answer = await self._aframe_roundtrip(
                            reader, writer, fixed, data, found is None, lambda a: a,
                            lambda: deadline.reschedule(loop.time() + timeout))
                else:  # pragma: no cover - Python < 3.11
                    answer = await self._aframe_roundtrip(
                        reader, writer, fixed, data, found is None,
                        lambda a: asyncio.wait_for(a, timeout), lambda: None)
            except asyncio.TimeoutError as exc:
                if writer is not None:
                    _discard_writer(writer)
                raise Unreachable(exc, timeout=True) from exc
            except OSError as exc:
                if writer is not None:
                    _discard_writer(writer)
                if reused and stale_try == 0 and isinstance(exc, _STALE_ERRORS):
                    continue
                raise Unreachable(exc) from exc
            except BaseException:
                if writer is not None:
                    _discard_writer(writer)
                raise
            if answer is None:
                _discard_writer(writer)
                return None
            self._afrelease(loop, reader, writer, fixed)
            status, headers, body = answer
            return Response(status, headers, body, None, self.url + req.path)
        raise AssertionError('unreachable')  # pragma: no cover

    async def _aframe_roundtrip(self, reader, writer, fixed, data, fresh, within, progress):
        """Upgrade a fresh connection (None if refused), then send the frame
        and read its answer."""
        if fresh:
            writer.write(_frames.upgrade_bytes(self._upgrade_target, fixed))
            await within(writer.drain())
            status = await _frames.aread_upgrade(reader, within)
            if status != 101:
                if status not in (401, 408, 503):
                    self.frames = False
                return None
            self.frames = True
        writer.write(data)
        await within(writer.drain())
        return await _frames.aread_frame(reader, within, progress)

    def close(self):
        """Close every pooled blocking connection."""
        for idle in (self._idle, self._fidle):
            while True:
                try:
                    conn = idle.pop()
                except IndexError:
                    break
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
