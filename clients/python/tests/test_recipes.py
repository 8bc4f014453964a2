"""python-diskcache's recipes over the server: Averager, RLock,
BoundedSemaphore and throttle on its atomic operations, and python-diskcache's
own Lock, barrier and memoize_stampede on a diskcache_client Cache."""

import multiprocessing
import threading

import diskcache
import pytest

from diskcache_client import (Averager, BoundedSemaphore, Cache, Client, RLock, throttle)


@pytest.fixture
def root(cache):
    """The server's cache, as a diskcache_client Cache."""
    return Cache(cache.client)


def test_averager_matches_python_diskcache(root, tmp_path):
    with diskcache.Cache(str(tmp_path / 'ref')) as ref:
        ours, theirs = Averager(root, 'avg'), diskcache.Averager(ref, 'avg')
        assert ours.get() is theirs.get() is None
        for x in (1, 2.5, -4, 10):
            ours.add(x)
            theirs.add(x)
        assert ours.get() == theirs.get()
        assert Averager(root, 'avg').get() == theirs.get()  # shared
        assert ours.pop() == theirs.pop()
        assert ours.get() is theirs.get() is None
    Averager(root, 'expiring', expire=3600).add(1)
    assert 0 < root.get('expiring', expire_time=True)[1]


def _try(lock, owner):
    """Whether ``owner`` gets the lock at once (another thread or process)."""
    return lock._client.run(lock._acquire(owner, 0, 0))  # pylint: disable=protected-access


def test_rlock_is_reentrant_for_its_thread_only(root):
    lock = RLock(root, 'rlock')
    lock.acquire()
    with lock:  # again, by the same thread
        assert not _try(lock, 'another-process-1')
    assert not _try(lock, 'another-process-1')  # still held once
    errors = []
    t = threading.Thread(target=lambda: errors.append(pytest.raises(AssertionError, lock.release)))
    t.start()
    t.join()
    assert len(errors) == 1  # another thread cannot release it
    lock.release()
    assert _try(lock, 'another-process-1')
    with pytest.raises(AssertionError, match='un-acquired lock'):
        lock.release()


def _child_takes(url, token_file, queue):
    lock = RLock(Client(url, token_file=token_file), 'held-by-parent')
    queue.put(_try(lock, lock._owner()))  # pylint: disable=protected-access


def test_a_forked_child_is_another_holder(root, server, token_file):
    # The same thread id in a forked child is another thread: it does not
    # re-enter its parent's lock.
    lock = RLock(root, 'held-by-parent')
    lock.acquire()
    ctx = multiprocessing.get_context('fork')
    queue = ctx.Queue()
    child = ctx.Process(target=_child_takes, args=(server.url, str(token_file), queue))
    child.start()
    took = queue.get(timeout=60)
    child.join()
    assert took is False
    lock.release()


def test_bounded_semaphore(root):
    sem = BoundedSemaphore(root, 'sem', value=2)
    sem.acquire()
    with sem:
        assert not sem._client.run(sem._acquire('another-process', 0, 0))  # pylint: disable=protected-access
    assert sem._client.run(sem._acquire('another-process', 0, 0))  # pylint: disable=protected-access
    sem.release()
    with pytest.raises(AssertionError, match='un-acquired semaphore'):
        sem.release()


class _Stop(Exception):
    pass


def test_throttle_lets_count_calls_through_per_period(root):
    calls, delays = [], []

    def sleep(delay):
        delays.append(delay)
        raise _Stop

    @throttle(root, 2, 60, name='throttled', sleep_func=sleep)
    def work():
        calls.append(1)

    work()
    work()
    with pytest.raises(_Stop):
        work()
    assert len(calls) == 2 and 0 < delays[0] <= 30
    # Another name is another bucket.
    throttle(root, 1, 60, name='other', sleep_func=sleep)(lambda: calls.append(1))()
    assert len(calls) == 3


def test_python_diskcaches_own_recipes_work_on_a_cache(root):
    lock = diskcache.Lock(root, 'dc-lock', expire=60)
    with lock:
        assert lock.locked()
    assert not lock.locked()
    runs = []

    @diskcache.memoize_stampede(root, expire=60)
    def compute(x):
        runs.append(x)
        return x * 2

    assert compute(21) == compute(21) == 42 and runs == [21]


def test_recipes_take_the_servers_cache(root):
    with pytest.raises(TypeError, match='named cache'):
        Averager(root.cache('named'), 'k')
    with pytest.raises(TypeError):
        BoundedSemaphore(object(), 'k')


def test_recipe_state_is_tagged_as_python_diskcaches(root, tmp_path):
    # Each recipe stores its state with its tag on every write, so that
    # evict(tag) removes it: the same tags and counts as python-diskcache.
    ours = {'Averager': Averager, 'RLock': RLock, 'BoundedSemaphore': BoundedSemaphore,
            'throttle': throttle}
    theirs = {name: getattr(diskcache, name) for name in ours}
    with diskcache.Cache(str(tmp_path / 'ref')) as ref:
        for cache, lib in ((root, ours), (ref, theirs)):
            averager = lib['Averager'](cache, 'avg', expire=3600, tag='a')
            averager.add(1)
            averager.add(3)
            lock = lib['RLock'](cache, 'rlock', tag='l')
            lock.acquire()
            lock.acquire()
            lock.release()  # held once more: its state is written again
            lib['BoundedSemaphore'](cache, 'sem', value=2, tag='s').acquire()

            @lib['throttle'](cache, 10, 60, name='bucket', tag='t')
            def call():
                return 1
            call()
        for key, tag in (('avg', 'a'), ('rlock', 'l'), ('sem', 's')):
            assert root.get(key, tag=True)[1] == ref.get(key, tag=True)[1] == tag, key
        assert root.get('avg', expire_time=True)[1] > 0
        for tag in ('a', 'l', 's'):
            assert root.evict(tag) == ref.evict(tag) == 1, tag
        assert Averager(root, 'avg').get() is None
        # python-diskcache's throttle tags its bucket only when it decorates
        # (its calls set it again without the tag); here every call keeps it.
        assert ref.get('bucket', tag=True)[1] is None
        assert root.get('bucket', tag=True)[1] == 't' and root.evict('t') == 1
