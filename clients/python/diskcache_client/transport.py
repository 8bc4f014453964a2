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
* :mod:`diskcache_client.topology` -- the topology a client given one URL
  follows;
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
* ``token_file`` is read again when it changes (looked at once a second at
  most, before a request) and after a 401 answer, which is sent again if the
  token changed and its body can be (a streamed one cannot: the next request
  has the new token).
"""

import asyncio
import atexit
import collections.abc
import json
import logging
import os
import random
import threading
import time

from . import topology as _topology
from .breaker import CircuitBreaker
from .errors import CacheServerError, ServerUnavailable
from .http11 import ProtocolError, Request, Response
from .pool import COALESCE_MAX, Endpoint, Unreachable
from .routing import jump_hash, key_hash

# The names this module has always offered; the framing, pool, breaker and
# routing ones now live in their own modules.
__all__ = [
    'COALESCE_MAX', 'CircuitBreaker', 'Client', 'Endpoint', 'ProtocolError', 'Request',
    'Response', 'USER_AGENT', 'jump_hash', 'key_hash', 'shared_client',
]

log = logging.getLogger('diskcache_client')

USER_AGENT = 'diskcache-client-python/0.1'


class Client:
    """Talks to one cacheserver, a cache of several shards behind one URL,
    or a list of shard servers.

    One URL (a server, or the Service of a cache of several shards): once an
    answer carries a ``Diskcache-Epoch`` header (servers that belong to a
    topology send it), the client reads ``GET /v1/topology`` and from then
    on sends each key straight to the shard that owns it
    (:mod:`diskcache_client.routing`), a named cache, deque or index to the
    owner of its name, and everything else (clear, stats, ...) to the URL,
    whose server fans it out to every shard. It reads the topology again
    when an answer carries a newer epoch, or answers 409 ``wrong_epoch``
    with a newer topology (the request then goes again, through the URL). A
    shard that cannot be reached (refused, unresolvable, timed out, or its
    circuit breaker open) gets its requests sent through the URL instead,
    whose server forwards them. ``topology=False`` sends everything to the
    URL.

    Several URLs: each key goes to ``jump_hash(key_hash(routing), n)`` of
    them; operations on the whole cache (clear, expire, stats, ...) go to
    every server (with ``Diskcache-Scope: shard``, so that servers that
    would fan out answer for themselves) and their results are added up.
    """

    def __init__(self, locations, *, token=None, token_file=None,
                 socket_timeout=5.0, connect_timeout=None, retries=2,
                 retry_backoff=0.05, cooldown=2.0, max_idle=16, idle_ttl=60.0,
                 ssl_context=None, topology=True, frames=True, max_connections=100):
        if isinstance(locations, str):
            locations = [locations]
        locations = [loc for loc in locations if loc]
        if not locations:
            raise ValueError('no cache server URL given')
        # What a pickled client is made again from (see __reduce__).
        self._config = (tuple(locations), dict(
            token=token, token_file=token_file, socket_timeout=socket_timeout,
            connect_timeout=connect_timeout, retries=retries, retry_backoff=retry_backoff,
            cooldown=cooldown, max_idle=max_idle, idle_ttl=idle_ttl, ssl_context=ssl_context,
            topology=topology, frames=frames, max_connections=max_connections))
        self.retries = max(0, int(retries))
        self.retry_backoff = float(retry_backoff)
        self._token = token
        self._token_file = token_file
        self._fixed = None  # the header lines every request carries
        # When to look at token_file again, and what it was then; clock is
        # replaced by tests.
        self.clock = time.monotonic
        self._token_check_at = 0.0
        self._token_stat = None
        if token_file:
            self._token_stat = _file_identity(token_file)
        if token is None and token_file:
            self._token = _read_token(token_file)
        connect_timeout = socket_timeout if connect_timeout is None else connect_timeout
        options = dict(socket_timeout=socket_timeout, connect_timeout=connect_timeout,
                       cooldown=cooldown, max_idle=max_idle, idle_ttl=idle_ttl,
                       ssl_context=ssl_context, frames=frames,
                       max_connections=int(max_connections or 0))
        self.endpoints = [Endpoint(url, **options) for url in locations]
        # Keys are spread over _n servers, the first at endpoints[_base].
        self._n = len(self.endpoints)
        self._base = 0
        self._follow = None
        self._listed_epoch = None  # the epoch a list of URLs was first answered by
        if len(self.endpoints) == 1 and topology:
            self._follow = _topology.Follower(
                self.endpoints[0], lambda url: Endpoint(url, **options),
                retry_after=max(float(cooldown), 0.5))
            self._base = 1

    def __reduce__(self):
        """A client pickles as its configuration, as python-diskcache's
        caches pickle as their directory: unpickled (in another process,
        say), it is the process's shared client of that configuration
        (:func:`shared_client`), with its own connections. A token given
        as ``token`` travels in the pickle; one read from ``token_file`` does
        not (the file is read again). An ``ssl_context`` cannot be pickled."""
        locations, options = self._config
        if options['ssl_context'] is not None:
            raise TypeError('a Client with an ssl_context cannot be pickled (ssl.SSLContext '
                            'cannot be): make the Client where it is used')
        return _unpickle_client, (list(locations), options)

    def _watch_listed_epoch(self, resp):
        """With a list of shard URLs the client routes by that list and
        does not follow the servers' topology: say so, once per epoch, when
        the servers answer by another one. The servers still forward keys
        to their owners, but whole-cache operations (len, clear, stats,
        evict) reach only the listed URLs: a shard added since is missed."""
        epoch = resp.headers.get(_EPOCH)
        if epoch is None or epoch == self._listed_epoch:
            return
        if self._listed_epoch is not None:
            log.warning('the cache servers now route by topology epoch %s (was %s), but this '
                        'client was given a list of %d shard URLs and keeps to it: whole-cache '
                        'operations reach only those; give LOCATION the Service URL to follow '
                        'the topology', epoch, self._listed_epoch, self._n)
        self._listed_epoch = epoch

    @property
    def shards(self):
        """How many servers whole-cache operations go to, and add up: each
        listed URL, or the one URL (whose server fans out)."""
        return 1 if self._follow is not None else len(self.endpoints)

    @property
    def topology(self):
        """The :class:`~diskcache_client.topology.Layout` followed (epoch
        and shard URLs), or None."""
        return None if self._follow is None else self._follow.layout

    def targets(self):
        """The servers (indexes of :attr:`endpoints`) that whole-cache
        operations go to."""
        return range(self.shards)

    @property
    def connect_attempts(self):
        """Connections opened (or tried) so far, over every endpoint."""
        return sum(ep.connect_attempts for ep in self._all_endpoints())

    def _all_endpoints(self):
        if self._follow is not None:
            return self._follow.endpoints()
        return self.endpoints

    def shard_of(self, routing):
        """The server (index of :attr:`endpoints`) for a key or collection
        name with these routing bytes (:func:`routing.routing_bytes`)."""
        n = self._n
        if n <= 1:
            return 0
        return self._base + jump_hash(key_hash(routing), n)

    def pin(self, name):
        """The client as the operations of the named cache ``name`` see
        it: a :class:`topology.Pinned` view that sends all of them to the
        owner of the name, following a topology or over a list of URLs (as
        the servers of a topology place it, and as python-diskcache keeps a
        FanoutCache's named cache in one directory); with one URL and no
        topology, the client itself."""
        if self._follow is None and self._n <= 1:
            return self
        return _topology.Pinned(self, name)

    def where(self, shard):
        """The URL a collection kept on ``shard`` is shown with: its
        server's, or the one URL given."""
        if self._follow is not None:
            return self.endpoints[0].url
        return self.endpoints[shard].url

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

    def _headers(self):
        """:meth:`_fixed_headers`, after looking whether token_file changed
        (once a second at most: a mounted Secret is swapped by the kubelet,
        and a streamed request cannot be sent again after a 401)."""
        if self._token_file:
            now = self.clock()
            if now >= self._token_check_at:
                self._token_check_at = now + 1.0
                stat = _file_identity(self._token_file)
                if stat != self._token_stat:
                    self._token_stat = stat
                    self._reload_token()
        return self._fixed or self._fixed_headers()

    def _reload_token(self):
        """Re-read TOKEN_FILE; True if the token changed."""
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

    # -- topology ----------------------------------------------------------------

    def _adopt(self, eps):
        """Route over a new endpoint list (:class:`topology.Follower`)."""
        if eps is None:
            return
        self.endpoints = eps
        self._n = len(eps) - 1 if len(eps) > 1 else 1
        log.info('cache %s: following topology epoch %d, %d shard(s)', eps[0].url,
                 self._follow.epoch, self._n)

    def _topology_answer(self, resp):
        """Take the answer of GET /v1/topology; whether it answered."""
        follow = self._follow
        if resp.status == 200:
            try:
                layout = _topology.parse_layout(json.loads(resp.body))
            except (ValueError, UnicodeDecodeError) as exc:
                log.warning('cache %s: unusable topology (%s)', resp.url, exc)
                return False
            self._adopt(follow.adopt(layout))
            return True
        if resp.status == 404:
            self._adopt(follow.none())
            return True
        log.warning('cache %s: reading the topology failed: HTTP %d', resp.url, resp.status)
        return False

    def _refresh(self):
        follow = self._follow
        if not follow.begin():
            return
        ok = False
        try:
            ok = self._topology_answer(self._send_to(follow.service, _topology_request()))
        except ServerUnavailable as exc:
            log.warning('cache %s: reading the topology failed: %s', follow.service.url, exc)
        finally:
            follow.end(ok)

    async def _arefresh(self):
        follow = self._follow
        if not follow.begin():
            return
        ok = False
        try:
            ok = self._topology_answer(await self._asend_to(follow.service, _topology_request()))
        except ServerUnavailable as exc:
            log.warning('cache %s: reading the topology failed: %s', follow.service.url, exc)
        finally:
            follow.end(ok)

    def _misrouted(self, req, resp):
        """Whether a 409 answer says the request followed an old topology
        (after adopting the newer one it carries)."""
        layout = _topology.misrouted_layout(resp.body)
        if layout is None:
            return False
        self._adopt(self._follow.adopt(layout))
        return req.replayable

    @staticmethod
    def _fallback(req, exc):
        """Whether a request that failed to reach its shard (``exc``, a
        :class:`ServerUnavailable` of that shard) can go through the service
        URL instead: always when the shard never saw it (not connected, or
        its circuit breaker open), else when sending it twice does no
        harm."""
        if exc.code == 'circuit_open' or not getattr(exc, 'sent', True):
            return True
        return exc.code == 'unreachable' and req.idempotent and req.replayable

    # -- blocking --------------------------------------------------------------

    def send(self, req):
        """Send a request with retries and the circuit breaker (and, when
        following a topology, the fallback to the service URL)."""
        if req.shard and self._follow is not None:
            return self._send_shard(req)
        return self._send_to(self.endpoints[req.shard], req)

    def _send_to(self, ep, req, retry_unreachable=True):
        breaker = ep.breaker
        if not breaker.allow():
            raise _circuit_open(ep)
        try:
            resp = self._send_attempts(ep, req, retry_unreachable)
        except Unreachable as exc:
            raise _tripped(ep, exc) from exc.cause
        except BaseException:
            breaker.abandon()
            raise
        breaker.success()
        follow = self._follow
        if follow is not None:
            epoch = resp.headers.get(_EPOCH)
            if epoch is not None and epoch != follow.epoch_text:
                follow.saw(epoch)
            if resp.status == 409 and self._misrouted(req, resp) and ep is not follow.service:
                return self._send_to(follow.service, req)
        elif self._n > 1:
            self._watch_listed_epoch(resp)
        return resp

    def _send_shard(self, req):
        """Send a request to the shard that owns it; through the service URL
        when the shard cannot be reached."""
        eps = self.endpoints
        if req.shard >= len(eps):  # routed by a topology since replaced
            return self._send_to(eps[0], req)
        ep = eps[req.shard]
        try:
            return self._send_to(ep, req, retry_unreachable=False)
        except ServerUnavailable as exc:
            if exc.url != ep.url or not self._fallback(req, exc):
                raise
        return self._send_to(eps[0], req)

    def _send_attempts(self, ep, req, retry_unreachable=True):
        replayable = req.body is None or isinstance(req.body, (bytes, bytearray))
        attempts = 1 + (self.retries if req.idempotent and replayable else 0)
        token_retry = True
        attempt = 0
        while True:
            try:
                resp = ep.exchange(req, self._headers())
            except Unreachable as exc:
                attempt += 1
                if exc.timeout or attempt >= attempts or not retry_unreachable:
                    raise
                time.sleep(self._delay(attempt))
                continue
            status = resp.status
            if status == 401 and token_retry:
                token_retry = False
                if self._reload_token() and replayable:
                    continue
            if (status == 503 and req.retry_unavailable and attempt + 1 < attempts
                    or replayable and _refused(resp) and attempt < self.retries):
                attempt += 1
                time.sleep(self._delay(attempt))
                continue
            return resp

    def _send_caught(self, req):
        """One request of a step of several (one per shard): the error in
        place of the answer when it fails, so that the step's other requests
        are still sent (a batch set stores the records of the shards that are
        up, as a server fanning it out does) and the operation sees every
        outcome."""
        try:
            return self.send(req)
        except CacheServerError as exc:
            return exc

    def follow(self):
        """Read the topology now if it is due (blocking); :meth:`run` does
        this before each operation."""
        follow = self._follow
        if follow is not None and follow.stale:
            self._refresh()

    def run(self, op):
        """Drive an operation generator to its result (blocking)."""
        follow = self._follow
        if follow is not None and follow.stale:
            self._refresh()
        try:
            req = next(op)
            while True:
                if isinstance(req, list):
                    resp = [self._send_caught(r) for r in req]
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
        if req.shard and self._follow is not None:
            return await self._asend_shard(req)
        return await self._asend_to(self.endpoints[req.shard], req)

    async def _asend_to(self, ep, req, retry_unreachable=True):
        breaker = ep.breaker
        if not breaker.allow():
            raise _circuit_open(ep)
        try:
            resp = await self._asend_attempts(ep, req, retry_unreachable)
        except Unreachable as exc:
            raise _tripped(ep, exc) from exc.cause
        except BaseException:
            breaker.abandon()
            raise
        breaker.success()
        follow = self._follow
        if follow is not None:
            epoch = resp.headers.get(_EPOCH)
            if epoch is not None and epoch != follow.epoch_text:
                follow.saw(epoch)
            if resp.status == 409 and self._misrouted(req, resp) and ep is not follow.service:
                return await self._asend_to(follow.service, req)
        elif self._n > 1:
            self._watch_listed_epoch(resp)
        return resp

    async def _asend_shard(self, req):
        eps = self.endpoints
        if req.shard >= len(eps):
            return await self._asend_to(eps[0], req)
        ep = eps[req.shard]
        try:
            return await self._asend_to(ep, req, retry_unreachable=False)
        except ServerUnavailable as exc:
            if exc.url != ep.url or not self._fallback(req, exc):
                raise
        return await self._asend_to(eps[0], req)

    async def _asend_attempts(self, ep, req, retry_unreachable=True):
        attempts = 1 + (self.retries if req.idempotent else 0)
        token_retry = True
        attempt = 0
        while True:
            try:
                resp = await ep.aexchange(req, self._headers())
            except Unreachable as exc:
                attempt += 1
                if exc.timeout or attempt >= attempts or not retry_unreachable:
                    raise
                await asyncio.sleep(self._delay(attempt))
                continue
            if resp.status == 401 and token_retry:
                token_retry = False
                if self._reload_token():
                    continue
            if (resp.status == 503 and req.retry_unavailable and attempt + 1 < attempts
                    or _refused(resp) and attempt < self.retries):
                attempt += 1
                await asyncio.sleep(self._delay(attempt))
                continue
            return resp

    async def _asend_caught(self, req):
        """:meth:`_send_caught` over asyncio."""
        try:
            return await self.asend(req)
        except CacheServerError as exc:
            return exc

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
        follow = self._follow
        if follow is not None and follow.stale:
            await self._arefresh()
        if offload is not None:
            return await self._arun_offloaded(op, offload)
        try:
            req = next(op)
            while True:
                if isinstance(req, list):
                    resp = list(await asyncio.gather(*(self._asend_caught(r) for r in req)))
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
                    resp = list(await asyncio.gather(*(self._asend_caught(r) for r in req)))
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
        for ep in self._all_endpoints():
            ep.aclose_loop(loop)
        # Let the aborted transports run their connection_lost callbacks,
        # which close the sockets, before the loop may be closed.
        await asyncio.sleep(0)

    def close(self):
        """Close every pooled blocking connection (they reopen on demand)."""
        for ep in self._all_endpoints():
            ep.close()


_EPOCH = _topology.EPOCH_HEADER


def _topology_request():
    return Request('GET', '/v1/topology', idempotent=True)


def _refused(resp):
    """Whether the answer is the server refusing the connection over its
    --max-connections, without serving the request, so any request may be
    sent again (an incr too): a 503, or a 408 when the request came more
    than 100 ms after the connection."""
    return (resp.status in (503, 408) and resp.body is not None
            and b'"too_many_connections"' in resp.body)


def _circuit_open(ep):
    return ServerUnavailable(
        'not trying: the server was unreachable less than %gs ago '
        '(circuit breaker open)' % ep.breaker.cooldown,
        code='circuit_open', url=ep.url)


def _tripped(ep, exc):
    ep.breaker.failure()
    log.warning('cache server %s unreachable (%s); failing fast for %gs',
                ep.url, exc, ep.breaker.cooldown)
    err = ServerUnavailable(str(exc), code='unreachable', url=ep.url)
    err.sent = exc.sent  # whether the server may have seen the request
    return err


def _read_token(path):
    with open(path, encoding='utf-8') as f:
        return f.read().strip()


def _file_identity(path):
    """What tells a changed file: the kubelet swaps a mounted Secret's
    files for new ones (another inode), an editor may rewrite in place."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


_registry = {}
_registry_lock = threading.Lock()


@atexit.register
def _close_shared_clients():
    with _registry_lock:
        clients = list(_registry.values())
    for client in clients:
        client.close()


def _unpickle_client(locations, options):
    return shared_client(locations, **options)


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
