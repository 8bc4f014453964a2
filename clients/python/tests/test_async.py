"""The a* methods: real asyncio I/O, same semantics as the sync methods."""

import asyncio
import threading

import pytest
from django.core.cache import caches

from diskcache_client.djangocache import DjangoCache


def run(coro_fn, cache):
    async def main():
        try:
            return await coro_fn()
        finally:
            await cache.aclose()

    return asyncio.run(main())


def test_async_methods_exist_on_every_django_version():
    for name in ['aadd', 'aget', 'aset', 'atouch', 'adelete', 'aget_many', 'aget_or_set',
                 'ahas_key', 'aincr', 'adecr', 'aset_many', 'adelete_many', 'aclear',
                 'aincr_version', 'adecr_version', 'aclose']:
        method = getattr(DjangoCache, name)
        assert asyncio.iscoroutinefunction(method), name
        assert method.__qualname__.startswith('DjangoCache.'), name


def test_async_api(cache):
    async def scenario():
        assert await cache.aset('k', 'v') is True
        assert await cache.aget('k') == 'v'
        assert await cache.aget('missing', 'dflt') == 'dflt'
        assert await cache.aadd('k', 'other') is False
        assert await cache.aadd('k2', None) is True
        assert await cache.aget('k2', 'dflt') is None
        assert await cache.ahas_key('k2') is True
        assert await cache.ahas_key('nope') is False
        assert await cache.atouch('k', 500) is True
        assert await cache.atouch('nope') is False
        assert await cache.aset('n', 10) is True
        assert await cache.aincr('n') == 11
        assert await cache.adecr('n', 5) == 6
        with pytest.raises(ValueError):
            await cache.aincr('missing')
        assert await cache.aset_many({'a': 1, 'b': [2], 'c': b'3'}) == []
        assert await cache.aget_many(['a', 'b', 'c', 'd']) == {'a': 1, 'b': [2], 'c': b'3'}
        await cache.adelete_many(['a', 'b'])
        assert await cache.aget_many(['a', 'b', 'c']) == {'c': b'3'}
        assert await cache.adelete('c') is True
        assert await cache.adelete('c') is False
        assert await cache.aget_or_set('gos', lambda: 'computed') == 'computed'
        assert await cache.aget_or_set('gos', 'ignored') == 'computed'
        assert await cache.aset('ver', 'x', version=2) is True
        assert await cache.aincr_version('ver', version=2) == 3
        assert await cache.aget('ver', version=3) == 'x'
        assert await cache.adecr_version('ver', version=3) == 2
        assert await cache.aget('ver', version=2) == 'x'
        with pytest.raises(ValueError):
            await cache.aincr_version('missing')
        assert await cache.aset('zero', 1, 0) is True
        assert await cache.aget('zero') is None
        assert await cache.aclear() >= 1
        assert await cache.aget('k') is None

    run(scenario, cache)
    # The sync API sees what the async one wrote.
    cache.set('shared', 1)
    assert run(lambda: cache.aget('shared'), cache) == 1


def test_async_concurrent_gather(cache):
    async def scenario():
        await asyncio.gather(*(cache.aset('g%d' % n, n) for n in range(30)))
        values = await asyncio.gather(*(cache.aget('g%d' % n) for n in range(30)))
        assert values == list(range(30))
        await asyncio.gather(*(cache.aincr('g0') for _ in range(20)))
        assert await cache.aget('g0') == 20

    run(scenario, cache)


def test_async_uses_its_own_connections_and_reuses_them(cache):
    client = cache.client

    async def scenario():
        await cache.aset('a', 1)
        before = client.connect_attempts
        for _ in range(10):
            await cache.aget('a')
        return client.connect_attempts - before

    assert run(scenario, cache) == 0


def test_async_from_several_threads(cache):
    errors = []

    def worker(n):
        async def scenario():
            await cache.aset('t%d' % n, n)
            assert await cache.aget('t%d' % n) == n
        try:
            asyncio.run(scenario())
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert cache.get_many(['t0', 't1', 't2', 't3']) == {'t0': 0, 't1': 1, 't2': 2, 't3': 3}


def test_async_large_values_and_key_prefix(cache):
    prefixed = caches['prefix']
    blob = b'\x01' * 500000

    async def scenario():
        await prefixed.aset('big', blob)
        assert await prefixed.aget('big') == blob
        assert await cache.aget('big') is None

    run(scenario, cache)
