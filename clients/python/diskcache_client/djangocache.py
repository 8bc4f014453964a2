"""Django cache backend for cacheserver: python-diskcache's ``DjangoCache``
over HTTP.

    CACHES = {
        'default': {
            'BACKEND': 'diskcache_client.djangocache.DjangoCache',
            'LOCATION': 'http://cache:8080',      # the Service; or a list of shard URLs
            'TIMEOUT': 300,
            'OPTIONS': {'TOKEN_FILE': '/var/run/secrets/diskcache/token'},
        },
    }

Everything Django's ``BaseCache`` offers (with Django's semantics, the
``a*`` async methods on every Django version) plus what python-diskcache's
``DjangoCache`` adds, with the same signatures and return shapes.

The ``a*`` methods do their network I/O on the event loop, and everything
synchronous that may run application code off it, in the thread Django's
``sync_to_async`` picks (as Django's own backends do): pickling a value
that is not a plain str/bytes/int/float/bool/None (pickling a lazy QuerySet
runs its query), unpickling an answer, and a custom key function.
"""

import functools
import logging
import re
import threading
import time
import weakref
from urllib.parse import urlsplit

from asgiref.sync import sync_to_async
from django.core.cache.backends.base import (DEFAULT_TIMEOUT, MEMCACHE_MAX_KEY_LENGTH, BaseCache,
                                             default_key_func)
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from . import ops, wire
from .cache import Cache
from .errors import CacheServerError, ServerUnavailable, Timeout
from .memo import ENOVAL, args_to_key, full_name
from .persistent import Deque, Index
from .recipes import Lock
from .transport import shared_client


def _memcache_safe(key):
    """True when Django's memcache_key_warnings has nothing to say about
    ``key``: at most MEMCACHE_MAX_KEY_LENGTH characters, none of them a
    control character, a space or DEL (checked in C, not per character)."""
    return (len(key) <= MEMCACHE_MAX_KEY_LENGTH and key.isascii() and key.isprintable()
            and ' ' not in key)

log = logging.getLogger('diskcache_client.djangocache')

# A failure the backend swallows (a refused write, a busy server, an error
# ignored with IGNORE_EXCEPTIONS) is logged the first time, then at most
# once per LOG_INTERVAL seconds per kind, with the count of those not logged.
LOG_INTERVAL = 60.0

PREFIX = '/v1'

# OPTIONS understood here; MAX_ENTRIES and CULL_FREQUENCY belong to Django's
# BaseCache and are ignored (the server's size limit and eviction policy
# apply).
OPTIONS = {
    'TOKEN': ('token', str),
    'TOKEN_FILE': ('token_file', str),
    'SOCKET_TIMEOUT': ('socket_timeout', float),
    'CONNECT_TIMEOUT': ('connect_timeout', float),
    'RETRIES': ('retries', int),
    'RETRY_BACKOFF': ('retry_backoff', float),
    'CIRCUIT_BREAKER_COOLDOWN': ('cooldown', float),
    'MAX_IDLE_CONNECTIONS': ('max_idle', int),
    'MAX_CONNECTIONS': ('max_connections', int),
    'IDLE_TIMEOUT': ('idle_ttl', float),
    'SSL_CONTEXT': ('ssl_context', None),
    'TOPOLOGY': ('topology', bool),
    'FRAMES': ('frames', bool),
}
OTHER_OPTIONS = {'IGNORE_EXCEPTIONS', 'MAX_ENTRIES', 'CULL_FREQUENCY', 'REVERSE_KEY_FUNCTION'}

# Types whose encoding runs no application code (wire.encode_value sends the
# first four as they are and pickles the others as built-in values).
_PLAIN_TYPES = frozenset([str, bytes, int, float, bool, type(None)])
_VALUE_TYPE_LC = wire.HEADER_VALUE_TYPE.lower()


class _NotStored:
    """The fallback of set_many: the keys the error says were not stored
    (``failed``, item indexes, when other shards stored theirs), else all."""

    __slots__ = ('keys',)

    def __init__(self, keys):
        self.keys = keys

    def keys_of(self, exc):
        failed = getattr(exc, 'failed', None)
        if failed is None:
            return self.keys
        return [self.keys[i] for i in failed]


def _plain(*values):
    # pylint: disable=unidiomatic-typecheck
    return all(type(value) in _PLAIN_TYPES for value in values)


def _may_unpickle(resp):
    """Whether reading an answer may unpickle a value: a single value of
    type pickle, or records of which one may be (their JSON headers name
    the type; a value's bytes that happen to hold the word count too)."""
    if isinstance(resp, list):
        return any(_may_unpickle(r) for r in resp)
    if isinstance(resp, CacheServerError):  # in place of a shard's answer
        return False
    value_type = resp.headers.get(_VALUE_TYPE_LC)
    if value_type is not None:
        return value_type == 'pickle'
    return (resp.headers.get('content-type', '').startswith(wire.RECORDS_CONTENT_TYPE)
            and b'pickle' in resp.body)


class _FailureLog:
    """Bounds the log lines about failures the backend swallows: the first
    of a kind is logged, then at most one per ``interval`` seconds, which
    tells how many were not logged since the one before. A kind is the
    operation, the server and the error (status and code), never the key.

    Held for the process's client, so that the backend instances of all
    threads (Django makes one per thread) share it. ``clock`` is a
    monotonic clock (tests may replace it).
    """

    def __init__(self, interval=LOG_INTERVAL, clock=time.monotonic):
        self.interval = interval
        self.clock = clock
        self._lock = threading.Lock()
        self._kinds = {}  # kind -> [when its last line was logged, failures not logged since]

    def admit(self, kind):
        """None when a failure of ``kind`` is not to be logged now; else the
        count of those not logged before it and the seconds since the last
        line of that kind (None for the first)."""
        now = self.clock()
        with self._lock:
            state = self._kinds.get(kind)
            if state is None:
                self._kinds[kind] = [now, 0]
                return 0, None
            if now - state[0] < self.interval:
                state[1] += 1
                return None
            held, since = state[1], now - state[0]
            state[0], state[1] = now, 0
            return held, since


_failure_logs = weakref.WeakKeyDictionary()
_failure_logs_lock = threading.Lock()


def _failure_log(client):
    """The _FailureLog of a (shared) client."""
    with _failure_logs_lock:
        failures = _failure_logs.get(client)
        if failures is None:
            failures = _failure_logs[client] = _FailureLog()
        return failures


# A URL in an error's message: group 1 is its scheme and address, the rest
# (the path, which may hold a key, and the query) is left out.
_URL_PATH = re.compile(r'\b([a-zA-Z][a-zA-Z0-9+.-]*://[^/\s"\'<>]+)[^\s"\'<>]*')


def _server_of(exc):
    """The scheme and address of the server an error came from: never the
    request's path, which holds the key."""
    parts = urlsplit(exc.url or '')
    return '%s://%s' % (parts.scheme, parts.netloc) if parts.netloc else 'the cache server'


def _described(exc):
    """An error's status, code and message without its URL (whose path holds
    the key), any URL in the message cut to its scheme and address."""
    head = ' '.join(part for part in (str(exc.status or ''), exc.code or '') if part)
    message = _URL_PATH.sub(r'\1', str(exc.message or ''))[:300]
    return '%s: %s' % (head, message) if head and message else head or message


def _call(fn, arg):
    return fn(arg)


# Runs one step of an operation in the thread Django uses for synchronous
# code (thread_sensitive, as BaseCache's a* methods and database access).
_call_in_thread = sync_to_async(_call, thread_sensitive=True)


def _locations(location):
    if isinstance(location, str):
        # Like Django's memcached backends: "url1;url2" or "url1,url2".
        parts = location.replace(',', ';').split(';')
    else:
        parts = list(location or ())
    parts = [p.strip() for p in parts if p and p.strip()]
    if not parts:
        raise ImproperlyConfigured(
            "DjangoCache needs LOCATION: a cacheserver URL like 'http://cache:8080' "
            'or a list of shard URLs')
    return parts


# python-diskcache's DjangoCache OPTIONS are its cache's settings, which
# here are the server's: where each is set instead.
SERVER_SETTINGS = {
    'size_limit': 'spec.sizeLimit', 'cull_limit': 'spec.cullLimit',
    'eviction_policy': 'spec.evictionPolicy', 'statistics': 'spec.statistics',
    'tag_index': 'spec.tagIndex', 'disk_min_file_size': 'spec.diskMinFileSize',
    'disk_pickle_protocol': None, 'sqlite_auto_vacuum': None, 'sqlite_cache_size': None,
    'sqlite_journal_mode': None, 'sqlite_mmap_size': None, 'sqlite_synchronous': None,
}


def _client_options(options):
    settings = sorted(set(options) & set(SERVER_SETTINGS))
    if settings:
        raise ImproperlyConfigured(
            'DjangoCache OPTIONS %s are python-diskcache settings, which the cache server '
            'keeps: set them on the DiskCache (%s) or with cache.reset(name, value), and '
            'remove them from OPTIONS'
            % (', '.join(settings), ', '.join(
                '%s: %s' % (name, SERVER_SETTINGS[name] or 'fixed by the server')
                for name in settings)))
    unknown = set(options) - set(OPTIONS) - OTHER_OPTIONS
    if unknown:
        raise ImproperlyConfigured(
            'unknown DjangoCache OPTIONS %s; known: %s'
            % (', '.join(sorted(unknown)), ', '.join(sorted(set(OPTIONS) | OTHER_OPTIONS))))
    kwargs = {}
    for name, (kwarg, convert) in OPTIONS.items():
        if name in options and options[name] is not None:
            kwargs[kwarg] = convert(options[name]) if convert else options[name]
    return kwargs


def _default_reverse_key(key):
    """The key given to ``set`` of a stored key made by Django's default key
    function (``prefix:version:key``), as django-redis's default."""
    return key.split(':', 2)[2]


_GLOB_SPECIAL = re.compile(r'([*?[\\])')


def _glob_escape(text):
    """``text`` taken literally in a glob (django-redis's ``glob_escape``)."""
    return _GLOB_SPECIAL.sub(r'\\\1', text)


def _not_both(xx):
    if xx:
        # Redis answers SET with both NX and XX with a syntax error.
        raise ValueError('set: nx and xx exclude each other')


class DjangoCache(BaseCache):
    """Django cache backend talking to cacheserver.

    Failure handling: a server that is busy (HTTP 503 ``timeout``, the
    counterpart of python-diskcache's ``Timeout``) makes reads return the
    default and writes return False, as python-diskcache's DjangoCache does.
    When the server cannot be reached (or answers 5xx) the error is raised,
    unless ``OPTIONS['IGNORE_EXCEPTIONS']`` is true: then it is logged and
    the cache behaves as an empty cache that refuses writes (reads return the
    default, writes False, ``set_many`` every key, ``incr`` None, counts 0).
    Errors that are the caller's (a value that cannot be pickled, a key the
    server rejects, ``incr`` of a missing key) are always raised.
    """

    def __init__(self, location, params):
        super().__init__(params)
        options = dict(params.get('OPTIONS') or {})
        self._ignore_exceptions = bool(options.get('IGNORE_EXCEPTIONS', False))
        try:
            self._client = shared_client(_locations(location), **_client_options(options))
        except ValueError as exc:
            raise ImproperlyConfigured('DjangoCache: %s' % exc) from exc
        self._failures = _failure_log(self._client)
        self.location = location
        reverse_key = options.get('REVERSE_KEY_FUNCTION') or _default_reverse_key
        self.reverse_key = import_string(reverse_key) if isinstance(reverse_key, str) else reverse_key
        # Django's own key function and validation are pure string work: the
        # a* methods make keys on the event loop unless they are replaced.
        self._keys_on_loop = (self.key_func is default_key_func
                              and type(self).make_key is BaseCache.make_key
                              and type(self).validate_key is BaseCache.validate_key)
        # Django's validate_key warns about keys memcached would refuse; a key
        # that plainly has nothing to warn about skips its per-character loop.
        self._plain_validation = type(self).validate_key is BaseCache.validate_key

    # -- plumbing -------------------------------------------------------------

    @property
    def client(self):
        """The :class:`~diskcache_client.transport.Client` (shared per process)."""
        return self._client

    def _key(self, key, version=None):
        key = self.make_key(key, version=version)
        if isinstance(key, str) and not (self._plain_validation and _memcache_safe(key)):
            self.validate_key(key)
        return key

    def _failed(self, exc, fallback, what):
        """Return ``fallback`` for an error the configuration says to
        swallow; re-raise anything else."""
        if isinstance(fallback, _NotStored):
            fallback = fallback.keys_of(exc)
        if isinstance(exc, Timeout):
            self._log_failure(exc, what, 'server busy, treated as a miss/failed write')
            return fallback
        if exc.status in (413, 507) and what in ('set', 'add'):
            # Too large to keep under the server's limits (413), or the
            # server's volume is full (507): not stored, as Django's
            # memcached backends answer for values they cannot keep.
            self._log_failure(exc, what, 'value refused')
            return fallback
        if self._ignore_exceptions and isinstance(exc, CacheServerError) and (
                isinstance(exc, ServerUnavailable) or exc.status >= 500):
            if exc.code == 'circuit_open':
                # The breaker logged the failure that opened it: one line
                # per outage, not one per call while it is open.
                log.debug('cache %s: failed, ignored (IGNORE_EXCEPTIONS): %s (%s)',
                          what, _server_of(exc), _described(exc))
            else:
                self._log_failure(exc, what, 'failed, ignored (IGNORE_EXCEPTIONS)')
            return fallback
        raise exc

    def _log_failure(self, exc, what, event):
        """Log a swallowed failure, unless one of its kind was logged less
        than LOG_INTERVAL seconds ago; never its key or its URL's path."""
        server, detail = _server_of(exc), _described(exc)
        admitted = self._failures.admit((what, event, server, exc.status, exc.code))
        if admitted is None:
            return
        held, since = admitted
        if held:
            log.warning('cache %s: %s: %s (%s); %d more like it in the last %.0fs, not logged',
                        what, event, server, detail, held, since)
        else:
            log.warning('cache %s: %s: %s (%s)', what, event, server, detail)

    def _run(self, op, fallback, what):
        try:
            return self._client.run(op)
        except CacheServerError as exc:
            return self._failed(exc, fallback, what)

    async def _arun(self, op, fallback, what, plain=True):
        """Run ``op`` with real asyncio I/O. Its first step (which makes the
        key and encodes the value) runs on the loop when the key function is
        Django's and ``plain`` says the values are plain; an answer that may
        hold a pickle is read in a thread."""
        first_on_loop = plain and self._keys_on_loop

        async def offload(step, resp):
            if first_on_loop if resp is None else not _may_unpickle(resp):
                return step(resp)
            return await _call_in_thread(step, resp)

        try:
            return await self._client.arun(op, offload)
        except CacheServerError as exc:
            return self._failed(exc, fallback, what)

    def _keyed(self, key, version, op, *args):
        """``op(client, PREFIX, made_key, *args)`` as an operation whose first
        step makes the key (key function and validation)."""
        return (yield from op(self._client, PREFIX, self._key(key, version), *args))

    def get_backend_timeout(self, timeout=DEFAULT_TIMEOUT):
        """Seconds until expiry for a Django timeout: the default for
        DEFAULT_TIMEOUT, None for never, -1 for 0 (expire at once)."""
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.default_timeout
        elif timeout == 0:
            timeout = -1
        return None if timeout is None else timeout

    # -- Django's API -----------------------------------------------------------

    def add(self, key, value, timeout=DEFAULT_TIMEOUT, version=None, read=False,
            tag=None, retry=True):
        """Store ``value`` unless ``key`` has a live item; True if stored."""
        key = self._key(key, version)
        expire = self.get_backend_timeout(timeout)
        return self._run(ops.add(self._client, PREFIX, key, value, expire, read, tag),
                         False, 'add')

    async def aadd(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        expire = self.get_backend_timeout(timeout)
        return await self._arun(self._keyed(key, version, ops.add, value, expire),
                                False, 'add', _plain(value))

    def get(self, key, default=None, version=None, read=False, expire_time=False,
            tag=False, retry=False):
        """The value of ``key`` or ``default``. ``expire_time``/``tag`` return
        tuples as python-diskcache does; ``read`` returns a binary file
        streaming a bytes value."""
        key = self._key(key, version)
        return self._run(
            ops.get(self._client, PREFIX, key, default, read, expire_time, tag),
            ops.shape(default, None, None, expire_time, tag), 'get')

    async def aget(self, key, default=None, version=None):
        return await self._arun(self._keyed(key, version, ops.get, default), default, 'get')

    def read(self, key, version=None):
        """A binary file streaming the value of ``key``; KeyError if missing."""
        handle = self.get(key, ENOVAL, version=version, read=True)
        if handle is ENOVAL:
            raise KeyError(self.make_key(key, version))
        return handle

    def set(self, key, value, timeout=DEFAULT_TIMEOUT, version=None, read=False,
            tag=None, retry=True, nx=False, xx=False):
        """Store ``value``; with ``read`` the value is a binary file streamed
        to the server. True if stored. As django-redis's ``set``, ``nx=True``
        stores it only if ``key`` has no live item (:meth:`add`), ``xx=True``
        only if it has one (Redis's ``SET XX``), atomically on the server."""
        if nx:
            _not_both(xx)
            return self.add(key, value, timeout, version, read, tag)
        key = self._key(key, version)
        expire = self.get_backend_timeout(timeout)
        op = ops.replace if xx else ops.set
        return self._run(op(self._client, PREFIX, key, value, expire, read, tag),
                         False, 'set')

    async def aset(self, key, value, timeout=DEFAULT_TIMEOUT, version=None, nx=False, xx=False):
        if nx:
            _not_both(xx)
            return await self.aadd(key, value, timeout, version)
        expire = self.get_backend_timeout(timeout)
        return await self._arun(self._keyed(key, version, ops.replace if xx else ops.set, value, expire),
                                False, 'set', _plain(value))

    def touch(self, key, timeout=DEFAULT_TIMEOUT, version=None, retry=True):
        """Give a live key a new timeout; True if it was live."""
        key = self._key(key, version)
        expire = self.get_backend_timeout(timeout)
        return self._run(ops.touch(self._client, PREFIX, key, expire), False, 'touch')

    async def atouch(self, key, timeout=DEFAULT_TIMEOUT, version=None):
        expire = self.get_backend_timeout(timeout)
        return await self._arun(self._keyed(key, version, ops.touch, expire), False, 'touch')

    def pop(self, key, default=None, version=None, expire_time=False, tag=False,
            retry=True):
        """Remove ``key`` and return its value or ``default`` (atomic)."""
        key = self._key(key, version)
        return self._run(ops.pop(self._client, PREFIX, key, default, expire_time, tag),
                         ops.shape(default, None, None, expire_time, tag), 'pop')

    def delete(self, key, version=None, retry=True):
        """Delete ``key``; True if it had a live item."""
        key = self._key(key, version)
        return self._run(ops.delete(self._client, PREFIX, key), False, 'delete')

    async def adelete(self, key, version=None):
        return await self._arun(self._keyed(key, version, ops.delete), False, 'delete')

    def incr(self, key, delta=1, version=None, default=None, retry=True,
             ignore_key_check=False):
        """Add ``delta`` atomically on the server and return the new value.
        ValueError if the key is missing and ``default`` is None; otherwise
        a missing key starts at ``default`` (django-redis's
        ``ignore_key_check=True``: at 0)."""
        if ignore_key_check and default is None:
            default = 0
        made = self._key(key, version)
        try:
            return self._run(ops.incr(self._client, PREFIX, made, delta, default),
                             None, 'incr')
        except KeyError:
            # The made key, as python-diskcache's DjangoCache names it.
            raise ValueError("Key '%s' not found" % made) from None

    async def aincr(self, key, delta=1, version=None, default=None):
        try:
            return await self._arun(self._keyed(key, version, ops.incr, delta, default),
                                    None, 'incr')
        except KeyError:
            raise ValueError("Key '%s' not found" % self.make_key(key, version)) from None

    def decr(self, key, delta=1, version=None, default=None, retry=True):
        """Subtract ``delta`` atomically; see :meth:`incr`."""
        return self.incr(key, -delta, version, default, retry)

    async def adecr(self, key, delta=1, version=None, default=None):
        return await self.aincr(key, -delta, version, default)

    def has_key(self, key, version=None):
        """True if ``key`` has a live item."""
        key = self._key(key, version)
        return self._run(ops.contains(self._client, PREFIX, key), False, 'has_key')

    async def ahas_key(self, key, version=None):
        return await self._arun(self._keyed(key, version, ops.contains), False, 'has_key')

    def _get_many(self, keys, version):
        """The get_many operation: {key: value} of the keys found."""
        keys = list(keys)
        found = yield from ops.get_many(self._client, PREFIX,
                                        [self._key(k, version) for k in keys])
        return {key: value for key, (hit, value) in zip(keys, found) if hit}

    def get_many(self, keys, version=None):
        """{key: value} of the keys found, in one request per shard."""
        return self._run(self._get_many(keys, version), {}, 'get_many')

    async def aget_many(self, keys, version=None):
        return await self._arun(self._get_many(keys, version), {}, 'get_many')

    def _set_many(self, keys, data, timeout, version):
        """The set_many operation: the keys that failed."""
        expire = self.get_backend_timeout(timeout)
        items = [(self._key(k, version), data[k], expire, None) for k in keys]
        failed = yield from ops.set_many(self._client, PREFIX, items)
        return [keys[i] for i in failed]

    def set_many(self, data, timeout=DEFAULT_TIMEOUT, version=None):
        """Store every item in one request per shard; return the keys that
        failed. A shard that is away fails its keys only: the others are
        stored, and with ``IGNORE_EXCEPTIONS`` the keys returned are the ones
        not stored."""
        keys = list(data)
        return self._run(self._set_many(keys, data, timeout, version), _NotStored(keys),
                         'set_many')

    async def aset_many(self, data, timeout=DEFAULT_TIMEOUT, version=None):
        keys = list(data)
        return await self._arun(self._set_many(keys, data, timeout, version), _NotStored(keys),
                                'set_many', _plain(*data.values()))

    def _delete_many(self, keys, version):
        """The delete_many operation."""
        made = [self._key(k, version) for k in keys]
        yield from ops.delete_many(self._client, PREFIX, made)

    def delete_many(self, keys, version=None):
        """Delete keys in one request per shard."""
        self._run(self._delete_many(keys, version), None, 'delete_many')

    async def adelete_many(self, keys, version=None):
        await self._arun(self._delete_many(keys, version), None, 'delete_many')

    def get_or_set(self, key, default, timeout=DEFAULT_TIMEOUT, version=None):
        """The value of ``key``; if missing, store ``default`` (called first
        if callable, and stored even when None) with add() and return what
        the cache then holds."""
        value = self.get(key, self._missing_key, version=version)
        if value is self._missing_key:
            if callable(default):
                default = default()
            self.add(key, default, timeout=timeout, version=version)
            # Another client may have won the add(): return what is stored.
            return self.get(key, default, version=version)
        return value

    async def aget_or_set(self, key, default, timeout=DEFAULT_TIMEOUT, version=None):
        value = await self.aget(key, self._missing_key, version=version)
        if value is self._missing_key:
            if callable(default):
                default = default()
            await self.aadd(key, default, timeout=timeout, version=version)
            return await self.aget(key, default, version=version)
        return value

    @staticmethod
    def _remaining(expire_time):
        """The timeout that keeps an absolute expiry (-1 if already past)."""
        if expire_time is None:
            return None
        remaining = expire_time - time.time()
        return remaining if remaining > 0 else -1

    def incr_version(self, key, delta=1, version=None):
        """Move ``key`` to version ``version + delta`` keeping its value,
        remaining timeout and tag; return the new version. ValueError if
        missing."""
        if version is None:
            version = self.version
        value, expire_time, tag = self.get(key, self._missing_key, version=version,
                                           expire_time=True, tag=True)
        if value is self._missing_key:
            raise ValueError("Key '%s' not found" % key)
        # The old version goes only once the new one is stored: a set that
        # failed (False with IGNORE_EXCEPTIONS, its shard away) would
        # otherwise lose the value under both versions.
        if self.set(key, value, timeout=self._remaining(expire_time), version=version + delta,
                    tag=tag):
            self.delete(key, version=version)
        return version + delta

    async def aincr_version(self, key, delta=1, version=None):
        if version is None:
            version = self.version
        value, expire_time, tag = await self._arun(
            self._keyed(key, version, ops.get, self._missing_key, False, True, True),
            (self._missing_key, None, None), 'get')
        if value is self._missing_key:
            raise ValueError("Key '%s' not found" % key)
        if await self._arun(self._keyed(key, version + delta, ops.set, value,
                                        self._remaining(expire_time), False, tag),
                            False, 'set', _plain(value)):
            await self._arun(self._keyed(key, version, ops.delete), False, 'delete')
        return version + delta

    def decr_version(self, key, delta=1, version=None):
        return self.incr_version(key, -delta, version)

    async def adecr_version(self, key, delta=1, version=None):
        return await self.aincr_version(key, -delta, version)

    def clear(self):
        """Remove every item of the server's cache (named caches are not
        touched); the count removed."""
        return self._run(ops.remove(self._client, PREFIX, 'clear'), 0, 'clear')

    async def aclear(self):
        return await self._arun(ops.remove(self._client, PREFIX, 'clear'), 0, 'clear')

    def close(self, **kwargs):
        """Called by Django after every request: nothing to do, the
        connections stay pooled for the next one."""

    async def aclose(self, **kwargs):
        """Close the pooled connections of the running event loop."""
        await self._client.aclose()

    # -- python-diskcache's additions ---------------------------------------------

    def expire(self, key=None, timeout=None, version=None):
        """Without arguments, python-diskcache's ``expire()``: remove expired
        items and return the count removed. With a key, django-redis's
        ``expire(key, timeout)``: give it ``timeout`` seconds more (None:
        never expire); True if it was live."""
        if key is None:
            return self._run(ops.remove(self._client, PREFIX, 'expire'), 0, 'expire')
        return self.touch(key, timeout, version=version)

    # -- django-redis's key patterns and expiry ---------------------------------------

    def _pattern(self, search, version=None, prefix=None):
        """django-redis's ``make_pattern``: the key function applied to the
        glob ``search``, with the prefix and version taken literally."""
        prefix = self.key_prefix if prefix is None else prefix
        version = self.version if version is None else version
        return self.key_func(search, _glob_escape(prefix), _glob_escape(str(version)))

    def _matching(self, search, version, prefix, itersize):
        """The stored keys that match ``search``, a page of ``itersize``
        keys looked at per request (Redis's ``SCAN`` count; by default
        django-redis's ``DJANGO_REDIS_SCAN_ITERSIZE`` setting, if set)."""
        if itersize is None:
            itersize = getattr(settings, 'DJANGO_REDIS_SCAN_ITERSIZE', None)
        pattern = self._pattern(search, version, prefix)
        for header in Cache(self._client)._keys(match=pattern, limit=itersize):  # pylint: disable=protected-access
            yield wire.record_key(header)

    def iter_keys(self, search, itersize=None, version=None):
        """django-redis's ``iter_keys``: the keys (as given to ``set``) that
        match the glob ``search`` (``*``, ``?``, ``[...]``; ``\\`` escapes),
        read a page per request: database by database and shard by shard
        (``GET /v1/keys``), expired keys that were not yet removed included.
        As with Redis's ``SCAN``, keys there all along come at least once,
        while a change of the shard count moves them too; a listing that
        outlives a change of topology starts again (its keys come again).
        Errors are raised."""
        for key in self._matching(search, version, None, itersize):
            yield self.reverse_key(key)

    def keys(self, search, version=None):
        """django-redis's ``keys``: :meth:`iter_keys` as a list, each key
        once (as Redis's ``KEYS``; a listing that went on while keys moved
        between shards, or started again, meets some twice)."""
        return list(dict.fromkeys(self.iter_keys(search, version=version)))

    def delete_pattern(self, pattern, version=None, prefix=None, itersize=None):
        """django-redis's ``delete_pattern``: delete the keys that match the
        glob ``pattern``; the count deleted. The keys are listed first, then
        deleted a batch at a time: keys set meanwhile may stay."""
        keys = list(dict.fromkeys(self._matching(pattern, version, prefix, itersize)))
        deleted = 0
        for i in range(0, len(keys), ops.BATCH_SIZE):
            flags = self._client.run(ops.delete_many(self._client, PREFIX, keys[i:i + ops.BATCH_SIZE]))
            deleted += sum(1 for flag in flags if flag)
        return deleted

    def ttl(self, key, version=None):
        """django-redis's ``ttl``: the seconds ``key`` has left (rounded), None
        when it never expires, 0 when it is missing."""
        left = self._time_left(key, version)
        return left if left is None else max(0, int(round(left)))

    def pttl(self, key, version=None):
        """:meth:`ttl` in milliseconds."""
        left = self._time_left(key, version)
        return left if left is None else max(0, int(round(left * 1000)))

    def _time_left(self, key, version):
        value, expire_time = self.get(key, self._missing_key, version=version, expire_time=True)
        if value is self._missing_key:
            return 0
        return None if expire_time is None else expire_time - time.time()

    def persist(self, key, version=None):
        """django-redis's ``persist`` (Redis's ``PERSIST``): make ``key`` never
        expire; True if it had an expiry to remove, False if it is missing
        or never expired."""
        if not self._time_left(key, version):  # missing (0) or never expires (None)
            return False
        return self.touch(key, None, version=version)

    def pexpire(self, key, timeout, version=None):
        """django-redis's ``pexpire``: ``timeout`` milliseconds more (the
        default timeout for ``DEFAULT_TIMEOUT``)."""
        if timeout is not DEFAULT_TIMEOUT and timeout is not None:
            timeout = timeout / 1000.0
        return self.touch(key, timeout, version=version)

    def expire_at(self, key, when, version=None):
        """django-redis's ``expire_at``: expire at ``when`` (a datetime or a
        Unix time in seconds); a time past makes it expire now."""
        if hasattr(when, 'timestamp'):
            when = when.timestamp()
        left = when - time.time()
        if left <= 0:
            return self.delete(key, version=version)  # as Redis's EXPIREAT in the past
        return self.touch(key, left, version=version)

    def pexpire_at(self, key, when, version=None):
        """django-redis's ``pexpire_at``: ``when`` a datetime or a Unix time
        in milliseconds."""
        if not hasattr(when, 'timestamp'):
            when = when / 1000.0
        return self.expire_at(key, when, version=version)

    def cull(self):
        """Remove expired items, then by eviction policy down to the size
        limit; the count removed."""
        return self._run(ops.remove(self._client, PREFIX, 'cull'), 0, 'cull')

    def evict(self, tag):
        """Remove every item tagged ``tag``; the count removed."""
        if wire.encode_tag(tag)[0] is None:
            return 0  # no item has no tag as its tag (python-diskcache: 0)
        return self._run(ops.remove(self._client, PREFIX, 'evict', wire.set_params(tag=tag)),
                         0, 'evict')

    def stats(self, enable=True, reset=False):
        """``(hits, misses)``; ``enable`` turns counting on or off, ``reset``
        zeroes the counts after reading them."""
        return self._run(ops.stats(self._client, PREFIX, enable, reset), (0, 0), 'stats')

    def create_tag_index(self):
        """Create the tag index (makes evict fast)."""
        self._client.run(ops.tag_index(self._client, PREFIX, True))

    def drop_tag_index(self):
        """Drop the tag index."""
        self._client.run(ops.tag_index(self._client, PREFIX, False))

    def cache(self, name):
        """The named cache ``name`` (directory ``cache/<name>`` on the
        server), with python-diskcache's ``Cache`` API."""
        return Cache(self._client, name)

    def collections(self, kind=None, prefix=''):
        """The server's named caches, deques and indexes: see
        :meth:`diskcache_client.Cache.collections`."""
        return Cache(self._client).collections(kind, prefix)

    def deque(self, name, maxlen=None):
        """The server's deque ``name`` (directory ``deque/<name>``): a
        :class:`~diskcache_client.persistent.Deque`, python-diskcache's
        ``Deque`` API. Its calls raise errors: ``IGNORE_EXCEPTIONS`` applies
        to Django's API only."""
        return Deque(self._client, name, maxlen=maxlen)

    def index(self, name):
        """The server's index ``name`` (directory ``index/<name>``): a
        :class:`~diskcache_client.persistent.Index`, python-diskcache's
        ``Index`` API. Its calls raise errors, as for :meth:`deque`."""
        return Index(self._client, name)

    def lock(self, key, version=None, timeout=None, sleep=0.1, blocking=True,
             blocking_timeout=None, thread_local=True):
        """A lock under ``key`` shared by every process of the cache, as
        django-redis's ``cache.lock()``: a
        :class:`~diskcache_client.recipes.Lock` with redis-py's ``Lock`` API
        (``acquire``, ``release``, ``extend``, ``reacquire``, ``locked``,
        ``owned``, ``with``). ``timeout`` is how long a hold lasts (None:
        until released). Its calls raise errors, as for :meth:`deque`."""
        return Lock(self._client, self._key(key, version), timeout=timeout, sleep=sleep,
                    blocking=blocking, blocking_timeout=blocking_timeout,
                    thread_local=thread_local)

    def memoize(self, name=None, timeout=DEFAULT_TIMEOUT, version=None, typed=False,
                tag=None, ignore=()):
        """Memoizing decorator, as python-diskcache's ``DjangoCache.memoize``:
        the key is ``args_to_key(...)`` passed through ``make_key`` (so with
        the default key function ``':1:(...)'``, the same str
        python-diskcache stores); a timeout of 0 or less looks results up but
        never stores them. ``wrapper.__cache_key__(*args, **kwargs)`` gives
        the key before ``make_key``."""
        if callable(name):
            raise TypeError('name cannot be callable')

        def decorator(func):
            base = (full_name(func),) if name is None else (name,)

            @functools.wraps(func)
            def wrapper(*args, **kwargs):
                key = self.make_key(wrapper.__cache_key__(*args, **kwargs), version=version)
                # No validate_key: tuple reprs have spaces, and python-diskcache
                # uses these keys as they are.
                result = self._run(ops.get(self._client, PREFIX, key, ENOVAL), ENOVAL, 'get')
                if result is ENOVAL:
                    result = func(*args, **kwargs)
                    if timeout is None or timeout is DEFAULT_TIMEOUT or timeout > 0:
                        expire = self.get_backend_timeout(timeout)
                        self._run(ops.set(self._client, PREFIX, key, result, expire,
                                          False, tag), False, 'set')
                return result

            def __cache_key__(*args, **kwargs):
                return args_to_key(base, args, kwargs, typed, ignore)

            wrapper.__cache_key__ = __cache_key__
            return wrapper

        return decorator

