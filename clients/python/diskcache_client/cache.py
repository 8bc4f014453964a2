"""A python-diskcache ``Cache`` look-alike backed by a cacheserver."""

import functools

from . import ops, wire
from .errors import CacheServerError
from .memo import ENOVAL, args_to_key, full_name
from .persistent import Deque, Index, _prefix, _prefix_params, _side
from .transport import Client

# ENOVAL, args_to_key and full_name have always been importable from here.
__all__ = ['ENOVAL', 'RUNTIME_SETTINGS', 'Cache', 'args_to_key', 'full_name']

# Settings that python-diskcache's Cache.reset can change at run time and
# the server accepts in PATCH /settings.
RUNTIME_SETTINGS = frozenset(
    ['eviction_policy', 'size_limit', 'cull_limit', 'statistics', 'tag_index'])

# python-diskcache's settings, which its caches have as attributes too.
SETTINGS = RUNTIME_SETTINGS | frozenset(
    ['disk_min_file_size', 'disk_pickle_protocol', 'sqlite_auto_vacuum', 'sqlite_cache_size',
     'sqlite_journal_mode', 'sqlite_mmap_size', 'sqlite_synchronous'])

# How often one key listing starts again after the topology changed under
# it: a change of the shard count makes two changes (the move, its end).
MAX_LISTING_RESTARTS = 8


class Cache:
    """The API of python-diskcache's ``Cache`` over HTTP.

    ``Cache(client)`` is the server's own cache (``/v1``); ``Cache(client,
    name)`` a named sub-cache (``/v1/caches/<name>``, directory
    ``cache/<name>`` on the server, as python-diskcache's
    ``FanoutCache.cache(name)``). ``client`` is a
    :class:`~diskcache_client.transport.Client` or a server URL.

    Differences from python-diskcache: ``retry`` arguments are accepted and
    ignored (the client's ``retries`` setting applies to idempotent calls);
    ``transact`` and ``expire(now=...)`` are not available over HTTP.
    """

    def __init__(self, client, name=None, **client_options):
        if isinstance(client, (str, list, tuple)):
            client = Client(client, **client_options)
        self._client = client
        self.name = name
        if name is None:
            self._prefix = '/v1'
            self._route = client
        else:
            if not isinstance(name, str) or not name:
                raise ValueError('a cache name must be a non-empty str')
            self._prefix = '/v1/caches/' + wire.path_segment(name.encode('utf-8'))
            # A named cache lives on the owner of its name, as on the
            # servers of a topology.
            self._route = client.pin(name)

    def __getattr__(self, name):
        # As python-diskcache's caches, whose settings are attributes
        # (cache.size_limit): read from the server each time, so they follow
        # a reset made by any client.
        if name in SETTINGS:
            return self.settings()[name]
        raise AttributeError('%r object has no attribute %r' % (type(self).__name__, name))

    def __reduce__(self):
        # As python-diskcache's Cache pickles as its directory: the client's
        # configuration (see Client.__reduce__) and the name.
        return type(self), (self._client, self.name)

    def __repr__(self):
        where = self._client.endpoints[0].url
        return '<%s %s%s>' % (type(self).__name__, where,
                              '' if self.name is None else ' name=%r' % self.name)

    @property
    def client(self):
        return self._client

    def _run(self, op):
        return self._client.run(op)

    # -- single keys --------------------------------------------------------

    def set(self, key, value, expire=None, read=False, tag=None, retry=False):
        """Set ``key`` to ``value``; with ``read`` the value is a binary file
        whose content is streamed to the server. Return True."""
        return self._run(ops.set(self._route, self._prefix, key, value, expire, read, tag))

    def __setitem__(self, key, value):
        self.set(key, value)

    def add(self, key, value, expire=None, read=False, tag=None, retry=False):
        """Store only if ``key`` has no live item; True if stored."""
        return self._run(ops.add(self._route, self._prefix, key, value, expire, read, tag))

    def touch(self, key, expire=None, retry=False):
        """Set a live key's expiry (None: never); True if the key was live."""
        return self._run(ops.touch(self._route, self._prefix, key, expire))

    def get(self, key, default=None, read=False, expire_time=False, tag=False, retry=False):
        """The value of ``key`` or ``default``; with ``expire_time``/``tag``
        a tuple ``(value, expire_time, tag)`` in python-diskcache's shapes;
        with ``read`` a binary file streaming a bytes value."""
        return self._run(ops.get(self._route, self._prefix, key, default, read,
                                 expire_time, tag))

    def __getitem__(self, key):
        value = self.get(key, ENOVAL)
        if value is ENOVAL:
            raise KeyError(key)
        return value

    def read(self, key, retry=False):
        """A binary file streaming the value of ``key``; KeyError if missing."""
        handle = self.get(key, ENOVAL, read=True)
        if handle is ENOVAL:
            raise KeyError(key)
        return handle

    def __contains__(self, key):
        return self._run(ops.contains(self._route, self._prefix, key))

    def pop(self, key, default=None, expire_time=False, tag=False, retry=False):
        """Remove ``key`` and return its value (atomic on the server)."""
        return self._run(ops.pop(self._route, self._prefix, key, default, expire_time, tag))

    def delete(self, key, retry=False):
        """Delete ``key``; True if it had a live item."""
        return self._run(ops.delete(self._route, self._prefix, key))

    def __delitem__(self, key):
        if not self.delete(key):
            raise KeyError(key)

    def incr(self, key, delta=1, default=0, retry=False):
        """Atomically add ``delta``; a missing key starts at ``default``
        (KeyError if ``default`` is None). Return the new value."""
        return self._run(ops.incr(self._route, self._prefix, key, delta, default))

    def decr(self, key, delta=1, default=0, retry=False):
        """Atomically subtract ``delta``; see :meth:`incr`."""
        return self._run(ops.incr(self._route, self._prefix, key, delta, default,
                                  decrement=True))

    # -- many keys -----------------------------------------------------------

    def get_many(self, keys):
        """{key: value} for the keys found (one request per shard)."""
        keys = list(keys)
        found = self._run(ops.get_many(self._route, self._prefix, keys))
        return {key: value for key, (hit, value) in zip(keys, found) if hit}

    def set_many(self, mapping, expire=None, tag=None):
        """Store every item; return the keys that could not be stored."""
        items = [(key, value, expire, tag) for key, value in mapping.items()]
        failed = self._run(ops.set_many(self._route, self._prefix, items))
        return [items[index][0] for index in failed]

    def delete_many(self, keys):
        """Delete keys; the count that had live items."""
        return sum(self._run(ops.delete_many(self._route, self._prefix, list(keys))))

    # -- whole cache -----------------------------------------------------------

    def evict(self, tag, retry=False):
        """Remove every item tagged ``tag``; the count removed."""
        if wire.encode_tag(tag)[0] is None:
            return 0  # no item has no tag as its tag (python-diskcache: 0)
        return self._run(ops.remove(self._route, self._prefix, 'evict',
                                    wire.set_params(tag=tag)))

    def expire(self, now=None, retry=False):
        """Remove expired items; the count removed."""
        if now is not None:
            raise NotImplementedError('expire(now=...) is not available over HTTP: '
                                      'the server expires by its own clock')
        return self._run(ops.remove(self._route, self._prefix, 'expire'))

    def cull(self, retry=False):
        """Remove expired items, then by eviction policy down to the size
        limit; the count removed."""
        return self._run(ops.remove(self._route, self._prefix, 'cull'))

    def clear(self, retry=False):
        """Remove every item; the count removed."""
        return self._run(ops.remove(self._route, self._prefix, 'clear'))

    def collections(self, kind=None, prefix=''):
        """Yield the server's named caches, deques and indexes (every
        shard's) as ``{'kind', 'name', 'bytes'}`` dicts, by kind then name:
        those of ``kind`` ('cache', 'deque' or 'index'; all when None) whose
        name starts with ``prefix``; ``bytes`` is what their files take.
        To find the ones no longer used, and :meth:`drop` or ``clear()``
        them. Not in python-diskcache."""
        after = ''
        while True:
            entries, after = self._client.run(
                ops.collections_page(self._client, kind, prefix, after))
            yield from entries
            if not after:
                return

    def drop(self):
        """Remove this named cache: its items, its settings and its files on
        the server (caches nested under its name stay); the count removed.
        Not in python-diskcache, where a sub-cache's directory is removed by
        hand. The next call finds it empty, with a new cache's settings. The
        server's own cache cannot be dropped: :meth:`clear` it."""
        if self.name is None:
            raise TypeError("the server's own cache cannot be dropped; use clear()")
        return self._run(ops.drop(self._route, self._prefix))

    def check(self, fix=False, retry=False):
        """Check (and with ``fix`` repair) consistency; the warnings found."""
        return self._run(ops.check_cache(self._route, self._prefix, fix))

    def stats(self, enable=True, reset=False):
        """``(hits, misses)``; enables or disables counting, optionally
        resetting the counts after reading them."""
        return self._run(ops.stats(self._route, self._prefix, enable, reset))

    def volume(self):
        """Estimated bytes used on disk."""
        return self._run(ops.info(self._route, self._prefix))['volume']

    def __len__(self):
        """Count of items, expired ones included (as python-diskcache)."""
        return self._run(ops.info(self._route, self._prefix))['count']

    def create_tag_index(self):
        self._run(ops.tag_index(self._route, self._prefix, True))

    def drop_tag_index(self):
        self._run(ops.tag_index(self._route, self._prefix, False))

    def settings(self):
        """Every engine setting of the cache, as the server reports them."""
        return self._run(ops.settings(self._route, self._prefix))

    def reset(self, key, value=ENOVAL, update=True):
        """Read a setting, or change one of the run-time settings
        (eviction_policy, size_limit, cull_limit, statistics, tag_index)."""
        if value is ENOVAL:
            return self.settings()[key]
        if key not in RUNTIME_SETTINGS:
            raise ValueError('%r cannot be changed at run time; run-time settings: %s'
                             % (key, ', '.join(sorted(RUNTIME_SETTINGS))))
        return self._run(ops.settings(self._route, self._prefix, {key: value}))[key]

    def deque(self, name, maxlen=None):
        """The server's deque ``name`` (directory ``deque/<name>``), as
        python-diskcache's ``FanoutCache.deque``: a
        :class:`~diskcache_client.persistent.Deque`. Deques belong to the
        server, not to a named cache: a named cache's ``deque(name)`` is the
        same deque."""
        return Deque(self._client, name, maxlen=maxlen)

    def index(self, name):
        """The server's index ``name`` (directory ``index/<name>``), as
        python-diskcache's ``FanoutCache.index``: a
        :class:`~diskcache_client.persistent.Index` (see :meth:`deque`)."""
        return Index(self._client, name)

    def cache(self, name):
        """The server's named cache ``name`` (directory ``cache/<name>``), as
        python-diskcache's ``FanoutCache.cache``; a named cache's
        ``cache(name)`` is the same cache (names are the server's)."""
        return Cache(self._client, name)

    # -- a named cache's queues and keys (python-diskcache's Cache) ----------

    def _named(self, what):
        if self.name is None:
            raise TypeError('%s is an operation of python-diskcache\'s Cache, which the '
                            'server\'s cache (a FanoutCache) does not have: use a named '
                            'cache, cache.cache(name)' % what)
        return self.name.encode('utf-8')

    def push(self, value, prefix=None, side='back', expire=None, read=False, tag=None,
             retry=False):  # pylint: disable=unused-argument
        """Push ``value`` on the ``side`` of the queue ``prefix`` and return
        its key: ints from 500000000000000 without a prefix, else
        ``'<prefix>-%015d'`` strs (python-diskcache's ``Cache.push``)."""
        routing = self._named('push')
        return self._run(ops.push(self._route, self._prefix, routing, value,
                                  _prefix_params(_prefix(prefix), _side(side)), expire, read, tag))

    def pull(self, prefix=None, default=(None, None), side='front', expire_time=False,
             tag=False, retry=False):  # pylint: disable=unused-argument
        """Remove and return the ``(key, value)`` at the ``side`` of the queue
        ``prefix`` (expired items there are removed on the way); ``default``
        when it is empty. With ``expire_time``/``tag``: ``((key, value),
        expire_time, tag)`` as python-diskcache's ``Cache.pull``."""
        routing = self._named('pull')
        return self._run(ops.take(self._route, self._prefix, routing, 'pull',
                                  _prefix_params(_prefix(prefix), _side(side)), default,
                                  expire_time, tag))

    def peek(self, prefix=None, default=(None, None), side='front', expire_time=False,
             tag=False, retry=False):  # pylint: disable=unused-argument
        """As :meth:`pull`, but the item stays (python-diskcache's
        ``Cache.peek``)."""
        routing = self._named('peek')
        return self._run(ops.take(self._route, self._prefix, routing, 'peek',
                                  _prefix_params(_prefix(prefix), _side(side)), default,
                                  expire_time, tag))

    def peekitem(self, last=True, expire_time=False, tag=False, retry=False):  # pylint: disable=unused-argument
        """The last ``(key, value)`` in insertion order (the first with
        ``last=False``), expired items at that end removed on the way;
        KeyError when the cache is empty (python-diskcache's
        ``Cache.peekitem``)."""
        routing = self._named('peekitem')
        item = self._run(ops.take(self._route, self._prefix, routing, 'peekitem',
                                  [('last', 'true' if last else 'false')], ENOVAL,
                                  expire_time, tag))
        if item is ENOVAL or (isinstance(item, tuple) and item and item[0] is ENOVAL):
            raise KeyError('dictionary is empty')
        return item

    def _keys(self, order='insertion', reverse=False, match=None, limit=None):
        """The keys (record headers) of every server that holds part of the
        cache, a page per request: following a topology (or with one URL)
        through the URL, whose server goes from shard to shard; with a list
        of URLs each in turn; a named cache's at the owner of its name.
        ``match``: text keys that match a Redis-style glob."""
        if self.name is None and order != 'insertion':
            self._named('iterkeys')
        for shard in self._route.targets():
            yield from self._keys_of(shard, order, reverse, match, limit)

    def _keys_of(self, shard, order, reverse, match=None, limit=None):
        # A small first page unless told: loops often stop early.
        size = limit or 100
        cursor = None
        restarts = 0
        while True:
            try:
                headers, cursor = self._run(ops.keys_page(self._route, self._prefix, shard, order,
                                                          reverse, cursor, size, match))
            except CacheServerError as exc:
                # The topology changed under the listing (409
                # listing_restart): keys may have moved, so list again from
                # the start; keys already listed come again, as Redis's
                # SCAN may return a key twice.
                if exc.code != 'listing_restart' or restarts >= MAX_LISTING_RESTARTS:
                    raise
                restarts += 1
                cursor = None
                continue
            yield from headers
            if not cursor:
                return
            size = limit or 1000

    def __iter__(self):
        """Keys in insertion order, expired ones included, those there when
        iteration starts (python-diskcache's ``Cache.__iter__``; the
        server's cache as its ``FanoutCache``: database by database, and
        shard by shard). While a change of the shard count moves keys, or
        after one made the listing start again, a key may come twice (as
        with Redis's ``SCAN``), never not at all."""
        return (wire.record_key(h) for h in self._keys('insertion', False))

    def __reversed__(self):
        """Keys in reverse insertion order."""
        return (wire.record_key(h) for h in self._keys('insertion', True))

    def iterkeys(self, reverse=False):
        """Keys in SQLite's sort order: numbers, then text, then bytes and
        pickled keys (python-diskcache's ``Cache.iterkeys``)."""
        self._named('iterkeys')
        return (wire.record_key(h) for h in self._keys('sorted', reverse))

    def memoize(self, name=None, typed=False, expire=None, tag=None, ignore=()):
        """Memoizing decorator with python-diskcache's ``Cache.memoize``
        semantics and keys (``args_to_key`` tuples, pickled as keys)."""
        if callable(name):
            raise TypeError('name cannot be callable')

        def decorator(func):
            base = (full_name(func),) if name is None else (name,)

            @functools.wraps(func)
            def wrapper(*args, **kwargs):
                key = wrapper.__cache_key__(*args, **kwargs)
                result = self.get(key, default=ENOVAL)
                if result is ENOVAL:
                    result = func(*args, **kwargs)
                    if expire is None or expire > 0:
                        self.set(key, result, expire, tag=tag)
                return result

            def __cache_key__(*args, **kwargs):
                return args_to_key(base, args, kwargs, typed, ignore)

            wrapper.__cache_key__ = __cache_key__
            return wrapper

        return decorator

    def close(self):
        """Nothing to close: connections stay pooled for reuse."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
