"""The topology a client given one URL follows.

A cache of several shards behind one URL (a Kubernetes Service) describes
itself at ``GET /v1/topology``: its epoch and the base URL of every shard,
in ordinal order. Every answer of a server that has a topology carries its
epoch in the ``Diskcache-Epoch`` header; a newer one than the client's makes
the client read the topology again before its next call. Which shard owns a
key is :mod:`diskcache_client.routing`'s business.
"""

import collections
import json
import threading
import time

# Header every answer of a server with a topology carries (lower-cased, as
# it keys Response.headers).
EPOCH_HEADER = 'diskcache-epoch'
# Header that asks a server for its own part of a cluster-wide operation
# (clients that fan out themselves over a list of shard URLs send it).
SCOPE_HEADER = 'Diskcache-Scope'

# Error codes of a 409 answer that carries the topology a request should
# have followed.
MISROUTED_CODES = frozenset(['wrong_epoch', 'misrouted'])


class Layout(collections.namedtuple('Layout', 'epoch shards')):
    """An epoch and the base URL of every shard, in ordinal order."""

    __slots__ = ()


def parse_layout(doc):
    """The :class:`Layout` of a topology document (a dict); ValueError if it
    is not one."""
    if not isinstance(doc, dict):
        raise ValueError('topology is not a JSON object')
    epoch, shards = doc.get('epoch'), doc.get('shards')
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
        raise ValueError('topology epoch %r is not a positive integer' % (epoch,))
    if not isinstance(shards, list) or not shards or not all(
            isinstance(url, str) and url.startswith(('http://', 'https://')) for url in shards):
        raise ValueError('topology shards %r are not a list of http(s) URLs' % (shards,))
    return Layout(epoch, tuple(url.rstrip('/') for url in shards))


def misrouted_layout(body):
    """The topology a 409 ``wrong_epoch`` (or ``misrouted``) answer carries,
    or None for any other 409 (``not_numeric``, ``queue_full``, ...)."""
    if b'topology' not in body:
        return None
    try:
        doc = json.loads(body)
        if not isinstance(doc, dict) or (doc.get('error') or doc.get('code')) not in MISROUTED_CODES:
            return None
        return parse_layout(doc.get('topology'))
    except (ValueError, UnicodeDecodeError):
        return None


class Follower:
    """The topology a client given one URL follows.

    ``service`` is the endpoint of that URL (shard index 0 of the client's
    endpoint list); ``make_endpoint(url)`` makes the endpoint of a shard. The
    client's endpoint list is ``[service]`` while the cache has no topology
    or one shard, else ``[service, shard 0, shard 1, ...]``: a key owned by
    shard ``i`` goes to endpoint ``1 + i``. Endpoints are kept per URL across
    topology changes, with their connection pools and circuit breakers.
    """

    def __init__(self, service, make_endpoint, retry_after=1.0, clock=time.monotonic):
        self.service = service
        self._make_endpoint = make_endpoint
        self._known = {}  # shard URL -> Endpoint
        self._lock = threading.Lock()
        self._retry_after = retry_after
        self._clock = clock
        self._not_before = 0.0
        self.epoch = 0
        # The last epoch seen as text: each answer's header is compared with
        # it, a string comparison on the hot path.
        self.epoch_text = None
        # Whether the topology must be read (again) before the next call.
        self.stale = False
        self.layout = None

    def endpoints(self):
        """Every endpoint made so far, the service's first."""
        return [self.service] + list(self._known.values())

    def saw(self, text):
        """An answer carried ``Diskcache-Epoch: text`` (not the current one)."""
        try:
            epoch = int(text)
        except ValueError:
            return
        if epoch > self.epoch:
            self.stale = True

    def begin(self):
        """Whether this caller should read the topology now: True for one
        caller at a time, and not again soon after a failed read. Pair with
        :meth:`end`."""
        if self._not_before and self._clock() < self._not_before:
            return False
        return self._lock.acquire(blocking=False)

    def end(self, ok):
        """A read begun with :meth:`begin` is over; ``ok``: it answered
        (a topology, or none), else it is tried again after a pause."""
        self._not_before = 0.0 if ok else self._clock() + self._retry_after
        self._lock.release()

    def none(self):
        """The server has no topology (404): one server, as without one."""
        self.stale = False
        if self.layout is None:
            return [self.service]
        return None

    def adopt(self, layout):
        """Follow ``layout`` unless it is older than the current one; the
        client's new endpoint list, or None when nothing changes."""
        if layout.epoch < self.epoch or (layout.epoch == self.epoch and layout == self.layout):
            if layout.epoch == self.epoch:
                self.stale = False
            return None
        self.layout = layout
        self.epoch = layout.epoch
        self.epoch_text = str(layout.epoch)
        self.stale = False
        if len(layout.shards) <= 1:
            return [self.service]
        known = self._known
        eps = [self.service]
        for url in layout.shards:
            ep = known.get(url)
            if ep is None:
                ep = known[url] = self._make_endpoint(url)
            eps.append(ep)
        return eps


class Pinned:
    """A client as the operations of one named cache see it when the client
    follows a topology or has a list of URLs: every request of the cache,
    its whole-cache ones included, goes to the owner of its name."""

    __slots__ = ('client', 'routing')

    def __init__(self, client, name):
        self.client = client
        self.routing = name.encode('utf-8')

    @property
    def retries(self):
        return self.client.retries

    @property
    def shards(self):
        return 1

    def shard_of(self, routing):  # pylint: disable=unused-argument
        return self.client.shard_of(self.routing)

    def targets(self):
        return (self.client.shard_of(self.routing),)
