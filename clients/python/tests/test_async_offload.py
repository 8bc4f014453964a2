"""The a* methods never run synchronous work on the event loop.

Pickling a lazy QuerySet runs its query, unpickling can run any code, and a
key function may read the database: Django forbids database queries on an
event loop (SynchronousOnlyOperation), and its own backends run such work in
a thread. These tests use a real model (auth's Group) in a real SQLite
database; the same scenario against Django's LocMemCache is the reference.
"""

import asyncio
import pickle

import django
import pytest
from django.core.cache import caches
from django.core.exceptions import SynchronousOnlyOperation


def load_group(name):
    from django.contrib.auth.models import Group
    return Group.objects.get(name=name)


class GroupRef:
    """Pickles without touching the database; unpickling queries it."""

    def __init__(self, name):
        self.name = name

    def __reduce__(self):
        return load_group, (self.name,)


@pytest.fixture
def groups(database):
    from django.contrib.auth.models import Group
    Group.objects.all().delete()
    for name in ('alpha', 'beta', 'gamma'):
        Group.objects.create(name=name)
    yield Group
    Group.objects.all().delete()


def run(coro_fn, cache):
    async def main():
        try:
            return await coro_fn()
        finally:
            if hasattr(cache, 'client'):
                await cache.aclose()

    return asyncio.run(main())


def names(groups):
    return sorted(g.name for g in groups)


def scenario(cache, Group):  # pylint: disable=invalid-name
    async def body():
        # The query itself would fail here: the precondition of this test.
        with pytest.raises(SynchronousOnlyOperation):
            list(Group.objects.all())

        everyone = Group.objects.all()  # lazy: pickling runs the query
        await cache.aset('qs', everyone)
        assert names(await cache.aget('qs')) == ['alpha', 'beta', 'gamma']
        assert await cache.aadd('qs-add', Group.objects.filter(name='beta')) is True
        assert names(await cache.aget('qs-add')) == ['beta']
        assert await cache.aset_many({'m1': Group.objects.filter(name='alpha'),
                                      'm2': [Group.objects.exclude(name='alpha')]}) == []
        many = await cache.aget_many(['m1', 'm2', 'missing'])
        assert names(many['m1']) == ['alpha'] and names(many['m2'][0]) == ['beta', 'gamma']
        assert names(await cache.aget_or_set('qs-gos', Group.objects.all())) == [
            'alpha', 'beta', 'gamma']
        assert await cache.aincr_version('qs') == 2
        assert names(await cache.aget('qs', version=2)) == ['alpha', 'beta', 'gamma']

        # Unpickling that queries the database (a model looked up by name).
        await cache.aset('ref', GroupRef('gamma'))
        assert (await cache.aget('ref')).name == 'gamma'
        assert (await cache.aget_many(['ref']))['ref'].name == 'gamma'
        assert (await cache.aget_or_set('ref', 'unused')).name == 'gamma'
        await cache.adelete_many(['qs-add', 'm1', 'm2', 'qs-gos', 'ref'])
        assert await cache.adelete('qs', version=2) is True
        # Plain values stay plain.
        await cache.aset('plain', 'text')
        assert await cache.aget('plain') == 'text'

    return body


def test_async_pickling_and_unpickling_run_off_the_loop(groups):
    cache = caches['default']
    cache.clear()
    run(scenario(cache, groups), cache)
    # What the async API stored is what the sync API reads.
    cache.set('sync-ref', GroupRef('alpha'))
    assert cache.get('sync-ref').name == 'alpha'
    assert pickle.loads(pickle.dumps(GroupRef('beta'))).name == 'beta'


@pytest.mark.skipif(django.VERSION < (4, 0), reason="Django 3.2's BaseCache has no a* methods")
def test_reference_django_locmem_backend(groups):
    cache = caches['locmem']
    cache.clear()
    run(scenario(cache, groups), cache)


def test_async_key_function_that_reads_the_database(groups):
    cache = caches['db_key']
    cache.clear()

    async def body():
        assert await cache.aset('k', 'v') is True
        assert await cache.aget('k') == 'v'
        assert await cache.ahas_key('k') is True
        assert await cache.atouch('k', 300) is True
        assert await cache.aadd('n', 1) is True
        assert await cache.aincr('n', 2) == 3
        assert await cache.adecr('n') == 2
        assert await cache.aset_many({'a': 1, 'b': 2}) == []
        assert await cache.aget_many(['a', 'b']) == {'a': 1, 'b': 2}
        await cache.adelete_many(['a'])
        assert await cache.aget_or_set('b', 0) == 2
        assert await cache.aincr_version('k') == 2
        assert await cache.adecr_version('k', version=2) == 1
        assert await cache.adelete('k') is True

    run(body, cache)
    # The sync API makes the same keys.
    assert cache.get('n') == 2
    assert run(cache.aclear, cache) >= 1


def test_async_errors_of_offloaded_work_reach_the_caller(groups, cache):
    class Unpicklable:
        def __reduce__(self):
            raise TypeError('no pickling')

    async def body():
        with pytest.raises(TypeError, match='no pickling'):
            await cache.aset('bad', Unpicklable())
        with pytest.raises(TypeError, match='no pickling'):
            await cache.aset_many({'bad': [Unpicklable()]})
        assert await cache.aget('bad') is None
        await cache.aset('gone', GroupRef('no-such-group'))
        with pytest.raises(groups.DoesNotExist):
            await cache.aget('gone')

    run(body, cache)


def test_plain_values_and_django_keys_stay_on_the_loop(monkeypatch, cache):
    # str/bytes/numbers with Django's key function need no thread: the whole
    # call, encoding and decoding included, runs on the event loop.
    from diskcache_client import djangocache

    def no_thread(fn, arg):
        raise AssertionError('a step went to a thread')

    monkeypatch.setattr(djangocache, '_call_in_thread', no_thread)

    async def body():
        assert await cache.aset('s', 'text') is True
        assert await cache.aset_many({'b': b'\x00', 'i': 7, 'f': 1.5, 'n': None}) == []
        assert await cache.aget('s') == 'text'
        assert await cache.aget_many(['i', 'f']) == {'i': 7, 'f': 1.5}
        assert await cache.aincr('i') == 8
        assert await cache.aget('missing', 'default') == 'default'
        assert await cache.adelete('s') is True

    run(body, cache)
