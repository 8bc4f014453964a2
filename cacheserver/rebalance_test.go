package cacheserver_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/diskcache-operator/diskcache-operator/client"
	"github.com/diskcache-operator/diskcache-operator/internal/loadcheck"
	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
	"github.com/diskcache-operator/diskcache-operator/kv"
	"github.com/diskcache-operator/diskcache-operator/topology"
)

// moveStore runs the load through every entry point in turn; a third of
// the keys carry file-sized values, a third a tag, a third an expiry (an
// hour: they stay live), so every kind of row moves.
type moveStore struct {
	mu       sync.Mutex
	clients  map[string]*client.Client
	urls     []string
	inFlight map[string]int // requests sent to each entry point, not yet answered
	answered *sync.Cond     // on mu: a request was answered
}

// pick chooses an entry point for one request; done ends the request.
func (m *moveStore) pick() (c *client.Cache, done func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	u := m.urls[rand.IntN(len(m.urls))]
	m.inFlight[u]++
	return m.clients[u].Cache(""), func() {
		m.mu.Lock()
		m.inFlight[u]--
		m.mu.Unlock()
		m.answered.Broadcast()
	}
}

// use sets the entry points (the shards clients may reach). It returns once
// no request is on its way to an entry point it drops, as a scale-in takes
// a pod out of the Service's endpoints before it stops it.
func (m *moveStore) use(t *testing.T, token string, urls ...string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.clients == nil {
		m.clients = map[string]*client.Client{}
		m.inFlight = map[string]int{}
		m.answered = sync.NewCond(&m.mu)
	}
	for _, u := range urls {
		if m.clients[u] == nil {
			cl, err := client.New(u, client.Options{Token: token, DirectOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			m.clients[u] = cl
		}
	}
	m.urls = append([]string(nil), urls...)
	for u := range m.inFlight {
		for !slices.Contains(m.urls, u) && m.inFlight[u] > 0 {
			m.answered.Wait()
		}
	}
}

func keyClass(k string) int {
	h := fnv.New32a()
	h.Write([]byte(k))
	return int(h.Sum32() % 3)
}

var padding = bytes.Repeat([]byte("p"), 40<<10) // above disk_min_file_size (32 KiB)

func (m *moveStore) Set(ctx context.Context, k string, v []byte) error {
	opts := kv.SetOptions{}
	switch keyClass(k) {
	case 0:
		v = append(append(append([]byte(nil), v...), '|'), padding...)
	case 1:
		opts.Tag = kv.TextKey("moving")
	case 2:
		opts.Expire = kv.ExpireAfter(time.Hour)
	}
	c, done := m.pick()
	defer done()
	return c.Set(ctx, kv.TextKey(k), kv.Bytes(v), opts)
}

func (m *moveStore) Delete(ctx context.Context, k string) error {
	c, done := m.pick()
	defer done()
	_, err := c.Delete(ctx, kv.TextKey(k))
	return err
}

func (m *moveStore) Get(ctx context.Context, k string) ([]byte, bool, error) {
	c, done := m.pick()
	defer done()
	it, ok, err := c.Get(ctx, kv.TextKey(k))
	v, _, _ := bytes.Cut(it.Value.Data, []byte("|"))
	return v, ok, err
}

// mover drives moves the way the operator does: PUT the topology to every
// shard with the admin token, wait until every shard reports
// rebalancing=false, end the move with the next epoch and previous=null.
type mover struct {
	t      *testing.T
	admin  string
	layout topology.Layout
}

func (m *mover) put(url string, a topology.Announcement) {
	m.t.Helper()
	b, _ := json.Marshal(a)
	req, _ := http.NewRequest(http.MethodPut, url+"/v1/topology", bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+m.admin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		m.t.Fatalf("PUT %s/v1/topology: %v", url, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		m.t.Fatalf("PUT %s/v1/topology: %s %s", url, resp.Status, body)
	}
}

func (m *mover) topology(url string) (topology.Topology, error) {
	var t topology.Topology
	req, _ := http.NewRequest(http.MethodGet, url+"/v1/topology", nil)
	req.Header.Set("Authorization", "Bearer "+m.admin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return t, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return t, fmt.Errorf("GET %s/v1/topology: %s", url, resp.Status)
	}
	return t, json.NewDecoder(resp.Body).Decode(&t)
}

// announce starts a move to shards and returns the shards taking part.
func (m *mover) announce(shards []string) []string {
	prev := m.layout
	m.layout = topology.Layout{Epoch: prev.Epoch + 1, Shards: shards}
	a := topology.Announcement{Layout: m.layout, Previous: &prev}
	all := union(shards, prev.Shards)
	for _, u := range all {
		m.put(u, a)
	}
	return all
}

// waitDrained waits until every shard of all reports rebalancing=false at
// the current epoch, and returns their progress.
func (m *mover) waitDrained(all []string) map[string]topology.Progress {
	m.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	progress := map[string]topology.Progress{}
	for _, u := range all {
		for {
			t, err := m.topology(u)
			if err == nil && t.Epoch == m.layout.Epoch && !t.Rebalancing {
				progress[u] = t.Progress
				break
			}
			if time.Now().After(deadline) {
				m.t.Fatalf("shard %s still rebalancing after 2 minutes: %+v %v", u, t, err)
			}
			<-tick.C
		}
	}
	return progress
}

// end ends the move: the next epoch with previous = null, to every shard
// that took part.
func (m *mover) end(all []string) {
	m.layout.Epoch++
	a := topology.Announcement{Layout: m.layout}
	for _, u := range all {
		m.put(u, a)
	}
}

func union(a, b []string) []string {
	out := append([]string(nil), a...)
	for _, u := range b {
		if !contains(out, u) {
			out = append(out, u)
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// startShard starts one more shard of c with index i that knows the layout
// peers (it owns nothing there and forwards everything until announced).
func startShard(t *testing.T, c *testserver.Cluster, i int, peers topology.Layout, args ...string) *testserver.Server {
	t.Helper()
	adminFile := filepath.Join(t.TempDir(), "admin-token")
	if err := os.WriteFile(adminFile, []byte(c.AdminToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return testserver.Start(t, testserver.Options{Listen: freeAddr(t), Args: append([]string{"--shard-index", strconv.Itoa(i),
		"--peers", strings.Join(peers.Shards, ","), "--epoch", strconv.FormatInt(peers.Epoch, 10), "--admin-token-file", adminFile}, args...)})
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// runLoad starts a loadcheck load through store; the returned function
// stops it.
func runLoad(store *moveStore) (*loadcheck.Ledger, func()) {
	l := loadcheck.New(store, loadcheck.Config{Workers: 8, KeysPerWorker: 60})
	stop, done := make(chan struct{}), make(chan struct{})
	go func() { l.Run(context.Background(), stop); close(done) }()
	return l, func() { close(stop); <-done }
}

// verifyAll reads every key back through each of urls and returns the
// worst counts.
func verifyAll(t *testing.T, name string, l *loadcheck.Ledger, token string, urls []string) loadcheck.Counts {
	t.Helper()
	var out loadcheck.Counts
	for i, u := range urls {
		one := &moveStore{}
		one.use(t, token, u)
		got, err := l.VerifyThrough(context.Background(), one)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s, read back through %s: %v", name, u, got)
		if i == 0 || !got.Safe() {
			out = got
		}
	}
	t.Logf("LOADCHECK %s: lost %d, stale %d, resurrected %d, stale reads %d, errors %d",
		name, out.Lost, out.Stale, out.Resurrected, out.StaleReads, out.Errors)
	return out
}

// TestRebalanceUnderLoad: writers, deleters and readers through every shard
// while the cache goes 3 → 4 → 2 → 3 shards; afterwards every acknowledged
// write reads back as acknowledged: 0 lost, 0 stale, 0 resurrected.
func TestRebalanceUnderLoad(t *testing.T) {
	c := testserver.StartCluster(t, 3, testserver.Options{})
	token := c.Shards[0].Token
	m := &mover{t: t, admin: c.AdminToken, layout: topology.Layout{Epoch: 1, Shards: c.URLs}}
	store := &moveStore{}
	store.use(t, token, c.URLs...)
	l, stop := runLoad(store)
	// Let every shard hold data before the first move.
	waitAcked(t, l, 500)

	// Grow 3 → 4: the new shard first, then the announcement.
	s3 := startShard(t, c, 3, m.layout)
	four := append(append([]string(nil), c.URLs...), s3.URL)
	store.use(t, token, four...)
	all := m.announce(four)
	logProgress(t, "3 → 4", m.waitDrained(all))
	m.end(all)

	// Shrink 4 → 2: announce while the departing shards run, wait until
	// they drained, end the move, then stop them.
	waitAcked(t, l, l.Acked()+300)
	all = m.announce(c.URLs[:2])
	logProgress(t, "4 → 2", m.waitDrained(all))
	m.end(all)
	store.use(t, token, c.URLs[:2]...)
	for _, s := range []*testserver.Server{c.Shards[2], s3} {
		if n := itemsOn(t, s); n != 0 {
			t.Errorf("departing shard %s still holds %d items after it reported drained", s.URL, n)
		}
	}
	// Scale-in stops the pods with SIGTERM: requests in flight finish.
	for _, s := range []*testserver.Server{c.Shards[2], s3} {
		if err := s.Stop(context.Background()); err != nil {
			t.Fatalf("stop %s: %v", s.URL, err)
		}
	}

	// Grow 2 → 3 again, with the claim of the shard removed before.
	waitAcked(t, l, l.Acked()+300)
	c.Shards[2].Restart(t)
	store.use(t, token, c.URLs...)
	all = m.announce(c.URLs)
	logProgress(t, "2 → 3", m.waitDrained(all))
	m.end(all)
	waitAcked(t, l, l.Acked()+300)

	stop()
	counts := verifyAll(t, "3 → 4 → 2 → 3 under load", l, token, c.URLs)
	if !counts.Safe() || counts.Sets == 0 {
		t.Fatalf("rebalance under load: %v; last: %v", counts, l.LastError())
	}
	if counts.Errors != 0 {
		t.Fatalf("rebalance under load answered %d errors; last: %v", counts.Errors, l.LastError())
	}
}

func logProgress(t *testing.T, move string, p map[string]topology.Progress) {
	for u, pr := range p {
		t.Logf("%s: %s: %+v", move, u, pr)
	}
}

// waitAcked waits until the load acknowledged at least n writes.
func waitAcked(t *testing.T, l *loadcheck.Ledger, n int64) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(time.Minute)
	for l.Acked() < n {
		if time.Now().After(deadline) {
			t.Fatalf("the load acknowledged %d writes, waiting for %d; last: %v", l.Acked(), n, l.LastError())
		}
		<-tick.C
	}
}

// itemsOn counts the items a shard holds itself (its own part of info).
func itemsOn(t *testing.T, s *testserver.Server) int64 {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, s.URL+"/v1/info", nil)
	req.Header.Set("Authorization", "Bearer "+s.Token)
	req.Header.Set("Diskcache-Scope", "shard")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var info struct {
		Count int64 `json:"count"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
		t.Fatal(err)
	}
	return info.Count
}

// waitProgress waits until the shard at url reports a move in progress
// for which ok holds.
func (m *mover) waitProgress(url string, ok func(topology.Topology) bool) {
	m.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		if t, err := m.topology(url); err == nil && ok(t) {
			return
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("shard %s: the awaited progress never came", url)
		}
		<-tick.C
	}
}

// TestRebalanceSurvivesKill9: a grow 2 → 3 under load; a sending shard is
// killed with SIGKILL in the middle of its handoff and started again, then
// the receiving shard is; the move resumes and ends, and the load loses
// nothing.
func TestRebalanceSurvivesKill9(t *testing.T) {
	rateArgs := []string{"--rebalance-rate", "262144"}
	c := testserver.StartCluster(t, 2, testserver.Options{Args: rateArgs})
	token := c.Shards[0].Token
	m := &mover{t: t, admin: c.AdminToken, layout: topology.Layout{Epoch: 1, Shards: c.URLs}}
	store := &moveStore{}
	store.use(t, token, c.URLs...)
	l, stop := runLoad(store)
	waitAcked(t, l, 1500)

	s2 := startShard(t, c, 2, m.layout, rateArgs...)
	three := append(append([]string(nil), c.URLs...), s2.URL)
	store.use(t, token, three...)
	all := m.announce(three)

	sender := c.Shards[0]
	m.waitProgress(sender.URL, func(tp topology.Topology) bool {
		return tp.Rebalancing && tp.Progress.ItemsMoved > 0 && tp.Progress.ItemsRemaining > 0
	})
	sender.Kill()
	t.Logf("killed the sender %s in the middle of its handoff", sender.URL)
	sender.Restart(t)

	m.waitProgress(s2.URL, func(tp topology.Topology) bool { return tp.Progress.ItemsReceived > 0 })
	if !stillMoving(t, m, c.URLs) {
		t.Fatal("the move ended before the receiver could be killed in the middle of it")
	}
	s2.Kill()
	t.Logf("killed the receiver %s in the middle of the move", s2.URL)
	s2.Restart(t)

	logProgress(t, "2 → 3 with kill -9", m.waitDrained(all))
	m.end(all)
	waitAcked(t, l, l.Acked()+300)
	stop()
	counts := verifyAll(t, "2 → 3 with kill -9 of sender and receiver", l, token, three)
	if !counts.Safe() || counts.Sets == 0 {
		t.Fatalf("rebalance with kill -9: %v; last: %v", counts, l.LastError())
	}
}
