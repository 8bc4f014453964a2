"""Deque and Index (python-diskcache's persistent types) against a real
cacheserver, and a python-diskcache directory's deques and indexes served
by cacheserver."""

import asyncio
import collections.abc
import datetime
import decimal
import threading
import uuid
from collections import OrderedDict

import diskcache
import pytest

from diskcache_client import Cache, CacheServerError, Client, Deque, Index, persistent
from diskcache_client.djangocache import DjangoCache

from conftest import TOKEN
from test_failures import scripted  # noqa: F401  pylint: disable=unused-import


class Text(str):
    """A str subclass: pickled, yet == to the equal str."""


class Point:
    """A picklable object of this module."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __eq__(self, other):
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)

    def __repr__(self):
        return 'Point(%r, %r)' % (self.x, self.y)


VALUES = [
    0, -7, 2 ** 63 - 1, 2 ** 80, 3.25, float('inf'), 'héllo', '', b'\x00\xff', b'',
    None, True, False, [1, 'two', None], {'a': {'b': [1, 2]}}, (1, 2), {3, 4},
    decimal.Decimal('1.10'), datetime.datetime(2024, 5, 17, 12, 30), Point(1, 2),
    Text('sub'), 'ü' * 3000, b'\xab' * 5000,
]


def unique(prefix):
    return '%s-%s' % (prefix, uuid.uuid4().hex[:12])


@pytest.fixture
def dq(cache):
    """A fresh deque of the default DjangoCache's server."""
    return cache.deque(unique('dq'))


@pytest.fixture
def ix(cache):
    """A fresh index of the default DjangoCache's server."""
    return cache.index(unique('ix'))


@pytest.fixture
def small_pages(monkeypatch):
    """Listings read 7 items per request."""
    monkeypatch.setattr(persistent, 'PAGE_FIRST', 7)
    monkeypatch.setattr(persistent, 'PAGE_MAX', 7)


@pytest.fixture
def page_requests(monkeypatch):
    """The listing requests made (deque and index)."""
    calls = []
    for name in ('deque_page', 'index_page'):
        real = getattr(persistent, name)

        def counting(*args, _real=real, **kwargs):
            calls.append((args, kwargs))
            return (yield from _real(*args, **kwargs))

        monkeypatch.setattr(persistent, name, counting)
    return calls


def same_types(got, want):
    return [type(v) for v in got] == [type(v) for v in want]


# -- Deque ------------------------------------------------------------------------

def test_deque_is_a_mutable_sequence_from_every_cache_object(cache, dq):
    assert isinstance(dq, collections.abc.MutableSequence)
    assert isinstance(dq, Deque)
    dq.extend('ab')
    # The same server deque through diskcache_client.Cache (FanoutCache.deque)
    # and through a named cache, whose deque(name) is the server's too.
    assert list(Cache(cache.client).deque(dq.name)) == ['a', 'b']
    assert list(Cache(cache.client, 'named').deque(dq.name)) == ['a', 'b']
    assert dq.client is cache.client
    assert repr(dq) == 'Deque(%r, %r)' % (cache.client.endpoints[0].url, dq.name)
    bounded = cache.deque(dq.name, maxlen=5)
    assert repr(bounded).endswith(', maxlen=5)')
    assert list(bounded) == ['a', 'b']
    copy = bounded.copy()
    assert copy.name == dq.name and copy.maxlen == 5 and copy == ['a', 'b']
    with pytest.raises(TypeError):
        hash(dq)
    with pytest.raises(NotImplementedError):
        dq.transact()


def test_deque_constructor(cache):
    name = unique('ctor')
    d = Deque(cache.client, name, 'xyz')
    assert list(d) == ['x', 'y', 'z']
    assert list(Deque(cache.client, name)) == ['x', 'y', 'z']  # not cleared
    url = cache.client.endpoints[0].url
    other = Deque(url, name, token=TOKEN)
    assert list(other) == ['x', 'y', 'z']
    with pytest.raises(TypeError):
        Deque(cache.client, name, token=TOKEN)  # options need a URL
    with pytest.raises(ValueError):
        Deque(cache.client, '')
    with pytest.raises(ValueError):
        Deque(cache.client, b'bytes')


def test_deque_ends(dq):
    assert len(dq) == 0 and not dq
    for method in (dq.pop, dq.popleft):
        with pytest.raises(IndexError, match='pop from an empty deque'):
            method()
    for method in (dq.peek, dq.peekleft):
        with pytest.raises(IndexError, match='peek from an empty deque'):
            method()
    assert dq.append('b') is None
    assert dq.appendleft('a') is None
    dq.append('c')
    assert len(dq) == 3 and dq
    assert (dq.peekleft(), dq.peek()) == ('a', 'c')
    assert dq.popleft() == 'a'
    assert dq.pop() == 'c'
    assert dq.pop() == 'b'
    with pytest.raises(IndexError):
        dq.pop()


def test_deque_extend(dq):
    dq.extend([1, 2])
    dq.extendleft([0, -1])
    assert list(dq) == [-1, 0, 1, 2]
    dq += (x * 10 for x in range(3, 5))
    assert list(dq) == [-1, 0, 1, 2, 30, 40]
    dq.extend(dq)  # extending with itself doubles it
    assert list(dq) == [-1, 0, 1, 2, 30, 40] * 2
    dq.extendleft(dq.copy())  # so does another object of the same deque
    assert list(dq) == [40, 30, 2, 1, 0, -1] * 2 + [-1, 0, 1, 2, 30, 40] * 2
    dq.clear()
    dq.extend(())
    dq.extendleft(iter(()))
    assert list(dq) == []

    def failing():
        yield 'kept'
        raise RuntimeError('iterable failed')

    # As python-diskcache appends one value at a time, what came before a
    # failure is kept.
    with pytest.raises(RuntimeError):
        dq.extend(failing())
    assert list(dq) == ['kept']
    with pytest.raises(TypeError):
        dq.extend([1, threading.Lock()])  # cannot be pickled
    assert list(dq) == ['kept', 1]


def test_deque_extend_in_several_requests(dq, monkeypatch):
    monkeypatch.setattr(persistent, 'EXTEND_RECORDS', 3)
    dq.extend(range(10))
    dq.extendleft(range(-1, -8, -1))
    assert list(dq) == list(range(-7, 10))


def test_deque_indexing(dq):
    dq.extend('abcde')
    assert [dq[i] for i in range(5)] == list('abcde')
    assert [dq[i] for i in range(-1, -6, -1)] == list('edcba')
    for bad in (5, -6, 2 ** 40, -2 ** 40, 2 ** 100):
        with pytest.raises(IndexError, match='deque index out of range'):
            dq[bad]  # pylint: disable=pointless-statement
        with pytest.raises(IndexError):
            dq[bad] = 'x'
        with pytest.raises(IndexError):
            del dq[bad]
    with pytest.raises(TypeError):
        dq[1:3]  # pylint: disable=pointless-statement
    with pytest.raises(TypeError):
        dq[1.0]  # pylint: disable=pointless-statement
    dq[0] = 'A'
    dq[-1] = 'E'
    dq[2] = [1, 2]
    assert list(dq) == ['A', 'b', [1, 2], 'd', 'E']
    del dq[1]
    del dq[-2]
    assert list(dq) == ['A', [1, 2], 'E']
    del dq[0]
    del dq[0]
    del dq[-1]
    assert len(dq) == 0
    with pytest.raises(IndexError):
        dq[0]  # pylint: disable=pointless-statement
    with pytest.raises(IndexError):
        dq[-1]  # pylint: disable=pointless-statement


def test_deque_insert(dq):
    dq.extend('bd')
    dq.insert(0, 'a')
    dq.insert(2, 'c')
    dq.insert(100, 'z')
    dq.insert(-1, 'e')
    dq.insert(-100, 'start')
    assert list(dq) == ['start', 'a', 'b', 'c', 'd', 'e', 'z']
    full = dq.copy()
    full.maxlen = 7
    with pytest.raises(IndexError, match='maximum size'):
        full.insert(1, 'no room')
    assert len(dq) == 7


def test_deque_iteration_and_search(dq):
    dq.extend([1, 'a', 2.5, 'a', (1, 2)])
    assert list(dq) == [1, 'a', 2.5, 'a', (1, 2)]
    assert list(reversed(dq)) == [(1, 2), 'a', 2.5, 'a', 1]
    assert 'a' in dq and (1, 2) in dq and 1.0 in dq
    assert 'b' not in dq
    assert dq.index('a') == 1
    assert dq.index('a', 2) == 3
    assert dq.index('a', -2) == 3
    assert dq.index(1.0) == 0
    with pytest.raises(ValueError):
        dq.index('a', 4)
    with pytest.raises(ValueError):
        dq.index('a', 0, -4)
    with pytest.raises(ValueError):
        dq.index('missing')
    assert dq.count('a') == 2
    assert dq.count('zz') == 0


def test_deque_count_and_remove_use_python_equality(dq):
    dq.extend([1, 1.0, True, 2, Text('a'), {'x': 1, 'y': 2}, 'a'])
    assert dq.count(1) == 3  # 1 == 1.0 == True
    assert dq.count('a') == 2  # 'a' == Text('a')
    assert dq.count({'y': 2, 'x': 1}) == 1  # equal dict, other pickle bytes

    dq.remove(1.0)  # the first item equal to 1.0: the int 1
    assert list(dq) == [1.0, True, 2, Text('a'), {'x': 1, 'y': 2}, 'a']
    assert type(dq[0]) is float
    dq.remove('a')  # removes Text('a'), the first equal item
    assert list(dq) == [1.0, True, 2, {'x': 1, 'y': 2}, 'a']
    assert type(dq[-1]) is str
    dq.remove({'y': 2, 'x': 1})
    assert list(dq) == [1.0, True, 2, 'a']
    with pytest.raises(ValueError, match='value not in deque'):
        dq.remove('missing')
    dq.remove(True)
    assert list(dq) == [True, 2, 'a']
    assert type(dq[0]) is bool
    dq.clear()
    with pytest.raises(ValueError):
        dq.remove(None)


def test_deque_remove_of_large_values(dq):
    big = b'\x01' * 200000
    dq.extend([b'small', big, big + b'!', big])
    dq.remove(big + b'!')
    assert list(dq) == [b'small', big, big]
    dq.remove(big)
    assert list(dq) == [b'small', big]


def test_deque_rotate(dq):
    dq.rotate()  # empty: nothing to do
    dq.rotate(-3)
    assert list(dq) == []
    dq.extend(range(5))
    dq.rotate(2)
    assert list(dq) == [3, 4, 0, 1, 2]
    dq.rotate(-1)
    assert list(dq) == [4, 0, 1, 2, 3]
    dq.rotate()
    assert list(dq) == [3, 4, 0, 1, 2]
    dq.rotate(True)  # a bool is an int (python-diskcache rotates by 1)
    dq.rotate(-1)
    assert list(dq) == [3, 4, 0, 1, 2]
    dq.rotate(0)
    dq.rotate(5)
    dq.rotate(-10)
    assert list(dq) == [3, 4, 0, 1, 2]
    dq.rotate(13)  # more than len: 13 % 5 == 3
    assert list(dq) == [0, 1, 2, 3, 4]
    dq.rotate(-7)  # 7 % 5 == 2 to the left
    assert list(dq) == [2, 3, 4, 0, 1]
    dq.rotate(2 ** 40 + 3)  # beyond 32 bits: (2**40 + 3) % 5 == 4
    assert list(dq) == [3, 4, 0, 1, 2]
    dq.rotate(-(2 ** 40))  # 2**40 % 5 == 1 to the left
    assert list(dq) == [4, 0, 1, 2, 3]
    expected = list(dq)
    for steps in (1, -2, 7, -9, 0, 4):
        dq.rotate(steps)
        want = collections.deque(expected)
        want.rotate(steps)
        expected = list(want)
        assert list(dq) == expected
    with pytest.raises(TypeError, match='integer argument expected, got float'):
        dq.rotate(1.0)


def test_deque_reverse_and_clear(dq):
    dq.reverse()
    dq.extend(range(6))
    dq.reverse()
    assert list(dq) == [5, 4, 3, 2, 1, 0]
    dq.append('x')
    dq.reverse()
    assert list(dq) == ['x', 0, 1, 2, 3, 4, 5]
    assert dq.clear() is None
    assert len(dq) == 0


def test_deque_maxlen(cache):
    name = unique('maxlen')
    d = cache.deque(name, maxlen=3)
    assert d.maxlen == 3
    d.extend([1, 2])
    d.append(3)
    d.append(4)  # drops the front
    assert list(d) == [2, 3, 4]
    d.appendleft(1)  # drops the back
    assert list(d) == [1, 2, 3]
    d.extend([7, 8, 9, 10])  # only the last three stay
    assert list(d) == [8, 9, 10]
    d.extendleft('abcd')  # d, c, b in front; the back is trimmed
    assert list(d) == ['d', 'c', 'b']
    d += 'xy'
    assert list(d) == ['b', 'x', 'y']

    # python-diskcache does not store maxlen: another object is unbounded.
    unbounded = cache.deque(name)
    assert unbounded.maxlen == float('inf')
    unbounded.extend(range(5))
    assert len(unbounded) == 8
    d.append('z')  # trims down to d's maxlen again, in one step
    assert list(d) == [3, 4, 'z']

    d.maxlen = 1  # the setter trims from the front
    assert list(d) == ['z']
    d.maxlen = None
    assert d.maxlen == float('inf')
    d.extend(range(3))
    assert list(d) == ['z', 0, 1, 2]
    d.maxlen = float('inf')
    assert len(d) == 4

    zero = cache.deque(unique('zero'), maxlen=0)
    zero.append('gone')
    zero.appendleft('gone')
    zero.extend('gone')
    assert len(zero) == 0

    d = cache.deque(unique('init'), maxlen=2)
    d2 = Deque(cache.client, d.name, range(5), maxlen=2)
    assert list(d2) == [3, 4]
    for bad in (-1, -100):
        with pytest.raises(ValueError):
            cache.deque(name, maxlen=bad)
    for bad in (1.5, '3', True):
        with pytest.raises(TypeError):
            cache.deque(name, maxlen=bad)
    with pytest.raises(ValueError):
        d.maxlen = -1


def test_deque_maxlen_is_atomic_under_concurrent_appends(cache):
    d = cache.deque(unique('atomic'), maxlen=10)
    errors = []

    def worker(n):
        try:
            mine = d.copy()
            for i in range(25):
                if i % 2:
                    mine.append((n, i))
                else:
                    mine.appendleft((n, i))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(d) == 10


def test_deque_comparisons(dq, tmp_path):
    dq.extend([1, 2, 3])
    assert dq == [1, 2, 3] and dq == (1, 2, 3)
    assert [1, 2, 3] == dq
    assert not dq != [1, 2, 3]
    assert dq != [1, 2] and dq != [1, 2, 3, 4] and dq != [1, 2, 4]
    assert not dq == [1, 2]
    assert dq < [1, 2, 4] and dq < [1, 2, 3, 0] and dq < [2]
    assert dq <= [1, 2, 3] and dq <= [1, 3]
    assert dq > [1, 2] and dq > [1, 1, 9] and dq > [0, 5, 5, 5]
    assert dq >= [1, 2, 3] and not dq >= [1, 2, 3, 0]
    assert not dq < [1, 2, 3] and not dq > [1, 2, 3]
    assert dq == [1.0, 2, 3]  # python's equality of items
    assert dq != 'abc' and dq != {1: 1}
    assert not dq == 123 and dq != 123  # not a sequence: NotImplemented
    with pytest.raises(TypeError):
        dq < 123  # pylint: disable=pointless-statement
    with pytest.raises(TypeError):
        dq < ['a', 'b', 'c']  # pylint: disable=pointless-statement

    other = dq.copy()
    assert dq == other and not dq < other
    letters = Deque(dq.client, unique('letters'), 'abc')
    assert letters == 'abc'  # a str is a sequence, as in python-diskcache
    assert letters < 'abd'

    local = diskcache.Deque([1, 2, 3], directory=str(tmp_path / 'local'))
    assert dq == local and local == dq
    local.append(4)
    assert dq < local and local > dq and dq != local


def test_deque_values_round_trip(dq):
    dq.extend(VALUES)
    got = list(dq)
    assert got == VALUES and same_types(got, VALUES)
    got = list(reversed(dq))
    assert got == VALUES[::-1] and same_types(got, VALUES[::-1])
    for i, value in enumerate(VALUES):
        assert dq[i] == value and type(dq[i]) is type(value)
    dq.clear()
    for value in VALUES:
        dq.append(value)
        assert dq.peek() == value and type(dq.peek()) is type(value)
    for value in reversed(VALUES):
        got = dq.pop()
        assert got == value and type(got) is type(value)


def test_deque_large_values(dq):
    big = bytes(range(256)) * 8192  # 2 MiB: value files on the server
    text = 'ü' * 600000
    dq.append(big)
    dq.appendleft(text)
    dq.extend([big[::-1], {'nested': big}])
    assert dq[0] == text and dq[1] == big
    assert list(dq) == [text, big, big[::-1], {'nested': big}]
    dq[1] = b'small'
    dq[2] = text
    assert list(reversed(dq)) == [{'nested': big}, text, b'small', text]
    assert dq.pop() == {'nested': big}
    assert dq.popleft() == text


def test_deque_reads_more_than_one_page(dq, page_requests):
    values = list(range(2500))  # more than PAGE_MAX (1000) items
    dq.extend(values)
    assert list(dq) == values
    assert len(page_requests) >= 3
    del page_requests[:]
    assert list(reversed(dq)) == values[::-1]
    assert len(page_requests) >= 3


def test_deque_paging_small_pages(dq, small_pages, page_requests):
    dq.extend(range(50))
    assert list(dq) == list(range(50))
    assert len(page_requests) == 8  # 7 full pages and a short one
    assert list(reversed(dq)) == list(range(49, -1, -1))
    dq.extend(range(50, 56))  # 56 = 8 pages exactly
    del page_requests[:]
    assert list(dq) == list(range(56))
    assert len(page_requests) == 9  # the last, empty page ends it


def test_deque_iteration_goes_by_key_while_others_change_it(dq, small_pages):
    # python-diskcache iterates key by key: items removed from the front
    # while an iterator is part way through do not make it skip, and items
    # added at the front do not make it repeat.
    dq.extend(range(100))
    it = iter(dq)
    assert [next(it) for _ in range(7)] == list(range(7))  # one page read
    other = dq.copy()
    for _ in range(20):
        other.popleft()  # 0..19 are gone: positions shift by 20
    assert next(it) == 20
    assert [next(it) for _ in range(5)] == list(range(21, 26))
    other.extendleft(['new%d' % i for i in range(30)])  # positions shift by 30
    assert list(it) == list(range(26, 100))

    dq.clear()
    dq.extend(range(100))
    it = reversed(dq)
    assert [next(it) for _ in range(7)] == list(range(99, 92, -1))
    for _ in range(40):
        other.pop()  # 60..99 are gone
    assert next(it) == 59
    other.extend(['new'] * 12)
    assert list(it) == list(range(58, -1, -1))


def test_deque_names(cache):
    base = unique('names')
    parent = cache.deque(base)
    child = cache.deque(base + '/child')  # nests as deque/<base>/child
    parent.append('parent')
    child.append('child')
    assert list(parent) == ['parent'] and list(child) == ['child']
    odd = cache.deque(base + ' ünï cødé.%?#&=+')
    odd.append(1)
    assert list(cache.deque(base + ' ünï cødé.%?#&=+')) == [1]
    for bad in (base + '/../x', '/' + base, base + '//x', 'a\\b'):
        with pytest.raises(CacheServerError) as info:
            len(cache.deque(bad))
        assert info.value.status == 400 and info.value.code == 'bad_name'


def test_deque_ops_run_over_asyncio(dq):
    client, path, shard = dq.client, dq._path, dq._shard  # pylint: disable=protected-access

    async def scenario():
        try:
            assert await client.arun(persistent.deque_push(client, path, shard, 'a')) == 1
            await client.arun(persistent.deque_extend(
                client, path, shard, [persistent.wire.value_record(v) for v in (1, [2])]))
            records, _ = await client.arun(persistent.deque_page(client, path, shard))
            assert [persistent.wire.decode_value(h['type'], raw) for h, raw in records] \
                == ['a', 1, [2]]
            assert await client.arun(persistent.deque_take(client, path, shard, 'front')) == 'a'
            assert await client.arun(persistent.deque_at(client, path, shard, -1)) == [2]
        finally:
            await client.aclose()

    asyncio.run(scenario())
    assert list(dq) == [1, [2]]


def outcome(call):
    """What a call returned or raised, comparable across implementations."""
    try:
        result = call()
    except (IndexError, ValueError, KeyError) as exc:
        return type(exc).__name__
    return (type(result).__name__, result)


def typed_list(items):
    return [(type(item).__name__, item) for item in items]


def test_deque_matches_python_diskcache_op_by_op(dq, tmp_path, small_pages):
    import random
    rng = random.Random(20240517)
    local = diskcache.Deque(directory=str(tmp_path / 'local'))
    pool = [1, 1.0, True, 'a', Text('a'), b'a', (1,), None, [1.0], 2 ** 70]
    ops = [
        ('append', lambda d, v, n: d.append(v)),
        ('appendleft', lambda d, v, n: d.appendleft(v)),
        ('extend', lambda d, v, n: d.extend([v, v, n])),
        ('extendleft', lambda d, v, n: d.extendleft([n, v])),
        ('pop', lambda d, v, n: d.pop()),
        ('popleft', lambda d, v, n: d.popleft()),
        ('peek', lambda d, v, n: d.peek()),
        ('peekleft', lambda d, v, n: d.peekleft()),
        ('getitem', lambda d, v, n: d[n]),
        ('setitem', lambda d, v, n: d.__setitem__(n, v)),
        ('delitem', lambda d, v, n: d.__delitem__(n)),
        ('remove', lambda d, v, n: d.remove(v)),
        ('count', lambda d, v, n: d.count(v)),
        ('rotate', lambda d, v, n: d.rotate(n)),
        ('reverse', lambda d, v, n: d.reverse()),
        ('contains', lambda d, v, n: v in d),
        ('len', lambda d, v, n: len(d)),
    ]
    for step in range(250):
        name, op = rng.choice(ops)
        value, number = rng.choice(pool), rng.randint(-12, 12)
        mine = outcome(lambda: op(dq, value, number))
        theirs = outcome(lambda: op(local, value, number))
        assert mine == theirs, (step, name, value, number)
        assert typed_list(dq) == typed_list(local), (step, name, value, number)
    assert typed_list(reversed(dq)) == typed_list(reversed(local))


# -- Index ------------------------------------------------------------------------

KEYS = ['text', '', '/', '.', '..', 'ü/ß %', b'bytes', b'', b'/', 0, -1, 2 ** 63 - 1,
        2 ** 64, 1.5, -0.25, float('inf'), (1, 'tuple'), None, frozenset([1]), True]


def test_index_is_a_mutable_mapping_from_every_cache_object(cache, ix):
    assert isinstance(ix, collections.abc.MutableMapping)
    ix['k'] = 'v'
    assert Cache(cache.client).index(ix.name)['k'] == 'v'
    assert Index(cache.client, ix.name)['k'] == 'v'
    assert repr(ix) == 'Index(%r, %r)' % (cache.client.endpoints[0].url, ix.name)
    with pytest.raises(TypeError):
        hash(ix)
    with pytest.raises(NotImplementedError):
        ix.transact()
    # Deques and indexes of one name are distinct.
    cache.deque(ix.name).append('in the deque')
    assert list(ix) == ['k']


def test_index_constructor(cache):
    name = unique('ctor')
    x = Index(cache.client, name, [('a', 1), ('b', 2)], c=3)
    assert list(x.items()) == [('a', 1), ('b', 2), ('c', 3)]
    x = Index(cache.client, name, {'d': 4})
    assert list(x) == ['a', 'b', 'c', 'd']
    with pytest.raises(ValueError):
        Index(cache.client, '')


def test_index_keys_of_every_kind(ix, tmp_path):
    for n, key in enumerate(KEYS):
        ix[key] = n
    assert len(ix) == len(KEYS)
    got = list(ix)
    assert got == KEYS and same_types(got, KEYS)
    for n, key in enumerate(KEYS):
        assert ix[key] == n
        assert key in ix
    # Keys are looked up serialized, as in python-diskcache: True is a
    # pickle, so 1 is not there; ints and floats are SQLite numbers, so 1
    # and 1.0 are one key (which keeps the type it was first stored with).
    assert 1 not in ix and 1.0 not in ix
    local = diskcache.Index(str(tmp_path / 'local'))
    for mapping in (ix, local):
        mapping[1] = 'int'
        mapping[1.0] = 'float'
        mapping[2.0] = 'two'
        mapping[2] = 'int two'
    assert ix[True] == len(KEYS) - 1
    for mapping in (ix, local):
        assert (mapping[1], mapping[1.0], mapping[2], mapping[2.0]) == (
            'float', 'float', 'int two', 'int two')
        assert type(list(mapping)[-2]) is int and type(list(mapping)[-1]) is float
    assert list(ix.items())[-2:] == list(local.items()) == [(1, 'float'), (2.0, 'int two')]
    for key in KEYS:
        del ix[key]
    assert list(ix) == [1, 2.0]
    # Keys also come back in headers (peekitem, popitem, pull).
    ix.clear()
    for n, key in enumerate(KEYS):
        ix[key] = n
    assert ix.peekitem(last=False) == (KEYS[0], 0)
    popped = [ix.popitem(last=False) for _ in KEYS]
    assert popped == [(key, n) for n, key in enumerate(KEYS)]
    assert same_types([k for k, _ in popped], KEYS)


def test_index_single_keys(ix):
    with pytest.raises(KeyError):
        ix['missing']  # pylint: disable=pointless-statement
    with pytest.raises(KeyError):
        del ix['missing']
    assert ix.get('missing') is None
    assert ix.get('missing', 'dflt') == 'dflt'
    assert 'missing' not in ix
    ix['a'] = None
    assert 'a' in ix and ix['a'] is None and ix.get('a', 'dflt') is None
    ix['a'] = [1]
    assert ix['a'] == [1]
    del ix['a']
    assert 'a' not in ix and len(ix) == 0


def test_index_keeps_insertion_order(ix):
    ix.update([('a', 1), ('b', 2), ('c', 3), ('d', 4)])
    ix['b'] = 'overwritten'  # keeps its place
    assert list(ix) == ['a', 'b', 'c', 'd']
    del ix['a']
    ix['a'] = 'again'  # deleted and added again: last
    assert list(ix) == ['b', 'c', 'd', 'a']
    assert list(reversed(ix)) == ['a', 'd', 'c', 'b']
    assert list(ix.keys()) == ['b', 'c', 'd', 'a']
    assert list(ix.values()) == ['overwritten', 3, 4, 'again']
    assert list(reversed(ix.values())) == ['again', 4, 3, 'overwritten']
    assert list(ix.items()) == [('b', 'overwritten'), ('c', 3), ('d', 4), ('a', 'again')]
    assert list(reversed(ix.items()))[0] == ('a', 'again')
    assert 'c' in ix.keys() and 'z' not in ix.keys()
    assert 4 in ix.values() and 5 not in ix.values()
    assert ('d', 4) in ix.items() and ('d', 5) not in ix.items()
    assert ('z', 4) not in ix.items()
    assert len(ix.keys()) == len(ix.values()) == len(ix.items()) == 4
    assert ix.keys() == {'a', 'b', 'c', 'd'}
    assert dict(ix) == {'a': 'again', 'b': 'overwritten', 'c': 3, 'd': 4}


def test_index_setdefault_and_pop(ix):
    assert ix.setdefault('a', 0) == 0
    assert ix.setdefault('a', 1) == 0
    assert ix.setdefault('none') is None
    assert 'none' in ix
    assert ix.setdefault(('t',), [1]) == [1]
    assert ix.pop('a') == 0
    assert 'a' not in ix
    assert ix.pop('a', 'dflt') == 'dflt'
    assert ix.pop('a', None) is None
    with pytest.raises(KeyError):
        ix.pop('a')
    assert list(ix) == ['none', ('t',)]


def test_index_popitem_and_peekitem(ix):
    for method in (ix.popitem, ix.peekitem):
        for last in (True, False):
            with pytest.raises(KeyError, match='dictionary is empty'):
                method(last=last)
    ix.update([('a', 1), ('b', 2), ('c', 3), ('d', 4)])
    assert ix.peekitem() == ('d', 4)
    assert ix.peekitem(last=False) == ('a', 1)
    assert ix.popitem() == ('d', 4)  # LIFO
    assert ix.popitem(last=False) == ('a', 1)  # FIFO
    ix['b'] = 'updated'  # keeps its place: still first
    assert ix.popitem(False) == ('b', 'updated')
    ix[(1, 2)] = {'x'}
    assert ix.popitem() == ((1, 2), {'x'})
    assert ix.popitem() == ('c', 3)
    with pytest.raises(KeyError):
        ix.popitem()


def test_index_push_after_a_float_key(ix):
    # python-diskcache counts on from a float key at the queue's end.
    ix[1.5] = 'x'
    assert ix.push('b') == 2.5
    assert ix.push('f', side='front') == 0.5
    assert ix.pull() == (0.5, 'f')


def test_index_push_after_a_key_int_refuses(ix):
    # python-diskcache reads the end key's number with int(): ValueError.
    ix['q-5x'] = 'odd'
    with pytest.raises(ValueError) as err:
        ix.push('v', prefix='q')
    assert 'q-5x' in str(err.value)
    ix['q-1_0'] = 'ten'  # int('1_0') is 10
    assert ix.push('v', prefix='q', side='front') == 'q-000000000000009'


def test_index_push_and_pull(ix):
    assert ix.push('apples') == 500000000000000
    assert ix.push('beans') == 500000000000001
    assert ix.push('cherries', side='front') == 499999999999999
    assert ix[500000000000001] == 'beans'
    assert ix.push('dates', prefix='fruit') == 'fruit-500000000000000'
    assert ix.push('elder', prefix='fruit', side='front') == 'fruit-499999999999999'
    assert ix.pull() == (499999999999999, 'cherries')
    assert ix.pull(side='back') == (500000000000001, 'beans')
    assert ix.pull(prefix='fruit') == ('fruit-499999999999999', 'elder')
    assert ix.pull(prefix='fruit', side='back') == ('fruit-500000000000000', 'dates')
    assert ix.pull(prefix='fruit') == (None, None)
    assert ix.pull(prefix='other', default='empty') == 'empty'
    assert ix.pull() == (500000000000000, 'apples')
    assert ix.pull() == (None, None)
    with pytest.raises(KeyError):  # as python-diskcache's
        ix.push(1, side='middle')
    with pytest.raises(KeyError):
        ix.pull(side='top')
    with pytest.raises(ValueError):
        ix.push(1, prefix='')
    with pytest.raises(TypeError):
        ix.pull(prefix=5)


def test_index_clear_and_update(cache, ix):
    ix.update({'a': 1}, b=2)
    ix.update([('c', 3)])
    other = cache.index(unique('other'))
    other.update([('z', 26), ('y', 25)])
    ix.update(other)
    assert list(ix.items()) == [('a', 1), ('b', 2), ('c', 3), ('z', 26), ('y', 25)]
    with pytest.raises(TypeError):
        ix.update({}, {})
    assert ix.clear() is None
    assert len(ix) == 0 and list(ix) == []
    assert len(other) == 2


def test_index_equality(cache, ix, tmp_path):
    pairs = [('a', 1), ('b', 2), ('c', 3)]
    ix.update(pairs)
    assert ix == OrderedDict(pairs)
    assert ix != OrderedDict(pairs[::-1])  # order matters for OrderedDict
    assert ix == dict(pairs[::-1])  # but not for dict
    assert ix == {'c': 3, 'b': 2, 'a': 1}
    assert ix != {'a': 1, 'b': 2}
    assert ix != {'a': 1, 'b': 2, 'c': 4}
    assert ix != {'a': 1, 'b': 2, 'd': 3}
    assert not ix != dict(pairs)
    assert ix != [('a', 1), ('b', 2), ('c', 3)]  # not a mapping
    assert not ix == 3
    same = cache.index(unique('same'))
    same.update(pairs)
    assert ix == same and same == ix
    reordered = cache.index(unique('reordered'))
    reordered.update(pairs[::-1])
    assert ix != reordered  # two indexes: order matters
    local = diskcache.Index(str(tmp_path / 'local'), pairs)
    assert ix == local and local == ix
    local_reordered = diskcache.Index(str(tmp_path / 'reordered'), pairs[::-1])
    assert ix != local_reordered


def test_index_memoize(ix):
    calls = []

    @ix.memoize()
    def double(x, y=1):
        calls.append((x, y))
        return x * 2 * y

    assert double(2) == 4 and double(2) == 4
    assert double(2, y=3) == 12 and double(2, y=3) == 12
    assert calls == [(2, 1), (2, 3)]
    key = double.__cache_key__(2, y=3)
    assert ix[key] == 12
    assert key == diskcache.core.args_to_key((persistent.full_name(double.__wrapped__),),
                                             (2,), {'y': 3}, False, ())

    @ix.memoize(name='named', typed=True)
    def ident(x):
        calls.append(x)
        return x

    assert ident(1) == 1 and ident(1.0) == 1.0 and ident(1) == 1
    assert calls[-2:] == [1, 1.0]
    with pytest.raises(TypeError):
        ix.memoize(lambda: None)


def test_index_values_round_trip(ix):
    for n, value in enumerate(VALUES):
        ix[n] = value
    got = list(ix.values())
    assert got == VALUES and same_types(got, VALUES)
    for n, value in enumerate(VALUES):
        assert ix[n] == value and type(ix[n]) is type(value)
    big = b'\x02' * 3000000
    ix['big'] = big
    ix[Point(0, 0)] = {'big': big}
    assert ix['big'] == big and ix[Point(0, 0)] == {'big': big}
    assert ix.peekitem() == (Point(0, 0), {'big': big})
    assert ix.pop('big') == big
    assert ix.setdefault('big', big) == big
    assert ix.popitem() == ('big', big)


def test_index_reads_more_than_one_page(ix, page_requests):
    for n in range(150):  # more than PAGE_FIRST (64): a second, larger page
        ix['k%03d' % n] = n
    assert list(ix) == ['k%03d' % n for n in range(150)]
    assert len(page_requests) == 2
    assert list(ix.values()) == list(range(150))


def test_index_paging_small_pages(ix, small_pages, page_requests):
    keys = ['k%02d' % n for n in range(40)]
    for n, key in enumerate(keys):
        ix[key] = n
    assert list(ix) == keys
    assert len(page_requests) == 6  # ceil(40 / 7)
    assert list(reversed(ix)) == keys[::-1]
    assert list(ix.items()) == list(zip(keys, range(40)))
    assert list(reversed(ix.values())) == list(range(39, -1, -1))
    assert ix == OrderedDict(zip(keys, range(40)))
    # Changes while an iterator is part way: the rest is neither skipped
    # nor repeated, and, as in python-diskcache, what is added after the
    # iteration started is not seen.
    it = iter(ix)
    assert [next(it) for _ in range(7)] == keys[:7]
    for key in keys[:10]:
        del ix[key]
    del ix['k20']
    ix['new'] = 'last'
    assert list(it) == keys[10:20] + keys[21:]
    assert list(ix)[-1] == 'new'


def test_index_iteration_does_not_meet_keys_moved_to_the_end(ix, small_pages):
    # Moving each key to the end as it is met (a "touch") visits each once,
    # as python-diskcache's iteration does: it ends where the index ended
    # when it started. The pages' cursors lost that end, and the moved keys
    # came round again.
    keys = ['k%02d' % n for n in range(40)]
    for n, key in enumerate(keys):
        ix[key] = n
    seen = []
    for key in ix:
        seen.append(key)
        if len(seen) > len(keys):
            break  # it would go round for ever
        ix[key] = ix.pop(key)
    assert seen == keys
    assert list(ix) == keys


def test_index_matches_python_diskcache_op_by_op(ix, tmp_path, small_pages):
    import random
    rng = random.Random(20240518)
    local = diskcache.Index(str(tmp_path / 'local'))
    # Int keys inside the queue range take part in push and pull, as in
    # python-diskcache (which, unlike the server, would push at the front
    # down to the key 0 and then overwrite it: no small int keys here).
    keys = ['a', 'b', '', b'a', (1,), -5, 123456789012345, 500000000000000,
            'fruit-500000000000000', None]
    values = [0, 'v', None, [1], b'x']
    ops = [
        ('set', lambda x, k, v: x.__setitem__(k, v)),
        ('set', lambda x, k, v: x.__setitem__(k, v)),
        ('get', lambda x, k, v: x[k]),
        ('del', lambda x, k, v: x.__delitem__(k)),
        ('contains', lambda x, k, v: k in x),
        ('setdefault', lambda x, k, v: x.setdefault(k, v)),
        ('pop', lambda x, k, v: x.pop(k)),
        ('pop_default', lambda x, k, v: x.pop(k, 'dflt')),
        ('popitem', lambda x, k, v: x.popitem()),
        ('popitem_first', lambda x, k, v: x.popitem(last=False)),
        ('peekitem', lambda x, k, v: x.peekitem(last=bool(v))),
        ('push', lambda x, k, v: x.push(v)),
        ('push_front', lambda x, k, v: x.push(v, side='front')),
        ('push_prefix', lambda x, k, v: x.push(v, prefix='fruit')),
        ('pull', lambda x, k, v: x.pull()),
        ('pull_back', lambda x, k, v: x.pull(side='back')),
        ('pull_prefix', lambda x, k, v: x.pull(prefix='fruit', side='back')),
        ('len', lambda x, k, v: len(x)),
    ]
    for step in range(250):
        name, op = rng.choice(ops)
        key, value = rng.choice(keys), rng.choice(values)
        mine = outcome(lambda: op(ix, key, value))
        theirs = outcome(lambda: op(local, key, value))
        assert mine == theirs, (step, name, key, value)
        assert typed_list(ix.items()) == typed_list(local.items()), (step, name, key, value)
    assert list(reversed(ix)) == list(reversed(local))
    assert ix == local and local == ix


# -- failures ----------------------------------------------------------------------

def test_retries_only_what_is_safe_to_repeat(scripted):
    from diskcache_client import Timeout
    from test_failures import BUSY
    srv = scripted([BUSY, BUSY, (200, {}, {'len': 3})])
    client = Client(srv.url, token=TOKEN, retries=2, retry_backoff=0.001, frames=False)
    assert len(Deque(client, 'q')) == 3  # a read: retried
    assert len(srv.requests) == 3
    for call in (lambda: Deque(client, 'q').pop(), lambda: Deque(client, 'q').append(1),
                 lambda: Deque(client, 'q').__delitem__(0),
                 lambda: Deque(client, 'q').rotate(1),
                 lambda: Index(client, 'i').popitem(), lambda: Index(client, 'i').pop('k'),
                 lambda: Index(client, 'i').push(1)):
        srv = scripted([BUSY])
        client = Client(srv.url, token=TOKEN, retries=2, retry_backoff=0.001, frames=False)
        with pytest.raises(Timeout):
            call()
        assert len(srv.requests) == 1  # a second try could apply it twice


def test_missing_routes_are_errors_not_empty_collections(scripted):
    no_route = (404, {}, {'error': 'not_found', 'message': 'no route POST /v1/deques/q/pop'})
    srv = scripted([no_route])
    client = Client(srv.url, token=TOKEN, retries=0)
    for call in (Deque(client, 'q').pop, Deque(client, 'q').peek,
                 lambda: Deque(client, 'q')[0], Index(client, 'i').popitem,
                 Index(client, 'i').pull, lambda: Index(client, 'i')['k'],
                 lambda: Index(client, 'i').pop('k', None)):
        with pytest.raises(CacheServerError) as info:
            call()
        assert info.value.status == 404 and 'no route' in info.value.message


# -- migration: python-diskcache's deques and indexes ---------------------------------

@pytest.fixture
def python_diskcache_collections(tmp_path):
    """A python-diskcache DjangoCache directory (a FanoutCache of 8 shards)
    with deques and indexes written by python-diskcache."""
    directory = tmp_path / 'pydiskcache'
    src = diskcache.DjangoCache(str(directory), {})
    d = src.deque('d')
    d.extend(VALUES)
    d.appendleft('front')
    d.append('back')
    d.rotate(3)
    d.rotate(-1)
    d.popleft()
    d[4] = 'replaced'
    del d[5]
    nested = src.deque('nested/q')
    nested.extend(range(1500))

    i = src.index('i')
    for n, key in enumerate(KEYS):
        i[key] = VALUES[n % len(VALUES)]
    i['text'] = 'overwritten in place'
    del i[b'bytes']
    i[b'bytes'] = 'deleted and added again'
    i.push('fruit', prefix='fruit')
    queue = src.index('queue')
    queue.push('a')
    queue.push('b')
    queue.push('c', side='front')
    assert queue.pull() == (499999999999999, 'c')

    @i.memoize(name='square')
    def square(x):
        return x * x

    assert square(12) == 144
    src.index('nested/i').update([('b', 1), ('a', 2)])

    expected = {
        'd': list(d), 'nested/q': list(nested),
        'i': list(i.items()), 'nested/i': list(src.index('nested/i').items()),
        'queue': list(queue.items()),
    }
    src.close()
    return directory, expected


def test_python_diskcache_deques_and_indexes_read_back(python_diskcache_collections,
                                                        start_server):
    directory, expected = python_diskcache_collections
    srv = start_server(directory, '--fanout', '8')
    dst = DjangoCache(srv.url, {'OPTIONS': {'TOKEN': TOKEN}})

    d = dst.deque('d')
    got = list(d)
    assert got == expected['d'] and same_types(got, expected['d'])
    assert list(reversed(d)) == expected['d'][::-1]
    assert len(d) == len(expected['d'])
    assert d[0] == expected['d'][0] and d[-1] == expected['d'][-1]
    assert list(dst.deque('nested/q')) == expected['nested/q'] == list(range(1500))

    i = dst.index('i')
    got = list(i.items())
    assert got == expected['i']
    assert same_types([k for k, _ in got], [k for k, _ in expected['i']])
    assert same_types([v for _, v in got], [v for _, v in expected['i']])
    assert i == OrderedDict(expected['i'])
    assert list(reversed(i)) == [k for k, _ in reversed(expected['i'])]
    assert list(dst.index('nested/i').items()) == expected['nested/i'] == [('b', 1), ('a', 2)]
    for key, value in expected['i']:
        assert i[key] == value

    @i.memoize(name='square')
    def square(x):
        raise AssertionError('should have been read from the index')

    assert square(12) == 144
    # The queues go on where python-diskcache left them.
    queue = dst.index('queue')
    assert list(queue.items()) == expected['queue'] == [
        (500000000000000, 'a'), (500000000000001, 'b')]
    assert queue.push('d') == 500000000000002
    assert queue.push('z', side='front') == 499999999999999
    assert queue.pull() == (499999999999999, 'z')
    assert i.push('next fruit', prefix='fruit') == 'fruit-500000000000001'
    assert i.pull(prefix='fruit') == ('fruit-500000000000000', 'fruit')

    # And what the server writes reads back in python-diskcache.
    d.append({'from': 'server'})
    d.appendleft(Point(3, 4))
    i['server'] = ('written', 'by', 'server')
    srv.stop()
    src = diskcache.DjangoCache(str(directory), {})
    try:
        assert list(src.deque('d')) == [Point(3, 4)] + expected['d'] + [{'from': 'server'}]
        assert src.index('i')['server'] == ('written', 'by', 'server')
        assert list(src.index('i'))[-1] == 'server'
    finally:
        src.close()


# -- pickling, as python-diskcache's objects pickle (as their directory) ----------

def test_caches_deques_and_indexes_pickle_as_where_they_are(cache, token_file):
    import pickle  # pylint: disable=import-outside-toplevel
    import ssl  # pylint: disable=import-outside-toplevel
    client = cache.cache('x').client
    named = Cache(client, 'pickled-' + uuid.uuid4().hex[:8])
    named.set('k', 'v')
    dq = Deque(client, 'pickled-deque-' + uuid.uuid4().hex[:8], 'abcde', maxlen=3)
    ix = Index(client, 'pickled-index-' + uuid.uuid4().hex[:8], {'a': 1})
    for obj in (named, dq, ix):
        copy = pickle.loads(pickle.dumps(obj))
        assert type(copy) is type(obj) and copy is not obj
    assert pickle.loads(pickle.dumps(named)).get('k') == 'v'
    dq2 = pickle.loads(pickle.dumps(dq))
    assert dq2.maxlen == 3 and list(dq2) == ['c', 'd', 'e']
    dq2.append('f')  # the maxlen travelled with it
    assert list(dq) == ['d', 'e', 'f']
    assert dict(pickle.loads(pickle.dumps(ix))) == {'a': 1}
    # Unpickled in a process, they share that process's client of the
    # configuration; the token read from a file stays out of the pickle.
    from_file = Client(client.endpoints[0].url, token_file=str(token_file))
    state = pickle.dumps(Cache(from_file, 'n'))
    assert open(str(token_file), 'rb').read().strip() not in state
    assert pickle.loads(state).client is pickle.loads(state).client
    with pytest.raises(TypeError, match='ssl_context'):
        pickle.dumps(Client('https://example.invalid', ssl_context=ssl.create_default_context()))
