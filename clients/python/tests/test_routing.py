"""Key ownership agrees with the Go side: the shared vectors of
topology/testdata/routing-vectors.json (key, routing bytes, hash, owner per
shard count), which topology/vectors_test.go checks too; and what a client
given one URL learns of the topology (no server)."""

import json
import pickle

import pytest

from diskcache_client import Cache, Deque, routing, wire
from diskcache_client.ops import key_target
from diskcache_client.topology import Follower, Layout, misrouted_layout, parse_layout
from diskcache_client.transport import Client

from conftest import REPO

VECTORS = json.loads((REPO / 'topology' / 'testdata' / 'routing-vectors.json').read_text())['vectors']


def python_key(vector):
    kind, key = vector['kind'], vector['key']
    if kind == 'text':
        return key
    if kind == 'bytes':
        return bytes.fromhex(key)
    if kind == 'int':
        return int(key)
    if kind == 'float':
        return float(key)
    if kind == 'pickle':
        return pickle.loads(bytes.fromhex(key))
    raise AssertionError(kind)


def test_vectors_cover_every_kind():
    assert {v['kind'] for v in VECTORS} == {'text', 'bytes', 'int', 'float', 'pickle', 'name'}


@pytest.mark.parametrize('vector', VECTORS, ids=lambda v: '%s:%s' % (v['kind'], v['key'][:20]))
def test_routing_vector(vector):
    want = bytes.fromhex(vector['routing'])
    if vector['kind'] == 'name':
        routed = vector['key'].encode('utf-8')  # collections route by their name
    else:
        kind, raw = wire.encode_key(python_key(vector))
        assert kind == vector['kind']
        routed = routing.routing_bytes(kind, raw)
    assert routed == want
    assert routing.key_hash(routed) == int(vector['hash'])
    for shards, owner in vector['owners'].items():
        assert routing.owner(routed, int(shards)) == owner
        assert routing.jump_hash(int(vector['hash']), int(shards)) == owner


def test_client_routes_requests_by_the_vectors():
    from diskcache_client import ops
    urls = ['http://127.0.0.1:%d' % (1 + n) for n in range(5)]
    client = Client(urls)
    for vector in VECTORS:
        if vector['kind'] == 'name':
            continue
        key = python_key(vector)
        req = ops.key_request(client, '/v1', key, 'GET')
        assert req.shard == vector['owners']['5'], vector
        (shard, _), = ops._by_shard(client, [key])  # pylint: disable=protected-access
        assert shard == vector['owners']['5'], vector


def test_float_keys_route_with_the_int_of_the_same_value():
    # SQLite and python-diskcache take 1 and 1.0 for one item: one owner.
    def float_routing(value):
        return routing.routing_bytes(*wire.encode_key(value))

    assert float_routing(1.0) == b'1' == wire.encode_key(1)[1]
    assert float_routing(-0.0) == b'0'
    assert float_routing(-2.0 ** 63) == b'-9223372036854775808'
    assert float_routing(2.0 ** 63) == bytes.fromhex('43e0000000000000')  # beyond int64
    assert float_routing(0.5) == bytes.fromhex('3fe0000000000000')
    for shards in (2, 3, 7):
        urls = ['http://127.0.0.1:%d' % (10000 + i) for i in range(shards)]
        client = Client(urls)
        for value in (0, 1, -1, 42, 10 ** 15):
            assert client.shard_of(key_target(value)[0]) == client.shard_of(
                key_target(float(value))[0])


def _follower(service='http://svc:8080'):
    made = []

    def make(url):
        made.append(url)
        return url

    return Follower(service, make), made


def test_follower_adopts_newer_topologies_only():
    follow, made = _follower()
    three = Layout(2, ('http://a:1', 'http://b:1', 'http://c:1'))
    assert follow.adopt(three) == ['http://svc:8080', 'http://a:1', 'http://b:1', 'http://c:1']
    assert follow.epoch == 2 and follow.epoch_text == '2' and not follow.stale
    assert follow.adopt(three) is None  # the same again
    assert follow.adopt(Layout(1, ('http://x:1',))) is None  # older
    follow.saw('2')
    assert not follow.stale
    follow.saw('3')
    assert follow.stale
    # Endpoints are kept per URL across topologies.
    assert follow.adopt(Layout(3, ('http://a:1', 'http://b:1'))) == [
        'http://svc:8080', 'http://a:1', 'http://b:1']
    assert made == ['http://a:1', 'http://b:1', 'http://c:1']
    # One shard: everything to the service URL.
    assert follow.adopt(Layout(4, ('http://a:1',))) == ['http://svc:8080']


def test_topology_documents():
    doc = {'epoch': 3, 'shards': ['http://a:1/', 'https://b:2'], 'self': 0, 'previous': None,
           'rebalancing': False, 'progress': {}}
    assert parse_layout(doc) == Layout(3, ('http://a:1', 'https://b:2'))
    for bad in ({'epoch': 0, 'shards': ['http://a']}, {'epoch': True, 'shards': ['http://a']},
                {'epoch': 1, 'shards': []}, {'epoch': 1, 'shards': ['ftp://a']}, []):
        with pytest.raises(ValueError):
            parse_layout(bad)
    body = json.dumps({'error': 'wrong_epoch', 'message': 'm', 'topology': doc}).encode()
    assert misrouted_layout(body) == Layout(3, ('http://a:1', 'https://b:2'))
    assert misrouted_layout(b'{"error":"not_numeric","message":"topology"}') is None
    assert misrouted_layout(b'not json, topology') is None


def test_one_url_routes_nothing_before_it_knows_a_topology():
    client = Client('http://127.0.0.1:1')
    assert client.shard_of(b'anything') == 0 and client.shards == 1
    assert client.topology is None
    assert Client('http://127.0.0.1:1', topology=False).pin('x') is not None


def test_named_collections_route_by_name_when_following_a_topology():
    client = Client('http://127.0.0.1:1')
    client._adopt(client._follow.adopt(  # pylint: disable=protected-access
        Layout(1, tuple('http://127.0.0.1:%d' % (10001 + i) for i in range(5)))))
    assert client.shards == 1 and list(client.targets()) == [0]
    name_owner = 1 + routing.owner(b'sessions', 5)
    pages = Cache(client, 'sessions')
    # Every request of the named cache goes to its name's owner, the whole-
    # cache ones included; keys of the server's cache go to their own.
    route = pages._route  # pylint: disable=protected-access
    assert {route.shard_of(key_target(k)[0]) for k in ('a', 'b', 'c', 1, b'x')} == {name_owner}
    assert list(route.targets()) == [name_owner]
    assert client.shard_of(b'a') == 1 + routing.owner(b'a', 5)
    dq = Deque(client, 'sessions')
    assert dq._shard == name_owner  # pylint: disable=protected-access
    assert repr(dq) == "Deque('http://127.0.0.1:1', 'sessions')"
