"""Key ownership agrees with the Go side: the shared vectors of
topology/testdata/routing-vectors.json (key, routing bytes, hash, owner per
shard count), which topology/vectors_test.go checks too."""

import json
import pickle

import pytest

from diskcache_client import routing, wire
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
