package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/diskcache-operator/diskcache-operator/hack/bench/internal/loadgen"
	"github.com/diskcache-operator/diskcache-operator/hack/bench/internal/servers"
	"github.com/diskcache-operator/diskcache-operator/topology"
)

const adminToken = "bench-admin-token"

// pair is two cacheserver processes on loopback: shard A alone in the
// layout of epoch 1 (it owns every key), and shard B started with that
// same layout and index 1, so it owns nothing and forwards everything
// until the move 1 → 2 is announced, as a new pod of a grown StatefulSet.
type pair struct {
	shards [2]*servers.Cacheserver
	addrs  [2]string
	urls   [2]string
	layout topology.Layout
	// owner is the owner of a key under n shards: topology.Owner, the
	// servers' definition (a test swaps it to see a cell fail).
	owner func(key string, n int) int
	http  *http.Client
}

// startPair starts A and B in dir with the extra flags args.
func startPair(bin, dir string, args []string) (*pair, error) {
	p := &pair{owner: func(k string, n int) int { return topology.Owner([]byte(k), n) },
		http: &http.Client{Timeout: 30 * time.Second}}
	for i := range p.addrs {
		port, err := servers.FreePort()
		if err != nil {
			return nil, err
		}
		p.addrs[i] = "127.0.0.1:" + strconv.Itoa(port)
		p.urls[i] = "http://" + p.addrs[i]
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	adminFile := filepath.Join(dir, "admin-token")
	if err := os.WriteFile(adminFile, []byte(adminToken+"\n"), 0o600); err != nil {
		return nil, err
	}
	p.layout = topology.Layout{Epoch: 1, Shards: []string{p.urls[0]}}
	for i, addr := range p.addrs {
		// A size limit far above what the benchmark writes: culling must
		// not remove what the cells count.
		a := append([]string{"--data-dir", filepath.Join(dir, strconv.Itoa(i)), "--listen", addr,
			"--insecure-no-auth", "--log-format", "json", "--size-limit", strconv.Itoa(64 << 30),
			"--shard-index", strconv.Itoa(i), "--peers", p.urls[0], "--epoch", "1",
			"--admin-token-file", adminFile}, args...)
		s, err := servers.StartCacheserver(bin, a)
		if err != nil {
			p.stop()
			return nil, fmt.Errorf("shard %d: %w", i, err)
		}
		p.shards[i] = s
	}
	if err := p.ready(); err != nil {
		p.stop()
		return nil, err
	}
	return p, nil
}

func (p *pair) stop() {
	for _, s := range p.shards {
		if s != nil {
			s.Stop()
		}
	}
}

func (p *pair) pids() []int { return []int{p.shards[0].PID(), p.shards[1].PID()} }

// ready checks that both shards run and answer /readyz with 200.
func (p *pair) ready() error {
	for i, s := range p.shards {
		if s.Exited() {
			return fmt.Errorf("shard %d (%s) has exited", i, p.addrs[i])
		}
		resp, err := p.http.Get(p.urls[i] + "/readyz")
		if err != nil {
			return fmt.Errorf("shard %d (%s) does not answer: %w", i, p.addrs[i], err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("shard %d (%s): /readyz answered %s", i, p.addrs[i], resp.Status)
		}
	}
	return nil
}

// fill sets count keys prefix:0 … prefix:count-1 to values of size bytes
// through shard A (the owner of every key before the move), over 16
// connections. It returns the key names.
func (p *pair) fill(prefix string, count, size int) ([]string, error) {
	const conns = 16
	keys := make([]string, count)
	for i := range keys {
		keys[i] = prefix + ":" + strconv.Itoa(i)
	}
	value := loadgen.Value(size)
	errs := make(chan error, conns)
	var wg sync.WaitGroup
	for w := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := loadgen.Dial(p.addrs[0])
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			for i := w; i < count; i += conns {
				if status, _, err := c.Do("PUT", "/v1/keys/"+keys[i], value); err != nil || status != 204 {
					errs <- fmt.Errorf("fill: PUT %s: status %d, %v", keys[i], status, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return keys, <-errs
}

// put sends an announcement to shard i with the admin token.
func (p *pair) put(ctx context.Context, i int, a topology.Announcement) error {
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, p.urls[i]+"/v1/topology", bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.http.Do(req)
	if err != nil {
		return fmt.Errorf("PUT shard %d /v1/topology: %w", i, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("PUT shard %d /v1/topology: %s %s", i, resp.Status, body)
	}
	return nil
}

// announceGrow starts the move 1 → 2, as the operator does after the new
// pod is ready: the next epoch with both shards and the previous layout,
// to both shards.
func (p *pair) announceGrow(ctx context.Context) error {
	prev := p.layout
	p.layout = topology.Layout{Epoch: prev.Epoch + 1, Shards: p.urls[:]}
	a := topology.Announcement{Layout: p.layout, Previous: &prev}
	for i := range p.shards {
		if err := p.put(ctx, i, a); err != nil {
			return err
		}
	}
	return nil
}

// end ends the move: the next epoch, previous null.
func (p *pair) end(ctx context.Context) error {
	p.layout.Epoch++
	a := topology.Announcement{Layout: p.layout}
	for i := range p.shards {
		if err := p.put(ctx, i, a); err != nil {
			return err
		}
	}
	return nil
}

// topology is shard i's GET /v1/topology.
func (p *pair) topology(ctx context.Context, i int) (topology.Topology, error) {
	var t topology.Topology
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.urls[i]+"/v1/topology", nil)
	if err != nil {
		return t, err
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := p.http.Do(req)
	if err != nil {
		return t, fmt.Errorf("GET shard %d /v1/topology: %w", i, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return t, fmt.Errorf("GET shard %d /v1/topology: %s", i, resp.Status)
	}
	return t, json.NewDecoder(resp.Body).Decode(&t)
}

// moving reports whether either shard still rebalances at the current
// epoch (a shard on an older epoch has not started, so it counts too).
func (p *pair) moving(ctx context.Context) (bool, error) {
	for i := range p.shards {
		if p.shards[i].Exited() {
			return false, fmt.Errorf("shard %d (%s) has exited", i, p.addrs[i])
		}
		t, err := p.topology(ctx, i)
		if err != nil {
			return false, err
		}
		if t.Epoch != p.layout.Epoch || t.Rebalancing {
			return true, nil
		}
	}
	return false, nil
}

// pollEvery is how often the benchmark asks the shards whether the move
// has ended: the resolution of its durations.
const pollEvery = 10 * time.Millisecond

// waitMoved polls both shards until neither rebalances at the current
// epoch and closes done (when not nil) at that moment.
func (p *pair) waitMoved(ctx context.Context, done chan<- struct{}) error {
	if done != nil {
		defer close(done)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		busy, err := p.moving(ctx)
		if err != nil {
			return fmt.Errorf("waiting for the move to end: %w", err)
		}
		if !busy {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the move of epoch %d has not ended: %w", p.layout.Epoch, ctx.Err())
		case <-tick.C:
		}
	}
}

// progress is shard i's handoff progress: items and value bytes moved.
func (p *pair) progress(ctx context.Context, i int) (items, size int64, err error) {
	t, err := p.topology(ctx, i)
	if err != nil {
		return 0, 0, err
	}
	return t.Progress.ItemsMoved, t.Progress.BytesMoved, nil
}
