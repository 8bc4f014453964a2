package cacheserver

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/topology"
)

// persistedTopology is the file in the data directory that keeps the last
// topology a server followed, so a restarted shard routes by it at once.
const persistedTopology = "topology.json"

// errTopologyConflict refuses an announcement older than, or different at
// the same epoch from, the one in force.
var errTopologyConflict = errors.New("topology conflict")

// cluster is a shard's view of the cache's shards: the announcement in
// force (nil until one is known) and where it came from.
type cluster struct {
	self     int    // -1: standalone, routes nothing
	persist  string // path of the persisted copy
	fileName string // mounted topology file, "" for none
	// startNote says why the topology in force at start is not the
	// newest found (logged by the server).
	startNote string

	cur atomic.Pointer[topology.Announcement]

	mu        sync.Mutex // serialises adopt
	fileMtime time.Time
	// unrouted is true while the server has never had a topology (no
	// persisted copy at start): the first one makes it discard what it
	// does not own.
	unrouted bool

	// beforeAdopt runs (under mu) before a newer announcement is saved and
	// put in force; an error refuses it. afterAdopt runs after. status
	// fills rebalancing and progress in view.
	beforeAdopt func(old *topology.Announcement, a topology.Announcement) error
	afterAdopt  func(a *topology.Announcement)
	status      func(a *topology.Announcement) (bool, topology.Progress)

	// inflight counts requests by the epoch in force when they started, so
	// a move starts only once requests routed by an older epoch ended.
	flMu     sync.Mutex
	flCond   *sync.Cond
	inflight map[int64]int
}

// newCluster loads the topology in force at start: the highest epoch among
// the flags, the mounted file and the persisted copy. Two different
// layouts with the same epoch are an error: the server cannot tell which
// one the operator meant.
func newCluster(cfg Config) (*cluster, error) { return newClusterChecked(cfg, nil) }

// newClusterChecked is newCluster where, when the flags or the mounted
// file are newer than the persisted copy, check sees both before the newer
// one is saved (as beforeAdopt does for an announcement).
func newClusterChecked(cfg Config, check func(old *topology.Announcement, a topology.Announcement) error) (*cluster, error) {
	c := &cluster{self: cfg.ShardIndex, persist: filepath.Join(cfg.DataDir, persistedTopology), fileName: cfg.TopologyFile, inflight: map[int64]int{}}
	c.flCond = sync.NewCond(&c.flMu)
	if c.self < 0 {
		return c, nil
	}
	type source struct {
		name string
		a    topology.Announcement
	}
	var found []source
	var persisted *topology.Announcement
	if _, err := os.Stat(c.persist); errors.Is(err, os.ErrNotExist) {
		c.unrouted = true
	}
	if cfg.Peers != "" {
		a := topology.Announcement{Layout: topology.Layout{Epoch: cfg.Epoch, Shards: splitPeers(cfg.Peers)}}
		found = append(found, source{"--peers", a})
	}
	for _, f := range []struct{ name, path string }{{"--topology-file", c.fileName}, {"persisted copy", c.persist}} {
		if f.path == "" {
			continue
		}
		a, mtime, err := readAnnouncement(f.path)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("topology: %s: %w", f.name, err)
		}
		if f.path == c.fileName {
			c.fileMtime = mtime
		}
		found = append(found, source{f.name + " " + f.path, a})
		if f.path == c.persist {
			p := a
			persisted = &p
		}
	}
	var best *source
	for i := range found {
		s := &found[i]
		if err := s.a.Validate(); err != nil {
			return nil, fmt.Errorf("topology: %s: %w", s.name, err)
		}
		switch {
		case best == nil || s.a.Epoch > best.a.Epoch:
			best = s
		case s.a.Epoch == best.a.Epoch && !s.a.Layout.Equal(best.a.Layout):
			if s.name != "persisted copy "+c.persist {
				return nil, fmt.Errorf("topology: %s and %s both have epoch %d but different shards (%v, %v)",
					best.name, s.name, s.a.Epoch, best.a.Shards, s.a.Shards)
			}
			// The volume is older than the topology mounted with it: a
			// DiskCache deleted with its claims kept and created again
			// starts its epochs anew. The keys here were placed by the
			// persisted layout: route by it until the operator, which
			// reads it from this shard, announces how to go on.
			c.startNote = fmt.Sprintf("%s and %s both have epoch %d but different shards (%v, %v): keeping the persisted one, by which the data here was placed",
				best.name, s.name, s.a.Epoch, best.a.Shards, s.a.Shards)
			best = s
		}
	}
	if best != nil {
		a := best.a
		if persisted != nil && persisted.Epoch < a.Epoch && check != nil {
			if err := check(persisted, a); err != nil {
				return nil, err
			}
		}
		c.cur.Store(&a)
		if err := c.save(&a); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func splitPeers(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimRight(strings.TrimSpace(p), "/"); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func readAnnouncement(path string) (topology.Announcement, time.Time, error) {
	var a topology.Announcement
	st, err := os.Stat(path)
	if err != nil {
		return a, time.Time{}, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return a, time.Time{}, err
	}
	if len(strings.TrimSpace(string(b))) == 0 {
		return a, time.Time{}, os.ErrNotExist // a ConfigMap key not written yet
	}
	if err := json.Unmarshal(b, &a); err != nil {
		return a, time.Time{}, fmt.Errorf("not a topology document: %w", err)
	}
	return a, st.ModTime(), nil
}

// firstRouted reports, once, whether the topology in force is the first
// this server ever had.
func (c *cluster) firstRouted() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.unrouted || c.cur.Load() == nil {
		return false
	}
	c.unrouted = false
	return true
}

// sharded reports whether the server takes part in a topology.
func (c *cluster) sharded() bool { return c.self >= 0 }

// current returns the announcement in force, nil before the first one.
func (c *cluster) current() *topology.Announcement { return c.cur.Load() }

// adopt makes a the announcement in force if it is newer. The same
// announcement again is accepted without change; an older epoch, or the
// same epoch with another layout, is errTopologyConflict.
func (c *cluster) adopt(a topology.Announcement) (changed bool, err error) {
	if err := a.Validate(); err != nil {
		return false, badRequest(wire.CodeBadTopology, "%v", err)
	}
	for i, u := range a.Shards {
		a.Shards[i] = strings.TrimRight(u, "/")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur := c.cur.Load(); cur != nil {
		if a.Epoch < cur.Epoch || (a.Epoch == cur.Epoch && !a.Equal(*cur)) {
			return false, errTopologyConflict
		}
		if a.Equal(*cur) {
			return false, nil
		}
	}
	if c.beforeAdopt != nil {
		if err := c.beforeAdopt(c.cur.Load(), a); err != nil {
			return false, err
		}
	}
	if err := c.save(&a); err != nil {
		return false, err
	}
	c.cur.Store(&a)
	if c.afterAdopt != nil {
		c.afterAdopt(&a)
	}
	return true, nil
}

// enter counts a request under the epoch in force; call the returned
// function when it ends.
func (c *cluster) enter() func() {
	c.flMu.Lock()
	var e int64
	if a := c.cur.Load(); a != nil {
		e = a.Epoch
	}
	c.inflight[e]++
	c.flMu.Unlock()
	return func() {
		c.flMu.Lock()
		if c.inflight[e]--; c.inflight[e] <= 0 {
			delete(c.inflight, e)
		}
		c.flCond.Broadcast()
		c.flMu.Unlock()
	}
}

// drainOlder waits until no request that started under an epoch older than
// epoch is still running: such a request may write a key by the layout
// that epoch replaced.
func (c *cluster) drainOlder(epoch int64) {
	c.flMu.Lock()
	defer c.flMu.Unlock()
	for {
		older := false
		for e := range c.inflight {
			if e < epoch {
				older = true
			}
		}
		if !older {
			return
		}
		c.flCond.Wait()
	}
}

// save writes the persisted copy atomically (temporary file, rename).
func (c *cluster) save(a *topology.Announcement) error {
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	tmp := c.persist + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("topology: persist: %w", err)
	}
	if err := os.Rename(tmp, c.persist); err != nil {
		return fmt.Errorf("topology: persist: %w", err)
	}
	return nil
}

// reloadFile adopts the mounted topology file when it changed and is newer.
// The kubelet replaces the file some time after the operator updates the
// ConfigMap; the operator's PUT usually got there first.
func (c *cluster) reloadFile() (bool, error) {
	if c.fileName == "" {
		return false, nil
	}
	st, err := os.Stat(c.fileName)
	if err != nil || st.ModTime().Equal(c.fileMtime) {
		return false, nil
	}
	a, mtime, err := readAnnouncement(c.fileName)
	if err != nil {
		return false, nil
	}
	c.fileMtime = mtime
	if cur := c.current(); cur != nil && a.Epoch <= cur.Epoch {
		return false, nil
	}
	return c.adopt(a)
}

// view is the topology document a server answers with.
func (c *cluster) view() topology.Topology {
	t := topology.Topology{Self: c.self}
	if a := c.current(); a != nil {
		t.Announcement = *a
		if c.status != nil {
			t.Rebalancing, t.Progress = c.status(a)
		}
	}
	return t
}

// owner returns the shard that owns routing bytes under the topology in
// force, and that topology; owner is -1 when there is none.
func (c *cluster) owner(routing []byte) (int, *topology.Announcement) {
	a := c.current()
	if a == nil {
		return -1, nil
	}
	return topology.Owner(routing, len(a.Shards)), a
}
