"""Write a FanoutCache (4 shards) with sub-collections using python-diskcache
and print a JSON manifest of its contents for fanout_compat_test.go.

usage: fanout_write.py DIRECTORY
"""

import json
import sys

from diskcache import FanoutCache

from fanout_codec import encode_key, encode_plain, encode_value

SHARDS = 4


def main(directory):
    fc = FanoutCache(directory, shards=SHARDS)
    disk = fc.disk
    big_text = 'ü-large text-' * 4000  # over disk_min_file_size: a TEXT file
    big_bytes = bytes(range(256)) * 200  # a BINARY file
    big_pickle = list(range(20000))  # a PICKLE file
    items = [
        ('text-key', 'small text', None, None),
        ('ключ', 'значение', None, None),
        (b'bytes-key', b'\x00\x01\xff', None, None),
        (12345, 3.25, None, None),
        (-7, -7, None, None),
        (2 ** 63 - 1, 2 ** 62, None, None),
        (1.5, 'float key', None, None),
        (-0.25, b'', None, None),
        (('tuple', 1), [1, 'two', 3.0], None, None),
        (2 ** 64, 'big int key is pickled', None, None),
        ('big-text', big_text, None, None),
        ('big-bytes', big_bytes, None, None),
        ('big-pickle', big_pickle, None, None),
        ('expiring', 'tagged', 3600, 'tag-1'),
        ('int-tag', 1, None, 42),
    ]
    items += [('k%03d' % i, i, None, None) for i in range(60)]
    manifest = {'shards': SHARDS, 'items': []}
    for key, value, expire, tag in items:
        assert fc.set(key, value, expire=expire, tag=tag, retry=True)
        got, expire_time, got_tag = fc.get(
            key, expire_time=True, tag=True, retry=True
        )
        assert got == value and got_tag == tag, key
        manifest['items'].append(
            {
                'key': encode_key(disk, key),
                'shard': fc._hash(key) % SHARDS,
                'value': encode_value(disk, value),
                'expire_time': expire_time,
                'tag': encode_plain(tag),
            }
        )

    sub = fc.cache('a/b')
    sub_items = [('x', 1), (b'y', b'z' * 50000), (7, 'seven')]
    for key, value in sub_items:
        sub.set(key, value)
    manifest['cache_ab'] = [
        [encode_key(disk, k), encode_value(disk, v)] for k, v in sub_items
    ]

    deque = fc.deque('d')
    deque.extend(['a', 1, 2.5, b'b', 'c' * 40000, [1, 2]])
    deque.appendleft('first')
    deque.rotate(2)
    deque.pop()
    manifest['deque_d'] = [encode_value(disk, v) for v in deque]

    index = fc.index('i')
    index['k1'] = 1
    index['k2'] = 'two'
    index[3] = b'three'
    index['k1'] = 11  # keeps its place
    del index['k2']
    index['k2'] = 2  # moves to the end
    index.push('queued')
    index.push('fruit', prefix='fruit')
    manifest['index_i'] = [
        [encode_key(disk, k), encode_value(disk, v)] for k, v in index.items()
    ]
    fc.close()
    json.dump(manifest, sys.stdout)


if __name__ == '__main__':
    main(sys.argv[1])
