"""A lock shared by every process that talks to the cache: django-redis's
``cache.lock(...)`` (redis-py's ``Lock`` API) on the server's locks
(``/v1/locks/{key}``, docs/api/openapi.yaml).

The lock is the cache item under its key, as python-diskcache's
``diskcache.Lock`` keeps it, held by a random token per acquire; with a
``timeout`` the hold expires on its own, so a process that dies holding it
does not block the others for ever. A blocking acquire waits on the server,
which answers as soon as the lock is released there (no polling), in waits
shorter than the client's socket timeout.
"""

import functools
import json
import os
import threading
import time
import uuid

from . import ops, wire
from .errors import CacheServerError, Timeout
from .http11 import Request
from .memo import full_name
from .ops import check, key_target


class LockError(CacheServerError, ValueError):
    """A lock was used in a way its state does not allow (releasing or
    extending one not held); redis-py's ``LockError`` (a ``ValueError`` too)."""

    def __init__(self, message, status=0, code='', url=''):
        super().__init__(message, status, code, url)

    def __str__(self):
        return self.message


class LockNotOwnedError(LockError):
    """The lock is no longer held by this token (it expired, and perhaps
    someone else holds it now); redis-py's ``LockNotOwnedError``."""


def _seconds(value):
    return repr(float(value))


def _lock_request(c, key, action, params):
    routing, segment, query = key_target(key, params)
    path = '/v1/locks/' + segment + ('/' + action if action else '')
    return Request('POST' if action else 'GET', path,
                   query=wire.build_query(query) if query else '',
                   shard=c.shard_of(routing), idempotent=action in ('', 'refresh'))


def _answer(resp, not_owner=None):
    """The JSON of an answer; its error raised, a ``not_owner`` one as
    LockNotOwnedError saying ``not_owner``."""
    try:
        check(resp)
    except CacheServerError as err:
        if not_owner and err.code == 'not_owner':
            raise LockNotOwnedError(not_owner, err.status, err.code, err.url) from err
        raise
    return json.loads(resp.body) if resp.body else {}


def lock_acquire(c, key, owner, ttl, wait):
    """Operation: try to take the lock for ``owner`` (``ttl`` seconds, 0 for
    no expiry), waiting on the server up to ``wait`` seconds; True if taken."""
    params = [('owner', owner), ('ttl', _seconds(ttl or 0)), ('wait', _seconds(wait))]
    resp = yield _lock_request(c, key, 'acquire', params)
    return bool(_answer(resp).get('acquired'))


def lock_release(c, key, owner):
    """Operation: release ``owner``'s hold; LockNotOwnedError if it has none."""
    resp = yield _lock_request(c, key, 'release', [('owner', owner)])
    _answer(resp, "cannot release a lock that's no longer owned")


def lock_refresh(c, key, owner, ttl, what='extend'):
    """Operation: make ``owner``'s hold expire ``ttl`` seconds from now."""
    resp = yield _lock_request(c, key, 'refresh', [('owner', owner), ('ttl', _seconds(ttl))])
    _answer(resp, "cannot %s a lock that's no longer owned" % what)


def lock_status(c, key):
    """Operation: ``(locked, holder, remaining)`` of the lock; remaining is
    0.0 for a hold that never expires."""
    resp = yield _lock_request(c, key, '', ())
    doc = _answer(resp)
    return bool(doc.get('locked')), doc.get('holder') or '', float(doc.get('remaining') or 0)


class _Token:
    token = None


class Lock:
    """A lock on the cache server under ``key``, with redis-py's ``Lock``
    API (what django-redis's ``cache.lock()`` returns).

    ``timeout``: seconds a hold lasts (None: until released).
    ``blocking``, ``blocking_timeout``: the defaults of :meth:`acquire`.
    ``sleep`` is accepted for compatibility and not used: a waiting acquire
    is woken by the release. ``thread_local`` keeps the token per thread
    (one ``Lock`` object shared by threads holds it once per thread).
    """

    def __init__(self, client, key, timeout=None, sleep=0.1, blocking=True,
                 blocking_timeout=None, thread_local=True):
        if timeout is not None and timeout < 0:
            raise ValueError('timeout must be a number of seconds >= 0, or None')
        timeout = timeout or None  # 0, as in redis-py: no expiry
        self.client = client
        self.name = key
        self.timeout = timeout
        self.sleep = sleep
        self.blocking = blocking
        self.blocking_timeout = blocking_timeout
        self.local = threading.local() if thread_local else _Token()
        self.local.token = None

    def _token(self):
        return getattr(self.local, 'token', None)

    def _wait_step(self):
        # Each request waits less than the socket timeout, so that a long
        # wait is several answered requests, never a client timeout.
        timeout = min((ep.socket_timeout or 5.0) for ep in self.client.endpoints)
        return max(min(timeout / 2, 10.0), 0.05)

    def acquire(self, sleep=None, blocking=None, blocking_timeout=None, token=None):
        """Take the lock; True if taken, False if not within
        ``blocking_timeout`` (or at once, when not ``blocking``). The
        arguments are redis-py's (``sleep`` is accepted and not used). A
        busy database on the server (``Timeout``: nothing was done) does not
        end a blocking wait."""
        blocking = self.blocking if blocking is None else blocking
        blocking_timeout = self.blocking_timeout if blocking_timeout is None else blocking_timeout
        if isinstance(token, bytes):
            token = token.decode('utf-8')
        token = uuid.uuid4().hex if token is None else str(token)
        if not token:
            raise ValueError('token must not be empty')
        deadline = None if blocking_timeout is None else time.monotonic() + blocking_timeout
        step = self._wait_step()
        while True:
            wait = 0.0
            if blocking:
                wait = step if deadline is None else max(min(step, deadline - time.monotonic()), 0.0)
            try:
                acquired = self.client.run(
                    lock_acquire(self.client, self.name, token, self.timeout, wait))
            except Timeout:
                if not blocking or (deadline is not None and time.monotonic() >= deadline):
                    raise
                continue
            if acquired:
                self.local.token = token
                return True
            if not blocking or (deadline is not None and time.monotonic() >= deadline):
                return False

    def release(self):
        """Release the lock this token holds."""
        token = self._token()
        if token is None:
            raise LockError('cannot release an unlocked lock')
        self.local.token = None
        self.client.run(lock_release(self.client, self.name, token))

    def extend(self, additional_time, replace_ttl=False):
        """Add ``additional_time`` seconds to the hold (or make it expire that
        long from now, with ``replace_ttl``)."""
        token = self._token()
        if token is None:
            raise LockError('cannot extend an unlocked lock')
        if self.timeout is None:
            raise LockError('cannot extend a lock with no timeout')
        ttl = float(additional_time)
        if not replace_ttl:
            _, holder, remaining = self.client.run(lock_status(self.client, self.name))
            if holder != token:
                raise LockNotOwnedError("cannot extend a lock that's no longer owned")
            ttl += remaining
        if ttl <= 0:
            # Expire now, as redis-py's pexpire does (0 means "no expiry" to
            # the server).
            self.client.run(lock_release(self.client, self.name, token))
            self.local.token = None
            return True
        self.client.run(lock_refresh(self.client, self.name, token, ttl))
        return True

    def reacquire(self):
        """Make the hold last ``timeout`` seconds from now."""
        token = self._token()
        if token is None:
            raise LockError('cannot reacquire an unlocked lock')
        if self.timeout is None:
            raise LockError('cannot reacquire a lock with no timeout')
        self.client.run(lock_refresh(self.client, self.name, token, self.timeout, 'reacquire'))
        return True

    def locked(self):
        """Whether anyone holds the lock."""
        return self.client.run(lock_status(self.client, self.name))[0]

    def owned(self):
        """Whether this token holds the lock."""
        token = self._token()
        if token is None:
            return False
        locked, holder, _ = self.client.run(lock_status(self.client, self.name))
        return locked and holder == token

    def __enter__(self):
        if self.acquire():
            return self
        raise LockError('unable to acquire lock within the time specified')

    def __exit__(self, *exc):
        self.release()


# -- python-diskcache's recipes (diskcache.Averager, RLock, BoundedSemaphore,
# throttle) on the server's atomic operations ----------------------------------
#
# python-diskcache builds these on Cache.transact(), which HTTP has no
# counterpart of; the server keeps their state and changes it atomically
# instead (averages, reentrant locks, semaphores, rate limits). Its own
# diskcache.Lock, barrier and memoize_stampede need no transaction and work
# on a diskcache_client.Cache as they are.

def _new_process_id():
    return uuid.uuid4().hex[:16]


# Who holds an RLock or a semaphore's permits: python-diskcache says
# "<pid>-<tid>", but processes in different pods share pids (often 1), so a
# random id per process (a new one in a forked child) stands for the pid.
_PROCESS = [_new_process_id()]
if hasattr(os, 'register_at_fork'):
    os.register_at_fork(after_in_child=lambda: _PROCESS.__setitem__(0, _new_process_id()))


def _recipe_client(cache):
    """The Client a recipe's ``cache`` argument stands for: the server's
    Cache, a DjangoCache of this package, or a Client. Recipes keep their
    state in the server's cache: a named cache has no such routes."""
    from .cache import Cache  # pylint: disable=import-outside-toplevel
    from .transport import Client  # pylint: disable=import-outside-toplevel
    if isinstance(cache, Client):
        return cache
    if isinstance(cache, Cache):
        if cache.name is not None:
            raise TypeError('recipes keep their state in the server\'s cache, not in the named '
                            'cache %r: pass Cache(client)' % cache.name)
        return cache.client
    client = getattr(cache, 'client', None)
    if isinstance(client, Client):
        return client
    raise TypeError('a recipe takes a diskcache_client Cache, DjangoCache or Client, not %s'
                    % type(cache).__name__)


def _tag_params(tag):
    """The query parameters that store a recipe's state with ``tag``, as
    python-diskcache's recipes pass ``tag=`` to every write of it."""
    return wire.set_params(None, tag)


def _recipe_request(c, kind, key, action='', params=(), method='POST', **kwargs):
    routing, segment, query = key_target(key, params)
    return Request(method, '/v1/%s/%s%s' % (kind, segment, '/' + action if action else ''),
                   query=wire.build_query(query) if query else '', shard=c.shard_of(routing),
                   **kwargs)


def _touch(client, key, expire):
    """Make a recipe's state expire ``expire`` seconds from now (as
    python-diskcache sets it with each change)."""
    if expire is not None:
        client.run(ops.touch(client, '/v1', key, expire))


def _average(resp):
    if resp.status == 404:
        return None
    return float(_answer(resp)['average'])


def average_add(c, key, value, expire=None, tag=None):
    resp = yield _recipe_request(c, 'averages', key, params=wire.set_params(expire, tag),
                                 body=repr(float(value)).encode('ascii'))
    return _average(resp)


def average_get(c, key, pop=False):
    resp = yield _recipe_request(c, 'averages', key, method='DELETE' if pop else 'GET',
                                 idempotent=not pop)
    return _average(resp)


class Averager:
    """python-diskcache's ``Averager``: a running average under ``key`` in
    the server's cache, shared by every process (``add`` is atomic on the
    server). ``cache`` is the server's :class:`~diskcache_client.Cache`, a
    DjangoCache of this package, or a Client. ``expire`` and ``tag`` are
    given to the state with each ``add``, in the same transaction."""

    def __init__(self, cache, key, expire=None, tag=None):
        self._client = _recipe_client(cache)
        self._key = key
        self._expire = expire
        self._tag = tag

    def add(self, value):
        """Add ``value`` to the average."""
        self._client.run(average_add(self._client, self._key, value, self._expire, self._tag))

    def get(self):
        """The average, or None when nothing was added."""
        return self._client.run(average_get(self._client, self._key))

    def pop(self):
        """The average (None when nothing was added), and remove it."""
        return self._client.run(average_get(self._client, self._key, pop=True))


def _wait_step(client):
    # A waiting acquire waits on the server in steps shorter than the
    # socket timeout, as Lock.acquire does.
    timeout = min((ep.socket_timeout or 5.0) for ep in client.endpoints)
    return max(min(timeout / 2, 10.0), 0.05)


def _blocking(client, operation):
    """Run ``operation(wait)`` (an acquire that waits up to ``wait``
    seconds on the server) until it returns True, as python-diskcache's
    spin loops do; a busy server (Timeout) is asked again."""
    step = _wait_step(client)
    while True:
        try:
            if client.run(operation(step)):
                return
        except Timeout:
            continue


class RLock:
    """python-diskcache's ``RLock``: a re-entrant lock under ``key``, held by
    a thread of a process (re-acquired by that thread, released as often as
    acquired). ``expire`` seconds after its last acquire the hold lapses,
    as python-diskcache's key expires; its state is stored with ``tag``. A
    blocking acquire waits on the server, which answers at the release."""

    def __init__(self, cache, key, expire=None, tag=None):
        self._client = _recipe_client(cache)
        self._key = key
        self._expire = expire
        self._tag = tag

    @staticmethod
    def _owner():
        return '%s-%d' % (_PROCESS[0], threading.get_ident())

    def acquire(self):
        """Acquire the lock (again, when this thread holds it)."""
        owner, ttl = self._owner(), self._expire or 0
        _blocking(self._client, lambda wait: self._acquire(owner, ttl, wait))

    def _acquire(self, owner, ttl, wait):
        params = [('owner', owner), ('reentrant', 'true'), ('ttl', _seconds(ttl)),
                  ('wait', _seconds(wait))] + _tag_params(self._tag)
        resp = yield _lock_request(self._client, self._key, 'acquire', params)
        return bool(_answer(resp).get('acquired'))

    def release(self):
        """Release once; AssertionError when this thread does not hold it,
        as python-diskcache's."""
        try:
            self._client.run(self._release(self._owner()))
        except LockNotOwnedError:
            raise AssertionError('cannot release un-acquired lock') from None

    def _release(self, owner):
        resp = yield _lock_request(self._client, self._key, 'release',
                                   [('owner', owner), ('reentrant', 'true')] + _tag_params(self._tag))
        _answer(resp, 'not held')

    def __enter__(self):
        self.acquire()

    def __exit__(self, *exc_info):
        self.release()


class BoundedSemaphore:
    """python-diskcache's ``BoundedSemaphore``: ``value`` permits under
    ``key``, taken by ``acquire`` (waiting for one) and given back by
    ``release`` (AssertionError when this process holds none, as
    python-diskcache's when none is taken). Permits are held by the process
    that took them; ``expire`` seconds after its last acquire a process's
    permits lapse; its state is stored with ``tag``."""

    def __init__(self, cache, key, value=1, expire=None, tag=None):
        self._client = _recipe_client(cache)
        self._key = key
        self._value = int(value)
        self._expire = expire
        self._tag = tag

    def acquire(self):
        """Take a permit, waiting until one is free."""
        owner, ttl = _PROCESS[0], self._expire or 0
        _blocking(self._client, lambda wait: self._acquire(owner, ttl, wait))

    def _acquire(self, owner, ttl, wait):
        params = [('owner', owner), ('value', str(self._value)), ('ttl', _seconds(ttl)),
                  ('wait', _seconds(wait))] + _tag_params(self._tag)
        resp = yield _recipe_request(self._client, 'semaphores', self._key, 'acquire', params)
        return bool(_answer(resp).get('acquired'))

    def release(self):
        """Give a permit back."""
        try:
            self._client.run(self._release(_PROCESS[0]))
        except LockNotOwnedError:
            raise AssertionError('cannot release un-acquired semaphore') from None

    def _release(self, owner):
        resp = yield _recipe_request(self._client, 'semaphores', self._key, 'release',
                                     [('owner', owner)] + _tag_params(self._tag))
        _answer(resp, 'not held')

    def __enter__(self):
        self.acquire()

    def __exit__(self, *exc_info):
        self.release()


def rate_take(c, key, count, seconds, tag=None):
    """Operation: take a token from the bucket ``key`` (``count`` per
    ``seconds``, stored with ``tag``): 0.0 if taken, else the seconds until
    one will be there."""
    params = [('count', str(int(count))), ('per', _seconds(seconds))] + _tag_params(tag)
    resp = yield _recipe_request(c, 'ratelimits', key, params=params)
    if resp.status == 429:
        return max(float(json.loads(resp.body).get('retry_after') or 0.0), 0.001)
    _answer(resp)
    return 0.0


def throttle(cache, count, seconds, name=None, expire=None, tag=None, time_func=None,
             sleep_func=time.sleep):
    """python-diskcache's ``throttle``: a decorator that lets ``count``
    calls through per ``seconds``, over every process of the cache (a token
    bucket on the server, under ``name`` or the function's full name). A
    call with no token waits with ``sleep_func`` for as long as the server
    says one takes to come. ``time_func`` is accepted and not used (the
    bucket runs on the server's clock); ``expire`` is renewed with each
    call; the bucket is stored with ``tag``."""
    del time_func  # the server's clock fills the bucket
    client = _recipe_client(cache)

    def decorator(func):
        key = full_name(func) if name is None else name

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            while True:
                delay = client.run(rate_take(client, key, count, seconds, tag))
                if not delay:
                    break
                sleep_func(delay)
            _touch(client, key, expire)
            return func(*args, **kwargs)

        return wrapper

    return decorator
