"""The a* methods: real asyncio I/O, same semantics as the sync methods."""

import asyncio
import threading

import pytest
from django.core.cache import caches

from diskcache_client import transport as transport_mod
from diskcache_client.djangocache import DjangoCache

from conftest import TOKEN, hold_the_only_connection


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


def test_async_burst_queues_for_max_connections(start_server):
    # 300 coroutines at once over at most 8 connections per event loop:
    # the others wait for one instead of each opening its own (past the
    # process's file limit or the server's --max-connections).
    srv = start_server()
    c = DjangoCache(srv.url, {'OPTIONS': {'TOKEN': TOKEN, 'MAX_CONNECTIONS': 8}})

    async def scenario():
        await asyncio.gather(*(c.aset('b%d' % n, n) for n in range(300)))
        await asyncio.gather(*(c.aincr('b0') for _ in range(300)))
        return await asyncio.gather(*(c.aget('b%d' % n) for n in range(300)))

    values = run(scenario, c)
    assert values == [300] + list(range(1, 300))
    assert c.client.connect_attempts <= 8


def test_async_incr_refused_connection_is_sent_again(start_server):
    # A server at its --max-connections answers 503 too_many_connections
    # on accept, before reading the request: even an incr (not idempotent)
    # is sent again, and counts once.
    srv = start_server(None, '--max-connections', '1')
    c = DjangoCache(srv.url, {'OPTIONS': {'TOKEN': TOKEN, 'RETRIES': 3, 'RETRY_BACKOFF': 0.01}})
    c.set('n', 0)
    c.client.close()  # its pooled connection gives the slot back
    hold = hold_the_only_connection(srv)
    try:
        sleeps = []
        real_sleep = asyncio.sleep

        async def sleep(delay):
            # The server refused a connection: give the slot back.
            if not sleeps:
                hold.close()
            sleeps.append(delay)
            await real_sleep(0)

        transport_mod.asyncio.sleep = sleep
        try:
            assert run(lambda: c.aincr('n'), c) == 1
        finally:
            transport_mod.asyncio.sleep = real_sleep
        assert sleeps, 'the first connection was not refused'
    finally:
        hold.close()
    assert c.get('n') == 1
