"""What python-diskcache's DjangoCache adds to Django's API, and cache(name)."""

import io
import os
import time
import uuid

import diskcache
import pytest
from django.core.cache import CacheKeyWarning, caches

from diskcache_client import Cache, CacheServerError, args_to_key, full_name


@pytest.fixture
def named(cache):
    """A fresh named cache."""
    return cache.cache('test-' + uuid.uuid4().hex[:12])


# -- DjangoCache extras ---------------------------------------------------------

def test_set_read_streams_a_file(cache):
    payload = bytes(range(256)) * 4096  # 1 MiB: a value file on the server
    assert cache.set('blob', io.BytesIO(payload), read=True) is True
    assert cache.get('blob') == payload
    with cache.read('blob') as f:
        assert f.read(10) == payload[:10]
        assert f.read() == payload[10:]
    handle = cache.get('blob', read=True)
    chunks = []
    while True:
        chunk = handle.read(65536)
        if not chunk:
            break
        chunks.append(chunk)
    handle.close()
    assert b''.join(chunks) == payload
    # The connection went back to the pool and still works.
    assert cache.get('blob') == payload


def test_set_read_with_plain_values_stores_them(cache):
    # python-diskcache's Disk.store keeps bytes, str, int and float as they
    # are, whatever read says; only other values are read as files.
    for i, value in enumerate((b'raw bytes', 'text', 42, 1.5)):
        assert cache.set('plain-%d' % i, value, read=True) is True
        assert cache.get('plain-%d' % i) == value
        assert cache.add('plain-add-%d' % i, value, read=True) is True
        assert cache.get('plain-add-%d' % i) == value


class _CutUpload:
    """A file whose second read fails, as a cut-off upload does (Django's
    UnreadablePostError is an OSError)."""

    def __init__(self):
        self.reads = 0

    def read(self, size=-1):
        self.reads += 1
        if self.reads == 1:
            return b'first part'
        raise OSError('client went away')


def test_set_read_with_a_failing_file_raises_its_error(cache):
    # The caller's error, not the server's: it does not trip the circuit
    # breaker (which failed every call of the process for its cooldown).
    cache.set('other', 'value')
    with pytest.raises(OSError, match='client went away') as info:
        cache.set('upload', _CutUpload(), read=True)
    assert not isinstance(info.value, CacheServerError)
    assert cache.client.endpoints[0].breaker.state == 'closed'
    assert cache.get('other') == 'value'
    assert cache.get('upload') is None


def test_add_read_and_tag(cache):
    assert cache.add('f', io.BytesIO(b'file content'), read=True, tag='files') is True
    assert cache.add('f', io.BytesIO(b'other'), read=True) is False
    assert cache.get('f', tag=True) == (b'file content', 'files')


def test_read_abandoned_part_way(cache):
    cache.set('big', b'z' * 300000)
    handle = cache.read('big')
    assert handle.read(5) == b'zzzzz'
    handle.close()  # the rest is never read: the connection is dropped
    assert cache.get('big') == b'z' * 300000


def test_read_missing_raises_keyerror(cache):
    with pytest.raises(KeyError):
        cache.read('missing')


def test_read_small_bytes_is_a_file(cache):
    cache.set('small', b'abc')
    with cache.read('small') as f:
        assert f.read() == b'abc'
    # Non-bytes values come back decoded even with read=True.
    cache.set('text', 'abc')
    assert cache.get('text', read=True) == 'abc'


def test_get_expire_time_and_tag_shapes(cache):
    before = time.time()
    cache.set('k', 'v', 100, tag='red')
    value, exp = cache.get('k', expire_time=True)
    assert value == 'v' and before + 99 < exp < time.time() + 101
    assert cache.get('k', tag=True) == ('v', 'red')
    value, exp2, tag = cache.get('k', expire_time=True, tag=True)
    assert (value, exp2, tag) == ('v', exp, 'red')
    assert cache.get('missing', expire_time=True) == (None, None)
    assert cache.get('missing', tag=True) == (None, None)
    assert cache.get('missing', 'd', expire_time=True, tag=True) == ('d', None, None)
    cache.set('untagged', 1, None)
    assert cache.get('untagged', expire_time=True, tag=True) == (1, None, None)


def test_tag_kinds(cache):
    for n, tag in enumerate(['text', b'\x00bytes/', 7, 2.5, 'ünï code/%']):
        cache.set('t%d' % n, n, tag=tag)
        got = cache.get('t%d' % n, tag=True)[1]
        assert got == tag and type(got) is type(tag)
    with pytest.raises(TypeError):
        cache.set('bad', 1, tag=('tuple',))


def test_pop(cache):
    cache.set('p', {'a': 1}, 100, tag='t')
    value, exp, tag = cache.pop('p', expire_time=True, tag=True)
    assert value == {'a': 1} and exp > time.time() and tag == 't'
    assert cache.pop('p') is None
    assert cache.pop('p', 'gone') == 'gone'
    assert cache.pop('p', expire_time=True) == (None, None)
    assert cache.pop('p', tag=True) == (None, None)
    assert cache.pop('p', 1, expire_time=True, tag=True) == (1, None, None)
    cache.set('q', 5)
    assert cache.pop('q') == 5
    assert cache.has_key('q') is False
    cache.set('v', 'x', version=3)
    assert cache.pop('v') is None
    assert cache.pop('v', version=3) == 'x'


def test_evict(cache):
    for n in range(5):
        cache.set('e%d' % n, n, tag='group')
    cache.set('other', 1, tag='keep')
    cache.set_many({'plain': 1})
    assert cache.evict('group') == 5
    assert cache.get('e0') is None
    assert cache.get('other') == 1
    assert cache.evict('group') == 0
    cache.set('bt', 1, tag=b'bin')
    assert cache.evict(b'bin') == 1


def test_tag_index(cache):
    cache.create_tag_index()
    try:
        cache.set('x', 1, tag='indexed')
        assert cache.evict('indexed') == 1
        assert Cache(cache.client).settings()['tag_index'] is True
    finally:
        cache.drop_tag_index()
    assert Cache(cache.client).settings()['tag_index'] is False


def test_expire(cache):
    # Writes cull up to cull_limit expired items (as python-diskcache does):
    # switch that off so that expired items stay until expire().
    main = Cache(cache.client)
    assert main.reset('cull_limit', 0) == 0
    try:
        cache.set('live', 1)
        cache.set_many({'dead1': 1, 'dead2': 2}, -1)
        cache.set('dead3', 3, 0)
        assert cache.expire() == 3
        assert cache.expire() == 0
        assert cache.get('live') == 1
    finally:
        main.reset('cull_limit', 10)


def test_stats(cache):
    cache.stats(enable=True, reset=True)
    try:
        cache.set('hit', 1)
        cache.get('hit')
        cache.get('hit')
        cache.get('miss')
        assert cache.stats() == (2, 1)
        assert cache.stats(reset=True) == (2, 1)
        assert cache.stats() == (0, 0)
    finally:
        cache.stats(enable=False, reset=True)
    cache.get('miss')
    assert cache.stats(enable=False) == (0, 0)


def test_cull(named):
    for n in range(20):
        named.set(n, 'x' * 1000)
    assert named.reset('cull_limit', 0) == 0
    assert named.reset('size_limit', 1) == 1
    assert named.cull() == 20
    assert len(named) == 0


def test_memoize(cache):
    calls = []

    @cache.memoize(name='adder', timeout=100, tag='memo')
    def add(a, b=0):
        calls.append((a, b))
        return a + b

    assert add(1, b=2) == 3
    assert add(1, b=2) == 3
    assert calls == [(1, 2)]
    key = add.__cache_key__(1, b=2)
    assert key == ('adder', 1, None, 'b', 2)
    # Stored under make_key(key), the same str python-diskcache stores.
    assert cache.make_key(key) == ":1:('adder', 1, None, 'b', 2)"
    assert Cache(cache.client).get(cache.make_key(key), tag=True) == (3, 'memo')
    assert cache.evict('memo') == 1
    assert add(1, b=2) == 3
    assert len(calls) == 2

    with pytest.raises(TypeError):
        cache.memoize(add)


def test_memoize_zero_timeout_never_stores(cache):
    calls = []

    @cache.memoize(timeout=0)
    def f(x):
        calls.append(x)
        return x

    f(1)
    f(1)
    assert calls == [1, 1]
    assert f.__cache_key__(1) == (full_name(f.__wrapped__), 1, None)


def test_memoize_typed_ignore_version(cache):
    @cache.memoize(typed=True, ignore={0, 'verbose'}, version=7)
    def f(ctx, x, verbose=False):
        return (x, type(x).__name__)

    assert f('a', 3) == (3, 'int')
    assert f('b', 3.0) == (3.0, 'float')
    assert f('c', 3, verbose=True) == (3, 'int')
    key = f.__cache_key__('ignored', 3)
    with pytest.warns(CacheKeyWarning):  # public get() validates the tuple's repr
        assert cache.get(key, version=7) == (3, 'int')


def test_args_to_key_matches_python_diskcache():
    base = ('mod.func',)
    cases = [
        ((), {}, False, ()),
        ((1, 'a', None), {}, False, ()),
        ((1, 2.0), {'z': 1, 'a': [1]}, True, ()),
        ((1, 2, 3), {'k': 1, 'j': 2}, True, {0, 'k'}),
        ((), {'only': 1}, True, {'only'}),
    ]
    for args, kwargs, typed, ignore in cases:
        assert args_to_key(base, args, kwargs, typed, ignore) == \
            diskcache.core.args_to_key(base, args, kwargs, typed, ignore)


def test_deque_and_index_come_from_the_cache(cache):
    # More in test_persistent.py.
    from diskcache_client import Deque, Index
    assert isinstance(cache.deque('q'), Deque)
    assert cache.deque('q', maxlen=3).maxlen == 3
    assert isinstance(cache.index('i'), Index)


# -- cache(name): python-diskcache's Cache API ------------------------------------

def test_named_cache_basics(named, cache):
    assert named.set('a', 1) is True
    named['b'] = 'two'
    assert named['a'] == 1 and named.get('b') == 'two'
    assert 'a' in named and 'zz' not in named
    with pytest.raises(KeyError):
        named['zz']
    # Separate from the main cache and from other named caches.
    assert cache.get('a') is None
    other = cache.cache(named.name + '-other')
    assert other.get('a') is None
    assert len(named) == 2
    assert named.volume() > 0
    del named['a']
    with pytest.raises(KeyError):
        del named['a']
    assert named.delete('b') is True
    assert named.delete('b') is False


def test_named_cache_key_kinds(named):
    keys = ['text', b'bytes\x00/', 12, -(2 ** 63), 2 ** 64, 1.5, ('tuple', 1), frozenset({1})]
    for n, key in enumerate(keys):
        named.set(key, n)
    for n, key in enumerate(keys):
        assert named.get(key) == n, key
        assert key in named
    # As in python-diskcache (SQLite compares 1 = 1.0), int 1 and float 1.0
    # are one key; str '1' is another.
    named.set(1, 'int')
    named.set(1.0, 'float')
    named.set('1', 'str')
    assert (named[1], named[1.0], named['1']) == ('float', 'float', 'str')
    assert named.get_many([1, '1', 'nope']) == {1: 'float', '1': 'str'}


def test_named_cache_add_touch_expire(named):
    assert named.add('k', 'v', expire=100) is True
    assert named.add('k', 'w') is False
    value, exp = named.get('k', expire_time=True)
    assert exp > time.time() + 90
    assert named.touch('k') is True  # expire=None: never
    assert named.get('k', expire_time=True) == ('v', None)
    assert named.touch('missing', 10) is False
    named.reset('cull_limit', 0)  # no culling of expired items on write
    named.set('old', 1, expire=-1)
    assert named.get('old') is None
    assert named.expire() == 1
    with pytest.raises(NotImplementedError):
        named.expire(now=time.time())


def test_named_cache_incr_decr(named):
    assert named.incr('n') == 1  # default 0
    assert named.incr('n', 5) == 6
    assert named.decr('n', 2) == 4
    assert named.decr('m', default=10) == 9
    with pytest.raises(KeyError):
        named.incr('missing', default=None)
    named.set('s', 'text')
    with pytest.raises(TypeError):
        named.incr('s')
    named.set('big', 2 ** 63 - 1)
    with pytest.raises(OverflowError):
        named.incr('big')


def test_named_cache_pop_read_tags_evict(named):
    named.set('f', io.BytesIO(b'streamed'), read=True, tag='t')
    with named.read('f') as handle:
        assert handle.read() == b'streamed'
    assert named.get('f', expire_time=True, tag=True) == (b'streamed', None, 't')
    named.set('g', 1, tag='t')
    assert named.pop('g', tag=True) == (1, 't')
    assert named.pop('g', default=0) == 0
    assert named.evict('t') == 1
    with pytest.raises(KeyError):
        named.read('f')


def test_named_cache_stats_check_clear_settings(named):
    named.stats(enable=True, reset=True)
    named.set('x', 1)
    named.get('x')
    named.get('y')
    assert named.stats(enable=False, reset=True) == (1, 1)
    assert named.check() == []
    assert named.check(fix=True) == []
    assert named.reset('eviction_policy') == 'least-recently-stored'
    assert named.reset('eviction_policy', 'least-recently-used') == 'least-recently-used'
    with pytest.raises(ValueError):
        named.reset('disk_min_file_size', 1)
    named.create_tag_index()
    assert named.reset('tag_index') is True
    named.drop_tag_index()
    assert named.clear() == 1
    assert len(named) == 0


def test_named_cache_many(named):
    assert named.set_many({'a': 1, 'b': b'2', 'c': [3]}, expire=100, tag='m') == []
    assert named.get_many(['a', 'b', 'c', 'd']) == {'a': 1, 'b': b'2', 'c': [3]}
    assert named.get('a', tag=True) == (1, 'm')
    assert named.delete_many(['a', 'b', 'zz']) == 2


def test_named_cache_memoize(named):
    calls = []

    @named.memoize(expire=100, tag='fib')
    def fib(n):
        calls.append(n)
        return n if n < 2 else fib(n - 1) + fib(n - 2)

    assert fib(20) == 6765
    assert len(calls) == 21
    assert fib(20) == 6765
    assert len(calls) == 21
    assert named[fib.__cache_key__(20)] == 6765
    assert named.evict('fib') == 21
    with pytest.raises(TypeError):
        named.memoize(fib)


def test_named_cache_context_and_names(cache):
    with cache.cache('nested/name') as nested:
        nested.set('k', 1)
        assert nested.get('k') == 1
        assert cache.cache('nested').get('k') is None
    with pytest.raises(ValueError):
        cache.cache('')
    with pytest.raises(CacheServerError) as info:
        cache.cache('../escape').set('k', 1)
    assert info.value.status == 400


def _collection_files(server, kind, name):
    """The files of collection ``kind/name`` on every shard of ``server``
    (those of collections nested under its name left out)."""
    found = []
    for data_dir in [s.data_dir for s in getattr(server, 'shards', [server])]:
        top = os.path.join(data_dir, kind, *name.split('/'))
        for root, dirs, files in os.walk(top):
            if root == top:
                dirs[:] = [d for d in dirs if len(d) == 2]  # value directories only
            found += [os.path.join(root, f) for f in files]
    return found


def test_drop_named_cache(cache, named, server, token_file):
    named.reset('size_limit', 2 ** 20)
    named.set('blob', b'x' * 100000)  # a value file on the server
    named.set('k', 1)
    nested = cache.cache(named.name + '/part')
    nested.set('k', 2)
    assert _collection_files(server, 'cache', named.name)
    assert named.drop() == 2
    assert _collection_files(server, 'cache', named.name) == []
    assert named.get('k') is None and len(named) == 0
    assert named.reset('size_limit') != 2 ** 20  # a new cache's settings
    assert nested.get('k') == 2
    named.set('again', 3)
    assert named.get('again') == 3
    assert cache.cache('never-' + uuid.uuid4().hex[:8]).drop() == 0
    with pytest.raises(TypeError):
        Cache(server.url, token_file=token_file).drop()


def test_clearing_a_deque_or_index_removes_its_files(cache, server):
    name = 'gone-' + uuid.uuid4().hex[:8]
    q, ix = cache.deque(name), cache.index(name)
    q.extend([b'y' * 100000, 2])
    ix['a'] = b'z' * 100000
    assert _collection_files(server, 'deque', name) and _collection_files(server, 'index', name)
    q.clear()
    ix.clear()
    assert _collection_files(server, 'deque', name) == []
    assert _collection_files(server, 'index', name) == []
    assert len(q) == 0 and len(ix) == 0
    q.append(1)
    assert list(q) == [1]


def test_collections_lists_what_exists(cache):
    tag = 'listed-' + uuid.uuid4().hex[:8]
    cache.cache(tag + '/a').set('k', b'x' * 100000)
    cache.deque(tag + '/q').append(1)
    cache.index(tag + '/i')['k'] = 1
    got = list(cache.collections(prefix=tag))
    assert [(e['kind'], e['name']) for e in got] == [
        ('cache', tag + '/a'), ('deque', tag + '/q'), ('index', tag + '/i')]
    assert got[0]['bytes'] >= 100000
    assert [e['name'] for e in cache.collections('deque', tag)] == [tag + '/q']
    cache.cache(tag + '/a').drop()
    assert [e['kind'] for e in cache.collections(prefix=tag)] == ['deque', 'index']


def test_collections_pages(cache):
    from diskcache_client import ops
    tag = 'paged-' + uuid.uuid4().hex[:8]
    names = ['%s/%d' % (tag, i) for i in range(7)]
    for name in names:
        cache.deque(name).append(1)
    seen, after = [], ''
    while True:
        entries, after = cache._client.run(
            ops.collections_page(cache._client, 'deque', tag, after, 3))
        assert len(entries) <= 3
        seen += [e['name'] for e in entries]
        if not after:
            break
    assert seen == sorted(names)


def test_cache_object_over_url(server, token_file):
    standalone = Cache(server.url, token_file=token_file)
    standalone.set('standalone', 1)
    assert caches['default'].client is not standalone.client
    assert standalone.get('standalone') == 1
    assert standalone.delete('standalone') is True


def test_named_cache_slash_and_empty_keys(named):
    named.set('/', 'slash')
    named.set('', 'empty')
    assert named.get('/') == 'slash'
    assert named.get('') == 'empty'


# -- a named cache is python-diskcache's Cache: queues and iteration --------------

def _both(named, ref, call):
    """call(c) on the named cache and on python-diskcache's Cache; their
    answers, or the exception types they raised."""
    out = []
    for c in (named, ref):
        try:
            out.append(call(c))
        except Exception as exc:  # pylint: disable=broad-except
            out.append(type(exc))
    return out


def test_named_cache_queues_and_iteration_match_python_diskcache(named, tmp_path):
    with diskcache.Cache(str(tmp_path / 'ref')) as ref:
        def same(call):
            ours, theirs = _both(named, ref, call)
            assert ours == theirs
            return ours

        # Empty: the defaults, in python-diskcache's shapes.
        same(lambda c: c.pull())
        same(lambda c: c.peek(side='back', default='none', expire_time=True, tag=True))
        same(lambda c: c.peekitem())
        same(lambda c: list(c))
        same(lambda c: list(c.iterkeys(reverse=True)))
        # Queues, with and without prefix, both sides, tags and expiry.
        for i in range(130):
            same(lambda c, i=i: c.push('v%d' % i, prefix=None if i % 3 else 'jobs',
                                       side='front' if i % 5 == 0 else 'back',
                                       tag='t%d' % (i % 2)))
        same(lambda c: c.push(b'later', expire=3600))
        same(lambda c: c.pull())
        same(lambda c: c.pull('jobs', side='back', tag=True))
        same(lambda c: c.peek(expire_time=False, tag=True))
        same(lambda c: c.peek('jobs', side='back'))
        same(lambda c: c.peekitem(last=False, tag=True))
        same(lambda c: c.peekitem(expire_time=True)[0])
        same(lambda c: c.pull('missing', default=('no', 'thing')))
        # Keys of every kind, more than one page of each listing.
        for key in [3, -7, 2.5, 'text', b'bytes', ('tuple', 1), 10**30, 'é']:
            same(lambda c, key=key: c.set(key, repr(key)))
        same(lambda c: c.delete(3) and c.set(3, 'moved to the end'))
        same(lambda c: list(c))
        same(lambda c: list(reversed(c)))
        same(lambda c: list(c.iterkeys()))
        same(lambda c: list(c.iterkeys(reverse=True)))
        # Draining a queue ends with the default.
        for _ in range(50):
            same(lambda c: c.pull('jobs'))
        assert same(lambda c: c.pull('jobs')) == (None, None)
        same(lambda c: len(c))


def test_iteration_sees_the_keys_there_when_it_started(named):
    for i in range(250):
        named.set(i, i)
    it = iter(named)
    seen = [next(it)]
    named.set('added', 1)  # after iteration started: not seen
    seen.extend(it)
    assert seen == list(range(250))
    assert list(reversed(named)) == ['added'] + list(range(249, -1, -1))


def test_the_servers_cache_has_no_queue_or_iterkeys(cache):
    # As python-diskcache's FanoutCache: it iterates, but has no queues and
    # no sorted iterkeys.
    root = Cache(cache.cache('x').client)
    cache.set('k', 1)
    assert list(root) == [cache.make_key('k')] == list(reversed(root))
    for call in (lambda: root.push(1), lambda: root.pull(), lambda: root.peekitem(),
                 lambda: list(root.iterkeys())):
        with pytest.raises(TypeError, match='named cache'):
            call()


def test_a_named_cache_over_a_list_of_servers_lives_on_the_server_of_its_name(
        cacheserver_bin, token_file, tmp_path):
    # A list of URLs of servers that share no topology: the named cache is
    # kept whole by the server its name routes to (as python-diskcache keeps
    # a FanoutCache's named cache in one directory, and as the shards of a
    # topology place it); iteration and iterkeys are python-diskcache's.
    from conftest import CacheServer  # pylint: disable=import-outside-toplevel
    from diskcache_client import Client  # pylint: disable=import-outside-toplevel
    servers = [CacheServer(cacheserver_bin, tmp_path / ('s%d' % i), token_file).start()
               for i in range(3)]
    try:
        client = Client([s.url for s in servers], token_file=str(token_file))
        named = Cache(client, 'whole')
        keys = [7, -3, 2.5, 10**20, 'b', 'a', 'é', b'\x00', b'z', ('t', 1), None] + list(range(300))
        for key in keys:
            named.set(key, 1)
        parts = [len(list(Cache(Client(s.url, token_file=str(token_file)), 'whole')))
                 for s in servers]
        home = client.shard_of(b'whole')
        assert parts == [len(set(map(repr, keys))) if i == home else 0 for i in range(3)]
        assert sorted(map(repr, named)) == sorted(map(repr, set(keys)))
        named.reset('cull_limit', 5)
        assert named.cull_limit == 5 and named.create_tag_index() is None and named.tag_index
        with diskcache.Cache(str(tmp_path / 'ref')) as ref:
            for key in keys:
                ref.set(key, 1)
            assert list(named.iterkeys()) == list(ref.iterkeys())
            assert list(named.iterkeys(reverse=True)) == list(ref.iterkeys(reverse=True))
        root = Cache(client)  # the servers' own caches: each in turn
        for i in range(50):
            root.set('r%d' % i, i)
        assert sorted(root) == sorted('r%d' % i for i in range(50))
    finally:
        for s in servers:
            s.stop()


def test_settings_are_attributes_as_in_python_diskcache(named, tmp_path):
    with diskcache.Cache(str(tmp_path / 'ref')) as ref:
        for c in (named, ref):
            c.reset('cull_limit', 3)
            c.reset('eviction_policy', 'least-recently-used')
        for name in diskcache.DEFAULT_SETTINGS:
            assert getattr(named, name) == named.settings()[name]
        assert (named.cull_limit, named.eviction_policy) == (ref.cull_limit, ref.eviction_policy)
        assert named.size_limit == named.reset('size_limit')
    with pytest.raises(AttributeError):
        named.no_such_setting  # pylint: disable=pointless-statement
