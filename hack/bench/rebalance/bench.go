package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/diskcache-operator/diskcache-operator/hack/bench/internal/loadgen"
	"github.com/diskcache-operator/diskcache-operator/hack/bench/internal/servers"
)

// bench runs the cells and keeps their results.
type bench struct {
	cfg      config
	bin      string
	work     string
	clock    *servers.CPUClock
	transfer []transferCell
	traffic  []trafficCell
	moves    []moveCell
	pairs    int
}

// newPair starts a fresh pair for one cell, with the rate's flags.
func (b *bench) newPair(r rateSpec) (*pair, error) {
	b.pairs++
	dir := filepath.Join(b.work, fmt.Sprintf("pair-%d", b.pairs))
	p, err := startPair(b.bin, dir, append(append([]string(nil), b.cfg.cacheArgs...), r.Args...))
	if err != nil {
		return nil, err
	}
	return p, nil
}

// stopPair stops p and removes its data (the next pair starts clean).
func (b *bench) stopPair(p *pair) {
	p.stop()
	if !b.cfg.keep {
		_ = os.RemoveAll(filepath.Join(b.work, fmt.Sprintf("pair-%d", b.pairs)))
	}
}

// transferCell is one move 1 → 2 of items of one size.
type transferCell struct {
	Rate        string  `json:"rebalance_rate"`
	ValueBytes  int     `json:"value_bytes"`
	Items       int     `json:"items_on_a"`
	ItemsMoved  int64   `json:"items_moved"`
	BytesMoved  int64   `json:"value_bytes_moved"`
	Seconds     float64 `json:"seconds"`
	ItemsPerSec float64 `json:"items_per_second"`
	MiBPerSec   float64 `json:"mib_per_second"`
	CPUSeconds  float64 `json:"server_cpu_seconds"` // both shards, from the announcement to the end
}

// runTransfer fills A with count items of size bytes, announces 1 → 2 and
// times the move until both shards report rebalancing=false. It fails
// unless A moved exactly the keys B owns under 2 shards, with their bytes.
func (b *bench) runTransfer(p *pair, r rateSpec, count, size int) (transferCell, error) {
	ctx := context.Background()
	cell := transferCell{Rate: r.Name, ValueBytes: size, Items: count}
	keys, err := p.fill(fmt.Sprintf("t%d", size), count, size)
	if err != nil {
		return cell, err
	}
	var wantItems, wantBytes int64
	for _, k := range keys {
		if p.owner(k, 2) == 1 {
			wantItems, wantBytes = wantItems+1, wantBytes+int64(size)
		}
	}
	cpuBefore, err := b.clock.Used(p.pids()...)
	if err != nil {
		return cell, err
	}
	start := time.Now()
	if err := p.announceGrow(ctx); err != nil {
		return cell, err
	}
	if err := p.waitMoved(ctx, nil); err != nil {
		return cell, err
	}
	elapsed := time.Since(start)
	cpuAfter, err := b.clock.Used(p.pids()...)
	if err != nil {
		return cell, err
	}
	if cell.ItemsMoved, cell.BytesMoved, err = p.progress(ctx, 0); err != nil {
		return cell, err
	}
	name := fmt.Sprintf("%d × %d B, rate %s", count, size, r.Name)
	// The numbers mean something only if the move was the one meant: every
	// key B owns under 2 shards, and nothing else.
	if cell.ItemsMoved != wantItems || cell.BytesMoved != wantBytes {
		return cell, fmt.Errorf("%s: shard A moved %d items (%d bytes); B owns %d of the keys (%d bytes)",
			name, cell.ItemsMoved, cell.BytesMoved, wantItems, wantBytes)
	}
	if err := p.end(ctx); err != nil {
		return cell, err
	}
	if err := p.ready(); err != nil {
		return cell, fmt.Errorf("%s: %w", name, err)
	}
	cell.Seconds = elapsed.Seconds()
	cell.ItemsPerSec = float64(cell.ItemsMoved) / cell.Seconds
	cell.MiBPerSec = float64(cell.BytesMoved) / (1 << 20) / cell.Seconds
	cell.CPUSeconds = (cpuAfter - cpuBefore).Seconds()
	fmt.Fprintf(os.Stderr, "  move %-34s %6d items in %6.2f s: %8.0f items/s %7.1f MiB/s  %.1f s CPU\n",
		name, cell.ItemsMoved, cell.Seconds, cell.ItemsPerSec, cell.MiBPerSec, cell.CPUSeconds)
	return cell, nil
}

// trafficCell is the GET or SET traffic of one phase.
type trafficCell struct {
	Rate     string  `json:"rebalance_rate"`
	Phase    string  `json:"phase"` // before, during, after
	Op       string  `json:"op"`
	Conns    int     `json:"conns"`
	Size     int     `json:"value_bytes"`
	Requests int64   `json:"requests"`
	Seconds  float64 `json:"seconds"`
	RPS      float64 `json:"ops_per_second"`
	P50      float64 `json:"p50_ms"`
	P99      float64 `json:"p99_ms"`
}

// moveCell is the move that ran under the traffic of one rate.
type moveCell struct {
	Rate       string  `json:"rebalance_rate"`
	BulkItems  int     `json:"bulk_items"`
	BulkSize   int     `json:"bulk_value_bytes"`
	ItemsMoved int64   `json:"items_moved"`
	BytesMoved int64   `json:"value_bytes_moved"`
	Seconds    float64 `json:"seconds"`
	MiBPerSec  float64 `json:"mib_per_second"`
	Window     float64 `json:"during_window_seconds"` // the "during" cells ran this long, all of it inside the move
}

const (
	phaseBefore = "before" // 1 shard, no move
	phaseDuring = "during" // 1 → 2 under way
	phaseAfter  = "after"  // 2 shards, the move ended
)

// runTraffic measures GET and SET traffic (at once, on conns connections
// each) before, during and after a move 1 → 2 that has bulk items of
// bulkSize bytes to hand off besides the traffic's own keys.
func (b *bench) runTraffic(p *pair, r rateSpec, bulk, bulkSize int) error {
	ctx := context.Background()
	cfg := b.cfg
	if err := loadgen.Preload(cfg.keys, cfg.size, func(int) string { return p.addrs[0] }); err != nil {
		return err
	}
	if _, err := p.fill("bulk", bulk, bulkSize); err != nil {
		return err
	}
	owners1 := make([]int, cfg.keys) // every key on A
	owners2 := make([]int, cfg.keys)
	for i := range owners2 {
		owners2[i] = p.owner(loadgen.Key(i), 2)
	}
	if _, err := b.phase(p, r, phaseBefore, owners1, nil); err != nil {
		return err
	}

	start := time.Now()
	if err := p.announceGrow(ctx); err != nil {
		return err
	}
	moved := make(chan struct{})
	waitErr := make(chan error, 1)
	go func() { waitErr <- p.waitMoved(ctx, moved) }()
	window, err := b.phase(p, r, phaseDuring, owners2, moved)
	if err != nil {
		<-waitErr
		return err
	}
	if err := <-waitErr; err != nil {
		return err
	}
	elapsed := time.Since(start)
	mc := moveCell{Rate: r.Name, BulkItems: bulk, BulkSize: bulkSize, Seconds: elapsed.Seconds(), Window: window}
	if mc.ItemsMoved, mc.BytesMoved, err = p.progress(ctx, 0); err != nil {
		return err
	}
	mc.MiBPerSec = float64(mc.BytesMoved) / (1 << 20) / mc.Seconds
	b.moves = append(b.moves, mc)
	fmt.Fprintf(os.Stderr, "  move under traffic, rate %s: %d items, %.1f MiB in %.2f s (%.1f MiB/s); the traffic ran %.2f s of it\n",
		r.Name, mc.ItemsMoved, float64(mc.BytesMoved)/(1<<20), mc.Seconds, mc.MiBPerSec, mc.Window)

	if err := p.end(ctx); err != nil {
		return err
	}
	if _, err := b.phase(p, r, phaseAfter, owners2, nil); err != nil {
		return err
	}
	// Every key of the traffic was written with cfg.size bytes and never
	// deleted: each must be at its owner now.
	return checkKeys(p, owners2, cfg.size)
}

// phase runs GET and SET workers at once for cfg.duration, or until stop
// is closed, each request to the key's shard in owners. It returns how
// long the workers ran (seconds).
func (b *bench) phase(p *pair, r rateSpec, phase string, owners []int, stop <-chan struct{}) (float64, error) {
	cfg := b.cfg
	var wg sync.WaitGroup
	results := make([]trafficCell, 2)
	errs := make([]error, 2)
	for i, op := range []string{"get", "set"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := loadgen.RunUntil(cfg.conns, cfg.duration, stop, trafficWorker(p, op, owners, cfg.size, i))
			if err == nil && st.Errors > 0 {
				err = fmt.Errorf("%s %s: %d of %d requests failed; first: %v", phase, op, st.Errors, st.Requests, st.FirstError)
			}
			errs[i] = err
			results[i] = trafficCell{Rate: r.Name, Phase: phase, Op: op, Conns: cfg.conns, Size: cfg.size,
				Requests: st.Requests, Seconds: st.Elapsed.Seconds(), RPS: st.PerSecond(), P50: st.P50, P99: st.P99}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return 0, fmt.Errorf("rate %s: %w", r.Name, err)
		}
	}
	if err := p.ready(); err != nil {
		return 0, fmt.Errorf("rate %s, %s: %w", r.Name, phase, err)
	}
	ran := max(results[0].Seconds, results[1].Seconds)
	for _, c := range results {
		b.traffic = append(b.traffic, c)
		fmt.Fprintf(os.Stderr, "  traffic %-6s rate %-8s %s %3d conns %8.0f ops/s  p50 %.3f ms  p99 %.3f ms  (%.2f s)\n",
			phase, r.Name, c.Op, c.Conns, c.RPS, c.P50, c.P99, c.Seconds)
	}
	return ran, nil
}

// trafficWorker is a loadgen setup: worker w sends op requests for random
// keys to the shard owners names, with one connection to each shard.
func trafficWorker(p *pair, op string, owners []int, size, seed int) func(w int) (loadgen.Request, func(), error) {
	value := loadgen.Value(size)
	return func(w int) (loadgen.Request, func(), error) {
		var conns [2]*loadgen.Conn
		closeAll := func() {
			for _, c := range conns {
				if c != nil {
					c.Close()
				}
			}
		}
		for i := range conns {
			var err error
			if conns[i], err = loadgen.Dial(p.addrs[i]); err != nil {
				closeAll()
				return nil, nil, fmt.Errorf("shard %d: %w", i, err)
			}
		}
		rng := rand.New(rand.NewPCG(uint64(w), uint64(seed)))
		return func() error {
			k := rng.IntN(len(owners))
			shard := owners[k]
			if op == "set" {
				status, _, err := conns[shard].Do("PUT", loadgen.KeyPath(k), value)
				if err == nil && status != 204 {
					err = fmt.Errorf("PUT to shard %d answered %d", shard, status)
				}
				return err
			}
			status, got, err := conns[shard].Do("GET", loadgen.KeyPath(k), nil)
			if err == nil && (status != 200 || got != len(value)) {
				err = fmt.Errorf("GET %s from shard %d answered %d with %d bytes", loadgen.Key(k), shard, status, got)
			}
			return err
		}, closeAll, nil
	}
}

// checkKeys reads every key of the traffic at its owner.
func checkKeys(p *pair, owners []int, size int) error {
	var conns [2]*loadgen.Conn
	for i := range conns {
		c, err := loadgen.Dial(p.addrs[i])
		if err != nil {
			return err
		}
		defer c.Close()
		conns[i] = c
	}
	for k, o := range owners {
		status, got, err := conns[o].Do("GET", loadgen.KeyPath(k), nil)
		if err != nil || status != 200 || got != size {
			return fmt.Errorf("after the move, GET %s from its owner, shard %d: status %d, %d bytes, %v", loadgen.Key(k), o, status, got, err)
		}
	}
	return nil
}
