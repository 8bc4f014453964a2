package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"time"
)

// OpStats summarise the timed operations of one kind in one run. Python
// results arrive in the same shape (python_bench.py).
type OpStats struct {
	Count  int `json:"count"`
	Misses int `json:"misses"`
	// Timeouts counts the misses known to be swallowed timeouts (FanoutCache
	// systems only); nil when they cannot be told from real misses.
	Timeouts *int  `json:"timeouts,omitempty"`
	MeanNS   int64 `json:"mean_ns"`
	P50NS    int64 `json:"p50_ns"`
	P90NS    int64 `json:"p90_ns"`
	P99NS    int64 `json:"p99_ns"`
	MaxNS    int64 `json:"max_ns"`
}

// Result is one system at one worker count.
type Result struct {
	System  string `json:"system"`
	Shards  int    `json:"shards,omitempty"` // FanoutCache systems
	Workers int    `json:"workers"`
	WallNS  int64  `json:"wall_ns"`
	// OpsPerWorker counts warm-up operations too.
	OpsPerWorker int `json:"ops_per_worker"`
	// Rounds is how many runs were combined into this result.
	Rounds  int                `json:"rounds"`
	Version string             `json:"version,omitempty"`
	Skipped string             `json:"skipped,omitempty"`
	Ops     map[string]OpStats `json:"ops,omitempty"`
}

// combine merges the rounds of one system at one worker count: counts
// and misses are summed, max is the largest, every other statistic (and
// the wall time) is the median over rounds.
func combine(rounds []Result) Result {
	out := rounds[0]
	out.Rounds = len(rounds)
	for _, r := range rounds {
		if r.Skipped != "" {
			out.Skipped = r.Skipped
			out.Ops = nil
			return out
		}
	}
	med := func(f func(Result) int64) int64 {
		v := make([]int64, len(rounds))
		for i, r := range rounds {
			v[i] = f(r)
		}
		slices.Sort(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	out.WallNS = med(func(r Result) int64 { return r.WallNS })
	out.Ops = map[string]OpStats{}
	for _, op := range opNames {
		var st OpStats
		timeouts, known := 0, true
		for _, r := range rounds {
			st.Count += r.Ops[op].Count
			st.Misses += r.Ops[op].Misses
			st.MaxNS = max(st.MaxNS, r.Ops[op].MaxNS)
			if t := r.Ops[op].Timeouts; t != nil {
				timeouts += *t
			} else {
				known = false
			}
		}
		if known {
			st.Timeouts = &timeouts
		}
		st.MeanNS = med(func(r Result) int64 { return r.Ops[op].MeanNS })
		st.P50NS = med(func(r Result) int64 { return r.Ops[op].P50NS })
		st.P90NS = med(func(r Result) int64 { return r.Ops[op].P90NS })
		st.P99NS = med(func(r Result) int64 { return r.Ops[op].P99NS })
		out.Ops[op] = st
	}
	return out
}

// percentile is the nearest-rank percentile of ascending durations.
func percentile(sorted []time.Duration, pct int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := (pct*len(sorted) + 99) / 100
	return sorted[max(rank, 1)-1]
}

func summarise(s *samples) map[string]OpStats {
	out := map[string]OpStats{}
	for _, op := range opNames {
		d := s.d[op]
		slices.Sort(d)
		st := OpStats{Count: len(d), Misses: s.misses[op]}
		if len(d) > 0 {
			var sum time.Duration
			for _, x := range d {
				sum += x
			}
			st.MeanNS = int64(sum) / int64(len(d))
			st.P50NS = int64(percentile(d, 50))
			st.P90NS = int64(percentile(d, 90))
			st.P99NS = int64(percentile(d, 99))
			st.MaxNS = int64(d[len(d)-1])
		}
		out[op] = st
	}
	return out
}

func (r Result) totalOps() int {
	n := 0
	for _, st := range r.Ops {
		n += st.Count
	}
	return n
}

// fmtNS prints a duration in µs below a millisecond, else in ms.
func fmtNS(ns int64) string {
	if ns < 1_000_000 {
		return fmt.Sprintf("%.1f µs", float64(ns)/1e3)
	}
	return fmt.Sprintf("%.2f ms", float64(ns)/1e6)
}

var systemTitles = map[string]string{
	sysEngine:       "Go engine",
	sysEngineServer: "Go engine, server options",
	sysRaw:          "raw SQLite",
	sysPython:       "python-diskcache",
}

// systemTitle names a system in tables and progress lines.
func systemTitle(sys string) string {
	if t, ok := systemTitles[sys]; ok {
		return t
	}
	return fanoutTitle(sys)
}

// writeResults prints the per-operation table.
func writeResults(w io.Writer, results []Result) {
	fmt.Fprintln(w, "| system | workers | op | count | misses | mean | p50 | p90 | p99 | max |")
	fmt.Fprintln(w, "|---|--:|---|--:|--:|--:|--:|--:|--:|--:|")
	for _, r := range results {
		if r.Skipped != "" {
			fmt.Fprintf(w, "| %s | %d | – | skipped: %s | | | | | | |\n", systemTitle(r.System), r.Workers, r.Skipped)
			continue
		}
		for _, op := range opNames {
			st := r.Ops[op]
			fmt.Fprintf(w, "| %s | %d | %s | %d | %d | %s | %s | %s | %s | %s |\n",
				systemTitle(r.System), r.Workers, op, st.Count, st.Misses,
				fmtNS(st.MeanNS), fmtNS(st.P50NS), fmtNS(st.P90NS), fmtNS(st.P99NS), fmtNS(st.MaxNS))
		}
	}
}

// writeThroughput prints the wall time and operations per second of each run.
func writeThroughput(w io.Writer, results []Result) {
	fmt.Fprintln(w, "| system | workers | timed ops (all rounds) | wall per round (median) | ops/s (warm-up included) |")
	fmt.Fprintln(w, "|---|--:|--:|--:|--:|")
	for _, r := range results {
		if r.Skipped != "" {
			continue
		}
		fmt.Fprintf(w, "| %s | %d | %d | %s | %.0f |\n", systemTitle(r.System), r.Workers, r.totalOps(),
			time.Duration(r.WallNS).Round(time.Millisecond), float64(r.Workers*r.OpsPerWorker)/time.Duration(r.WallNS).Seconds())
	}
}

// Targets: the engine at least 2x faster than python-diskcache on get and
// set, and within 1.5x of raw SQLite.
const (
	targetVsPython = 2.0
	targetVsRaw    = 1.5
)

type pctSel struct {
	name string
	get  func(OpStats) int64
}

var pcts = []pctSel{
	{"p50", func(s OpStats) int64 { return s.P50NS }},
	{"p90", func(s OpStats) int64 { return s.P90NS }},
	{"p99", func(s OpStats) int64 { return s.P99NS }},
	{"mean", func(s OpStats) int64 { return s.MeanNS }},
}

func find(results []Result, system string, workers int) (Result, bool) {
	for _, r := range results {
		if r.System == system && r.Workers == workers && r.Skipped == "" {
			return r, true
		}
	}
	return Result{}, false
}

// ratio cells: "python ÷ engine" (how many times faster the engine is) and
// "engine ÷ raw" (how many times slower than raw SQLite).
func ratioCell(num, den int64, ok bool, good func(float64) bool) string {
	if !ok || num <= 0 || den <= 0 {
		return "n/a"
	}
	// Judged as printed, to two decimals.
	x := math.Round(float64(num)/float64(den)*100) / 100
	mark := "✗"
	if good(x) {
		mark = "✓"
	}
	return fmt.Sprintf("%.2fx %s", x, mark)
}

// writeRatios prints the comparison table and returns target verdicts on
// the medians.
func writeRatios(w io.Writer, results []Result, workers []int) []string {
	fmt.Fprintln(w, "| workers | op | pct | Go engine | raw SQLite | python-diskcache | python ÷ engine (target ≥ 2x on get/set) | engine ÷ raw (target ≤ 1.5x) |")
	fmt.Fprintln(w, "|--:|---|---|--:|--:|--:|--:|--:|")
	var verdicts []string
	for _, n := range workers {
		e, eok := find(results, sysEngine, n)
		r, rok := find(results, sysRaw, n)
		p, pok := find(results, sysPython, n)
		if !eok {
			continue
		}
		cell := func(res Result, ok bool, op string, sel pctSel) string {
			if !ok {
				return "n/a"
			}
			return fmtNS(sel.get(res.Ops[op]))
		}
		for _, op := range opNames {
			for _, sel := range pcts {
				ev := sel.get(e.Ops[op])
				vsPy := "n/a"
				if op != opDelete {
					vsPy = ratioCell(sel.get(p.Ops[op]), ev, pok, func(x float64) bool { return x >= targetVsPython })
				} else if pok && ev > 0 {
					vsPy = fmt.Sprintf("%.2fx", float64(sel.get(p.Ops[op]))/float64(ev))
				}
				vsRaw := ratioCell(ev, sel.get(r.Ops[op]), rok, func(x float64) bool { return x <= targetVsRaw })
				fmt.Fprintf(w, "| %d | %s | %s | %s | %s | %s | %s | %s |\n", n, op, sel.name,
					cell(e, eok, op, sel), cell(r, rok, op, sel), cell(p, pok, op, sel), vsPy, vsRaw)
				if sel.name != "p50" {
					continue
				}
				if pok && op != opDelete {
					verdicts = append(verdicts, fmt.Sprintf("%d worker(s) %s p50: python ÷ engine = %s (target ≥ %gx)", n, op, vsPy, targetVsPython))
				}
				if rok {
					verdicts = append(verdicts, fmt.Sprintf("%d worker(s) %s p50: engine ÷ raw = %s (target ≤ %gx)", n, op, vsRaw, targetVsRaw))
				}
			}
		}
	}
	return verdicts
}

// writeServerRatios prints the engine as the cacheserver runs it (hot
// values in memory, background checkpoints) against the library defaults
// and raw SQLite, when it ran: what a server's request pays in the engine.
func writeServerRatios(w io.Writer, results []Result, workers []int) {
	header := false
	for _, n := range workers {
		sv, ok := find(results, sysEngineServer, n)
		if !ok {
			continue
		}
		if !header {
			fmt.Fprint(w, "\n### The engine with the cacheserver's options\n\n")
			fmt.Fprintln(w, "| workers | op | pct | Go engine, server options | Go engine | raw SQLite | server options ÷ raw |")
			fmt.Fprintln(w, "|--:|---|---|--:|--:|--:|--:|")
			header = true
		}
		e, eok := find(results, sysEngine, n)
		r, rok := find(results, sysRaw, n)
		for _, op := range opNames {
			for _, sel := range pcts[:3] {
				cell := func(res Result, ok bool) string {
					if !ok {
						return "n/a"
					}
					return fmtNS(sel.get(res.Ops[op]))
				}
				ratio := "n/a"
				if v, d := sel.get(sv.Ops[op]), sel.get(r.Ops[op]); rok && v > 0 && d > 0 {
					ratio = fmt.Sprintf("%.2fx", float64(v)/float64(d))
				}
				fmt.Fprintf(w, "| %d | %s | %s | %s | %s | %s | %s |\n", n, op, sel.name, cell(sv, true), cell(e, eok), cell(r, rok), ratio)
			}
		}
	}
}
