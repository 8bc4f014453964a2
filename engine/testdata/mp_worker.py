"""One python-diskcache process of engine/multiprocess_test.go.

Usage: python3 mp_worker.py DIRECTORY WORKER ITERATIONS

Waits for a line on stdin (the test's start signal, sent once every process
has started), then does the same writes as the test's Go helper processes,
with keys of its own and shared counters. The values must stay in step with
mpValue in multiprocess_test.go.
"""

import sys

import diskcache


def value(lang, worker, i):
    kind = i % 4
    if kind == 0:
        return 'v-%s%d-%d-\u00e9' % (lang, worker, i)
    if kind == 1:
        prefix = ('%s%d-%d-' % (lang, worker, i)).encode('ascii')
        return (prefix * (40000 // len(prefix) + 1))[:40000]
    if kind == 2:
        return worker * 1000000 + i
    return i + 0.25


def main():
    directory, worker, iterations = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    sys.stdin.readline()
    lang = 'py'
    with diskcache.Cache(directory) as cache:
        for i in range(iterations):
            cache.set('mp/%s%d/%d' % (lang, worker, i), value(lang, worker, i))
            cache.incr('mp/counter', worker + 1)
            cache.incr('mp/fcounter', 0.5)
            if i % 5 == 0:
                tmp = 'mp/%s%d/tmp%d' % (lang, worker, i)
                cache.set(tmp, value(lang, worker, 1))
                if not cache.delete(tmp):
                    sys.exit('delete of %s failed' % tmp)
    print('ok')


if __name__ == '__main__':
    main()
