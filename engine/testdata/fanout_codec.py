"""Shared JSON encoding of keys and values for the fanout compatibility tests.

An encoded object is {"t": type, "v": data}: "int" (decimal string), "float"
(repr), "text", "bytes" (hex) or "pickle" (hex of the pickle bytes as stored).
"""

import pickle

INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1


def encode_key(disk, key):
    """Encode a key as python-diskcache stores it (Disk.put)."""
    db_key, raw = disk.put(key)
    if not raw:
        return {'t': 'pickle', 'v': bytes(db_key).hex()}
    if isinstance(key, bytes):
        return {'t': 'bytes', 'v': key.hex()}
    return encode_plain(key)


def encode_value(disk, value):
    """Encode a value by the type python-diskcache stores it as."""
    if type(value) in (bytes, str, float) or (
        type(value) is int and INT64_MIN <= value <= INT64_MAX
    ):
        return encode_plain(value)
    data = pickle.dumps(value, protocol=disk.pickle_protocol)
    return {'t': 'pickle', 'v': data.hex()}


def encode_plain(obj):
    if obj is None:
        return None
    if type(obj) is bytes:
        return {'t': 'bytes', 'v': obj.hex()}
    if type(obj) is str:
        return {'t': 'text', 'v': obj}
    if type(obj) is int:
        return {'t': 'int', 'v': str(obj)}
    if type(obj) is float:
        return {'t': 'float', 'v': repr(obj)}
    raise TypeError('cannot encode %r' % (obj,))


def decode(enc):
    """Return the Python object an encoding stands for."""
    if enc is None:
        return None
    t, v = enc['t'], enc['v']
    if t == 'int':
        return int(v)
    if t == 'float':
        return float(v)
    if t == 'text':
        return v
    if t == 'bytes':
        return bytes.fromhex(v)
    if t == 'pickle':
        return pickle.loads(bytes.fromhex(v))
    raise ValueError('unknown type %r' % t)
