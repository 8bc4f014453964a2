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

import json
import threading
import time
import uuid

from . import wire
from .errors import CacheServerError, Timeout
from .http11 import Request
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
