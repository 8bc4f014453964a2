package main

import (
	"fmt"
	"io"
	"strings"
)

// printReport writes one markdown table per part.
func printReport(w io.Writer, rep *report) {
	find := func(part int, system string, shards int, to, op string, conns int) *cell {
		for i := range rep.Cells {
			c := &rep.Cells[i]
			if c.System == system && c.Shards == shards && c.SentTo == to && c.Op == op && c.Conns == conns &&
				(system == "redis" || c.Part == part) {
				return c
			}
		}
		return nil
	}
	args := "default flags"
	if len(rep.Cacheserver) > 0 {
		args = strings.Join(rep.Cacheserver, " ")
	}
	size := rep.Cells[0].Size
	fmt.Fprintf(w, "\n%s · %s, nproc %d · load average %s at the start, %s at the end (1, 5, 15 min)\n",
		rep.Date, rep.CPU, rep.NumCPU, rep.LoadBefore, rep.LoadAfter)
	fmt.Fprintf(w, "cacheserver shards on loopback (%s, no auth), %d B values, %d keys, %s per cell; reference: %s (%s), redis-benchmark -P 1\n",
		args, size, rep.Keys, rep.Duration, rep.Redis, rep.Durability)
	ref := func(op string, conns int) string {
		r := find(3, "redis", 0, "", op, conns)
		return fmt.Sprintf("| %s | %d | redis-server (reference) | %.0f | %.3f | %.3f | %.1f | | |", strings.ToUpper(op), conns, r.RPS, r.P50, r.P99, r.CPUPerOp)
	}

	fmt.Fprintf(w, "\n1. Forwarded vs direct, 3 shards\n\n")
	fmt.Fprintf(w, "| op | conns | sent to | ops/s | p50 ms | p99 ms | server CPU µs/op | added p50 ms | added CPU µs/op |\n")
	fmt.Fprintf(w, "|---|---:|---|---:|---:|---:|---:|---:|---:|\n")
	for _, op := range []string{"get", "set"} {
		for _, conns := range []int{1, 16} {
			d, f := find(1, "cacheserver", 3, toOwner, op, conns), find(1, "cacheserver", 3, toNonOwner, op, conns)
			fmt.Fprintf(w, "| %s | %d | the owner (direct) | %.0f | %.3f | %.3f | %.1f | | |\n",
				strings.ToUpper(op), conns, d.RPS, d.P50, d.P99, d.CPUPerOp)
			fmt.Fprintf(w, "| %s | %d | a non-owner (forwarded) | %.0f | %.3f | %.3f | %.1f | %+.3f | %+.1f |\n",
				strings.ToUpper(op), conns, f.RPS, f.P50, f.P99, f.CPUPerOp, f.P50-d.P50, f.CPUPerOp-d.CPUPerOp)
			fmt.Fprintln(w, ref(op, conns))
		}
	}

	fmt.Fprintf(w, "\n2. One URL vs smart client, 64 conns\n\n")
	fmt.Fprintf(w, "| op | shards | one URL ops/s | p50 ms | p99 ms | server CPU µs/op | smart client ops/s | p50 ms | p99 ms | server CPU µs/op | smart / one URL |\n")
	fmt.Fprintf(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, op := range []string{"get", "set"} {
		for _, n := range []int{1, 2, 3} {
			u, s := find(2, "cacheserver", n, toShard0, op, 64), find(2, "cacheserver", n, toOwner, op, 64)
			fmt.Fprintf(w, "| %s | %d | %.0f | %.3f | %.3f | %.1f | %.0f | %.3f | %.3f | %.1f | %.2f |\n", strings.ToUpper(op), n,
				u.RPS, u.P50, u.P99, u.CPUPerOp, s.RPS, s.P50, s.P99, s.CPUPerOp, s.RPS/u.RPS)
		}
		r := find(3, "redis", 0, "", op, 64)
		fmt.Fprintf(w, "| %s | redis-server (reference) | %.0f | %.3f | %.3f | %.1f | | | | | |\n", strings.ToUpper(op), r.RPS, r.P50, r.P99, r.CPUPerOp)
	}

	fmt.Fprintf(w, "\n3. Reference: %s (%s), redis-benchmark -P 1\n\n", rep.Redis, rep.Durability)
	fmt.Fprintf(w, "| op | conns | ops/s | p50 ms | p99 ms | server CPU µs/op |\n")
	fmt.Fprintf(w, "|---|---:|---:|---:|---:|---:|\n")
	for _, op := range []string{"get", "set"} {
		for _, conns := range []int{1, 16, 64} {
			r := find(3, "redis", 0, "", op, conns)
			fmt.Fprintf(w, "| %s | %d | %.0f | %.3f | %.3f | %.1f |\n", strings.ToUpper(op), conns, r.RPS, r.P50, r.P99, r.CPUPerOp)
		}
	}
}
