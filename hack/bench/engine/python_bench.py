"""python-diskcache's Cache or FanoutCache on the workload of its tests/benchmark_core.py.

Run by `make bench` (hack/bench/engine), which merges the JSON this prints
into its tables; it can also be run alone:

    /usr/bin/python3 hack/bench/engine/python_bench.py --dir /tmp/x --workers 8 --ops 20000
    /usr/bin/python3 hack/bench/engine/python_bench.py --dir /tmp/y --workers 8 --fanout 4

With --fanout N every worker process opens diskcache.FanoutCache(directory,
shards=N, timeout=--timeout) (0.010 s, FanoutCache's default) instead of
diskcache.Cache(directory). FanoutCache swallows timeouts: set returns
False, delete returns False and get returns the default, and those count as
misses, as benchmark_core.py counts them. Timeouts of writes are also
counted on their own ("timeouts" of set and delete): diskcache raises
Timeout for them inside the shard before FanoutCache swallows it, and a
counting Timeout.__init__ sees every one at no cost to the timed path.
A get that failed (FanoutCache.get also swallows sqlite3.OperationalError)
cannot be told from a missing key, so get reports no timeout count.

The workload is benchmark_core.py's: the cache directory is filled with
keys b"0".."99" (each set to itself), then each worker process (seeded with
its number) draws key = str(randrange(100)).encode(), value =
str(count).encode() * randrange(1, 100) and an operation: 90% get, 9% set,
1% delete. The first --warmup operations of each worker are not timed.
Unlike benchmark_core.py, operations are timed with time.perf_counter_ns
(monotonic, nanoseconds) rather than time.time(), and the workers start
together at a barrier rather than after a 10 ms sleep.

Output: one JSON object with per-operation count, misses, mean, p50, p90,
p99 and max in nanoseconds (and timeouts with --fanout). Percentiles are nearest-rank on the sorted
merged durations, as the Go program computes them.
"""

import argparse
import json
import multiprocessing as mp
import platform
import random
import sys
import time

import diskcache

RANGE = 100
OPS = ("get", "set", "delete")

# TIMEOUTS[0] counts the diskcache.Timeout exceptions raised in this
# process (each worker is a forked process with its own count).
TIMEOUTS = [0]


def _counting_timeout_init(self, *args):
    TIMEOUTS[0] += 1
    Exception.__init__(self, *args)


diskcache.core.Timeout.__init__ = _counting_timeout_init


def open_cache(directory, shards, timeout):
    if shards:
        return diskcache.FanoutCache(directory, shards=shards, timeout=timeout)
    return diskcache.Cache(directory)


def worker(num, directory, shards, timeout, ops, warmup, barrier, queue):
    try:
        rng = random.Random(num)
        cache = open_cache(directory, shards, timeout)
        timings = {op: [] for op in OPS}
        misses = {op: 0 for op in OPS}
        timeouts = {op: 0 for op in OPS}
        clock = time.perf_counter_ns
        barrier.wait()
        loop_start = clock()
        for count in range(ops):
            key = str(rng.randrange(RANGE)).encode("utf-8")
            value = str(count).encode("utf-8") * rng.randrange(1, 100)
            choice = rng.random()
            before = TIMEOUTS[0]
            if choice < 0.900:
                start = clock()
                result = cache.get(key)
                end = clock()
                miss = result is None
                action = "get"
            elif choice < 0.990:
                start = clock()
                result = cache.set(key, value)
                end = clock()
                miss = result is False
                action = "set"
            else:
                start = clock()
                result = cache.delete(key)
                end = clock()
                miss = result is False
                action = "delete"
            if count >= warmup:
                timings[action].append(end - start)
                if miss:
                    misses[action] += 1
                if TIMEOUTS[0] != before:
                    timeouts[action] += 1
        elapsed = clock() - loop_start
        cache.close()
        queue.put((num, timings, misses, timeouts, elapsed, None))
    except Exception as exc:  # reported by the parent
        queue.put((num, None, None, None, 0, repr(exc)))


def percentile(ordered, pct):
    """Nearest-rank percentile of an ascending list (pct in 1..100)."""
    if not ordered:
        return 0
    rank = (pct * len(ordered) + 99) // 100
    return ordered[max(rank, 1) - 1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True, help="fresh cache directory")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--ops", type=int, default=20000, help="operations per worker, warm-up included")
    parser.add_argument("--warmup", type=int, default=1000, help="untimed operations per worker")
    parser.add_argument("--fanout", type=int, default=0, metavar="N",
                        help="use FanoutCache with N shards instead of Cache")
    parser.add_argument("--timeout", type=float, default=0.010,
                        help="FanoutCache timeout in seconds (with --fanout)")
    args = parser.parse_args()

    cache = open_cache(args.dir, args.fanout, args.timeout)
    for key in range(RANGE):
        key = str(key).encode("utf-8")
        # retry: nothing else writes yet, but a FanoutCache would swallow a timeout.
        cache.set(key, key, retry=True)
    cache.close()

    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(args.workers + 1)
    queue = ctx.Queue()
    procs = [
        ctx.Process(
            target=worker,
            args=(num, args.dir, args.fanout, args.timeout, args.ops, args.warmup, barrier, queue),
        )
        for num in range(args.workers)
    ]
    for proc in procs:
        proc.start()
    barrier.wait()
    wall = 0
    timings = {op: [] for op in OPS}
    misses = {op: 0 for op in OPS}
    timeouts = {op: 0 for op in OPS}
    errors = []
    for _ in procs:
        num, t, m, to, elapsed, err = queue.get()
        if err is not None:
            errors.append("worker %d: %s" % (num, err))
            continue
        for op in OPS:
            timings[op].extend(t[op])
            misses[op] += m[op]
            timeouts[op] += to[op]
        wall = max(wall, elapsed)
    for proc in procs:
        proc.join()
    if errors:
        print("\n".join(errors), file=sys.stderr)
        sys.exit(1)

    out = {
        "system": "python-diskcache" + (" FanoutCache" if args.fanout else ""),
        "shards": args.fanout,
        "workers": args.workers,
        "wall_ns": wall,
        "version": "diskcache %s, Python %s" % (diskcache.__version__, platform.python_version()),
        "ops": {},
    }
    for op in OPS:
        ordered = sorted(timings[op])
        n = len(ordered)
        out["ops"][op] = {
            "count": n,
            "misses": misses[op],
            "mean_ns": sum(ordered) // n if n else 0,
            "p50_ns": percentile(ordered, 50),
            "p90_ns": percentile(ordered, 90),
            "p99_ns": percentile(ordered, 99),
            "max_ns": ordered[-1] if n else 0,
        }
        if args.fanout and op != "get":
            out["ops"][op]["timeouts"] = timeouts[op]
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
