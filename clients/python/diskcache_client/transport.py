"""The client of one cacheserver or a list of shard servers: routing,
retries, circuit breaker, and the drivers of operations.

Operations (see :mod:`diskcache_client.ops`) are written as generators that
yield :class:`Request` objects (or lists of them, one per shard) and receive
:class:`Response` objects, so the same code runs over blocking sockets
(:meth:`Client.run`) and over asyncio streams (:meth:`Client.arun`).

The work is split by job:

* :mod:`diskcache_client.http11` -- HTTP/1.1 framing (requests to bytes,
  bytes to answers) over sockets and asyncio streams;
* :mod:`diskcache_client.pool` -- one server's keep-alive connection pools
  (blocking and per event loop) and the exchange of one request;
* :mod:`diskcache_client.breaker` -- the circuit breaker;
* :mod:`diskcache_client.routing` -- which shard server owns a key;
* this module -- :class:`Client`, which ties them together.

Failure handling, per server (endpoint):

* Idempotent requests (GET, HEAD, PUT, DELETE and the batch/bulk POSTs) are
  retried up to ``retries`` times, with exponential backoff, after a refused
  or reset connection, a malformed answer and after a 503 answer. ``incr``,
  ``decr``, ``add`` and ``pop`` are never retried.
* A request that fails at the connection level (after its retries) or times
  out opens the server's circuit breaker (:mod:`diskcache_client.breaker`):
  calls fail at once with
  :class:`~diskcache_client.errors.ServerUnavailable` for ``cooldown``
  seconds, then one call probes. A timeout is never retried: a dead server
  costs one timeout, not one per call.
* A 401 answer makes the client re-read ``token_file`` once and retry if the
  token changed.
"""

import asyncio
import atexit
import collections.abc
import logging
import random
import threading
import time

from .breaker import CircuitBreaker
from .errors import ServerUnavailable
from .http11 import ProtocolError, Request, Response
from .pool import COALESCE_MAX, Endpoint, Unreachable
from .routing import jump_hash, key_hash, owner

# The names this module has always offered; the framing, pool, breaker and
# routing ones now live in their own modules.
__all__ = [
    'COALESCE_MAX', 'CircuitBreaker', 'Client', 'Endpoint', 'ProtocolError', 'Request',
    'Response', 'USER_AGENT', 'jump_hash', 'key_hash', 'shared_client',
]

log = logging.getLogger('diskcache_client')

USER_AGENT = 'diskcache-client-python/0.1'


class Client:
    """Talks to one cacheserver, or to several shard servers.

    With several URLs each key goes to ``jump_hash(key_hash(routing), n)``
    where ``routing`` is the key's routing bytes
    (:func:`diskcache_client.routing.routing_bytes`);
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
        """The index of the endpoint that owns a key's routing bytes (or a
        collection name's UTF-8 bytes); see :mod:`diskcache_client.routing`."""
        return owner(raw, len(self.endpoints))

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
        except Unreachable as exc:
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
            except Unreachable as exc:
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
        except Unreachable as exc:
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
            except Unreachable as exc:
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

    async def arun(self, op, offload=None):
        """Drive an operation generator to its result over asyncio.

        The I/O runs on the event loop. The operation's own steps -- making
        the next request (which may pickle a value) and reading an answer
        (which may unpickle one) -- run on the loop too, unless ``offload``
        is given: an async callable ``offload(step, resp)`` that must return
        ``step(resp)``, run wherever it chooses (a worker thread, for work
        that must not block the loop or that the loop forbids). ``resp`` is
        None for the first step.
        """
        if offload is not None:
            return await self._arun_offloaded(op, offload)
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

    async def _arun_offloaded(self, op, offload):
        def step(resp):
            # StopIteration cannot cross a thread's future: return it.
            try:
                return False, op.send(resp)
            except StopIteration as stop:
                return True, stop.value

        stepping = False
        try:
            resp = None
            while True:
                stepping = True
                done, req = await offload(step, resp)
                stepping = False
                if done:
                    return req
                if isinstance(req, list):
                    resp = list(await asyncio.gather(*(self.asend(r) for r in req)))
                else:
                    resp = await self.asend(req)
        finally:
            # A step cancelled while it runs in a thread still owns the
            # generator; it ends on its own.
            if not stepping:
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
