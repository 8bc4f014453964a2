package main

import (
	"strings"
	"testing"
	"time"

	"github.com/diskcache-operator/diskcache-operator/hack/bench/internal/servers"
	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
)

// The benchmark's numbers are only worth printing if each cell sent its
// requests where it meant to and all of them succeeded: a short cell of
// each kind on a real 2-shard cluster, then the two ways it must fail.
func TestCellsCheckWhatTheyMeasure(t *testing.T) {
	bin := testserver.Binary(t)
	dir := t.TempDir()
	cfg := config{duration: 100 * time.Millisecond, keys: 50, size: 10}
	c, err := startCluster(bin, dir, 2, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.stop)
	if err := c.preload(cfg.keys, cfg.size); err != nil {
		t.Fatal(err)
	}
	clock, err := servers.NewCPUClock()
	if err != nil {
		t.Fatal(err)
	}
	b := &bench{cfg: cfg, clock: clock}
	for _, to := range []string{toOwner, toNonOwner, toShard0} {
		for _, op := range []string{"get", "set"} {
			if err := b.cacheserver(2, c, to, op, 2); err != nil {
				t.Fatalf("%s to %s: %v", op, to, err)
			}
		}
	}
	for _, r := range b.cells {
		if r.Requests == 0 || r.CPUPerOp < 0 {
			t.Errorf("%s to %s: %d requests, %.1f µs CPU per request", r.Op, r.SentTo, r.Requests, r.CPUPerOp)
		}
		switch r.SentTo {
		case toOwner:
			if r.Forwarded != 0 {
				t.Errorf("%s to the owner: %d forwarded", r.Op, r.Forwarded)
			}
		case toNonOwner:
			if r.Forwarded != r.Requests {
				t.Errorf("%s to a non-owner: %d of %d forwarded", r.Op, r.Forwarded, r.Requests)
			}
		}
	}

	t.Run("owner the servers disagree with", func(t *testing.T) {
		owners := c.owners
		defer func() { c.owners = owners }()
		c.owners = make([]int, len(owners))
		for i, o := range owners {
			c.owners[i] = 1 - o
		}
		err := b.cacheserver(1, c, toOwner, "get", 1)
		if err == nil || !strings.Contains(err.Error(), "forwarded") {
			t.Fatalf("got %v, want an error about forwarded requests", err)
		}
	})
	t.Run("shard down", func(t *testing.T) {
		c.shards[1].Stop()
		err := b.cacheserver(1, c, toNonOwner, "get", 1)
		if err == nil || !strings.Contains(err.Error(), "shard 1") {
			t.Fatalf("got %v, want an error naming shard 1", err)
		}
	})
}
