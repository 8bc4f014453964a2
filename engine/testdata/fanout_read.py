"""Read a FanoutCache (with sub-collections) written by the Go engine with
python-diskcache and compare it with the manifest the Go test wrote.
Prints every difference and exits with status 1 if there is any.

usage: fanout_read.py DIRECTORY MANIFEST
"""

import json
import sys

from diskcache import FanoutCache

from fanout_codec import decode

MISSING = object()


def main(directory, manifest_path):
    with open(manifest_path, encoding='utf-8') as f:
        manifest = json.load(f)
    shards = manifest['shards']
    errors = []
    fc = FanoutCache(directory, shards=shards)

    for entry in manifest['items']:
        key = decode(entry['key'])
        want = decode(entry['value'])
        shard = fc._hash(key) % shards
        if shard != entry['shard']:
            errors.append('key %r: python shard %d, go shard %d' % (key, shard, entry['shard']))
        got = fc._shards[entry['shard']].get(
            key, default=MISSING, expire_time=True, tag=True
        )
        if got[0] is MISSING:
            errors.append('key %r: missing from shard %d' % (key, entry['shard']))
            continue
        value, expire_time, tag = got
        if type(value) is not type(want) or value != want:
            errors.append('key %r: value %.80r != %.80r' % (key, value, want))
        if expire_time != entry['expire_time']:
            errors.append('key %r: expire_time %r != %r' % (key, expire_time, entry['expire_time']))
        if tag != decode(entry['tag']):
            errors.append('key %r: tag %r != %r' % (key, tag, decode(entry['tag'])))
        if fc.get(key, default=MISSING) is MISSING:
            errors.append('key %r: FanoutCache.get misses it' % (key,))
    if len(fc) != len(manifest['items']):
        errors.append('len %d != %d' % (len(fc), len(manifest['items'])))

    sub = fc.cache('a/b')
    for enc_key, enc_value in manifest['cache_ab']:
        key, want = decode(enc_key), decode(enc_value)
        value = sub.get(key, default=MISSING)
        if type(value) is not type(want) or value != want:
            errors.append('cache a/b key %r: %.80r != %.80r' % (key, value, want))

    deque = list(fc.deque('d'))
    want = [decode(v) for v in manifest['deque_d']]
    if deque != want or [type(v) for v in deque] != [type(v) for v in want]:
        errors.append('deque d: %.300r != %.300r' % (deque, want))

    index = list(fc.index('i').items())
    want = [(decode(k), decode(v)) for k, v in manifest['index_i']]
    if index != want:
        errors.append('index i: %.300r != %.300r' % (index, want))

    fc.close()
    for e in errors:
        print(e)
    sys.exit(1 if errors else 0)


if __name__ == '__main__':
    main(sys.argv[1], sys.argv[2])
