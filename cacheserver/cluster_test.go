package cacheserver

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestStartTopologyIsTheNewest(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(t.TempDir(), "topology.json")
	cfg := DefaultConfig()
	cfg.DataDir, cfg.ShardIndex, cfg.Peers, cfg.TopologyFile = dir, 0, "http://a:1,http://b:1", file

	c, err := newCluster(cfg)
	if err != nil || c.current().Epoch != 1 || len(c.current().Shards) != 2 {
		t.Fatalf("flags only: %v %+v", err, c.current())
	}
	// The mounted file is newer than the flags: it wins and is persisted.
	if err := os.WriteFile(file, []byte(`{"epoch": 3, "shards": ["http://a:1", "http://b:1", "http://c:1"], "previous": null}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if c, err = newCluster(cfg); err != nil || c.current().Epoch != 3 || len(c.current().Shards) != 3 {
		t.Fatalf("with a newer file: %v %+v", err, c.current())
	}
	// Without the file, the persisted copy (epoch 3) still beats --epoch 1.
	os.Remove(file)
	if c, err = newCluster(cfg); err != nil || c.current().Epoch != 3 {
		t.Fatalf("persisted copy: %v %+v", err, c.current())
	}
	// The persisted copy and the configuration at the same epoch with
	// different layouts (a DiskCache created again on a kept volume starts
	// its epochs anew): the data here was placed by the persisted one.
	cfg.Epoch = 3
	if c, err = newCluster(cfg); err != nil || len(c.current().Shards) != 3 || !strings.Contains(c.startNote, "keeping the persisted one") {
		t.Fatalf("the persisted copy against --peers at one epoch: %v %+v %q", err, c, c.startNote)
	}
	// Two different layouts at the same epoch in the configuration itself:
	// refuse to start.
	fresh := cfg
	fresh.DataDir = t.TempDir()
	if err := os.WriteFile(file, []byte(`{"epoch": 3, "shards": ["http://a:1", "http://b:1", "http://c:1"], "previous": null}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err = newCluster(fresh); err == nil || !strings.Contains(err.Error(), "both have epoch 3") {
		t.Fatalf("conflicting layouts at one epoch: %v", err)
	}
	os.Remove(file)
	// Invalid input is a clear error, not a guess.
	if err := os.WriteFile(file, []byte(`{"epoch": 9, "shards": ["ftp://x"]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Epoch = 1
	if _, err = newCluster(cfg); err == nil || !strings.Contains(err.Error(), "not an http(s) base URL") {
		t.Fatalf("bad file: %v", err)
	}
}
