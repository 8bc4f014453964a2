"""The client given one URL against three real cacheserver shards.

Three cacheserver processes serve one cache as the shards of one topology
(``cacheserver --shard-index I --peers URL0,URL1,URL2``), and clients are
given shard 0's URL, as applications are given a DiskCache's Service. Where
each request was answered is read from the servers' own metrics:
``diskcache_forwarded_requests_total`` (requests a shard passed to the
owner) and ``diskcache_served_requests_total`` (requests a shard answered
itself).
"""

import asyncio
import json
import re
import socket
import urllib.request

import pytest

from diskcache_client import Cache, CacheServerError, Client, Deque, Index, ServerUnavailable
from diskcache_client.djangocache import DjangoCache
from diskcache_client.ops import key_target
from diskcache_client.routing import owner

from conftest import ADMIN_TOKEN, TOKEN

_SAMPLE = re.compile(r'^(\w+)(?:\{([^}]*)\})? (\S+)$')


def metrics(url):
    """{(name, labels): value} of a shard's /metrics. (Read over a plain
    socket: a test may have made socket.create_connection refuse a shard.)"""
    host, port = url.rsplit('/', 1)[1].rsplit(':', 1)
    with socket.socket() as sock:
        sock.settimeout(10)
        sock.connect((host, int(port)))
        sock.sendall(('GET /metrics HTTP/1.0\r\nHost: %s\r\nAuthorization: Bearer %s\r\n'
                      'Connection: close\r\n\r\n' % (host, TOKEN)).encode())
        data = b''
        while True:
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            data += chunk
    head, _, text = data.decode().partition('\r\n\r\n')
    assert head.split(' ')[1] == '200', head
    out = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            out[(match.group(1), match.group(2) or '')] = float(match.group(3))
    return out


def total(url, name):
    return sum(v for (n, _), v in metrics(url).items() if n == name)


def forwarded(cluster):
    """Requests forwarded by each shard so far."""
    return [total(url, 'diskcache_forwarded_requests_total') for url in cluster.urls]


def served(cluster):
    """Requests each shard answered itself so far."""
    return [total(url, 'diskcache_served_requests_total') for url in cluster.urls]


def delta(after, before):
    return [a - b for a, b in zip(after, before)]


@pytest.fixture
def cluster(start_cluster):
    return start_cluster(3, '--fanout', '4')


def smart_client(cluster, **options):
    client = Client(cluster.url, token=TOKEN, retry_backoff=0.001, **options)
    # The first answer carries the epoch; the next call reads the topology.
    Cache(client).get('warm-up')
    Cache(client).get('warm-up')
    assert client.topology is not None and client.topology.shards == tuple(cluster.urls)
    return client


def test_keys_go_straight_to_their_owner(cluster):
    client = smart_client(cluster)
    cache = Cache(client)
    keys = ['key%d' % n for n in range(60)] + [b'bytes', 7, 2.5, 3.0, ('tuple', 1)]
    fw, sv = forwarded(cluster), served(cluster)
    for key in keys:
        cache.set(key, repr(key))
    for key in keys:
        assert cache.get(key) == repr(key)
    assert cache.incr('counter') == 1
    assert delta(forwarded(cluster), fw) == [0, 0, 0]
    # Each key's two requests were answered by its owner.
    want = [0, 0, 0]
    for key in keys:
        want[client.shard_of(key_target(key)[0]) - 1] += 2
    want[owner(b'counter', 3)] += 1
    assert delta(served(cluster), sv) == want
    assert all(want)

    # Through the URL without the topology, the same keys are forwarded by
    # shard 0 to their owners, and read back the same.
    plain = Cache(Client(cluster.url, token=TOKEN, topology=False))
    fw = forwarded(cluster)
    for key in keys:
        assert plain.get(key) == repr(key)
    others = sum(1 for key in keys
                 if client.shard_of(key_target(key)[0]) != 1)
    assert delta(forwarded(cluster), fw) == [others, 0, 0]


def test_batches_cluster_wide_operations_and_collections(cluster):
    client = smart_client(cluster)
    cache = Cache(client)
    data = {'item%d' % n: n for n in range(90)}
    fw = forwarded(cluster)
    assert cache.set_many(data, tag='batch') == []
    assert cache.get_many(list(data) + ['missing']) == data
    assert delta(forwarded(cluster), fw) == [0, 0, 0]
    # Cluster-wide operations go to the URL once, which fans them out.
    assert len(cache) == 90 + 0 and cache.evict('batch') == 90
    cache.set_many(data)
    hits_before = cache.stats()[0]
    assert cache.get_many(list(data)) == data
    assert cache.stats()[0] - hits_before == 90
    assert cache.clear() == 90
    # A named cache, a deque and an index live on the owner of their name.
    for name, make in (('pages', lambda: Cache(client, 'pages')),
                       ('jobs', lambda: Deque(client, 'jobs')),
                       ('seen', lambda: Index(client, 'seen'))):
        home = owner(name.encode(), 3)
        coll = make()
        fw, sv = forwarded(cluster), served(cluster)
        for n in range(10):
            if isinstance(coll, Deque):
                coll.append(n)
            else:
                coll[n] = n
        assert len(coll) == 10
        assert delta(forwarded(cluster), fw) == [0, 0, 0]
        got = delta(served(cluster), sv)
        assert got[home] == 11 and sum(got) == 11, (name, got)
    # The listing fans out once; a drop goes to the owner of the name.
    assert [(c['kind'], c['name']) for c in cache.collections()] == [
        ('cache', 'pages'), ('deque', 'jobs'), ('index', 'seen')]
    fw, sv = forwarded(cluster), served(cluster)
    assert Cache(client, 'pages').drop() == 10
    got = delta(served(cluster), sv)
    assert delta(forwarded(cluster), fw) == [0, 0, 0] and got[owner(b'pages', 3)] == 1 and sum(got) == 1
    assert [c['name'] for c in cache.collections('cache')] == []


def test_an_unreachable_pod_is_reached_through_the_url(cluster, monkeypatch):
    # Shard 1 runs, but this client cannot connect to it (as when the
    # headless Service's names do not resolve outside the cluster).
    client = smart_client(cluster, cooldown=60)
    cache = Cache(client)
    blocked = int(cluster.urls[1].rsplit(':', 1)[1])
    real = socket.create_connection

    def create_connection(address, *args, **kwargs):
        if address[1] == blocked:
            raise ConnectionRefusedError('blocked by the test')
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, 'create_connection', create_connection)
    client.endpoints[2].close()  # no pooled connection to shard 1
    attempts = client.endpoints[2].connect_attempts
    keys = [k for k in ('k%d' % n for n in range(60)) if owner(k.encode(), 3) == 1][:5]
    fw = forwarded(cluster)
    for n, key in enumerate(keys):
        assert cache.set(key, n)
        assert cache.get(key) == n
        assert cache.incr(key) == n + 1  # not idempotent, but never sent to shard 1
    assert delta(forwarded(cluster), fw) == [3 * len(keys), 0, 0]
    # One refused connection, then its circuit breaker stayed open.
    assert client.endpoints[2].connect_attempts == attempts + 1


def test_a_pod_that_is_down(cluster):
    client = smart_client(cluster, retries=0)
    django_cache = DjangoCache(cluster.url, {'OPTIONS': {
        'TOKEN': TOKEN, 'RETRIES': 0, 'IGNORE_EXCEPTIONS': True}})
    cache = Cache(client)
    keys = {k: owner(k.encode(), 3) for k in ('k%d' % n for n in range(40))}
    for key in keys:
        cache.set(key, key)
    cluster.shards[2].stop()
    for key, home in keys.items():
        if home != 2:
            assert cache.get(key) == key
            continue
        # Refused by shard 2, then asked through the URL, whose server
        # answers that the owner is unavailable.
        with pytest.raises(ServerUnavailable) as err:
            cache.get(key)
        assert err.value.code == 'shard_unavailable', err.value
        assert err.value.url.startswith(cluster.url)
        # A HEAD's answer has no body: its code comes in Diskcache-Error.
        with pytest.raises(ServerUnavailable) as err:
            key in cache  # pylint: disable=pointless-statement
        assert err.value.code == 'shard_unavailable', err.value
        # The Django backend with IGNORE_EXCEPTIONS sees a miss.
        assert django_cache.get(key, 'default') == 'default'
    # Operations on the whole cache fail (502 partial_failure).
    with pytest.raises(CacheServerError) as err:
        cache.clear()
    assert (err.value.status, err.value.code) == (502, 'partial_failure')
    assert django_cache.clear() == 0


@pytest.mark.parametrize('mode', ['smart', 'one-url', 'list'])
def test_a_pod_that_is_down_fails_only_its_keys(cluster, mode):
    # set_many stores the keys of the shards that are up and reports
    # exactly the others as failed; clear says what the others removed.
    # (A list of URLs stopped at the first shard that failed, and every key
    # was reported failed whichever way the client reached the shards.)
    location = cluster.urls if mode == 'list' else cluster.url
    options = {'TOKEN': TOKEN, 'RETRIES': 0, 'TOPOLOGY': mode == 'smart'}
    ignoring = DjangoCache(location, {'OPTIONS': dict(options, IGNORE_EXCEPTIONS=True)})
    raising = DjangoCache(location, {'OPTIONS': options})
    homes = {k: owner((':1:' + k).encode(), 3) for k in ('k%d' % n for n in range(30))}
    down = sorted(k for k, home in homes.items() if home == 1)
    assert ignoring.set_many(dict.fromkeys(homes, 'old')) == []
    cluster.shards[1].stop()
    if mode == 'list':
        down_url = cluster.urls[1]
    else:
        down_url = cluster.url  # the owner's error comes through shard 0
    assert sorted(ignoring.set_many(dict.fromkeys(homes, 'new'))) == down
    with pytest.raises(CacheServerError) as err:
        raising.set_many(dict.fromkeys(homes, 'newer'))
    assert err.value.url.startswith(down_url), err.value
    assert sorted(list(homes)[i] for i in err.value.failed) == down
    up = [k for k in homes if k not in down]
    assert ignoring.get_many(up) == dict.fromkeys(up, 'newer')
    # A batch get with keys of the shard that is down raises (through one
    # URL the server answers the others' keys and an error record for each
    # of the shard's: they are no misses).
    with pytest.raises(CacheServerError) as err:
        raising.get_many(list(homes))
    if mode == 'one-url':
        assert err.value.code == 'shard_unavailable', err.value
    assert ignoring.get_many(list(homes)) == {}
    cache = Cache(Client(location, token=TOKEN, retries=0, topology=mode == 'smart'))
    with pytest.raises(CacheServerError) as err:
        cache.clear()
    if mode == 'list':
        assert err.value.removed == len(up)
    assert ignoring.get_many(up) == {}


def announce(cluster, epoch):
    """Announce the cluster's shards under a new epoch to every shard, as
    the operator does (PUT /v1/topology with the admin token)."""
    body = json.dumps({'epoch': epoch, 'shards': cluster.urls, 'previous': None}).encode()
    for url in cluster.urls:
        req = urllib.request.Request(url + '/v1/topology', data=body, method='PUT', headers={
            'Authorization': 'Bearer ' + ADMIN_TOKEN, 'Content-Type': 'application/json'})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert json.loads(resp.read())['epoch'] == epoch


def test_a_new_epoch_is_followed(cluster):
    client = smart_client(cluster)
    cache = Cache(client)
    cache.set('k', 1)
    announce(cluster, 2)
    assert cache.get('k') == 1  # its answer says epoch 2
    assert client.topology.epoch == 1
    assert cache.get('k') == 1
    assert client.topology.epoch == 2


def test_a_listing_starts_again_when_the_topology_changes(cluster):
    # A listing that outlives a change of topology (the server answers 409
    # listing_restart: keys may have moved) starts again from the start by
    # itself: every key comes, those of the pages before the change twice.
    client = smart_client(cluster)
    cache = Cache(client)
    django_cache = DjangoCache(cluster.url, {'OPTIONS': {'TOKEN': TOKEN}})
    keys = ['lr%02d' % i for i in range(40)]
    for key in keys:
        cache.set(key, 1)
        django_cache.set(key, 1)
    epoch = client.topology.epoch
    listings = {'Cache': iter(cache), 'iter_keys': django_cache.iter_keys('lr*', itersize=5)}
    for name, listing in listings.items():
        listed = [next(listing) for _ in range(3)]
        epoch += 1
        announce(cluster, epoch)
        listed += list(listing)
        if name == 'Cache':
            # The server's cache holds the Django keys (':1:lr00') too.
            listed = [k for k in listed if k != 'warm-up' and not k.startswith(':1:')]
        assert sorted(set(listed)) == keys, name
        assert len(listed) > len(keys), name  # the first keys came again
    # keys() and delete_pattern() take each key once, as Redis's KEYS.
    first = django_cache.iter_keys

    def restarted(search, itersize=None, version=None):
        listed = list(first(search, itersize, version))
        return iter(listed + listed)  # as a listing started again meets them
    django_cache.iter_keys = restarted
    assert sorted(django_cache.keys('lr*')) == keys
    assert django_cache.delete_pattern('lr*') == len(keys)


def test_a_list_of_urls_warns_of_a_new_epoch(cluster, caplog):
    # A list of shard URLs is kept as it is; a newer topology on the
    # servers (a shard added, say) is told in the log, once.
    listed = Cache(Client(cluster.urls, token=TOKEN))
    listed.set('k', 1)
    announce(cluster, 2)
    assert 'topology epoch' not in caplog.text
    with caplog.at_level('WARNING', logger='diskcache_client'):
        assert listed.get('k') == 1
        assert listed.get('k') == 1
    warnings = [r for r in caplog.records if 'topology epoch 2' in r.getMessage()]
    assert len(warnings) == 1 and 'list of 3 shard URLs' in warnings[0].getMessage()


def test_asyncio_calls_go_straight_to_their_owner(cluster):
    django_cache = DjangoCache(cluster.url, {'OPTIONS': {'TOKEN': TOKEN}})

    async def main():
        await django_cache.aget('warm-up')
        await django_cache.aget('warm-up')
        fw = forwarded(cluster)
        for n in range(30):
            await django_cache.aset('a%d' % n, n)
        got = [await django_cache.aget('a%d' % n) for n in range(30)]
        await django_cache.aclose()
        return fw, got

    fw, got = asyncio.run(main())
    assert got == list(range(30))
    assert delta(forwarded(cluster), fw) == [0, 0, 0]


def test_a_list_of_the_shard_urls_routes_as_the_servers_do(cluster):
    # The client routes over the listed URLs itself and adds up whole-cache
    # results; each shard answers those for itself only (Diskcache-Scope).
    listed = Cache(Client(cluster.urls, token=TOKEN))
    data = {'item%d' % n: n for n in range(45)}
    fw = forwarded(cluster)
    assert listed.set_many(data) == []
    for key, value in data.items():
        assert listed.get(key) == value
    assert delta(forwarded(cluster), fw) == [0, 0, 0]  # the same owners as the servers'
    assert len(listed) == 45
    hits = listed.stats()[0]
    assert listed.get_many(list(data)) == data
    assert listed.stats()[0] - hits == 45
    assert listed.clear() == 45
    assert len(Cache(Client(cluster.url, token=TOKEN))) == 0
    # A named cache lives on the owner of its name, as the servers place
    # it: its settings, tag index and statistics are that shard's, asked
    # there (they were read from, or added up over, every listed shard).
    name = 'named'
    named = Cache(listed.client, name)
    fw = forwarded(cluster)
    named.reset('cull_limit', 5)
    assert named.cull_limit == 5 and named.reset('cull_limit') == 5
    named.create_tag_index()
    assert named.tag_index
    named.stats(enable=True, reset=True)
    assert named.set_many(data) == []
    assert named.get('item1') == 1 and named.get('absent') is None
    assert named.stats() == (1, 1) and len(named) == 45
    assert delta(forwarded(cluster), fw) == [0, 0, 0]  # straight to the owner
    assert [(c['kind'], c['name']) for c in listed.collections()] == [('cache', name)]
    assert named.drop() == 45 and len(named) == 0
    assert list(listed.collections()) == []
