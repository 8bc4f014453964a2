"""cache.lock(): django-redis's lock (redis-py's Lock API) on the server's
locks, against one server and against three shards behind one URL."""

import threading
import time

import pytest

from diskcache_client import Client, Lock, LockError, LockNotOwnedError
from conftest import TOKEN


def test_lock_excludes(cache):
    # Threads with a Lock object each, as processes of the app would have:
    # inside the lock, an incr of "inside" must find nobody else there.
    overlaps, done = [], []

    def worker(n):
        for _ in range(15):
            with cache.lock('mutex', timeout=30):
                inside = cache.incr('inside')
                if inside != 1:
                    overlaps.append(inside)
                cache.set('count', cache.get('count') + 1)  # read, then write
                cache.decr('inside')
        done.append(n)

    cache.set('inside', 0)
    cache.set('count', 0)
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(done) == 4
    assert overlaps == []
    assert cache.get('count') == 60


def test_lock_api(cache):
    first = cache.lock('api', timeout=60)
    second = cache.lock('api', timeout=60)
    assert not first.locked() and not first.owned()
    assert first.acquire(blocking=False)
    assert first.locked() and first.owned()
    assert second.locked() and not second.owned()
    assert not second.acquire(blocking=False)
    assert not second.acquire(blocking_timeout=0.2)
    with pytest.raises(LockError):
        second.release()  # never acquired by this object
    with pytest.raises(LockError):
        second.extend(5)
    first.release()
    assert not first.locked()
    with pytest.raises(LockError):
        first.release()  # released already
    with second:
        assert second.owned()
    assert not second.locked()


def test_lock_key_is_made_by_the_key_function(cache):
    # The lock is the item under Django's key for it, as django-redis's is.
    with cache.lock('made', version=3):
        assert cache.has_key('made', version=3)
        assert not cache.has_key('made')
    assert not cache.has_key('made', version=3)


def test_lock_extend_and_reacquire(cache):
    lock = cache.lock('ttl', timeout=10)
    assert lock.acquire()
    remaining = lambda: lock.client.run(lock_status(lock))[2]  # noqa: E731
    assert lock.extend(100)
    assert remaining() > 60
    assert lock.extend(5, replace_ttl=True)
    assert remaining() <= 5
    assert lock.reacquire()
    assert 5 < remaining() <= 10
    lock.release()
    untimed = cache.lock('untimed')
    assert untimed.acquire()
    with pytest.raises(LockError):
        untimed.extend(5)
    untimed.release()


def lock_status(lock):
    from diskcache_client.recipes import lock_status as status
    return status(lock.client, lock.name)


def test_expired_hold_is_not_owned(cache):
    lock = cache.lock('short', timeout=0.05)
    assert lock.acquire()
    while lock.locked():  # until the hold has expired
        time.sleep(0.01)  # a poll's pace
    other = cache.lock('short', timeout=60)
    assert other.acquire(blocking=False)
    assert not lock.owned()
    with pytest.raises(LockNotOwnedError):
        lock.extend(5)
    with pytest.raises(LockNotOwnedError):
        lock.release()
    assert other.owned()
    other.release()


def test_waiting_acquire_gets_the_released_lock(cache):
    holder = cache.lock('handoff', timeout=60)
    assert holder.acquire()
    got = []
    waiter = threading.Thread(
        target=lambda: got.append(cache.lock('handoff', timeout=60).acquire(blocking_timeout=60)))
    waiter.start()
    holder.release()
    waiter.join()
    assert got == [True]


def test_thread_local_tokens(cache):
    # One Lock shared by two threads: the second thread does not hold what
    # the first took (redis-py's thread_local=True).
    lock = cache.lock('local', timeout=60)
    assert lock.acquire()
    seen = []
    t = threading.Thread(target=lambda: seen.append((lock.owned(), lock.acquire(blocking=False))))
    t.start()
    t.join()
    assert seen == [(False, False)]
    lock.release()
    shared = cache.lock('shared', timeout=60, thread_local=False)
    assert shared.acquire()
    t = threading.Thread(target=lambda: seen.append(shared.owned()))
    t.start()
    t.join()
    assert seen[-1] is True
    shared.release()


def test_long_wait_spans_requests_shorter_than_the_socket_timeout(server):
    # A wait far longer than the socket timeout is several requests, each
    # answered in time: not a client timeout.
    client = Client(server.url, token=TOKEN, socket_timeout=0.5)
    holder = Lock(client, 'long-wait', timeout=60)
    assert holder.acquire()
    started = time.monotonic()
    assert not Lock(client, 'long-wait', timeout=60).acquire(blocking_timeout=1.5)
    assert time.monotonic() - started >= 1.5
    holder.release()
    client.close()


def test_redis_py_arguments_and_edges(cache):
    # redis-py's acquire(sleep, blocking, blocking_timeout, token).
    lock = cache.lock('args', timeout=60)
    assert lock.acquire(0.01, False, None, b'my-token')
    assert lock.local.token == 'my-token' and lock.owned()
    assert not cache.lock('args').acquire(sleep=0.01, blocking=False)
    # extend to no time left expires the hold now, as redis's pexpire does.
    assert lock.extend(0, replace_ttl=True)
    assert not lock.locked() and not lock.owned()
    # timeout=0 is no expiry, as in redis-py.
    forever = cache.lock('forever', timeout=0)
    assert forever.acquire()
    assert forever.client.run(lock_status(forever))[2] == 0.0
    with pytest.raises(LockError):
        forever.extend(5)  # no timeout to extend
    forever.release()
    # LockError is a ValueError, as redis-py's, and says only its message.
    with pytest.raises(ValueError) as caught:
        cache.lock('never').release()
    assert str(caught.value) == 'cannot release an unlocked lock'


def test_busy_database_does_not_end_a_blocking_wait(cache, monkeypatch):
    # A 503 timeout (the database stayed busy: nothing was done) is tried
    # again within blocking_timeout; without blocking it is raised.
    from diskcache_client import Timeout
    lock = cache.lock('busy', timeout=60)
    run, busy = lock.client.run, [1]

    def flaky(op):
        if busy[0]:
            busy[0] -= 1
            op.close()
            raise Timeout('database busy')
        return run(op)

    monkeypatch.setattr(lock.client, 'run', flaky)
    assert lock.acquire(blocking_timeout=30)
    assert busy == [0]
    busy[0] = 1
    with pytest.raises(Timeout):
        cache.lock('busy2', timeout=60).acquire(blocking=False)
    lock.release()
