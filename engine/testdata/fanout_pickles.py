"""Print, as JSON, the pickle bytes python-diskcache stores for a tuple key
and a list value, so that fanout_compat_test.go can write items Python finds.
"""

import json
import pickle
import sys
import tempfile

from diskcache import Cache

from fanout_codec import encode_key


def main():
    # A Cache's Disk pickles with the disk_pickle_protocol setting, as the
    # cache the Go test writes will be read with.
    with tempfile.TemporaryDirectory() as directory:
        with Cache(directory) as cache:
            disk = cache.disk
            key = encode_key(disk, ('tuple', 1))
            value = pickle.dumps([1, 'two', 3.0], protocol=disk.pickle_protocol)
    json.dump({'key': key['v'], 'value': value.hex()}, sys.stdout)


if __name__ == '__main__':
    main()
