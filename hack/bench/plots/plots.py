#!/usr/bin/python3
"""Plots of docs/benchmarks.md from the benchmarks' JSON outputs.

``make bench-plots`` runs this with Debian's matplotlib (python3-matplotlib)
on the JSON files that ``make bench-json`` writes into docs/benchmarks/:

* ``django.json`` (hack/bench/django/bench.py --json): latency CDF of get
  and set per Django cache backend, the three-shard ones included
  (dash-dotted) -> ``django-latency-cdf.png``; ``django-separate-cpus.json``
  (the same with --server-cpus) -> ``django-latency-cdf-separate-cpus.png``;
* ``server.json`` (hack/bench/server -json): GET and SET throughput
  against connections, cacheserver vs redis-server -> ``server-throughput.png``;
* ``engine.json`` (hack/bench/engine -json): per-operation p50/p99 latency of
  the Go engine, raw SQLite and python-diskcache -> ``engine-latency.png``;
* ``routing.json`` (hack/bench/routing -json): 1-3 shards through one URL vs
  a smart client, next to redis-server -> ``routing-throughput.png``.

A missing JSON file skips its plot. Every plot names the machine and the
date of the run it shows.
"""

import argparse
import functools
import json
import os
import sys

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position

COLORS = {
    'cacheserver': '#1f77b4', 'cacheserver-floor': '#7fb3e0', 'cacheserver-http': '#17becf', 'diskcache': '#2ca02c',
    'django-redis': '#d62728', 'memcached': '#9467bd', 'redis': '#d62728',
    'cacheserver-3-forwarding': '#ff7f0e', 'cacheserver-3-smart': '#8c564b',
    'engine': '#1f77b4', 'engine-server': '#9467bd', 'raw': '#7f7f7f', 'python': '#2ca02c', 'cacheserver-frames': '#17becf',
}

# The floor is not a product; the three-shard rows are another layout.
LINESTYLES = {'cacheserver-floor': '--', 'cacheserver-3-forwarding': '-.',
              'cacheserver-3-smart': '-.'}


def load(path):
    if not os.path.exists(path):
        print('bench-plots: %s missing; its plot is skipped' % path, file=sys.stderr)
        return None
    with open(path, encoding='utf-8') as f:
        return json.load(f)


def footer(fig, text):
    fig.text(0.01, 0.01, text, fontsize=7, color='#555555', ha='left', va='bottom')


def save(fig, out, name):
    path = os.path.join(out, name)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print('bench-plots: wrote %s' % path, file=sys.stderr)


def cpus_text(args):
    """Where bench.py ran the servers and the workers (--server-cpus)."""
    servers, workers = args.get('server_cpu_list'), args.get('client_cpu_list')
    if not servers:
        return 'servers and workers share every CPU'
    return 'servers on CPU %s, workers on CPU %s' % (','.join(map(str, servers)),
                                                    ','.join(map(str, workers)))


def django_cdf(doc, out, filename='django-latency-cdf.png'):
    pcts = doc['cdf_percentiles']
    results, labels = doc['results'], doc['labels']
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), sharey=True)
    for ax, op in zip(axes, ('get', 'set')):
        for name, stats in results.items():
            xs = stats[op]['cdf_us']
            ax.plot(xs, pcts, label=labels.get(name, name), color=COLORS.get(name),
                    linestyle=LINESTYLES.get(name, '-'), linewidth=1.6)
        ax.set_xscale('log')
        ax.set_xlabel('%s latency, µs (log scale)' % op)
        ax.set_title('Django cache %s: latency distribution\n(%s)' % (op, cpus_text(doc['args'])),
                     fontsize=10)
        ax.grid(True, which='both', alpha=0.3)
        ax.set_ylim(0, 100)
    axes[0].set_ylabel('% of calls at or below')
    axes[1].legend(loc='lower right', fontsize=8)
    m = doc['machine']
    args = doc['args']
    footer(fig, '%s, %d processes x %d ops (%d untimed), %d keys, 90%% get/9%% set/1%% delete, '
                'median of %d rounds per quantile.\n%s, %s CPUs (%s), %s, load average %s at the end.' % (
                    'make bench-django', args['procs'], args['ops'], args['warmup'], args['keys'],
                    args['rounds'], m['cpu'], m['cores'], m['host'], m['date'],
                    m.get('load_average_at_end', 'unknown')))
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    save(fig, out, filename)


def server_throughput(doc, out):
    res = [r for r in doc['results'] if r.get('ops_per_second')]
    sizes = sorted({r['size'] for r in res})
    size = 100 if 100 in sizes else sizes[0]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    for ax, op in zip(axes, ('get', 'set')):
        for system, label in (('cacheserver', 'cacheserver (SQLite WAL, synchronous=NORMAL)'),
                              ('cacheserver-frames', 'cacheserver over frames (same server)'),
                              ('redis', 'redis-server (AOF, appendfsync everysec)'),
                              ('nethttp-floor', 'net/http floor: bare handler, values in a map')):
            pts = sorted((r['conns'], r['ops_per_second']) for r in res
                         if r['system'] == system and r['op'] == op and r['size'] == size)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker='o', label=label,
                        color=COLORS.get(system, '#888888'),
                        linestyle={'nethttp-floor': ':', 'cacheserver-frames': '--'}.get(system, '-'))
        ax.set_xscale('log', base=2)
        ax.set_xlabel('connections (one request in flight each)')
        ax.set_ylabel('%s/s' % op.upper())
        ax.set_title('%s of %d-byte values' % (op.upper(), size))
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    footer(fig, 'make bench-server: %s per cell, median of %d rounds, the systems side by side '
                'in one run. %s, %s, load average %s at the start.' % (
                    doc['duration_per_cell'], doc['rounds'], doc['machine'], doc['date'],
                    doc['load_average'][0]))
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    save(fig, out, 'server-throughput.png')


def engine_latency(doc, out):
    names = {'engine': 'Go engine', 'engine-server': 'Go engine, server options',
             'raw': 'raw SQLite', 'python': 'python-diskcache'}
    rows = [r for r in doc['results'] if r['system'] in names and not r.get('skipped')]
    workers = sorted({r['workers'] for r in rows})
    fig, axes = plt.subplots(1, len(workers), figsize=(11, 4.6), squeeze=False)
    for ax, nw in zip(axes[0], workers):
        ops = ('get', 'set', 'delete')
        systems = [s for s in names if any(r['system'] == s for r in rows)]
        width = 0.8 / len(systems)
        for i, system in enumerate(systems):
            r = next((r for r in rows if r['system'] == system and r['workers'] == nw), None)
            if r is None:
                continue
            p50 = [r['ops'][op]['p50_ns'] / 1000 for op in ops]
            p99 = [r['ops'][op]['p99_ns'] / 1000 for op in ops]
            xs = [j + (i - (len(systems) - 1) / 2) * width for j in range(len(ops))]
            ax.bar(xs, p50, width, color=COLORS[system], label='%s p50' % names[system])
            ax.scatter(xs, p99, color=COLORS[system], marker='_', s=200, linewidths=2,
                       label='%s p99' % names[system])
        ax.set_xticks(range(len(ops)))
        ax.set_xticklabels(ops)
        ax.set_yscale('log')
        ax.set_ylabel('µs per operation (log scale)')
        ax.set_title('%d worker%s' % (nw, '' if nw == 1 else 's'))
        ax.grid(True, axis='y', which='both', alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc='upper left')
    fig.suptitle('Engine (library defaults; the cacheserver\'s options) vs raw SQLite vs python-diskcache '
                 '(benchmark_core.py workload): '
                 'bars p50, dashes p99', fontsize=10)
    load = [m for m in doc['machine'] if m.startswith('load average')]
    footer(fig, 'make bench: %d ops per worker, median of %d rounds. %s; %s; %s.' % (
        doc['ops_per_worker'], doc['rounds'], doc['machine'][0], doc.get('date', 'date unknown'),
        ', '.join(load)))
    fig.tight_layout(rect=(0, 0.04, 1, 0.95))
    save(fig, out, 'engine-latency.png')


def routing_throughput(doc, out):
    cells = [c for c in doc['cells'] if c['part'] == 2]
    if not cells:
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    for ax, op in zip(axes, ('get', 'set')):
        for sent, label, style in (('shard 0', 'one URL (shard 0 forwards)', '-'),
                                   ('owner', 'smart client (to the owner)', '--')):
            pts = sorted((c['shards'], c['ops_per_second']) for c in cells
                         if c['system'] == 'cacheserver' and c['op'] == op
                         and c.get('sent_to') == sent)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker='o', linestyle=style,
                        label='cacheserver, ' + label, color=COLORS['cacheserver'])
        redis = [c['ops_per_second'] for c in doc['cells'] if c['system'] == 'redis'
                 and c['op'] == op and c['conns'] == 64]
        if redis:
            ax.axhline(redis[0], color=COLORS['redis'], label='redis-server (one process)')
        ax.set_xticks([1, 2, 3])
        ax.set_xlabel('shards (cacheserver processes)')
        ax.set_ylabel('%s/s' % op.upper())
        ax.set_title('%s, %d-byte values, 64 connections' % (op.upper(), cells[0]['value_bytes']))
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    footer(fig, 'make bench-routing: %s per cell, one round. %s, %d CPUs, %s, load average %s '
                'at the start.' % (doc['duration_per_cell'], doc['cpu'], doc['nproc'], doc['date'],
                                   doc['load_average_before']))
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    save(fig, out, 'routing-throughput.png')


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--dir', default='docs/benchmarks',
                        help='where the JSON files are and the images go')
    args = parser.parse_args()
    separate = functools.partial(django_cdf, filename='django-latency-cdf-separate-cpus.png')
    for name, plot in (('django.json', django_cdf), ('django-separate-cpus.json', separate),
                       ('server.json', server_throughput),
                       ('engine.json', engine_latency), ('routing.json', routing_throughput)):
        doc = load(os.path.join(args.dir, name))
        if doc is not None:
            plot(doc, args.dir)
    return 0


if __name__ == '__main__':
    sys.exit(main())
