package main

import (
	"strings"
	"testing"
	"time"

	"github.com/diskcache-operator/diskcache-operator/hack/bench/internal/servers"
	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
)

// The benchmark's numbers are only worth printing if each move moved what
// it meant to and every request succeeded: a small cell of each part on a
// real pair, then the ways a cell must fail.
func TestCellsCheckWhatTheyMeasure(t *testing.T) {
	clock, err := servers.NewCPUClock()
	if err != nil {
		t.Fatal(err)
	}
	rate := rateSpec{Name: "default"}
	b := &bench{cfg: config{duration: 200 * time.Millisecond, keys: 50, size: 10, conns: 2},
		bin: testserver.Binary(t), work: t.TempDir(), clock: clock}
	pairFor := func(t *testing.T) *pair {
		p, err := b.newPair(rate)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.stop)
		return p
	}

	t.Run("transfer", func(t *testing.T) {
		// 40 KiB: above disk_min_file_size, so value files move too.
		for _, f := range []fillSpec{{size: 10, count: 60}, {size: 40 << 10, count: 6}} {
			c, err := b.runTransfer(pairFor(t), rate, f.count, f.size)
			if err != nil {
				t.Fatal(err)
			}
			if c.ItemsMoved == 0 || c.Seconds <= 0 || c.MiBPerSec <= 0 {
				t.Errorf("%d × %d B: %+v", f.count, f.size, c)
			}
		}
	})
	t.Run("transfer with an owner the servers disagree with", func(t *testing.T) {
		p := pairFor(t)
		owner := p.owner
		p.owner = func(k string, n int) int { return 1 - owner(k, n) }
		_, err := b.runTransfer(p, rate, 60, 10)
		if err == nil || !strings.Contains(err.Error(), "moved") {
			t.Fatalf("got %v, want an error about what shard A moved", err)
		}
	})
	t.Run("traffic", func(t *testing.T) {
		p := pairFor(t)
		if err := b.runTraffic(p, rate, 40, 40<<10); err != nil {
			t.Fatal(err)
		}
		if len(b.traffic) != 6 || len(b.moves) != 1 {
			t.Fatalf("%d traffic cells, %d moves; want 6 and 1", len(b.traffic), len(b.moves))
		}
		for _, c := range b.traffic {
			if c.Requests == 0 {
				t.Errorf("%s %s: no requests", c.Phase, c.Op)
			}
		}
		if m := b.moves[0]; m.ItemsMoved == 0 || m.Window > m.Seconds {
			t.Errorf("move under traffic: %+v; the window must end no later than the move", m)
		}
	})
	t.Run("traffic with a shard down", func(t *testing.T) {
		p := pairFor(t)
		p.shards[1].Stop()
		err := b.runTraffic(p, rate, 4, 10)
		if err == nil || !strings.Contains(err.Error(), "shard 1") {
			t.Fatalf("got %v, want an error naming shard 1", err)
		}
	})
}
