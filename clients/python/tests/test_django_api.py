"""Django's cache API with Django's documented semantics.

Adapted (conceptually) from the backend tests of Django's own test suite
(tests/cache/tests.py: BaseCacheTests).
"""

import datetime
import pickle
import time
import warnings

import pytest
from django.core.cache import CacheKeyWarning, caches
from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.utils.safestring import SafeString, mark_safe

from diskcache_client import Cache
from diskcache_client.djangocache import DjangoCache


def expire_time_of(cache, key, version=None):
    return cache.get(key, version=version, expire_time=True)[1]


class Unpicklable:
    def __getstate__(self):
        raise pickle.PickleError('not picklable')


def test_backend_class(cache):
    assert isinstance(cache, DjangoCache)


def test_simple(cache):
    assert cache.set('key', 'value') is True
    assert cache.get('key') == 'value'


def test_default_used_when_none_is_set(cache):
    # None is a value: stored and returned, not replaced by the default.
    cache.set('key_default_none', None)
    assert cache.get('key_default_none', default='default') is None
    assert cache.has_key('key_default_none')
    assert cache.get_many(['key_default_none']) == {'key_default_none': None}


def test_add(cache):
    assert cache.add('addkey1', 'value') is True
    assert cache.add('addkey1', 'newvalue') is False
    assert cache.get('addkey1') == 'value'


def test_non_existent(cache):
    assert cache.get('does_not_exist') is None
    assert cache.get('does_not_exist', 'bang!') == 'bang!'


def test_get_many(cache):
    cache.set_many({'a': 'a', 'b': 'b', 'c': 'c', 'd': 'd'})
    assert cache.get_many(['a', 'c', 'd']) == {'a': 'a', 'c': 'c', 'd': 'd'}
    assert cache.get_many(['a', 'b', 'e']) == {'a': 'a', 'b': 'b'}
    assert cache.get_many(iter(['a', 'b', 'e'])) == {'a': 'a', 'b': 'b'}
    assert cache.get_many([]) == {}


def test_delete(cache):
    cache.set_many({'key1': 'spam', 'key2': 'eggs'})
    assert cache.delete('key1') is True
    assert cache.get('key1') is None
    assert cache.get('key2') == 'eggs'
    assert cache.delete('key1') is False
    assert cache.delete('nonexistent_key') is False


def test_has_key(cache):
    cache.set('hello1', 'goodbye1')
    assert cache.has_key('hello1') is True
    assert cache.has_key('goodbye1') is False
    cache.set('no_expiry', 'here', None)
    assert cache.has_key('no_expiry') is True
    cache.set('null', None)
    assert cache.has_key('null') is True


def test_in(cache):
    cache.set('hello2', 'goodbye2')
    assert 'hello2' in cache
    assert 'goodbye2' not in cache
    cache.set('null', None)
    assert 'null' in cache


def test_incr(cache):
    cache.set('answer', 41)
    assert cache.incr('answer') == 42
    assert cache.get('answer') == 42
    assert cache.incr('answer', 10) == 52
    assert cache.get('answer') == 52
    assert cache.incr('answer', -10) == 42
    with pytest.raises(ValueError):
        cache.incr('does_not_exist')
    with pytest.raises(ValueError):
        cache.incr('does_not_exist', -1)
    cache.set('null', None)
    with pytest.raises(TypeError):
        cache.incr('null')


def test_incr_names_the_made_key(cache):
    # As python-diskcache's DjangoCache and Django's locmem word it.
    with pytest.raises(ValueError, match="Key ':1:nokey' not found"):
        cache.incr('nokey')
    with pytest.raises(ValueError, match="Key ':1:nokey' not found"):
        cache.decr('nokey')
    with pytest.raises(KeyError, match="':1:nokey'"):
        cache.read('nokey')


def test_incr_beyond_64_bits_overflows(cache):
    # python-diskcache cannot store such an int in a row either; the
    # value is left as it was (not turned into a float).
    cache.set('b', 1)
    with pytest.raises(OverflowError):
        cache.incr('b', 2 ** 64)
    with pytest.raises(OverflowError):
        cache.decr('b', 2 ** 63 + 10)
    with pytest.raises(OverflowError):
        cache.incr('missing', 1, default=2 ** 70)
    assert cache.get('b') == 1 and cache.get('missing') is None


def test_nan_and_odd_tags(cache):
    # A NaN value reads back as NaN (python-diskcache's own reads None:
    # SQLite stores NaN as NULL).
    assert cache.set('nan', float('nan')) is True
    got = cache.get('nan')
    assert isinstance(got, float) and got != got
    # Tags bind as python-diskcache binds them: bool is the int, NaN none.
    cache.set('t', 'v', tag=True)
    assert cache.get('t', tag=True) == ('v', 1)
    cache.set('n', 'v', tag=float('nan'))
    assert cache.get('n', tag=True) == ('v', None)
    assert cache.evict(None) == 0
    assert cache.evict(float('nan')) == 0
    assert cache.evict(True) == 1 and cache.get('t') is None
    with pytest.raises(TypeError):
        cache.set('k', 'v', timeout='10')


def test_decr(cache):
    cache.set('answer', 43)
    assert cache.decr('answer') == 42
    assert cache.get('answer') == 42
    assert cache.decr('answer', 10) == 32
    assert cache.get('answer') == 32
    assert cache.decr('answer', -10) == 42
    with pytest.raises(ValueError):
        cache.decr('does_not_exist')
    cache.set('null', None)
    with pytest.raises(TypeError):
        cache.decr('null')


def test_incr_default_and_float(cache):
    # python-diskcache's extension: a default starts a missing counter.
    assert cache.incr('counter', 5, default=10) == 15
    assert cache.decr('counter', 2, default=0) == 13
    cache.set('f', 1.5)
    assert cache.incr('f', 1) == 2.5
    assert isinstance(cache.get('f'), float)


def test_incr_keeps_the_timeout(cache):
    cache.set('counted', 1, 1000)
    before = expire_time_of(cache, 'counted')
    cache.incr('counted')
    assert expire_time_of(cache, 'counted') == before


def test_incr_is_atomic_across_threads(cache):
    import threading
    cache.set('hits', 0)

    def work():
        for _ in range(25):
            cache.incr('hits')

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.get('hits') == 100


def test_close(cache):
    assert hasattr(cache, 'close')
    cache.close()
    cache.set('after_close', 1)
    assert cache.get('after_close') == 1


def test_data_types(cache):
    stuff = {
        'string': 'this is a string',
        'int': 42,
        'bool': True,
        'list': [1, 2, 3, 4],
        'tuple': (1, 2, 3, 4),
        'dict': {'A': 1, 'B': 2},
        'function': test_data_types,
        'class': Unpicklable,
        'float': 0.25,
        'big_int': 2 ** 70,
        'negative': -(2 ** 63),
        'bytes': b'\x00\xff binary',
        'bytearray': bytearray(b'abc'),
        'set': {1, 2},
        'none': None,
    }
    cache.set('stuff', stuff)
    assert cache.get('stuff') == stuff
    for name, value in stuff.items():
        cache.set(name, value)
        got = cache.get(name)
        assert got == value
        assert type(got) is type(value), name


def test_bool_is_not_a_number(cache):
    cache.set('flag', True)
    assert cache.get('flag') is True
    with pytest.raises(TypeError):
        cache.incr('flag')


def test_safestring_keeps_its_type(cache):
    cache.set('safe', mark_safe('<b>x</b>'))
    assert isinstance(cache.get('safe'), SafeString)


def test_unicode(cache):
    stuff = {
        'ascii': 'ascii_value',
        'unicode_ascii': 'Iñtërnâtiônàlizætiøn1',
        'Iñtërnâtiônàlizætiøn': 'Iñtërnâtiônàlizætiøn2',
        'ascii2': {'x': 1},
    }
    for key, value in stuff.items():
        cache.set(key, value)
        assert cache.get(key) == value
    for key, value in stuff.items():
        cache.delete(key)
        cache.add(key, value)
        assert cache.get(key) == value
    for key in stuff:
        cache.delete(key)
    cache.set_many(stuff)
    for key, value in stuff.items():
        assert cache.get(key) == value


def test_binary_string(cache):
    import zlib
    value = 'value_to_be_compressed'
    compressed = zlib.compress(value.encode())
    cache.set('binary1', compressed)
    assert zlib.decompress(cache.get('binary1')).decode() == value
    cache.add('binary1-add', compressed)
    assert zlib.decompress(cache.get('binary1-add')).decode() == value
    cache.set_many({'binary1-set_many': compressed})
    assert zlib.decompress(cache.get('binary1-set_many')).decode() == value


def test_odd_characters_in_keys(cache):
    keys = ['a/b', '../x', '.', '..', '%41', 'q?x=1&y#z', 'plus+and space', 'tab\tkey',
            'ключ', '🔑', 'a' * 2000]
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', CacheKeyWarning)
        for n, key in enumerate(keys):
            cache.set(key, n)
        for n, key in enumerate(keys):
            assert cache.get(key) == n, key
            assert cache.has_key(key)
        assert cache.get_many(keys) == {k: n for n, k in enumerate(keys)}
        cache.delete_many(keys)
        assert cache.get_many(keys) == {}


def test_large_values(cache):
    text = 'x' * 200000
    blob = bytes(range(256)) * 2000
    cache.set('text', text)
    cache.set('blob', blob)
    cache.set('obj', {'payload': blob})
    assert cache.get('text') == text
    assert cache.get('blob') == blob
    assert cache.get_many(['text', 'blob', 'obj']) == {
        'text': text, 'blob': blob, 'obj': {'payload': blob}}


def test_set_many(cache):
    assert cache.set_many({'key1': 'spam', 'key2': 'eggs'}) == []
    assert cache.get('key1') == 'spam'
    assert cache.get('key2') == 'eggs'
    assert cache.set_many({}) == []


def test_set_many_expiration(cache):
    cache.set_many({'key1': 'spam', 'key2': 'eggs'}, 1)
    now = time.time()
    for key in ('key1', 'key2'):
        exp = expire_time_of(cache, key)
        assert now - 5 < exp <= now + 1.5
    cache.set_many({'key3': 'x'}, None)
    assert expire_time_of(cache, 'key3') is None


def test_set_many_types_and_tags_roundtrip(cache):
    data = {'i': 7, 'f': 2.5, 's': 'str', 'b': b'bytes', 'n': None, 'l': [1]}
    assert cache.set_many(data) == []
    assert cache.get_many(list(data)) == data
    assert cache.incr('i') == 8  # stored as a number, not a pickle


def test_set_many_unpicklable_raises(cache):
    with pytest.raises(pickle.PickleError):
        cache.set_many({'good': 1, 'bad': Unpicklable()})
    assert cache.get('good') is None  # nothing was sent


def test_set_add_fail_on_pickleerror(cache):
    with pytest.raises(pickle.PickleError, match='not picklable'):
        cache.set('bad', Unpicklable())
    with pytest.raises(pickle.PickleError):
        cache.add('bad', Unpicklable())
    with pytest.raises(pickle.PickleError):
        cache.get_or_set('bad', Unpicklable)
    assert cache.has_key('bad') is False


def test_delete_many(cache):
    cache.set_many({'key1': 'spam', 'key2': 'eggs', 'key3': 'ham'})
    assert cache.delete_many(['key1', 'key2']) is None
    assert cache.get('key1') is None
    assert cache.get('key2') is None
    assert cache.get('key3') == 'ham'
    cache.delete_many([])


def test_clear(cache):
    cache.set_many({'key1': 'spam', 'key2': 'eggs'})
    assert cache.clear() == 2
    assert cache.get('key1') is None
    assert cache.get('key2') is None


def test_long_timeout(cache):
    # Timeouts over 30 days are seconds, not absolute times (memcached quirk).
    cache.set('key1', 'eggs', 60 * 60 * 24 * 30 + 1)
    assert cache.get('key1') == 'eggs'
    assert cache.add('key2', 'ham', 60 * 60 * 24 * 30 + 1) is True
    assert cache.get('key2') == 'ham'
    cache.set_many({'key3': 'sausage', 'key4': 'lobster bisque'}, 60 * 60 * 24 * 30 + 1)
    assert cache.get('key3') == 'sausage'
    assert cache.get('key4') == 'lobster bisque'
    assert expire_time_of(cache, 'key1') > time.time() + 60 * 60 * 24 * 30


def test_very_long_timeout(cache):
    # 1e10 seconds (~317 years) is beyond the server's time.Duration: the
    # client bounds it to ~291 years instead of the item expiring at once.
    cache.set('key1', 'eggs', 1e10)
    assert cache.get('key1') == 'eggs'
    cache.set_many({'key2': 'ham'}, 10 ** 12)
    assert cache.get('key2') == 'ham'
    assert cache.touch('key2', 1e300) is True
    assert expire_time_of(cache, 'key2') > time.time() + 9e9


def test_forever_timeout(cache):
    cache.set('key1', 'eggs', None)
    assert cache.get('key1') == 'eggs'
    assert expire_time_of(cache, 'key1') is None
    assert cache.add('key2', 'ham', None) is True
    assert cache.get('key2') == 'ham'
    assert cache.add('key1', 'new eggs', None) is False
    assert cache.get('key1') == 'eggs'
    cache.set_many({'key3': 'sausage', 'key4': 'lobster bisque'}, None)
    assert cache.get('key3') == 'sausage'
    assert cache.get('key4') == 'lobster bisque'
    cache.set('key5', 'belgian fries', timeout=1)
    assert cache.touch('key5', timeout=None) is True
    assert expire_time_of(cache, 'key5') is None
    assert cache.get('key5') == 'belgian fries'


def test_zero_timeout(cache):
    cache.set('key1', 'eggs', 0)
    assert cache.get('key1') is None
    assert cache.add('key2', 'ham', 0) is True
    assert cache.get('key2') is None
    cache.set_many({'key3': 'sausage', 'key4': 'lobster bisque'}, 0)
    assert cache.get('key3') is None
    assert cache.get('key4') is None
    cache.set('key5', 'belgian fries', timeout=5)
    assert cache.touch('key5', timeout=0) is True
    assert cache.get('key5') is None


def test_negative_timeout(cache):
    cache.set('key1', 'eggs', -1)
    assert cache.get('key1') is None
    assert cache.has_key('key1') is False
    assert cache.add('key1', 'ham', -5) is True
    assert cache.get('key1') is None
    cache.set('key2', 'x')
    assert cache.touch('key2', -1) is True
    assert cache.get('key2') is None
    # An expired key can be added again.
    assert cache.add('key2', 'again') is True
    assert cache.get('key2') == 'again'


def test_float_timeout(cache):
    cache.set('key1', 'spam', 100.2)
    assert cache.get('key1') == 'spam'
    exp = expire_time_of(cache, 'key1')
    assert time.time() + 95 < exp < time.time() + 100.3
    cache.set('key2', 'spam', 0.5)
    exp = expire_time_of(cache, 'key2')
    assert exp - time.time() < 0.6


def test_default_timeout(cache):
    assert cache.default_timeout == 300
    cache.set('key', 'value')
    exp = expire_time_of(cache, 'key')
    assert time.time() + 290 < exp <= time.time() + 300.5
    forever = caches['forever']
    forever.set('key2', 'value')
    assert expire_time_of(forever, 'key2') is None


def test_touch(cache):
    cache.set('expire1', 'very quickly', timeout=1)
    assert cache.touch('expire1', timeout=400) is True
    assert expire_time_of(cache, 'expire1') > time.time() + 390
    assert cache.get('expire1') == 'very quickly'
    assert cache.touch('expire1') is True  # default timeout
    exp = expire_time_of(cache, 'expire1')
    assert time.time() + 290 < exp <= time.time() + 300.5
    assert cache.touch('nonexistent') is False


def test_get_or_set(cache):
    assert cache.get('projector') is None
    assert cache.get_or_set('projector', 42) == 42
    assert cache.get('projector') == 42
    assert cache.get_or_set('null', None) is None
    # None is stored: a later default is not.
    assert cache.get_or_set('null', 'default') is None


def test_get_or_set_callable(cache):
    def my_callable():
        return 'value'

    assert cache.get_or_set('mykey', my_callable) == 'value'
    assert cache.get_or_set('mykey', my_callable()) == 'value'
    calls = []
    assert cache.get_or_set('mykey', lambda: calls.append(1) or 'other') == 'value'
    assert calls == []
    assert cache.get_or_set('null', lambda: None) is None
    assert cache.has_key('null')


def test_get_or_set_version(cache):
    msg = r"get_or_set\(\) missing 1 required positional argument: 'default'"
    assert cache.get_or_set('brian', 1979, version=2) == 1979
    with pytest.raises(TypeError, match=msg):
        cache.get_or_set('brian')
    with pytest.raises(TypeError, match=msg):
        cache.get_or_set('brian', version=1)
    assert cache.get('brian', version=1) is None
    assert cache.get_or_set('brian', 42, version=1) == 42
    assert cache.get_or_set('brian', 1979, version=2) == 1979
    assert cache.get('brian', version=3) is None


def test_get_or_set_racing(cache, monkeypatch):
    # Another client adds the key between our get() and add(): the stored
    # value wins.
    real_add = DjangoCache.add

    def racing_add(self, key, value, *args, **kwargs):
        real_add(self, key, 'winner')
        return real_add(self, key, value, *args, **kwargs)

    monkeypatch.setattr(DjangoCache, 'add', racing_add)
    assert cache.get_or_set('race', 'loser') == 'winner'


def test_cache_versioning_get_set(cache):
    cache2 = caches['v2']
    # set, using default version = 1
    cache.set('answer1', 42)
    assert cache.get('answer1') == 42
    assert cache.get('answer1', version=1) == 42
    assert cache.get('answer1', version=2) is None
    assert cache2.get('answer1') is None
    assert cache2.get('answer1', version=1) == 42
    assert cache2.get('answer1', version=2) is None
    # set, default version = 1, but manually override version = 2
    cache.set('answer2', 42, version=2)
    assert cache.get('answer2') is None
    assert cache.get('answer2', version=1) is None
    assert cache.get('answer2', version=2) == 42
    assert cache2.get('answer2') == 42
    # v2 set, using default version = 2
    cache2.set('answer3', 42)
    assert cache.get('answer3') is None
    assert cache.get('answer3', version=2) == 42
    assert cache2.get('answer3') == 42
    # v2 set, default version = 2, but manually override version = 1
    cache2.set('answer4', 42, version=1)
    assert cache.get('answer4') == 42
    assert cache2.get('answer4') is None
    assert cache2.get('answer4', version=1) == 42


def test_cache_versioning_add(cache):
    cache.add('answer1', 42, version=2)
    assert cache.get('answer1', version=1) is None
    assert cache.get('answer1', version=2) == 42
    cache.add('answer1', 37, version=2)
    assert cache.get('answer1', version=2) == 42
    cache.add('answer1', 37, version=1)
    assert cache.get('answer1', version=1) == 37
    assert cache.get('answer1', version=2) == 42


def test_cache_versioning_has_key_delete(cache):
    cache.set('answer1', 42)
    assert cache.has_key('answer1')
    assert cache.has_key('answer1', version=1)
    assert not cache.has_key('answer1', version=2)
    cache.set('answer1', 37, version=1)
    cache.set('answer1', 42, version=2)
    assert cache.delete('answer1') is True
    assert cache.get('answer1', version=1) is None
    assert cache.get('answer1', version=2) == 42
    cache.set('answer2', 37, version=1)
    cache.set('answer2', 42, version=2)
    assert cache.delete('answer2', version=2) is True
    assert cache.get('answer2', version=1) == 37
    assert cache.get('answer2', version=2) is None


def test_cache_versioning_incr_decr(cache):
    cache.set('answer1', 37, version=1)
    cache.set('answer1', 42, version=2)
    cache.incr('answer1')
    assert cache.get('answer1', version=1) == 38
    assert cache.get('answer1', version=2) == 42
    cache.decr('answer1')
    assert cache.get('answer1', version=1) == 37
    cache.incr('answer1', version=2)
    assert cache.get('answer1', version=2) == 43
    cache.decr('answer1', version=2)
    assert cache.get('answer1', version=2) == 42


def test_cache_versioning_get_set_many(cache):
    cache2 = caches['v2']
    cache.set_many({'ford1': 37, 'arthur1': 42})
    assert cache.get_many(['ford1', 'arthur1']) == {'ford1': 37, 'arthur1': 42}
    assert cache.get_many(['ford1', 'arthur1'], version=1) == {'ford1': 37, 'arthur1': 42}
    assert cache.get_many(['ford1', 'arthur1'], version=2) == {}
    assert cache2.get_many(['ford1', 'arthur1']) == {}
    assert cache2.get_many(['ford1', 'arthur1'], version=1) == {'ford1': 37, 'arthur1': 42}
    cache.set_many({'ford2': 37, 'arthur2': 42}, version=2)
    assert cache.get_many(['ford2', 'arthur2']) == {}
    assert cache2.get_many(['ford2', 'arthur2']) == {'ford2': 37, 'arthur2': 42}
    cache2.delete_many(['ford2'])
    assert cache2.get_many(['ford2', 'arthur2']) == {'arthur2': 42}


def test_incr_version(cache):
    cache2 = caches['v2']
    cache.set('answer', 42, version=2)
    assert cache.get('answer') is None
    assert cache.get('answer', version=1) is None
    assert cache.get('answer', version=2) == 42
    assert cache.get('answer', version=3) is None
    assert cache.incr_version('answer', version=2) == 3
    assert cache.get('answer') is None
    assert cache.get('answer', version=2) is None
    assert cache.get('answer', version=3) == 42

    cache2.set('answer2', 42)
    assert cache2.get('answer2') == 42
    assert cache2.incr_version('answer2') == 3
    assert cache2.get('answer2') is None
    assert cache2.get('answer2', version=3) == 42
    assert cache2.incr_version('answer2', 2, version=3) == 5
    assert cache2.get('answer2', version=5) == 42
    with pytest.raises(ValueError):
        cache.incr_version('does_not_exist')
    cache.set('null', None)
    assert cache.incr_version('null') == 2
    assert cache.get('null', 'missing', version=2) is None


def test_decr_version(cache):
    cache2 = caches['v2']
    cache.set('answer', 42, version=2)
    assert cache.decr_version('answer', version=2) == 1
    assert cache.get('answer') == 42
    assert cache.get('answer', version=2) is None
    cache2.set('answer2', 42)
    assert cache2.decr_version('answer2') == 1
    assert cache2.get('answer2', version=1) == 42
    with pytest.raises(ValueError):
        cache.decr_version('does_not_exist', version=2)


def test_incr_version_keeps_timeout_and_tag(cache):
    cache.set('moving', 'v', 1000, tag='t1')
    before = expire_time_of(cache, 'moving')
    assert cache.incr_version('moving') == 2
    value, exp, tag = cache.get('moving', version=2, expire_time=True, tag=True)
    assert value == 'v' and tag == 't1'
    assert abs(exp - before) < 1


def test_key_prefix(cache):
    prefixed = caches['prefix']
    cache.set('somekey', 'value')
    assert prefixed.get('somekey') is None
    prefixed.set('somekey', 'value2')
    assert cache.get('somekey') == 'value'
    assert prefixed.get('somekey') == 'value2'
    assert prefixed.make_key('somekey') == 'cacheprefix:1:somekey'
    # The prefix is part of the stored key.
    assert Cache(cache.client).get('cacheprefix:1:somekey') == 'value2'
    assert Cache(cache.client).get(':1:somekey') == 'value'


def test_custom_key_func(cache):
    c1, c2 = caches['custom_key'], caches['custom_key2']
    cache.set('answer1', 42)
    assert cache.get('answer1') == 42
    assert c1.get('answer1') is None
    assert c2.get('answer1') is None
    c1.set('answer2', 42)
    assert cache.get('answer2') is None
    assert c1.get('answer2') == 42
    assert c2.get('answer2') == 42
    assert c1.make_key('answer2') == 'CUSTOM--1-answer2'


def test_key_validation_warnings(cache):
    # Like Django's own backends: keys memcached would reject give a
    # CacheKeyWarning, and still work here.
    cases = [
        'key with spaces and 清',
        'ascii key with spaces',
        'a' * 251,
        'ctrl\x01char',
        'del\x7fchar',
    ]
    for key in cases:
        with pytest.warns(CacheKeyWarning):
            cache.set(key, 'value')
        with pytest.warns(CacheKeyWarning):
            assert cache.get(key) == 'value'
        with pytest.warns(CacheKeyWarning):
            assert cache.has_key(key)
        with pytest.warns(CacheKeyWarning):
            cache.get_many([key])
        with pytest.warns(CacheKeyWarning):
            assert cache.delete(key) is True
        with pytest.warns(CacheKeyWarning):
            assert cache.set_many({key: 'many'}) == []
        with pytest.warns(CacheKeyWarning):
            cache.delete_many([key])
        with pytest.warns(CacheKeyWarning):
            assert cache.add(key, 'added') is True
        with pytest.warns(CacheKeyWarning):
            assert cache.incr_version(key) == 2


def test_valid_keys_do_not_warn(cache):
    with warnings.catch_warnings():
        warnings.simplefilter('error', CacheKeyWarning)
        cache.set('a' * 240, 1)
        cache.get('a' * 240)
        cache.set_many({'ok:key': 1})


def test_get_backend_timeout(cache):
    assert cache.get_backend_timeout() == 300
    assert cache.get_backend_timeout(DEFAULT_TIMEOUT) == 300
    assert cache.get_backend_timeout(None) is None
    assert cache.get_backend_timeout(0) == -1
    assert cache.get_backend_timeout(-3) == -3
    assert cache.get_backend_timeout(1.5) == 1.5
    assert caches['forever'].get_backend_timeout() is None


def test_set_returns_true_and_add_false(cache):
    assert cache.set('k', 'v') is True
    assert cache.add('k', 'v') is False
    assert cache.touch('k') is True
    assert cache.delete('k') is True


# -- django-redis's key patterns and expiry -------------------------------------------

def test_keys_iter_keys_and_delete_pattern_as_django_redis(cache):
    for i in range(30):
        cache.set('user:%d' % i, i)
    cache.set('user:1', 'v2', version=2)  # another version: another key
    cache.set('odd*name', 1)
    cache.set('other', 1)
    users = sorted('user:%d' % i for i in range(30))
    assert sorted(cache.keys('user:*')) == users
    assert sorted(cache.iter_keys('user:*', itersize=3)) == users
    assert sorted(cache.keys('user:1?')) == ['user:%d' % i for i in range(10, 20)]
    assert cache.keys('user:*', version=2) == ['user:1']
    assert cache.keys(r'odd\*name') == ['odd*name'] and cache.keys('odd[*]name') == ['odd*name']
    assert cache.keys('nothing*') == []
    assert cache.delete_pattern('user:1*') == 11
    assert sorted(cache.keys('user:*')) == sorted(set(users) - {'user:1'} - {
        'user:%d' % i for i in range(10, 20)})
    assert cache.get('user:1', version=2) == 'v2' and cache.get('other') == 1
    # The server's cache iterates as python-diskcache's FanoutCache does.
    assert cache.make_key('other') in list(Cache(cache.client))


def test_set_nx_as_django_redis(cache):
    assert cache.set('nx', 1, nx=True) is True
    assert cache.set('nx', 2, nx=True) is False and cache.get('nx') == 1
    assert cache.set('nx', 3) is True and cache.get('nx') == 3
    import asyncio  # pylint: disable=import-outside-toplevel
    assert asyncio.run(cache.aset('nx', 4, nx=True)) is False and cache.get('nx') == 3


def test_set_xx_as_django_redis(cache):
    # Redis's SET XX: only over a live item, atomically on the server.
    assert cache.set('xx', 1, xx=True) is False and cache.get('xx') is None
    cache.set('xx', 1)
    assert cache.set('xx', 2, xx=True, timeout=None) is True and cache.get('xx') == 2
    assert cache.ttl('xx') is None
    cache.set('gone', 1, timeout=0)  # expires at once
    assert cache.set('gone', 2, xx=True) is False and cache.get('gone') is None
    with pytest.raises(ValueError):
        cache.set('xx', 3, nx=True, xx=True)
    import asyncio  # pylint: disable=import-outside-toplevel
    assert asyncio.run(cache.aset('xx', 4, xx=True)) is True and cache.get('xx') == 4
    assert asyncio.run(cache.aset('missing-xx', 4, xx=True)) is False
    assert cache.get('missing-xx') is None


def test_ttl_persist_and_expire_as_django_redis(cache):
    assert cache.ttl('missing') == 0 and cache.pttl('missing') == 0
    cache.set('forever', 1, timeout=None)
    assert cache.ttl('forever') is None
    cache.set('soon', 1, timeout=100)
    assert 90 <= cache.ttl('soon') <= 100 and 90000 <= cache.pttl('soon') <= 100000
    assert cache.persist('soon') is True and cache.ttl('soon') is None
    # As Redis's PERSIST: nothing to remove on a key that never expires, or
    # on a missing one.
    assert cache.persist('soon') is False and cache.persist('missing') is False
    assert cache.expire('soon', 50) is True and 40 <= cache.ttl('soon') <= 50
    assert cache.pexpire('soon', 20000) is True and 10 <= cache.ttl('soon') <= 20
    assert cache.expire_at('soon', time.time() + 30) is True and 20 <= cache.ttl('soon') <= 30
    assert cache.expire('missing', 10) is False
    assert isinstance(cache.expire(), int)  # python-diskcache's expire()
    # The default timeout, and pexpire_at with a datetime or milliseconds.
    assert cache.pexpire('soon', DEFAULT_TIMEOUT) is True and 290 <= cache.ttl('soon') <= 300
    assert cache.pexpire_at('soon', datetime.datetime.now() + datetime.timedelta(hours=1)) is True
    assert 3590 <= cache.ttl('soon') <= 3600
    assert cache.pexpire_at('soon', int((time.time() + 7200) * 1000)) is True
    assert 7190 <= cache.ttl('soon') <= 7200
    assert cache.expire_at('soon', datetime.datetime.now() - datetime.timedelta(hours=2)) is True
    assert cache.get('soon') is None and cache.pexpire_at('soon', time.time() * 1000) is False


def test_incr_ignore_key_check_as_django_redis(cache):
    assert cache.incr('n', ignore_key_check=True) == 1 and cache.get('n') == 1
    assert cache.incr('m', 10, ignore_key_check=True) == 10
    cache.set('n', 3)
    assert cache.incr('n', 2, ignore_key_check=True) == 5
    with pytest.raises(ValueError):
        cache.incr('missing')


def test_scan_itersize_setting(cache, monkeypatch):
    from django.test import override_settings  # pylint: disable=import-outside-toplevel
    from diskcache_client import ops  # pylint: disable=import-outside-toplevel
    limits = []
    real = ops.keys_page

    def keys_page(*args):
        limits.append(args[6])
        return (yield from real(*args))

    monkeypatch.setattr(ops, 'keys_page', keys_page)
    for i in range(5):
        cache.set('it%d' % i, i)
    with override_settings(DJANGO_REDIS_SCAN_ITERSIZE=2):
        assert sorted(cache.iter_keys('it*')) == ['it%d' % i for i in range(5)]
    assert limits and set(limits) == {2}
    limits.clear()
    assert len(cache.keys('it*', )) == 5 and 2 not in limits


def test_key_patterns_keep_to_the_prefix_and_key_function(cache, token_file):
    from django.core.cache import caches  # pylint: disable=import-outside-toplevel
    prefixed = caches['prefix']
    prefixed.set('user:p', 1)
    cache.set('user:d', 1)
    assert cache.keys('user:*') == ['user:d'] and prefixed.keys('user:*') == ['user:p']
    assert prefixed.delete_pattern('user:*') == 1 and cache.get('user:d') == 1
    # A custom key function is reversed by REVERSE_KEY_FUNCTION, as in django-redis.
    custom = DjangoCache(cache.location, {
        'KEY_FUNCTION': lambda key, prefix, version: 'K|%s|%s' % (version, key),
        'OPTIONS': {'TOKEN_FILE': str(token_file),
                    'REVERSE_KEY_FUNCTION': lambda key: key.split('|', 2)[2]}})
    custom.set('user:c', 1)
    assert custom.keys('user:*') == ['user:c']
    # The prefix is taken literally, glob characters and all.
    star, other = [DjangoCache(cache.location, {'KEY_PREFIX': prefix, 'OPTIONS': {
        'TOKEN_FILE': str(token_file)}}) for prefix in ('p*', 'pq')]
    star.set('x', 1)
    other.set('x', 2)
    assert star.keys('x') == ['x'] and star.delete_pattern('*') == 1 and other.get('x') == 2
