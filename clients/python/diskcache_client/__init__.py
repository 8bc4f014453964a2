"""Python client of DiskCache Operator's cacheserver.

* :class:`diskcache_client.djangocache.DjangoCache` — the Django cache
  backend (python-diskcache's ``DjangoCache`` API over HTTP). Importing it
  needs Django; nothing else in this package does.
* :class:`Cache` — python-diskcache's ``Cache`` API for the server's cache
  or one of its named caches.
* :class:`Deque` and :class:`Index` — python-diskcache's ``Deque`` and
  ``Index`` for the server's deques and indexes (``cache.deque(name)``,
  ``cache.index(name)``).
* :class:`Lock` — a lock shared by every process of the cache, with
  redis-py's ``Lock`` API (django-redis's ``cache.lock()``).
* :class:`Client` — connection pools, retries and circuit breaker for one
  server, a cache of several shards behind one URL (whose topology it
  follows, sending each key straight to its shard), or a list of shard
  servers.

Standard library only.
"""

from .cache import Cache, args_to_key, full_name
from .errors import CacheServerError, ServerUnavailable, Timeout, Unauthorized
from .persistent import Deque, Index
from .recipes import (Averager, BoundedSemaphore, Lock, LockError, LockNotOwnedError, RLock,
                      throttle)
from .transport import Client

__version__ = '0.1.0'

__all__ = [
    'Averager',
    'BoundedSemaphore',
    'Cache',
    'CacheServerError',
    'Client',
    'Deque',
    'Index',
    'Lock',
    'LockError',
    'LockNotOwnedError',
    'RLock',
    'ServerUnavailable',
    'Timeout',
    'Unauthorized',
    'throttle',
    'args_to_key',
    'full_name',
]
