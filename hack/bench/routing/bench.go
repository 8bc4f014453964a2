package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"time"

	"github.com/diskcache-operator/diskcache-operator/hack/bench/internal/loadgen"
	"github.com/diskcache-operator/diskcache-operator/hack/bench/internal/servers"
)

// bench runs the cells and keeps their results.
type bench struct {
	cfg   config
	clock *servers.CPUClock
	redis *servers.Redis
	cells []cell
}

// cacheserver runs one cell on cluster c and keeps its result.
func (b *bench) cacheserver(part int, c *cluster, to, op string, conns int) error {
	r, err := b.measure(c, to, op, conns, b.cfg.duration)
	if err != nil {
		return err
	}
	r.Part = part
	b.cells = append(b.cells, r)
	fmt.Fprintf(os.Stderr, "  %-40s %8.0f ops/s  p50 %.3f ms  p99 %.3f ms  %5.1f µs CPU/op\n",
		fmt.Sprintf("%d shard(s), %s to %s, %d conns", r.Shards, op, to, conns), r.RPS, r.P50, r.P99, r.CPUPerOp)
	return nil
}

// warmUp sends GETs and SETs through shard 0 for a while, so that the first
// cell of a new cluster does not pay for its cold start (connection pools
// between the shards, the Go runtime's heap, SQLite's page cache).
func (b *bench) warmUp(c *cluster) error {
	d := min(b.cfg.duration, time.Second)
	for _, op := range []string{"get", "set"} {
		if _, err := b.measure(c, toShard0, op, 64, d); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}
	return nil
}

// measure runs conns workers on cluster c for d, each sending op requests
// for random keys, one at a time, to the shard `to` names. It fails if any
// request failed, a shard stopped answering, or the shards forwarded other
// requests than those sent to a shard that does not own the key.
func (b *bench) measure(c *cluster, to, op string, conns int, d time.Duration) (cell, error) {
	n := len(c.shards)
	if to == toNonOwner && n < 2 {
		return cell{}, fmt.Errorf("%s needs 2 shards or more", toNonOwner)
	}
	value := loadgen.Value(b.cfg.size)
	sentAway := make([]int64, conns) // per worker: requests sent to a shard that does not own the key
	setup := func(w int) (loadgen.Request, func(), error) {
		// One keep-alive connection per shard the worker talks to, as a
		// client's connection pool per shard.
		hcs := make([]*loadgen.Conn, n)
		closeAll := func() {
			for _, hc := range hcs {
				if hc != nil {
					hc.Close()
				}
			}
		}
		for i := range n {
			if to == toShard0 && i > 0 {
				break
			}
			var err error
			if hcs[i], err = loadgen.Dial(c.addrs[i]); err != nil {
				closeAll()
				return nil, nil, fmt.Errorf("shard %d: %w", i, err)
			}
		}
		rng := rand.New(rand.NewPCG(uint64(w), uint64(n)))
		return func() error {
			k := rng.IntN(b.cfg.keys)
			owner, shard := c.owners[k], c.owners[k]
			switch to {
			case toNonOwner:
				shard = (owner + 1 + rng.IntN(n-1)) % n
			case toShard0:
				shard = 0
			}
			if shard != owner {
				sentAway[w]++
			}
			if op == "set" {
				status, _, err := hcs[shard].Do("PUT", loadgen.KeyPath(k), value)
				if err == nil && status != 204 {
					err = fmt.Errorf("PUT to shard %d answered %d", shard, status)
				}
				return err
			}
			status, got, err := hcs[shard].Do("GET", loadgen.KeyPath(k), nil)
			if err == nil && (status != 200 || got != len(value)) {
				err = fmt.Errorf("GET from shard %d answered %d with %d bytes", shard, status, got)
			}
			return err
		}, closeAll, nil
	}

	fwdBefore, err := c.forwarded()
	if err != nil {
		return cell{}, err
	}
	cpuBefore, err := b.clock.Used(c.pids()...)
	if err != nil {
		return cell{}, err
	}
	st, err := loadgen.Run(conns, d, setup)
	if err != nil {
		return cell{}, err
	}
	cpuAfter, err := b.clock.Used(c.pids()...)
	if err != nil {
		return cell{}, err
	}
	name := fmt.Sprintf("%d shard(s), %s to %s, %d conns", n, op, to, conns)
	if st.Errors > 0 {
		return cell{}, fmt.Errorf("%s: %d of %d requests failed; first: %v", name, st.Errors, st.Requests, st.FirstError)
	}
	if err := c.ready(); err != nil {
		return cell{}, fmt.Errorf("%s: %w", name, err)
	}
	fwdAfter, err := c.forwarded()
	if err != nil {
		return cell{}, err
	}
	var want int64
	for _, s := range sentAway {
		want += s
	}
	// Every request sent away from its owner is forwarded once, and no
	// other: this also checks that the benchmark's idea of the owner is
	// the servers'.
	if got := fwdAfter - fwdBefore; got != want {
		return cell{}, fmt.Errorf("%s: the shards forwarded %d requests, %d were sent to a shard that does not own the key", name, got, want)
	}
	return cell{System: "cacheserver", Shards: n, SentTo: to, Op: op, Size: b.cfg.size, Conns: conns,
		Requests: st.Requests, Forwarded: want, Seconds: st.Elapsed.Seconds(), RPS: st.PerSecond(),
		P50: st.P50, P99: st.P99, CPUPerOp: perOp(cpuAfter-cpuBefore, st.Requests)}, nil
}

// redisCell runs op on redis-server with conns connections, the reference
// of the cacheserver cells with as many.
func (b *bench) redisCell(op string, conns int) error {
	n, err := b.redis.Calibrate(op, b.cfg.size, conns, b.cfg.keys, b.cfg.duration)
	if err != nil {
		return err
	}
	cpuBefore, err := b.clock.Used(b.redis.PID())
	if err != nil {
		return err
	}
	res, err := b.redis.Benchmark(op, b.cfg.size, conns, b.cfg.keys, n)
	if err != nil {
		return err
	}
	cpuAfter, err := b.clock.Used(b.redis.PID())
	if err != nil {
		return err
	}
	r := cell{Part: 3, System: "redis", Op: op, Size: b.cfg.size, Conns: conns, Requests: int64(res.Requests),
		Seconds: res.Elapsed.Seconds(), RPS: res.RPS, P50: res.P50, P99: res.P99,
		CPUPerOp: perOp(cpuAfter-cpuBefore, int64(res.Requests))}
	b.cells = append(b.cells, r)
	fmt.Fprintf(os.Stderr, "  %-40s %8.0f ops/s  p50 %.3f ms  p99 %.3f ms  %5.1f µs CPU/op\n",
		fmt.Sprintf("redis-server, %s, %d conns", op, conns), r.RPS, r.P50, r.P99, r.CPUPerOp)
	return nil
}

func perOp(cpu time.Duration, requests int64) float64 {
	return float64(cpu.Microseconds()) / float64(requests)
}
