"""Django's cache API against a sharded DiskCache through its Service URL.

Run by test/e2e/routing_test.go in a pod of the django image: LOCATION is
the Service URL (DISKCACHE_URL) and nothing else routing-related is set.
Two aliases use it: 'default' routes each key to its owner's pod itself
(the backend's default), 'service' sends everything to the Service
(TOPOLOGY False) and so relies on the servers forwarding. Each writes and
the other reads back. Prints one line 'DJANGO-ROUNDTRIP OK {json}' and
exits 0, or prints the failure and exits 1.
"""
import json
import os
import sys
import traceback

import django
from django.conf import settings

URL = os.environ['DISKCACHE_URL']
OPTIONS = {'TOKEN_FILE': os.environ['DISKCACHE_TOKEN_FILE'], 'RETRIES': 2}
BACKEND = 'diskcache_client.djangocache.DjangoCache'
KEYS = 300  # enough that every one of 3 shards owns many

settings.configure(
    CACHES={
        'default': {'BACKEND': BACKEND, 'LOCATION': URL, 'OPTIONS': OPTIONS},
        'service': {'BACKEND': BACKEND, 'LOCATION': URL, 'OPTIONS': dict(OPTIONS, TOPOLOGY=False)},
    },
    TIME_ZONE='UTC',
    USE_TZ=True,
)
django.setup()

from django.core.cache import caches  # noqa: E402  (after settings)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def value(i):
    """Values of every kind the backend stores: text, bytes, int, float, and
    a pickled structure."""
    return [f'text {i} ' + 'é' * (i % 5), f'bytes {i}'.encode(), i * 1000003, i / 7,
            {'i': i, 'tags': ['a', i]}][i % 5]


def roundtrip(name, c, other):
    """set/get/get_many/delete/incr through c, each checked through other too."""
    result = {}
    data = {f'{name}-{i}': value(i) for i in range(KEYS)}
    check(c.set_many(data) == [], f'{name}: set_many failed some keys')
    got = c.get_many(list(data) + [f'{name}-missing'])
    check(got == data, f'{name}: get_many through {name} returned {len(got)} of {len(data)} items '
          f'(first difference: {next((k for k in data if got.get(k) != data[k]), None)})')
    got = other.get_many(list(data))
    check(got == data, f'{name}: get_many through the other alias returned {len(got)} of {len(data)} items')
    result['get_many'] = len(got)

    c.set(f'{name}-one', 'one value', timeout=600)
    check(c.get(f'{name}-one') == 'one value', f'{name}: get after set')
    check(other.get(f'{name}-one') == 'one value', f'{name}: get through the other alias after set')
    check(c.get(f'{name}-absent', 'dflt') == 'dflt', f'{name}: get of a missing key returns the default')

    check(c.delete(f'{name}-one') is True, f'{name}: delete of a present key is True')
    check(c.get(f'{name}-one') is None and other.get(f'{name}-one') is None, f'{name}: deleted key read back')
    check(c.delete(f'{name}-one') is False, f'{name}: second delete is False')
    gone = [f'{name}-{i}' for i in range(0, KEYS, 3)]
    c.delete_many(gone)
    left = other.get_many(list(data))
    check(not any(k in left for k in gone) and len(left) == KEYS - len(gone),
          f'{name}: after delete_many the other alias sees {len(left)} keys, want {KEYS - len(gone)}')
    result['deleted'] = len(gone)

    counter = f'{name}-counter'
    c.set(counter, 10)
    check(c.incr(counter, 5) == 15, f'{name}: incr')
    check(other.incr(counter) == 16, f'{name}: incr through the other alias')
    check(c.decr(counter, 6) == 10 and other.get(counter) == 10, f'{name}: decr')
    try:
        c.incr(f'{name}-no-counter')
        raise AssertionError(f'{name}: incr of a missing key did not raise')
    except ValueError:
        pass
    result['counter'] = c.get(counter)
    return result


def main():
    smart, service = caches['default'], caches['service']
    out = {'django': django.get_version(), 'python': sys.version.split()[0], 'location': URL}
    removed = service.clear()
    out['cleared_at_start'] = removed
    out['default'] = roundtrip('default', smart, service)
    out['service'] = roundtrip('service', service, smart)

    # Hits and misses are counted on every shard and summed by the server.
    for alias, c in (('default', smart), ('service', service)):
        c.stats(enable=True, reset=True)
        hits = [f'{alias}-{i}' for i in range(1, 40, 3)]  # not deleted above
        misses = [f'{alias}-{i}' for i in range(0, 30, 3)] + [f'{alias}-nothing-{i}' for i in range(5)]
        for k in hits:
            check(c.get(k) is not None, f'{alias}: {k} missing')
        for k in misses:
            check(c.get(k) is None, f'{alias}: {k} present')
        got = c.stats(enable=True, reset=True)
        check(tuple(got) == (len(hits), len(misses)),
              f'{alias}: stats {got}, want ({len(hits)}, {len(misses)})')
        out[alias]['stats'] = list(got)

    # Everything both aliases left: 2/3 of each key set plus one counter each.
    want = 2 * (KEYS - len(range(0, KEYS, 3)) + 1)
    removed = smart.clear()
    check(removed == want, f'clear removed {removed} items, want {want}')
    for c in (smart, service):
        left = c.get_many([f'{a}-{i}' for a in ('default', 'service') for i in range(KEYS)])
        check(left == {}, f'after clear {len(left)} keys are still read')
    out['cleared'] = removed
    print('DJANGO-ROUNDTRIP OK ' + json.dumps(out, sort_keys=True))


if __name__ == '__main__':
    try:
        main()
    except Exception:  # pylint: disable=broad-except
        traceback.print_exc(file=sys.stdout)
        print('DJANGO-ROUNDTRIP FAILED')
        sys.exit(1)
