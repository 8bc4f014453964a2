package main

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/diskcache-operator/diskcache-operator/engine"
	"github.com/diskcache-operator/diskcache-operator/kv"
	"github.com/diskcache-operator/diskcache-operator/settings"
)

// FanoutCache systems: "fanoutN" is one engine.FanoutCache with N shards
// shared by every worker goroutine, "pyfanoutN" python-diskcache's
// FanoutCache(directory, shards=N, timeout=0.010) opened by every worker
// process. Both swallow timeouts, as python-diskcache's FanoutCache does:
// a write that waits longer than fanoutTimeout for its shard fails (set
// reports false, delete reports false) instead of raising.
const (
	prefixFanout   = "fanout"
	prefixPyFanout = "pyfanout"
	fanoutTimeout  = 10 * time.Millisecond // python-diskcache's FanoutCache default
)

// fanoutShards returns N for "fanoutN" or "pyfanoutN", and whether sys is
// a Python system; ok is false for any other name.
func fanoutShards(sys string) (shards int, python, ok bool) {
	rest, isPy := strings.CutPrefix(sys, prefixPyFanout)
	if !isPy {
		var found bool
		if rest, found = strings.CutPrefix(sys, prefixFanout); !found {
			return 0, false, false
		}
	}
	n, err := strconv.Atoi(rest)
	if err != nil || n < 1 || strconv.Itoa(n) != rest {
		return 0, false, false
	}
	return n, isPy, true
}

func isFanout(sys string) bool { _, _, ok := fanoutShards(sys); return ok }

// fanoutStore is one engine.FanoutCache opened as an application that wants
// python-diskcache's FanoutCache behaviour would open it: 10 ms timeout,
// timeouts swallowed.
type fanoutStore struct {
	ctx context.Context
	f   *engine.FanoutCache
}

func openFanout(ctx context.Context, dir string, shards int) (*fanoutStore, error) {
	f, err := engine.OpenFanout(ctx, dir, engine.FanoutOptions{
		Fanout:          shards,
		Timeout:         fanoutTimeout,
		SwallowTimeouts: true,
	})
	if err != nil {
		return nil, err
	}
	s := &fanoutStore{ctx: ctx, f: f}
	// Nothing else writes yet, so a swallowed timeout here would be a bug.
	if err := prepopulate(fanoutHandle{s}); err != nil {
		_ = f.Close()
		return nil, err
	}
	return s, nil
}

func (s *fanoutStore) handle(int) (handle, error) { return fanoutHandle{s}, nil }
func (s *fanoutStore) close() error               { return s.f.Close() }

// getsCannotTimeOut reports whether the shards' settings keep Get off the
// write path: with statistics off and an eviction policy that does not
// update rows on get (python-diskcache's defaults), Get is a plain read that
// never returns ErrTimeout (a failed read is an error, which stops the
// benchmark), so every get miss is a real miss.
func (s *fanoutStore) getsCannotTimeOut() bool {
	st := s.f.Settings()
	return !st.Statistics && (st.EvictionPolicy == settings.PolicyLeastRecentlyStored || st.EvictionPolicy == settings.PolicyNone)
}

type fanoutHandle struct{ s *fanoutStore }

func (h fanoutHandle) get(key []byte) (bool, error) {
	it, ok, err := h.s.f.Get(h.s.ctx, kv.BytesKey(key), engine.GetOptions{})
	if ok {
		_ = it.Value.Data
	}
	return ok, err
}

// set reports false when the shard stayed locked past the timeout (TrySet,
// python-diskcache's set returning False).
func (h fanoutHandle) set(key, value []byte) (bool, error) {
	return h.s.f.TrySet(h.s.ctx, kv.BytesKey(key), kv.Bytes(value), kv.SetOptions{})
}

// del reports false for a missing key and for a swallowed timeout alike.
func (h fanoutHandle) del(key []byte) (bool, error) {
	return h.s.f.Delete(h.s.ctx, kv.BytesKey(key))
}

func (h fanoutHandle) close() error { return nil }

// runFanout runs the engine FanoutCache with shards shards in dir.
func runFanout(ctx context.Context, cfg config, sys, dir string, shards, workers int) (Result, error) {
	st, err := openFanout(ctx, dir, shards)
	if err != nil {
		return Result{}, err
	}
	runtime.GC()
	s, wall, err := runStore(ctx, st, workers, cfg.ops, cfg.warmup)
	readOnlyGets := st.getsCannotTimeOut()
	if cerr := st.close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return Result{}, err
	}
	ops := summarise(s)
	// Timeouts known exactly: a failed TrySet is one; gets cannot time out
	// with these settings. A false Delete may be either, so it stays unknown.
	setOp := ops[opSet]
	setOp.Timeouts = ptr(setOp.Misses)
	ops[opSet] = setOp
	if readOnlyGets {
		getOp := ops[opGet]
		getOp.Timeouts = ptr(0)
		ops[opGet] = getOp
	}
	return Result{System: sys, Shards: shards, Workers: workers, WallNS: int64(wall), Ops: ops}, nil
}

func ptr(n int) *int { return &n }

// fanoutTitle names a FanoutCache system in tables.
func fanoutTitle(sys string) string {
	n, py, ok := fanoutShards(sys)
	if !ok {
		return sys
	}
	if py {
		return fmt.Sprintf("python FanoutCache (fanout %d)", n)
	}
	return fmt.Sprintf("Go FanoutCache (fanout %d)", n)
}

// writeFanoutReport prints the FanoutCache tables: latency with misses and
// timeouts, miss and timeout rates next to the Cache runs at the same
// worker count (which cannot time out: their timeout is 60 s and a timeout
// would be an error), the ratios, and throughput.
func writeFanoutReport(w io.Writer, fanout, cache []Result) {
	fmt.Fprintf(w, "\n## FanoutCache: per-operation latency\n\n")
	fmt.Fprintf(w, "Timeout %s, timeouts swallowed as python-diskcache's FanoutCache does; a set that timed out reports false, a get or delete that timed out reports a miss. \"timeouts\" are the misses known to be swallowed timeouts, \"?\" where a timeout cannot be told from a missing key.\n\n", fanoutTimeout)
	fmt.Fprintln(w, "| system | workers | op | count | misses | miss % | timeouts | mean | p50 | p90 | p99 | max |")
	fmt.Fprintln(w, "|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, r := range fanout {
		if r.Skipped != "" {
			fmt.Fprintf(w, "| %s | %d | – | skipped: %s | | | | | | | | |\n", systemTitle(r.System), r.Workers, r.Skipped)
			continue
		}
		for _, op := range opNames {
			st := r.Ops[op]
			fmt.Fprintf(w, "| %s | %d | %s | %d | %d | %s | %s | %s | %s | %s | %s | %s |\n",
				systemTitle(r.System), r.Workers, op, st.Count, st.Misses, pctOf(st.Misses, st.Count), timeoutCell(st),
				fmtNS(st.MeanNS), fmtNS(st.P50NS), fmtNS(st.P90NS), fmtNS(st.P99NS), fmtNS(st.MaxNS))
		}
	}

	fmt.Fprint(w, "\n## FanoutCache: misses and timeouts\n\n")
	fmt.Fprintln(w, "Get misses of a Cache at the same worker count (one database, no timeouts) are the keys the 1% deletes left missing: the reference for FanoutCache get misses.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| system | workers | get misses | set failures (timeouts) | delete misses | delete timeouts |")
	fmt.Fprintln(w, "|---|--:|--:|--:|--:|--:|")
	seen := map[int]bool{}
	for _, r := range fanout {
		if r.Skipped != "" {
			continue
		}
		if !seen[r.Workers] {
			seen[r.Workers] = true
			for _, c := range cache {
				if c.Workers == r.Workers && c.Skipped == "" && c.System != sysRaw {
					writeMissRow(w, systemTitle(c.System)+" Cache (reference)", c)
				}
			}
		}
		writeMissRow(w, systemTitle(r.System), r)
	}

	fmt.Fprint(w, "\n## FanoutCache: latency side by side\n\n")
	writeFanoutRatios(w, fanout, cache)

	fmt.Fprint(w, "\n## FanoutCache: throughput\n\n")
	writeThroughput(w, fanout)
}

// writeMissRow prints one system's misses; a Cache (not a FanoutCache)
// never swallows a timeout, so its delete timeouts are "–".
func writeMissRow(w io.Writer, title string, r Result) {
	g, s, d := r.Ops[opGet], r.Ops[opSet], r.Ops[opDelete]
	dt := "–"
	if isFanout(r.System) {
		dt = timeoutCell(d)
	}
	fmt.Fprintf(w, "| %s | %d | %d / %d (%s) | %d / %d (%s) | %d / %d (%s) | %s |\n", title, r.Workers,
		g.Misses, g.Count, pctOf(g.Misses, g.Count),
		s.Misses, s.Count, pctOf(s.Misses, s.Count),
		d.Misses, d.Count, pctOf(d.Misses, d.Count), dt)
}

func pctOf(n, of int) string {
	if of == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f%%", 100*float64(n)/float64(of))
}

func timeoutCell(st OpStats) string {
	if st.Timeouts == nil {
		return "?"
	}
	return strconv.Itoa(*st.Timeouts)
}

// writeFanoutRatios prints, per worker count, op and statistic, the Cache
// runs at that worker count and every FanoutCache run, then python ÷ Go for
// each shard count that has both.
func writeFanoutRatios(w io.Writer, fanout, cache []Result) {
	counts := []int{}
	for _, r := range fanout {
		if !slices.Contains(counts, r.Workers) {
			counts = append(counts, r.Workers)
		}
	}
	for i, n := range counts {
		if i > 0 {
			fmt.Fprintln(w)
		}
		var cols []Result
		for _, sys := range []string{sysEngine, sysPython} {
			if r, ok := find(cache, sys, n); ok {
				cols = append(cols, r)
			}
		}
		var shardCounts []int
		for _, r := range fanout {
			if r.Workers == n && r.Skipped == "" {
				cols = append(cols, r)
				if !slices.Contains(shardCounts, r.Shards) {
					shardCounts = append(shardCounts, r.Shards)
				}
			}
		}
		type pair struct {
			shards int
			g, p   Result
		}
		var pairs []pair
		for _, s := range shardCounts {
			g, gok := find(fanout, fmt.Sprintf("%s%d", prefixFanout, s), n)
			p, pok := find(fanout, fmt.Sprintf("%s%d", prefixPyFanout, s), n)
			if gok && pok {
				pairs = append(pairs, pair{s, g, p})
			}
		}
		fmt.Fprint(w, "| workers | op | pct |")
		for _, c := range cols {
			fmt.Fprintf(w, " %s |", shortTitle(c))
		}
		for _, p := range pairs {
			fmt.Fprintf(w, " python ÷ Go (fanout %d) |", p.shards)
		}
		fmt.Fprint(w, "\n|--:|---|---|")
		fmt.Fprint(w, strings.Repeat("--:|", len(cols)+len(pairs)))
		fmt.Fprintln(w)
		for _, op := range opNames {
			for _, sel := range pcts {
				fmt.Fprintf(w, "| %d | %s | %s |", n, op, sel.name)
				for _, c := range cols {
					fmt.Fprintf(w, " %s |", fmtNS(sel.get(c.Ops[op])))
				}
				for _, p := range pairs {
					g, py := sel.get(p.g.Ops[op]), sel.get(p.p.Ops[op])
					if g > 0 && py > 0 {
						fmt.Fprintf(w, " %.2fx |", float64(py)/float64(g))
					} else {
						fmt.Fprint(w, " n/a |")
					}
				}
				fmt.Fprintln(w)
			}
		}
	}
}

// shortTitle is a column heading.
func shortTitle(r Result) string {
	switch r.System {
	case sysEngine:
		return "Go Cache"
	case sysPython:
		return "python Cache"
	}
	if _, py, _ := fanoutShards(r.System); py {
		return fmt.Sprintf("python fanout %d", r.Shards)
	}
	return fmt.Sprintf("Go fanout %d", r.Shards)
}
