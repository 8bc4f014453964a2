#!/usr/bin/python3
"""Django cache backends on python-diskcache's DjangoCache workload.

python-diskcache's tests/benchmark_djangocache.py, driven with the same key
and value generator and process count against:

* ``cacheserver``: diskcache_client.djangocache.DjangoCache -> a cacheserver
  built from this checkout (loopback port, bearer token, default --fanout 8),
  over the frames transport (docs/api/frames.md), the client's default;
* ``cacheserver-http``: the same backend with ``OPTIONS['FRAMES'] = False``
  (plain HTTP/1.1) -> the same cacheserver;
* ``cacheserver-3-forwarding``: the same backend with ``OPTIONS['TOPOLOGY'] =
  False`` -> three cacheservers started as the shards of one topology
  (``--shard-index I --peers URL0,URL1,URL2 --epoch 1``, one token), worker
  process n given shard n % 3's URL only (as a Service spreads connections),
  so a shard forwards the keys it does not own to their owner;
* ``cacheserver-3-smart``: the same backend, smart routing on (the default)
  -> the same three shards, LOCATION shard 0's URL: the client reads
  /v1/topology and sends each key straight to its owner;
* ``diskcache``: python-diskcache's diskcache.DjangoCache on a local directory;
* ``django-redis``: django_redis.cache.RedisCache -> a local redis-server
  (appendonly yes, appendfsync everysec, no RDB snapshots);
* ``memcached``: Django's PyMemcacheCache -> a local memcached;
* ``cacheserver-floor``: rawhttp.RawHTTPCache (this directory), a bare
  hand-written HTTP/1.1 client -> the same cacheserver: not a product, the
  floor any Python HTTP client of this server could reach, to tell the
  client's share of the time from the server's.

Each run: one process fills the 1,100 keys, then N processes (8) each run
``--ops`` operations: a random key of ``--keys``, a bytes value like
benchmark_core.py's (``str(count).encode() * randrange(1, 100)``), 90% get,
9% set, 1% delete (``--mix``); the first ``--warmup`` operations of each process are not
timed. Every operation is timed with time.perf_counter_ns; percentiles are
over all processes' samples. Also measured: the CPU time the client
processes spend per timed operation (time.process_time_ns) and the server
process's CPU time per operation (/proc/PID/stat; for three shards, the sum
of the three), and for three shards the share of the requests the shards
forwarded (their /metrics). Prints markdown tables.

By default the servers and the worker processes share every CPU of the
machine, so on a small one they compete for it. ``--server-cpus 1`` runs the
servers on CPU 1 and this script and its workers on the others, as in a
deployment, where a cache's pods do not share their CPUs with the app.

Missing Debian packages (python3-django-redis, python3-redis,
python3-pymemcache, memcached, redis-server) are installed with apt-get
(``--no-install`` to skip; the backend is then skipped). Every server this
script starts is stopped by process id when it ends, on error, on SIGINT,
SIGTERM and SIGHUP.

Run with /usr/bin/python3 (Debian's python3-django 3.2, python3-diskcache).
"""

import argparse
import array
import cProfile
import importlib
import importlib.util
import json
import math
import multiprocessing
import os
import platform
import pstats
import random
import shutil
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', '..'))
CLIENT_DIR = os.path.join(REPO, 'clients', 'python')

BACKENDS = ['cacheserver', 'cacheserver-http', 'cacheserver-3-forwarding', 'cacheserver-3-smart',
            'diskcache', 'django-redis', 'memcached', 'cacheserver-floor']
LABELS = {
    'cacheserver': 'this backend → cacheserver',
    'cacheserver-http': 'this backend, HTTP (FRAMES off) → cacheserver',
    'cacheserver-3-forwarding': 'this backend → 3 shards, one URL per process (forwarding)',
    'cacheserver-3-smart': 'this backend → 3 shards, smart client (direct)',
    'cacheserver-floor': 'floor: bare HTTP client → cacheserver',
    'diskcache': 'python-diskcache DjangoCache',
    'django-redis': 'django-redis → redis-server',
    'memcached': 'PyMemcacheCache → memcached',
}
OPS = ('get', 'set', 'delete')
# The shards of the three-shard topology, by the names Services tracks them.
SHARDS = tuple('cacheserver-shard%d' % i for i in range(3))
# The server processes each backend talks to, whose CPU time adds up to its
# server CPU (empty: in-process).
SERVER = {'cacheserver': ('cacheserver',), 'cacheserver-floor': ('cacheserver',),
          'cacheserver-http': ('cacheserver',),
          'cacheserver-3-forwarding': SHARDS, 'cacheserver-3-smart': SHARDS,
          'diskcache': (), 'django-redis': ('redis-server',), 'memcached': ('memcached',)}
# Backends whose worker process n uses the CACHES alias '<backend>/<n % k>'
# (k aliases, one per shard URL) instead of '<backend>'.
SPREAD = {'cacheserver-3-forwarding': len(SHARDS)}
PERCENTILES = (50, 90, 99)

# What each backend needs: (python modules, executables); and the Debian
# package providing each.
NEEDS = {
    'cacheserver': ([], []),
    'cacheserver-floor': ([], []),
    'cacheserver-http': ([], []),
    'cacheserver-3-forwarding': ([], []),
    'cacheserver-3-smart': ([], []),
    'diskcache': (['diskcache'], []),
    'django-redis': (['django_redis', 'redis'], ['redis-server']),
    'memcached': (['pymemcache'], ['memcached']),
}
DEBIAN = {
    'diskcache': 'python3-diskcache',
    'django_redis': 'python3-django-redis',
    'redis': 'python3-redis',
    'pymemcache': 'python3-pymemcache',
    'redis-server': 'redis-server',
    'memcached': 'memcached',
}


def log(msg):
    print('bench-django: ' + msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Processes this script starts: tracked by pid, stopped on every exit path.

class Interrupted(Exception):
    """A signal asked the script to stop."""


class Services:
    def __init__(self, cpus=None):
        self.procs = []  # [(name, Popen)]
        self.main_pid = os.getpid()
        self.cpus = cpus  # the CPUs servers run on (None: any)

    def start(self, name, argv, **kwargs):
        log('starting %s: %s' % (name, ' '.join(argv)))
        if self.cpus:
            # Before exec, so that every thread the server starts inherits it.
            kwargs['preexec_fn'] = lambda: os.sched_setaffinity(0, self.cpus)
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, **kwargs)
        self.procs.append((name, proc))
        return proc

    def pid(self, name):
        for started, proc in self.procs:
            if started == name:
                return proc.pid
        return None

    def exited(self, name):
        return any(started == name and proc.poll() is not None for started, proc in self.procs)

    def pids(self, names):
        """The pids of the named services; None if one of them was not started."""
        pids = [self.pid(name) for name in names]
        return None if not pids or None in pids else pids

    def stop_all(self):
        if os.getpid() != self.main_pid:
            return  # a forked worker: the services are not its to stop
        while self.procs:
            name, proc = self.procs.pop()
            if proc.poll() is None:
                proc.terminate()  # SIGTERM to this pid only
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            log('stopped %s (pid %d, exit %s)' % (name, proc.pid, proc.returncode))


def on_signal(signum, _frame):
    raise Interrupted('signal %d' % signum)


# ---------------------------------------------------------------------------
# Setup: packages, binaries, servers.

def missing_needs(backends):
    missing = {}
    for name in backends:
        modules, binaries = NEEDS[name]
        for mod in modules:
            if importlib.util.find_spec(mod) is None:
                missing.setdefault(name, []).append(mod)
        for exe in binaries:
            if shutil.which(exe) is None:
                missing.setdefault(name, []).append(exe)
    return missing


def install_packages(backends, allow):
    missing = missing_needs(backends)
    if not missing:
        return backends
    packages = sorted({DEBIAN[what] for whats in missing.values() for what in whats})
    if allow and shutil.which('apt-get'):
        env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
        for argv in (['apt-get', 'update'],
                     ['apt-get', 'install', '-y', '--no-install-recommends'] + packages):
            log(' '.join(argv))
            done = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if done.returncode != 0:
                log('%s failed:\n%s' % (' '.join(argv), done.stdout[-2000:]))
                break
        importlib.invalidate_caches()
        missing = missing_needs(backends)
    for name, whats in missing.items():
        log('skipping %s: missing %s (Debian: %s)' % (
            name, ', '.join(whats), ' '.join(sorted({DEBIAN[w] for w in whats}))))
    return [b for b in backends if b not in missing]


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def wait_ready(name, proc, probe, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError('%s exited (%s) before it was ready' % (name, proc.returncode))
        try:
            if probe():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError('%s not ready after %gs' % (name, timeout))
        time.sleep(0.05)


def line_probe(port, request, expect):
    def probe():
        with socket.create_connection(('127.0.0.1', port), timeout=1.0) as sock:
            sock.sendall(request)
            return sock.recv(256).startswith(expect)
    return probe


def build_cacheserver(work):
    binary = os.environ.get('CACHESERVER_BIN')
    if binary:
        return binary
    binary = os.path.join(work, 'cacheserver')
    log('go build -o %s ./cmd/cacheserver' % binary)
    subprocess.run([os.environ.get('GO', 'go'), 'build', '-o', binary, './cmd/cacheserver'],
                   cwd=REPO, check=True, env=dict(os.environ, CGO_ENABLED='1'))
    return binary


def write_token(path, prefix):
    with open(path, 'w', encoding='utf-8') as f:
        f.write('%s-%016x\n' % (prefix, random.SystemRandom().getrandbits(64)))
    return path


def start_serving(services, name, argv, log_path):
    """Starts a cacheserver and waits for its 'serving' log line; its address."""
    logf = open(log_path, 'w+', encoding='utf-8')  # pylint: disable=consider-using-with
    proc = services.start(name, argv, stdout=subprocess.DEVNULL, stderr=logf)
    deadline = time.monotonic() + 60
    while True:
        logf.seek(0)
        for line in logf.read().splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if doc.get('msg') == 'serving':
                log('%s serving on %s (fanout %s, auth %s)' % (
                    name, doc.get('addr'), doc.get('fanout'), doc.get('auth')))
                return doc['addr']
        if proc.poll() is not None:
            logf.seek(0)
            raise RuntimeError('%s exited:\n%s' % (name, logf.read()[-2000:]))
        if time.monotonic() > deadline:
            raise RuntimeError('%s did not start serving within 60s' % name)
        time.sleep(0.05)


def start_cacheserver(services, work, binary, extra_args):
    data = os.path.join(work, 'cacheserver-data')
    os.makedirs(data, exist_ok=True)
    token_file = write_token(os.path.join(work, 'token'), 'bench')
    # The admin token opens /debug/pprof/ (--pprof); it changes nothing else.
    admin_file = write_token(os.path.join(work, 'admin-token'), 'bench-admin')
    argv = [binary, '--data-dir', data, '--listen', '127.0.0.1:0',
            '--token-file', token_file, '--admin-token-file', admin_file] + extra_args
    addr = start_serving(services, 'cacheserver', argv, os.path.join(work, 'cacheserver.log'))
    return 'http://%s' % addr, token_file


def start_shards(services, work, binary, extra_args):
    """Starts the shards of one topology (SHARDS), each knowing every
    shard's URL, and waits until each answers /readyz (it has the
    topology); their URLs and token file. Any shard failing to start fails
    the whole run."""
    import urllib.request  # pylint: disable=import-outside-toplevel
    # The peers' URLs are flags of every shard, so the ports are picked first.
    urls = ['http://127.0.0.1:%d' % free_port() for _ in SHARDS]
    token_file = write_token(os.path.join(work, 'shards-token'), 'bench-shards')
    for index, name in enumerate(SHARDS):
        data = os.path.join(work, '%s-data' % name)
        os.makedirs(data, exist_ok=True)
        argv = [binary, '--data-dir', data, '--listen', urls[index][len('http://'):],
                '--token-file', token_file, '--shard-index', str(index),
                '--peers', ','.join(urls), '--epoch', '1'] + extra_args
        start_serving(services, name, argv, os.path.join(work, '%s.log' % name))
    for name, url in zip(SHARDS, urls):
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(url + '/readyz', timeout=5) as resp:
                    status = resp.status
            except OSError as exc:  # urllib.error.HTTPError: 503 until ready
                status = exc
            if status == 200:
                break
            if services.exited(name) or time.monotonic() > deadline:
                raise RuntimeError('%s (%s) not ready: /readyz %s' % (name, url, status))
            time.sleep(0.05)
    return urls, token_file


# The HTTP method of each workload operation on /v1/keys/{key}.
OP_METHODS = {'get': 'GET', 'set': 'PUT', 'delete': 'DELETE'}
KEY_ROUTE_BUCKET = 'diskcache_http_request_duration_seconds_bucket{method="%s",route="/v1/keys/{key}",le="'


def server_counts(urls, token_file):
    """Counters summed over the servers' /metrics: forwarded and served
    requests (diskcache_forwarded_requests_total, every target and answer;
    diskcache_served_requests_total), gets answered from memory or not
    (diskcache_hot_value_gets_total, every fanout database), and the
    cumulative buckets of the key route's handler time per operation
    (diskcache_http_request_duration_seconds, as ('bucket', op, le))."""
    import urllib.request  # pylint: disable=import-outside-toplevel
    with open(token_file, encoding='utf-8') as f:
        auth = {'Authorization': 'Bearer ' + f.read().strip()}
    counts = dict.fromkeys(('forwarded', 'served', 'hot_hit', 'hot_miss'), 0.0)
    for url in urls:
        req = urllib.request.Request(url + '/metrics', headers=auth)
        with urllib.request.urlopen(req, timeout=30) as resp:
            text = resp.read().decode('utf-8')
        for line in text.splitlines():
            if line.startswith('diskcache_forwarded_requests_total{'):
                counts['forwarded'] += float(line.split()[-1])
            elif line.startswith('diskcache_served_requests_total '):
                counts['served'] += float(line.split()[-1])
            elif line.startswith('diskcache_hot_value_gets_total{'):
                result = 'hot_hit' if 'result="hit"' in line else 'hot_miss'
                counts[result] += float(line.split()[-1])
            else:
                for op, method in OP_METHODS.items():
                    prefix = KEY_ROUTE_BUCKET % method
                    if line.startswith(prefix):
                        le = float(line[len(prefix):line.index('"', len(prefix))])
                        key = ('bucket', op, le)
                        counts[key] = counts.get(key, 0.0) + float(line.split()[-1])
    return counts


def server_p99_us(delta, op):
    """The bucket bound (µs) under which 99% of op's requests were handled,
    from the delta of the servers' cumulative buckets; NaN without any."""
    buckets = sorted((key[2], n) for key, n in delta.items()
                     if isinstance(key, tuple) and key[1] == op)
    total = buckets[-1][1] if buckets else 0
    if total <= 0:
        return float('nan')
    for le, n in buckets:
        if n >= 0.99 * total:
            return le * 1e6
    return float('nan')


def fetch_profile(url, admin_file, kind, seconds, path, errors):
    """GET /debug/pprof/KIND?seconds=N from the cacheserver into path."""
    import urllib.request  # pylint: disable=import-outside-toplevel
    with open(admin_file, encoding='utf-8') as f:
        token = f.read().strip()
    req = urllib.request.Request('%s/debug/pprof/%s?seconds=%d' % (url, kind, seconds),
                                 headers={'Authorization': 'Bearer ' + token})
    try:
        with urllib.request.urlopen(req, timeout=seconds + 60) as resp, \
                open(path, 'wb') as out:
            shutil.copyfileobj(resp, out)
    except OSError as exc:
        errors.append('%s profile: %s' % (kind, exc))


def profile_server(ctx, name, args, server_pid, url, admin_file, prefix):
    """Runs the workload on name over and over while the cacheserver
    records a CPU and an allocation profile of --pprof-seconds."""
    import threading  # pylint: disable=import-outside-toplevel
    errors = []
    paths = {kind: os.path.abspath('%s-%s.%s.pprof' % (prefix, name, kind))
             for kind in ('cpu', 'allocs')}
    threads = [threading.Thread(target=fetch_profile,
                                args=(url, admin_file, 'profile' if kind == 'cpu' else kind,
                                      args.pprof_seconds, path, errors))
               for kind, path in paths.items()]
    for thread in threads:
        thread.start()
    runs = ops = 0
    cpu_before = proc_cpu_ns([server_pid])
    started = time.monotonic()
    while any(thread.is_alive() for thread in threads):
        run = run_backend(ctx, name, args, [server_pid])
        runs, ops = runs + 1, ops + args.procs * args.ops
    wall = time.monotonic() - started
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError('; '.join(errors))
    cpu = (proc_cpu_ns([server_pid]) - cpu_before) / 1e9
    log('%s: profiled %d run(s), %d ops in %.1fs, server CPU %.2f s (%.2f cores)' % (
        name, runs, ops, wall, cpu, cpu / wall))
    print('\n### Server profiles under %s (%d runs of the workload, %.1f s, last run %s ops/s)\n' % (
        name, runs, wall, '{:,.0f}'.format(run['ops_per_s'])))
    for kind, path in paths.items():
        print('- %s: `go tool pprof -top %s`' % (kind, path))
    return paths


def start_redis(services, work):
    port = free_port()
    data = os.path.join(work, 'redis-data')
    os.makedirs(data, exist_ok=True)
    argv = [shutil.which('redis-server'), '--port', str(port), '--bind', '127.0.0.1',
            '--dir', data, '--appendonly', 'yes', '--appendfsync', 'everysec',
            '--save', '', '--daemonize', 'no', '--protected-mode', 'yes',
            '--logfile', os.path.join(data, 'redis.log')]
    proc = services.start('redis-server', argv, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    wait_ready('redis-server', proc, line_probe(port, b'PING\r\n', b'+PONG'))
    return 'redis://127.0.0.1:%d/0' % port


def start_memcached(services):
    port = free_port()
    argv = [shutil.which('memcached'), '-l', '127.0.0.1', '-p', str(port), '-U', '0',
            '-m', '64']
    if os.geteuid() == 0:
        argv += ['-u', 'nobody']  # memcached refuses to run as root without -u
    proc = services.start('memcached', argv, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    wait_ready('memcached', proc, line_probe(port, b'version\r\n', b'VERSION'))
    return '127.0.0.1:%d' % port


def configure_django(caches):
    for path in (CLIENT_DIR, os.path.dirname(os.path.abspath(__file__))):
        if path not in sys.path:
            sys.path.insert(0, path)
    import django  # pylint: disable=import-outside-toplevel
    from django.conf import settings  # pylint: disable=import-outside-toplevel
    settings.configure(
        DEBUG=False, SECRET_KEY='bench-django', USE_TZ=True,
        INSTALLED_APPS=[], DATABASES={}, CACHES=caches)
    django.setup()


# ---------------------------------------------------------------------------
# The workload (python-diskcache's benchmark_djangocache.py worker).

def reset_child_signals():
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def process_alias(alias, num):
    """The CACHES alias worker process num of backend alias uses."""
    if alias in SPREAD:
        return '%s/%d' % (alias, num % SPREAD[alias])
    return alias


def prepare(alias, keys, result):
    """Empty the cache and set every key to its own bytes (untimed)."""
    reset_child_signals()
    try:
        from django.core.cache import caches  # pylint: disable=import-outside-toplevel
        cache = caches[process_alias(alias, 0)]
        cache.clear()
        for key in range(keys):
            cache.set(str(key), str(key).encode('utf-8'))
        cache.close()
        result.put(None)
    except BaseException:  # pylint: disable=broad-except
        result.put(traceback.format_exc())


def worker(num, alias, args, barrier, result, profile_path):
    reset_child_signals()
    try:
        from django.core.cache import caches  # pylint: disable=import-outside-toplevel
        cache = caches[process_alias(alias, num)]
        rng = random.Random(num)
        timings = {op: array.array('q') for op in OPS}
        misses = dict.fromkeys(OPS, 0)
        perf = time.perf_counter_ns
        get, set_, delete = cache.get, cache.set, cache.delete
        warmup, keys = args.warmup, args.keys
        get_below, set_below = args.get_share, args.get_share + args.set_share
        first = last = None
        cpu_start = None
        cpu = time.process_time_ns
        profiler = cProfile.Profile() if profile_path else None
        barrier.wait(timeout=300)  # every process has its backend: go
        if profiler:
            profiler.enable()
        for count in range(args.ops):
            if count == warmup:
                cpu_start = cpu()
            key = str(rng.randrange(keys))
            value = str(count).encode('utf-8') * rng.randrange(1, 100)
            choice = rng.random()
            if choice < get_below:
                start = perf()
                res = get(key)
                end = perf()
                op, miss = 'get', res is None
            elif choice < set_below:
                start = perf()
                res = set_(key, value)
                end = perf()
                op, miss = 'set', res is False
            else:
                start = perf()
                res = delete(key)
                end = perf()
                op, miss = 'delete', res is False
            if count >= warmup:
                if first is None:
                    first = start
                last = end
                timings[op].append(end - start)
                misses[op] += miss
        cpu_used = cpu() - cpu_start if cpu_start is not None else 0
        if profiler:
            profiler.disable()
            profiler.dump_stats(profile_path)
        cache.close()
        result.put((num, {op: timings[op].tobytes() for op in OPS}, misses, first, last,
                    cpu_used))
    except BaseException:  # pylint: disable=broad-except
        result.put((num, traceback.format_exc()))


def proc_cpu_ns(pids):
    """User + system CPU time of processes, summed, from /proc (clock
    ticks); None without pids or when one cannot be read."""
    if not pids:
        return None
    ticks = 0
    for pid in pids:
        try:
            with open('/proc/%d/stat' % pid, encoding='ascii') as f:
                fields = f.read().rpartition(')')[2].split()
        except OSError:
            return None
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks * 1_000_000_000 // os.sysconf('SC_CLK_TCK')


def run_backend(ctx, alias, args, server_pids=None, profile_path=None, servers=None):
    """One run of the workload on one backend; the merged samples.
    server_pids: the server processes whose CPU time is counted; servers:
    (URLs, token file) of the cacheservers whose counters are read (the
    forwarded share with more than one)."""
    result = ctx.Queue()
    # Daemonic: multiprocessing terminates them if this script exits early.
    proc = ctx.Process(target=prepare, args=(alias, args.keys, result), daemon=True)
    proc.start()
    try:
        err = result.get(timeout=600)
    finally:
        proc.join(timeout=30)
        if proc.is_alive():
            proc.terminate()
            proc.join()
    if err:
        raise RuntimeError('%s: preparing failed:\n%s' % (alias, err))
    barrier = ctx.Barrier(args.procs)
    procs = [ctx.Process(target=worker,
                         args=(num, alias, args, barrier, result,
                               profile_path if num == 0 else None),
                         daemon=True)
             for num in range(args.procs)]
    counts = server_counts(*servers) if servers else None
    server_cpu = proc_cpu_ns(server_pids)
    for proc in procs:
        proc.start()
    samples = {op: [] for op in OPS}
    misses = dict.fromkeys(OPS, 0)
    firsts, lasts, errors = [], [], []
    client_cpu = 0
    done = False
    try:
        for _ in procs:
            got = result.get(timeout=args.run_timeout)
            if len(got) == 2:
                errors.append('process %d:\n%s' % got)
                continue
            _, timings, miss, first, last, cpu_used = got
            client_cpu += cpu_used
            for op in OPS:
                samples[op].extend(array.array('q', timings[op]))
                misses[op] += miss[op]
            if first is not None:
                firsts.append(first)
                lasts.append(last)
        done = True
    finally:
        for proc in procs:
            if done:
                proc.join(timeout=30)
            if proc.is_alive():  # interrupted, failed or hung: stop it by pid
                proc.terminate()
                proc.join()
    if server_cpu is not None:
        # Over every operation of the run, warm-up included.
        server_cpu = (proc_cpu_ns(server_pids) - server_cpu) / 1000.0 / (args.procs * args.ops)
    forwarded_share = hot_share = float('nan')
    server_p99 = dict.fromkeys(OPS, float('nan'))
    if counts is not None and not errors:
        after = server_counts(*servers)
        delta = {name: after[name] - counts.get(name, 0.0) for name in after}
        server_p99 = {op: server_p99_us(delta, op) for op in OPS}
        # Forwarded ÷ served requests over the workers' operations, warm-up
        # included: a request forwarded once is served once, by its owner.
        if len(servers[0]) > 1 and delta['served'] > 0:
            forwarded_share = delta['forwarded'] / delta['served']
        looked = delta['hot_hit'] + delta['hot_miss']
        if looked > 0:
            hot_share = delta['hot_hit'] / looked
    if errors:
        raise RuntimeError('%s failed:\n%s' % (alias, '\n'.join(errors)))
    timed = sum(len(s) for s in samples.values())
    wall = (max(lasts) - min(firsts)) / 1e9 if firsts else float('nan')
    return {'samples': samples, 'misses': misses, 'timed_ops': timed,
            'ops_per_s': timed / wall if wall > 0 else float('nan'),
            'client_cpu_us': client_cpu / 1000.0 / timed if timed else float('nan'),
            'server_cpu_us': float('nan') if server_cpu is None else server_cpu,
            'forwarded_share': forwarded_share, 'hot_share': hot_share,
            **{'server_%s_p99_us' % op: server_p99[op] for op in OPS}}


def percentile(sorted_values, pct):
    """Nearest-rank percentile of a sorted list."""
    if not sorted_values:
        return float('nan')
    rank = max(1, math.ceil(pct / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


# The quantiles (in %) the JSON output keeps of every operation's latencies,
# for plotting their distribution (make bench-plots).
CDF_PERCENTILES = tuple(i / 10.0 for i in range(5, 1000, 5)) + (99.9, 99.95, 99.99)


# A run's statistics besides the latencies (forwarded_share: NaN but for
# the shards of a topology; hot_share: NaN but for cacheservers).
# server_OP_p99_us: the bucket bound under which the servers' handlers
# finished 99% of OP (NaN but for cacheservers).
RUN_STATS = ('ops_per_s', 'client_cpu_us', 'server_cpu_us', 'forwarded_share', 'hot_share') + \
    tuple('server_%s_p99_us' % op for op in OPS)


def summarize(run):
    stats = {name: run[name] for name in RUN_STATS}
    for op in OPS:
        values = sorted(run['samples'][op])
        stats[op] = {'count': len(values), 'misses': run['misses'][op]}
        for pct in PERCENTILES:
            stats[op]['p%d' % pct] = percentile(values, pct) / 1000.0  # µs
        stats[op]['cdf_us'] = [percentile(values, pct) / 1000.0 for pct in CDF_PERCENTILES]
    return stats


def median_stats(rounds):
    """Median over rounds of every statistic."""
    out = {name: statistics.median(r[name] for r in rounds)
           for name in RUN_STATS}
    for op in OPS:
        out[op] = {name: statistics.median(r[op][name] for r in rounds)
                   for name in rounds[0][op] if name != 'cdf_us'}
        out[op]['cdf_us'] = [statistics.median(r[op]['cdf_us'][i] for r in rounds)
                             for i in range(len(CDF_PERCENTILES))]
    return out


def fmt_us(value):
    if value != value:  # nan
        return '–'
    if value >= 1000:
        return '{:,.0f}'.format(value)
    if value >= 100:
        return '%.0f' % value
    return '%.1f' % value


def table(results, order, rounds):
    head = ['backend']
    for op in OPS:
        head += ['%s p%d' % (op, pct) for pct in PERCENTILES]
    head += ['ops/s']
    lines = ['| ' + ' | '.join(head) + ' |',
             '|---|' + '--:|' * (len(head) - 1)]
    for name in order:
        if name not in results:
            lines.append('| %s | %s |' % (LABELS[name], ' | '.join(['skipped'] * (len(head) - 1))))
            continue
        stats = results[name]
        cells = [LABELS[name]]
        for op in OPS:
            cells += [fmt_us(stats[op]['p%d' % pct]) for pct in PERCENTILES]
        cells.append('{:,.0f}'.format(stats['ops_per_s']))
        lines.append('| ' + ' | '.join(cells) + ' |')
    notes = ['', 'Latencies in µs (time.perf_counter_ns around each call); ops/s is timed '
             'operations of all processes over the timed span%s.' % (
                 '; median over %d rounds' % rounds if rounds > 1 else '')]
    counts = []
    for name in order:
        if name in results:
            stats = results[name]
            counts.append('%s: %s' % (name, ', '.join(
                '%d %s (%d %s)' % (stats[op]['count'], op, stats[op]['misses'],
                                   'misses' if op == 'get' else 'false')
                for op in OPS)))
    notes.append('Samples per run: ' + '; '.join(counts) + '.')
    if 'cacheserver' in results and 'django-redis' in results:
        a, b = results['cacheserver'], results['django-redis']
        ratio = ['%s p%d %.2f' % (op, pct, a[op]['p%d' % pct] / b[op]['p%d' % pct])
                 for op in OPS for pct in PERCENTILES if b[op]['p%d' % pct]]
        notes.append('cacheserver ÷ django-redis latency: ' + ', '.join(ratio) + '.')
    cpu = ['', '| backend | client CPU µs/op | server CPU µs/op | sum |', '|---|--:|--:|--:|']
    for name in order:
        if name in results:
            stats = results[name]
            client, server = stats['client_cpu_us'], stats['server_cpu_us']
            total = client + (server if server == server else 0)
            cpu.append('| %s | %s | %s | %s |' % (LABELS[name], fmt_us(client),
                                                  fmt_us(server), fmt_us(total)))
    cpu.append('')
    cpu.append('Client CPU: user+system time of the worker processes over their timed '
               'operations (Django, the backend, the client library, the socket calls), '
               'per operation. Server CPU: the server process\'s user+system time (from '
               '/proc; for 3 shards, the sum of the three processes\') over the run, '
               'warm-up included, per operation; – for python-diskcache, which has no '
               'server.')
    shares = ['%s %.1f%%' % (name, 100.0 * results[name]['forwarded_share'])
              for name in order if name in results
              and results[name]['forwarded_share'] == results[name]['forwarded_share']]
    if shares:
        cpu.append('')
        cpu.append('Forwarded share (requests the shards forwarded to the owner ÷ requests '
                   'they served, diskcache_forwarded_requests_total and '
                   'diskcache_served_requests_total over the run; ~67%% when every process '
                   'goes through one shard, ~0 when the client goes straight to the owner): '
                   '%s.' % ', '.join(shares))
    hot = ['%s %.1f%%' % (name, 100.0 * results[name]['hot_share'])
           for name in order if name in results
           and results[name].get('hot_share', float('nan')) == results[name].get('hot_share')]
    if hot:
        cpu.append('')
        cpu.append('Hot share (gets the servers answered from memory, --hot-value-bytes, ÷ '
                   'gets that looked there, diskcache_hot_value_gets_total over the run, '
                   'warm-up included): %s.' % ', '.join(hot))
    handled = []
    for name in order:
        stats = results.get(name, {})
        p99 = ['%s ≤ %s' % (op, fmt_us(stats['server_%s_p99_us' % op])) for op in OPS
               if stats.get('server_%s_p99_us' % op, float('nan')) == stats.get('server_%s_p99_us' % op)]
        if p99:
            handled.append('%s %s' % (name, ', '.join(p99)))
    if handled:
        cpu.append('')
        cpu.append('Server-side p99 in µs (the handlers\' own time, without reading the request '
                   'or sending the answer: the bound of the diskcache_http_request_duration_seconds '
                   'bucket 99%% of the run\'s requests fell under, warm-up included; for 3 shards '
                   'every shard\'s, so a forwarded request counts twice, once with its forwarding. '
                   'Set against the clients\' p99 above, the rest of the tail is outside the '
                   'handler): %s.' % '; '.join(handled))
    return '\n'.join(lines + notes + cpu)


def versions(backends, redis_url, memcached_loc):
    out = ['Python %s' % platform.python_version()]
    mods = [('django', 'Django'), ('diskcache', 'python-diskcache')]
    if 'django-redis' in backends:
        mods += [('django_redis', 'django-redis'), ('redis', 'redis-py')]
    if 'memcached' in backends:
        mods += [('pymemcache', 'pymemcache')]
    for mod, label in mods:
        try:
            module = importlib.import_module(mod)
            version = getattr(module, '__version__', None) or getattr(module, 'VERSION', '?')
            if isinstance(version, tuple):
                version = '.'.join(str(v) for v in version[:3])
            out.append('%s %s' % (label, version))
        except ImportError:
            pass
    for exe, flag in (('redis-server', '--version'), ('memcached', '--version')):
        if (exe == 'redis-server' and redis_url) or (exe == 'memcached' and memcached_loc):
            try:
                text = subprocess.run([shutil.which(exe), flag], capture_output=True,
                                      text=True, timeout=10).stdout.split()
                out.append(' '.join(text[:3]) if exe == 'redis-server' else ' '.join(text[:2]))
            except (OSError, subprocess.SubprocessError):
                pass
    return ', '.join(out)


def machine():
    """What the plots name: host, CPU, cores, kernel and the date of the run."""
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as f:
            for line in f:
                if line.startswith('model name'):
                    cpu = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        with open('/proc/loadavg', encoding='ascii') as f:
            load = ' '.join(f.read().split()[:3])
    except OSError:
        load = 'unknown'
    return {'host': platform.node(), 'cpu': cpu, 'cores': os.cpu_count(),
            'kernel': platform.release(), 'load_average_at_end': load,
            'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}


# Layers of a profile, by where a function lives (first match wins).
LAYERS = [
    ('socket send/receive (kernel; receive waits for the server)',
     lambda f, fn: f == '~' and ('sendall' in fn or 'recv' in fn or "'send'" in fn)),
    ('http.client (request and response)', lambda f, fn: f.endswith('/http/client.py')),
    ('email.parser (http.client header parsing)', lambda f, fn: '/email/' in f),
    ('diskcache_client', lambda f, fn: '/diskcache_client/' in f),
    ('bare client (rawhttp.py)', lambda f, fn: f.endswith('/rawhttp.py')),
    ('django-redis + redis-py', lambda f, fn: '/django_redis/' in f or '/redis/' in f),
    ('pymemcache', lambda f, fn: '/pymemcache/' in f),
    ('python-diskcache', lambda f, fn: '/diskcache/' in f),
    ('Django', lambda f, fn: '/django/' in f),
    ('benchmark loop', lambda f, fn: f.endswith('/bench.py')),
]


def profile_layers(path, ops):
    """A markdown table of a profile's own time (tottime) by layer."""
    stats = pstats.Stats(path).stats
    totals = {}
    everything = 0.0
    for (filename, _, funcname), (_, _, tottime, _, _) in stats.items():
        layer = next((name for name, match in LAYERS if match(filename, funcname)),
                     'other (stdlib, builtins)')
        totals[layer] = totals.get(layer, 0.0) + tottime
        everything += tottime
    lines = ['| layer (own time under cProfile) | µs/op | share |', '|---|--:|--:|']
    for layer, secs in sorted(totals.items(), key=lambda kv: -kv[1]):
        lines.append('| %s | %s | %.0f%% |' % (layer, fmt_us(secs / ops * 1e6),
                                              100.0 * secs / everything))
    lines.append('| total | %s | 100%% |' % fmt_us(everything / ops * 1e6))
    return '\n'.join(lines)


def cpus_note(args):
    """Which CPUs the servers and the worker processes ran on, as a sentence."""
    if not args.server_cpu_list:
        return ('CPUs: shared; the servers and the worker processes may each run on any of '
                'the %d CPUs.' % len(os.sched_getaffinity(0)))
    return ('CPUs: separate (--server-cpus); the servers ran on CPU %s, the worker processes on '
            'CPU %s.' % (','.join(map(str, args.server_cpu_list)),
                         ','.join(map(str, args.client_cpu_list))))


def parse_cpus(text):
    """The CPUs of a list in taskset's syntax (1, 2-3, 0,2); ValueError if it is not one."""
    cpus = set()
    for part in text.split(','):
        first, dash, last = part.strip().partition('-')
        try:
            lo = int(first)
            hi = int(last) if dash else lo
        except ValueError:
            raise ValueError('%r is not a CPU list (e.g. 1, 2-3 or 0,2)' % text) from None
        if lo < 0 or hi < lo:
            raise ValueError('%r is not a CPU list (e.g. 1, 2-3 or 0,2)' % text)
        cpus.update(range(lo, hi + 1))
    return cpus


def split_cpus(text, available):
    """The servers' and the worker processes' CPUs for --server-cpus; ValueError if the
    list is not a part of the available CPUs that leaves at least one to the workers."""
    servers = parse_cpus(text)
    if not servers <= available:
        raise ValueError('--server-cpus %s: this process may only run on CPUs %s' % (
            text, ','.join(map(str, sorted(available)))))
    workers = available - servers
    if not workers:
        raise ValueError('--server-cpus %s leaves no CPU for the worker processes' % text)
    return sorted(servers), sorted(workers)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--backends', default=','.join(BACKENDS),
                        help='comma-separated, of: ' + ', '.join(BACKENDS))
    parser.add_argument('--procs', type=int, default=8, help='worker processes')
    parser.add_argument('--ops', type=int, default=5000,
                        help='operations per process, warm-up included '
                             '(benchmark_djangocache.py: 100,000)')
    parser.add_argument('--warmup', type=int, default=1000,
                        help='untimed operations at the start of each process')
    parser.add_argument('--keys', type=int, default=1100, help='key range')
    parser.add_argument('--mix', default='90,9,1', metavar='GET,SET,DELETE',
                        help='percentages of gets, sets and deletes (benchmark_djangocache.py: '
                             '90,9,1); e.g. 100,0,0 for gets only')
    parser.add_argument('--rounds', type=int, default=3,
                        help='runs of every backend, interleaved; the table shows the '
                             'median of each statistic')
    parser.add_argument('--cacheserver-args', default='',
                        help='extra cacheserver flags, e.g. "--fanout 2"')
    parser.add_argument('--cprofile', metavar='PREFIX',
                        help='after the measured rounds, run each backend once more with '
                             'process 0 under cProfile; stats in PREFIX-<backend>.prof '
                             'and the top functions printed')
    parser.add_argument('--pprof', metavar='PREFIX',
                        help='after the measured rounds, run the workload on cacheserver '
                             'again while the server records a CPU profile '
                             '(PREFIX-cacheserver.cpu.pprof) and an allocation profile '
                             '(PREFIX-cacheserver.allocs.pprof) through /debug/pprof/')
    parser.add_argument('--pprof-seconds', type=int, default=10,
                        help='length of the --pprof profiles')
    parser.add_argument('--json', metavar='FILE', help='also write the statistics as JSON')
    parser.add_argument('--no-install', dest='install', action='store_false',
                        help='do not apt-get install missing Debian packages; backends that '
                             'miss one are skipped (install: %(default)s)')
    parser.add_argument('--workdir', help='directory for data (default: a new temporary '
                                          'directory, removed at the end)')
    parser.add_argument('--run-timeout', type=float, default=900,
                        help='seconds to wait for a run')
    parser.add_argument('--server-cpus', metavar='LIST',
                        help='run the servers (cacheserver, redis-server, memcached) on these '
                             'CPUs and this script and its worker processes on the others '
                             '(taskset syntax: 1, 2-3, 0,2), as in a deployment, where a '
                             'cache does not share its CPUs with the app; without it every '
                             'process may run on every CPU')
    args = parser.parse_args()
    args.server_cpu_list = args.client_cpu_list = None
    if args.server_cpus:
        try:
            args.server_cpu_list, args.client_cpu_list = split_cpus(
                args.server_cpus, os.sched_getaffinity(0))
        except ValueError as exc:
            parser.error(str(exc))
    wanted = [b.strip() for b in args.backends.split(',') if b.strip()]
    for name in wanted:
        if name not in BACKENDS:
            parser.error('unknown backend %r' % name)
    if args.warmup >= args.ops:
        parser.error('--warmup must be below --ops')
    try:
        mix = [float(x) for x in args.mix.split(',')]
    except ValueError:
        mix = []
    if len(mix) != 3 or min(mix) < 0 or abs(sum(mix) - 100) > 1e-9:
        parser.error('--mix must be three percentages (gets, sets, deletes) adding up to 100')
    args.get_share, args.set_share = mix[0] / 100, mix[1] / 100

    services = Services(set(args.server_cpu_list or ()))
    if args.client_cpu_list:
        os.sched_setaffinity(0, args.client_cpu_list)  # the workers fork from here
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    work = args.workdir or tempfile.mkdtemp(prefix='bench-django-')
    os.makedirs(work, exist_ok=True)
    try:
        return run(args, wanted, services, work)
    except Interrupted as exc:
        log('interrupted (%s); stopping what was started' % exc)
        return 130
    finally:
        # Block the signals while cleaning up so a second Ctrl-C cannot
        # leave a server behind.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
        services.stop_all()
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


def run(args, wanted, services, work):
    log('uptime before: ' + subprocess.run(['uptime'], capture_output=True,
                                          text=True).stdout.strip())
    backends = install_packages(wanted, args.install)
    caches = {}
    redis_url = memcached_loc = server_url = server_token = shards = None
    binary = None
    if any(name.startswith('cacheserver') for name in backends):
        binary = build_cacheserver(work)  # once, for every cacheserver and shard
    if 'cacheserver' in backends:
        url, token_file = start_cacheserver(services, work, binary,
                                            shlex.split(args.cacheserver_args))
        server_url, server_token = url, token_file
        caches['cacheserver'] = {
            'BACKEND': 'diskcache_client.djangocache.DjangoCache',
            'LOCATION': url,
            'OPTIONS': {'TOKEN_FILE': token_file},
        }
    if 'cacheserver-http' in backends:
        if 'cacheserver' not in caches:
            url, token_file = start_cacheserver(services, work, binary,
                                                shlex.split(args.cacheserver_args))
            server_url, server_token = url, token_file
            caches['cacheserver'] = None
        caches['cacheserver-http'] = {
            'BACKEND': 'diskcache_client.djangocache.DjangoCache',
            'LOCATION': url,
            'OPTIONS': {'TOKEN_FILE': token_file, 'FRAMES': False},
        }
    if 'cacheserver-floor' in backends:
        if 'cacheserver' not in caches:
            url, token_file = start_cacheserver(services, work, binary,
                                                shlex.split(args.cacheserver_args))
            server_url, server_token = url, token_file
            caches['cacheserver'] = None
        caches['cacheserver-floor'] = {
            'BACKEND': 'rawhttp.RawHTTPCache',
            'LOCATION': url,
            'OPTIONS': {'TOKEN_FILE': token_file},
        }
    if 'cacheserver-3-forwarding' in backends or 'cacheserver-3-smart' in backends:
        shards = start_shards(services, work, binary, shlex.split(args.cacheserver_args))
        urls, token_file = shards
    if 'cacheserver-3-forwarding' in backends:
        # Worker process n talks to shard n % 3 only, smart routing off.
        for num in range(SPREAD['cacheserver-3-forwarding']):
            caches[process_alias('cacheserver-3-forwarding', num)] = {
                'BACKEND': 'diskcache_client.djangocache.DjangoCache',
                'LOCATION': urls[num % len(urls)],
                'OPTIONS': {'TOKEN_FILE': token_file, 'TOPOLOGY': False},
            }
    if 'cacheserver-3-smart' in backends:
        caches['cacheserver-3-smart'] = {
            'BACKEND': 'diskcache_client.djangocache.DjangoCache',
            'LOCATION': urls[0],
            'OPTIONS': {'TOKEN_FILE': token_file},
        }
    if 'diskcache' in backends:
        caches['diskcache'] = {
            'BACKEND': 'diskcache.DjangoCache',
            'LOCATION': os.path.join(work, 'diskcache-data'),
        }
    if 'django-redis' in backends:
        redis_url = start_redis(services, work)
        caches['django-redis'] = {
            'BACKEND': 'django_redis.cache.RedisCache',
            'LOCATION': redis_url,
        }
    if 'memcached' in backends:
        memcached_loc = start_memcached(services)
        caches['memcached'] = {
            'BACKEND': 'django.core.cache.backends.memcached.PyMemcacheCache',
            'LOCATION': memcached_loc,
        }
    # The cacheservers whose /metrics each backend's run reads.
    metrics_of = {SHARDS: shards}
    if server_url is not None:
        metrics_of[SERVER['cacheserver']] = ([server_url], server_token)
    caches = {name: conf for name, conf in caches.items() if conf is not None}
    caches['default'] = {'BACKEND': 'django.core.cache.backends.dummy.DummyCache'}
    configure_django(caches)
    ctx = multiprocessing.get_context('fork')
    log('%s; %d CPUs' % (versions(backends, redis_url, memcached_loc), os.cpu_count()))
    gets, sets, deletes = args.mix.split(',')
    log('workload: %d processes x %d ops (%d untimed), %d keys, %s%% get / %s%% set / '
        '%s%% delete, %d round(s)' % (args.procs, args.ops, args.warmup, args.keys,
                                      gets, sets, deletes, args.rounds))
    log(cpus_note(args))
    rounds = {name: [] for name in backends}
    for rnd in range(args.rounds):
        for name in backends:
            started = time.monotonic()
            stats = summarize(run_backend(ctx, name, args, services.pids(SERVER[name]),
                                          servers=metrics_of.get(SERVER[name])))
            rounds[name].append(stats)
            log('round %d %-24s %5.1fs  get p50 %s µs, set p50 %s µs, %s ops/s' % (
                rnd + 1, name, time.monotonic() - started, fmt_us(stats['get']['p50']),
                fmt_us(stats['set']['p50']), '{:,.0f}'.format(stats['ops_per_s'])))
    results = {name: median_stats(r) for name, r in rounds.items()}
    log('uptime after: ' + subprocess.run(['uptime'], capture_output=True,
                                         text=True).stdout.strip())
    print(table(results, wanted, args.rounds))
    print('\n' + cpus_note(args))
    sys.stdout.flush()
    if args.json:
        with open(args.json, 'w', encoding='utf-8') as f:
            json.dump({'args': vars(args), 'machine': machine(), 'labels': LABELS,
                       'cdf_percentiles': CDF_PERCENTILES, 'versions': versions(
                           backends, redis_url, memcached_loc),
                       'results': results, 'rounds': rounds}, f, indent=1)
    if args.pprof:
        for name in ('cacheserver', 'cacheserver-floor'):
            if name in backends:
                profile_server(ctx, name, args, services.pid('cacheserver'), server_url,
                               os.path.join(work, 'admin-token'), args.pprof)
    if args.cprofile:
        for name in backends:
            path = os.path.abspath('%s-%s.prof' % (args.cprofile, name))
            run_backend(ctx, name, args, services.pids(SERVER[name]), profile_path=path)
            print('\n### cProfile of process 0, %s (%s)\n' % (name, path))
            print(profile_layers(path, args.ops))
            print('\n```')
            pstats.Stats(path, stream=sys.stdout).sort_stats('tottime').print_stats(25)
            print('```')
    return 0


if __name__ == '__main__':
    sys.exit(main())
