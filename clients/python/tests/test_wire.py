"""Unit tests of the wire format and the shard routing (no server)."""

import collections
import pickle

import diskcache
import pytest

from diskcache_client import wire
from diskcache_client.transport import CircuitBreaker, Client, jump_hash, key_hash


def test_keys_map_to_kinds_like_python_diskcache():
    disk = diskcache.Disk('/nonexistent', pickle_protocol=pickle.HIGHEST_PROTOCOL)
    cases = {
        'text': 'text',
        b'bytes': 'bytes',
        42: 'int',
        -(2 ** 63): 'int',
        2 ** 63 - 1: 'int',
        2 ** 63: 'pickle',
        1.5: 'float',
        True: 'pickle',
        ('tuple', 1, None): 'pickle',
        frozenset([1]): 'pickle',
    }
    for key, kind in cases.items():
        got_kind, raw = wire.encode_key(key)
        assert got_kind == kind, key
        db_key, is_raw = disk.put(key)
        if kind == 'pickle':
            # Pickled keys are byte-for-byte what python-diskcache stores.
            assert not is_raw and bytes(db_key) == raw
        else:
            assert is_raw
        assert wire.decode_key(raw, kind) == key


def test_values_map_to_types():
    assert wire.encode_value(b'x') == ('bytes', b'x')
    assert wire.encode_value('é') == ('text', 'é'.encode())
    assert wire.encode_value(7) == ('int', b'7')
    assert wire.encode_value(0.1) == ('float', b'0.1')
    assert wire.encode_value(float('inf')) == ('float', b'inf')
    for value in [True, None, 2 ** 64, [1], bytearray(b'a'), '\udc80']:
        kind, body = wire.encode_value(value)
        assert kind == 'pickle'
        assert wire.decode_value(kind, body) == value
    for value in [b'', '', 0, -1, 1e300, -0.0, 'ü' * 10]:
        kind, body = wire.encode_value(value)
        decoded = wire.decode_value(kind, body)
        assert decoded == value and type(decoded) is type(value)


def test_nan_value_is_a_pickle():
    kind, body = wire.encode_value(float('nan'))
    got = wire.decode_value(kind, body)
    assert kind == 'pickle' and isinstance(got, float) and got != got


def test_unpicklable_value_raises():
    with pytest.raises(Exception):
        wire.encode_value(lambda: None)


def test_path_segment_escapes_everything_ambiguous():
    assert wire.path_segment(b'a/b') == 'a%2Fb'
    assert wire.path_segment(b'.') == '%2E'
    assert wire.path_segment(b'..') == '%2E%2E'
    assert wire.path_segment(b':1:k?x#y') == ':1:k%3Fx%23y'
    assert wire.path_segment(b'.x..') == '.x..'
    assert wire.path_segment(b"a@b!$&'()*+,;=c") == "a@b!$&'()*+,;=c"
    assert wire.path_segment('ü'.encode()) == '%C3%BC'
    assert wire.path_segment(b'\x00 %') == '%00%20%25'


def test_tags():
    assert wire.set_params(None, None) == []
    assert wire.set_params(1.5, 'red') == [('expire', '1.5'), ('tag', b'red')]
    assert wire.set_params(tag=b'\x00') == [('tag', b'\x00'), ('tt', 'bytes')]
    assert wire.set_params(tag=3) == [('tag', b'3'), ('tt', 'int')]
    assert wire.build_query(wire.set_params(-1, 'a b/c')) == 'expire=-1.0&tag=a%20b%2Fc'
    with pytest.raises(TypeError):
        wire.encode_tag(('x',))
    assert wire.set_params(tag=True) == [('tag', b'1'), ('tt', 'int')]
    assert wire.set_params(tag=float('nan')) == []
    with pytest.raises(TypeError):
        wire.set_params('10')
    headers = {'diskcache-tag': '%00%FF', 'diskcache-tag-type': 'bytes'}
    assert wire.tag_from_headers(headers) == b'\x00\xff'
    assert wire.tag_from_headers({'diskcache-tag': '2.5', 'diskcache-tag-type': 'float'}) == 2.5
    assert wire.tag_from_headers({}) is None


def test_record_stream_roundtrip():
    stream = (wire.set_record('a', 'hello', expire=10, tag='t')
              + wire.set_record(b'\x00', b'\x01\x02', tag=b'\xff')
              + wire.set_record(5, 7))
    records = list(wire.iter_records(stream))
    assert [h['key'] for h, _ in records] == ['a', 'AA==', '5']
    assert records[0][0] == {'key': 'a', 'type': 'text', 'expire': 10.0, 'tag': 't', 'len': 5}
    assert records[0][1] == b'hello'
    assert wire.record_tag(records[1][0]) == b'\xff'
    assert records[2][0]['kt'] == 'int' and records[2][1] == b'7'
    with pytest.raises(ValueError):
        list(wire.iter_records(b'{"key":"a","len":5}\nabc'))


def test_jump_hash_is_consistent():
    keys = [key_hash(('key%d' % n).encode()) for n in range(2000)]
    for buckets in range(1, 12):
        placed = [jump_hash(k, buckets) for k in keys]
        assert all(0 <= b < buckets for b in placed)
        grown = [jump_hash(k, buckets + 1) for k in keys]
        # Growing by one shard only moves keys to the new shard.
        assert all(new in (old, buckets) for old, new in zip(placed, grown))
        counts = collections.Counter(placed)
        assert min(counts.values()) > 2000 / buckets * 0.7
    assert jump_hash(0, 1) == 0


def test_key_hash_is_stable():
    # BLAKE2b-64, little-endian: fixed values that other clients can check.
    assert key_hash(b'') == int.from_bytes(bytes.fromhex('e4a6a0577479b2b4'), 'little')
    assert key_hash(b':1:key') == key_hash(b':1:key')
    assert key_hash(b'a') != key_hash(b'b')


def test_client_single_location_routes_to_shard_zero():
    client = Client('http://127.0.0.1:1')
    assert client.shard_of(b'anything') == 0
    multi = Client(['http://127.0.0.1:1', 'http://127.0.0.1:2', 'http://127.0.0.1:3'])
    assert multi.shard_of(b':1:k') == jump_hash(key_hash(b':1:k'), 3)
    with pytest.raises(ValueError):
        Client([])
    with pytest.raises(ValueError):
        Client('ftp://x')


def test_circuit_breaker_states():
    now = [100.0]
    breaker = CircuitBreaker(5, clock=lambda: now[0])
    assert breaker.allow() and breaker.state == 'closed'
    breaker.failure()
    assert breaker.state == 'open' and not breaker.allow()
    now[0] += 5
    assert breaker.state == 'half-open'
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # others wait for the probe
    breaker.failure()
    assert not breaker.allow()
    now[0] += 5
    assert breaker.allow()
    breaker.success()
    assert breaker.state == 'closed' and breaker.allow()
    disabled = CircuitBreaker(0)
    disabled.failure()
    assert disabled.allow()
