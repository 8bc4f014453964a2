package main

import (
	"fmt"
	"io"
	"strings"
)

// printReport writes one markdown table per part.
func printReport(w io.Writer, rep *report) {
	args := "default flags"
	if len(rep.Cacheserver) > 0 {
		args = strings.Join(rep.Cacheserver, " ")
	}
	fmt.Fprintf(w, "\n%s · %s, nproc %d · load average %s at the start, %s at the end (1, 5, 15 min)\n",
		rep.Date, rep.CPU, rep.NumCPU, rep.LoadBefore, rep.LoadAfter)
	fmt.Fprintf(w, "a pair of cacheserver shards on loopback (%s, no auth), moving 1 → 2 shards\n", args)

	if len(rep.Transfer) > 0 {
		fmt.Fprintf(w, "\n1. Moving data from A to B (the keys B owns under 2 shards, about half)\n\n")
		fmt.Fprintf(w, "| --rebalance-rate | value size | items on A | items moved | MiB moved | seconds | items/s | MiB/s | server CPU s | CPU µs/item |\n")
		fmt.Fprintf(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, c := range rep.Transfer {
			fmt.Fprintf(w, "| %s | %s | %d | %d | %.1f | %.2f | %.0f | %.1f | %.1f | %.0f |\n", c.Rate, bytesName(c.ValueBytes),
				c.Items, c.ItemsMoved, float64(c.BytesMoved)/(1<<20), c.Seconds, c.ItemsPerSec, c.MiBPerSec, c.CPUSeconds,
				c.CPUSeconds*1e6/float64(c.ItemsMoved))
		}
	}

	if len(rep.Traffic) > 0 {
		fmt.Fprintf(w, "\n2. Traffic before, during and after a move: GET and SET at once, %d conns each, %s values, %d keys, each request to the key's owner; windows of %s\n\n",
			rep.Conns, bytesName(rep.Size), rep.Keys, rep.Duration)
		fmt.Fprintf(w, "| --rebalance-rate | op | before (1 shard) ops/s | p50 ms | p99 ms | during (1 → 2) ops/s | p50 ms | p99 ms | after (2 shards) ops/s | p50 ms | p99 ms | during / before |\n")
		fmt.Fprintf(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		find := func(rate, phase, op string) trafficCell {
			for _, c := range rep.Traffic {
				if c.Rate == rate && c.Phase == phase && c.Op == op {
					return c
				}
			}
			return trafficCell{}
		}
		for _, m := range rep.Moves {
			for _, op := range []string{"get", "set"} {
				b, d, a := find(m.Rate, phaseBefore, op), find(m.Rate, phaseDuring, op), find(m.Rate, phaseAfter, op)
				fmt.Fprintf(w, "| %s | %s | %.0f | %.3f | %.3f | %.0f | %.3f | %.3f | %.0f | %.3f | %.3f | %.2f |\n", m.Rate, strings.ToUpper(op),
					b.RPS, b.P50, b.P99, d.RPS, d.P50, d.P99, a.RPS, a.P50, a.P99, d.RPS/b.RPS)
			}
		}
		fmt.Fprintf(w, "\nThe moves under that traffic:\n\n")
		fmt.Fprintf(w, "| --rebalance-rate | bulk on A | items moved | MiB moved | seconds | MiB/s | traffic window inside the move, s |\n")
		fmt.Fprintf(w, "|---|---|---:|---:|---:|---:|---:|\n")
		for _, m := range rep.Moves {
			fmt.Fprintf(w, "| %s | %d × %s | %d | %.1f | %.2f | %.1f | %.2f |\n", m.Rate, m.BulkItems, bytesName(m.BulkSize),
				m.ItemsMoved, float64(m.BytesMoved)/(1<<20), m.Seconds, m.MiBPerSec, m.Window)
		}
	}
}

func bytesName(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}
