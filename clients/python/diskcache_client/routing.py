"""Shard routing: which server of a list owns a key.

A key's owner among ``n`` shard servers is ``jump_hash(key_hash(routing),
n)``, where ``routing`` is the key's routing bytes (:func:`routing_bytes`:
its wire bytes, :func:`diskcache_client.wire.encode_key`, except for
floats); a named cache, deque or index belongs to the owner of its name's
UTF-8 bytes. The cacheserver and the Go client route with the same
definition (Go package ``topology``; both test against
``topology/testdata/routing-vectors.json``), so a smart client goes straight
to the owner and a server forwards to the same one.
"""

import hashlib
import struct


def jump_hash(key, buckets):
    """Jump consistent hash (Lamping & Veach) of a 64-bit key."""
    b, j = -1, 0
    while j < buckets:
        b = j
        key = (key * 2862933555777941757 + 1) & 0xFFFFFFFFFFFFFFFF
        j = int((b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b


def key_hash(raw):
    """64-bit hash of a key's wire bytes: BLAKE2b with an 8-byte digest,
    read little-endian."""
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), 'little')


def routing_bytes(kind, raw):
    """The routing bytes of a key of wire kind ``kind`` and wire bytes
    ``raw``: ``raw``, except for a float. SQLite and python-diskcache treat
    1 and 1.0 as the same item, so an integral float routes as the int of
    the same value, and any other float as its IEEE 754 binary64 big-endian
    bytes (text forms of floats differ between languages)."""
    if kind != 'float':
        return raw
    value = float(raw)
    if value.is_integer() and -(1 << 63) <= value < (1 << 63):
        return str(int(value)).encode('ascii')
    return struct.pack('>d', value)


def owner(raw, shards):
    """The index of the shard that owns the routing bytes ``raw`` among
    ``shards`` servers (0 for a single server, without hashing)."""
    if shards == 1:
        return 0
    return jump_hash(key_hash(raw), shards)
