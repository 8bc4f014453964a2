"""Migration: a directory written by python-diskcache's DjangoCache, served by
cacheserver, reads back through this backend as the same Python objects
(and the other way round)."""

import datetime
import decimal
import io
import time

import diskcache
import pytest
from django.core.cache import caches
from django.utils.safestring import SafeString, mark_safe

from diskcache_client.djangocache import DjangoCache

from conftest import TOKEN

VALUES = {
    'int': 42,
    'negative': -7,
    'int64_max': 2 ** 63 - 1,
    'bigint': 2 ** 80,
    'float': 3.25,
    'str': 'héllo wörld',
    'empty_str': '',
    'bytes': b'\x00\x01binary\xff',
    'empty_bytes': b'',
    'none': None,
    'bool': False,
    'list': [1, 'two', 3.0, None],
    'dict': {'a': {'b': [1, 2]}},
    'tuple': (1, 2),
    'set': {3, 4},
    'decimal': decimal.Decimal('1.10'),
    'datetime': datetime.datetime(2024, 5, 17, 12, 30, tzinfo=datetime.timezone.utc),
    'safe': mark_safe('<b>safe</b>'),
    'big_text': 'ü' * 40000,       # a text value file (MODE_TEXT)
    'big_bytes': b'\xab' * 70000,  # a binary value file (MODE_BINARY)
    'big_pickle': list(range(20000)),  # a pickle value file
    'key with spaces': 'spaces',
}


@pytest.fixture
def written_by_python_diskcache(pydiskcache_dir):
    """Fill the python-diskcache directory through Django's settings
    (BACKEND diskcache.DjangoCache) and return what was written."""
    import warnings
    from django.core.cache import CacheKeyWarning
    src = caches['pydiskcache']
    assert isinstance(src, diskcache.DjangoCache)
    src.clear()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', CacheKeyWarning)
        for key, value in VALUES.items():
            assert src.set(key, value)
    src.set('forever', 'no expiry', timeout=None)
    src.set('tagged', 'with tag', timeout=1000, tag='blue')
    src.set('tagged2', 'with tag too', tag='blue')
    src.set('counter', 10)
    src.set('nan', float('nan'))  # stored as NULL: python-diskcache reads None
    src.set('file', io.BytesIO(b'streamed file ' * 5000), read=True)
    src.set('v2', 'version two', version=2)
    prefixed = diskcache.DjangoCache(src.directory, {'KEY_PREFIX': 'pre'})
    prefixed.set('k', 'prefixed value')
    prefixed.close()

    calls = []

    @src.memoize(name='doubler')
    def doubler(x):
        calls.append(x)
        return x * 2

    assert doubler(21) == 42 and calls == [21]

    named = src.cache('named')
    named.set(('tuple', 1), 'tuple key')
    named.set(12, 'int key')
    named.set(b'bytes-key', 'bytes key')
    named.set(2.5, 'float key')
    named.set('text', {'value': 1}, expire=1000, tag='t')

    @named.memoize(name='tripler')
    def tripler(x):
        return x * 3

    assert tripler(5) == 15

    expire_times = {key: src.get(key, expire_time=True)[1]
                    for key in list(VALUES) + ['forever', 'tagged']}
    src.close()
    named.close()
    return {'dir': pydiskcache_dir, 'expire_times': expire_times}


def test_python_diskcache_directory_reads_back(written_by_python_diskcache, start_server):
    srv = start_server(written_by_python_diskcache['dir'], '--fanout', '8')
    dst = DjangoCache(srv.url, {'OPTIONS': {'TOKEN': TOKEN}})

    import warnings
    from django.core.cache import CacheKeyWarning
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', CacheKeyWarning)
        for key, value in VALUES.items():
            got = dst.get(key, 'MISSING')
            assert got == value, key
            assert type(got) is type(value), key
        got = dst.get_many(list(VALUES))
    assert got == VALUES
    assert isinstance(dst.get('safe'), SafeString)

    # Expiry times are the ones python-diskcache stored.
    for key, expire_time in written_by_python_diskcache['expire_times'].items():
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', CacheKeyWarning)
            assert dst.get(key, expire_time=True)[1] == expire_time, key
    assert written_by_python_diskcache['expire_times']['forever'] is None
    assert written_by_python_diskcache['expire_times']['int'] > time.time()

    assert dst.get('tagged', tag=True) == ('with tag', 'blue')
    assert dst.incr('counter') == 11  # stored as an int: atomic incr works
    assert dst.get('nan', 'MISSING') is None  # as python-diskcache reads it
    with dst.read('file') as f:
        assert f.read() == b'streamed file ' * 5000
    assert dst.get('v2') is None
    assert dst.get('v2', version=2) == 'version two'
    assert DjangoCache(srv.url, {'KEY_PREFIX': 'pre', 'OPTIONS': {'TOKEN': TOKEN}}).get('k') \
        == 'prefixed value'

    # Memoized results are found under the same keys: no new call.
    @dst.memoize(name='doubler')
    def doubler(x):
        raise AssertionError('should have been read from the cache')

    assert doubler(21) == 42

    named = dst.cache('named')
    assert named.get(('tuple', 1)) == 'tuple key'
    assert named.get(12) == 'int key'
    assert named.get(b'bytes-key') == 'bytes key'
    assert named.get(2.5) == 'float key'
    assert named.get('text', tag=True) == ({'value': 1}, 't')

    @named.memoize(name='tripler')
    def tripler(x):
        raise AssertionError('should have been read from the cache')

    assert tripler(5) == 15

    assert dst.evict('blue') == 2
    assert dst.get('tagged') is None


def test_server_written_directory_reads_in_python_diskcache(start_server, tmp_path):
    data = tmp_path / 'written-by-server'
    srv = start_server(data, '--fanout', '8')
    dst = DjangoCache(srv.url, {'OPTIONS': {'TOKEN': TOKEN}})
    for key, value in VALUES.items():
        if ' ' not in key:
            dst.set(key, value, tag='mine' if key == 'int' else None)
    dst.set('forever', 'x', None)
    dst.set('file', io.BytesIO(b'f' * 100000), read=True)
    dst.cache('named').set(('tuple', 2), 'from server')

    @dst.memoize(name='q')
    def q(x):
        return x + 1

    assert q(1) == 2
    srv.stop()

    src = diskcache.DjangoCache(str(data), {})
    try:
        for key, value in VALUES.items():
            if ' ' not in key:
                got = src.get(key, 'MISSING')
                assert got == value and type(got) is type(value), key
        assert src.get('int', tag=True) == (42, 'mine')
        assert src.get('forever', expire_time=True) == ('x', None)
        assert src.get('file') == b'f' * 100000
        assert src.cache('named').get(('tuple', 2)) == 'from server'

        @src.memoize(name='q')
        def q2(x):
            raise AssertionError('should have been read from the cache')

        assert q2(1) == 2
        assert src.incr('int') == 43
    finally:
        src.close()
