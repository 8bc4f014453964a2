package cacheserver_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/client"
	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
	"github.com/diskcache-operator/diskcache-operator/kv"
	"github.com/diskcache-operator/diskcache-operator/topology"
)

// slowMove caps the handoff so that a move of a few hundred small items
// lasts seconds: the operations below run while copies are in flight.
var slowMove = []string{"--rebalance-rate", "4096"}

func dataClient(t *testing.T, url, token string) *client.Client {
	t.Helper()
	cl, err := client.New(url, client.Options{Token: token, DirectOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// movingKeys returns n keys with prefix that move to shard to when the
// cache goes from shards from to shards to.
func movingKeys(prefix string, n, from, to, owner int) []string {
	var out []string
	for i := 0; len(out) < n; i++ {
		k := prefix + strconv.Itoa(i)
		r := wire.Routing(kv.TextKey(k))
		if topology.Owner(r, to) == owner && topology.Owner(r, from) != owner {
			out = append(out, k)
		}
	}
	return out
}

func movingName(prefix string, from, to, owner int) string {
	for i := 0; ; i++ {
		n := prefix + strconv.Itoa(i)
		if topology.Owner([]byte(n), to) == owner && topology.Owner([]byte(n), from) != owner {
			return n
		}
	}
}

func stillMoving(t *testing.T, m *mover, urls []string) bool {
	for _, u := range urls {
		if tp, err := m.topology(u); err == nil && tp.Rebalancing {
			return true
		}
	}
	return false
}

// TestMoveWritesDeletesAndPullsWin: while a grow 2 → 3 moves items slowly,
// the new owner serves the keys that have not reached it yet: a read finds
// the previous owner's value, incr and add see it, a delete and an
// overwrite win over the copy still in flight, and a deque moved whole gets
// an append on top of its items. Afterwards every result holds on every
// shard.
func TestMoveWritesDeletesAndPullsWin(t *testing.T) {
	ctx := context.Background()
	c := testserver.StartCluster(t, 2, testserver.Options{Args: slowMove})
	tok := c.Shards[0].Token
	m := &mover{t: t, admin: c.AdminToken, layout: topology.Layout{Epoch: 1, Shards: c.URLs}}
	cl := dataClient(t, c.URLs[0], tok).Cache("")
	filler := strings.Repeat("f", 400)
	set := func(k string, v kv.Value) {
		if err := cl.Set(ctx, kv.TextKey(k), v, kv.SetOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	reads, deletes, overwrites, incrs, adds := movingKeys("r", 40, 2, 3, 2), movingKeys("d", 40, 2, 3, 2),
		movingKeys("w", 40, 2, 3, 2), movingKeys("n", 40, 2, 3, 2), movingKeys("a", 40, 2, 3, 2)
	for _, k := range append(append(append([]string{}, reads...), deletes...), overwrites...) {
		set(k, kv.Text("old-"+k+filler))
	}
	for _, k := range append(append([]string{}, incrs...), adds...) {
		set(k, kv.Int(10))
	}
	lockKey := movingKeys("L", 1, 2, 3, 2)[0]
	if st, err := dataClient(t, c.URLs[0], tok).Lock(kv.TextKey(lockKey)).Acquire(ctx, "first", 0, 0); err != nil || !st.Acquired {
		t.Fatalf("lock before the move: %+v %v", st, err)
	}
	qname := movingName("q", 2, 3, 2)
	dq := dataClient(t, c.URLs[0], tok).Deque(qname)
	if _, err := dq.Extend(ctx, []kv.Value{kv.Int(1), kv.Int(2), kv.Int(3)}); err != nil {
		t.Fatal(err)
	}

	s2 := startShard(t, c, 2, m.layout, slowMove...)
	three := append(append([]string(nil), c.URLs...), s2.URL)
	all := m.announce(three)
	via := dataClient(t, three[1], tok).Cache("") // forwards to the new owner
	for _, k := range reads {
		it, ok, err := via.Get(ctx, kv.TextKey(k))
		if err != nil || !ok || string(it.Value.Data) != "old-"+k+filler {
			t.Errorf("read %s during the move: %q %v %v", k, it.Value.Data, ok, err)
		}
	}
	for _, k := range deletes {
		if ok, err := via.Delete(ctx, kv.TextKey(k)); err != nil || !ok {
			t.Errorf("delete %s during the move: %v %v (the previous owner's item must count)", k, ok, err)
		}
	}
	for _, k := range overwrites {
		if err := via.Set(ctx, kv.TextKey(k), kv.Text("new-"+k), kv.SetOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range incrs {
		if v, err := via.Incr(ctx, kv.TextKey(k), kv.Int(1), kv.Int(0)); err != nil || !v.Equal(kv.Int(11)) {
			t.Errorf("incr %s during the move = %v, %v; want 11", k, v, err)
		}
	}
	for _, k := range adds {
		if ok, err := via.Add(ctx, kv.TextKey(k), kv.Int(99), kv.SetOptions{}); err != nil || ok {
			t.Errorf("add %s during the move = %v, %v; want false (it exists at the previous owner)", k, ok, err)
		}
	}
	if st, err := dataClient(t, three[1], tok).Lock(kv.TextKey(lockKey)).Acquire(ctx, "second", 0, 0); err != nil || st.Acquired || st.Holder != "first" {
		t.Errorf("a lock held at the previous owner was acquired again during the move: %+v %v", st, err)
	}
	if _, err := dataClient(t, three[1], tok).Deque(qname).Append(ctx, kv.Int(4)); err != nil {
		t.Fatal(err)
	}
	if !stillMoving(t, m, all) {
		t.Fatal("the move ended before the operations ran: nothing was in flight (slow the move down further)")
	}
	logProgress(t, "2 → 3", m.waitDrained(all))
	m.end(all)
	for _, want := range []struct {
		s      *testserver.Server
		metric string
	}{
		{c.Shards[0], `diskcache_rebalance_items_total{direction="sent"}`},
		{s2, `diskcache_rebalance_items_total{direction="received"}`},
		{s2, `diskcache_rebalance_bytes_total{direction="received"}`},
		{c.Shards[1], `diskcache_rebalance_duration_seconds`},
	} {
		if v := metricValue(t, want.s, want.metric); v <= 0 {
			t.Errorf("%s on %s = %v, want > 0", want.metric, want.s.URL, v)
		}
	}

	for _, u := range three {
		cc := dataClient(t, u, tok).Cache("")
		check := func(k string, want kv.Value, found bool) {
			it, ok, err := cc.Get(ctx, kv.TextKey(k))
			if err != nil || ok != found || (found && !it.Value.Equal(want)) {
				t.Errorf("through %s: %s = %v (found %v, %v); want %v (found %v)", u, k, it.Value, ok, err, want, found)
			}
		}
		for _, k := range reads {
			check(k, kv.Text("old-"+k+filler), true)
		}
		for _, k := range deletes {
			check(k, kv.Value{}, false)
		}
		for _, k := range overwrites {
			check(k, kv.Text("new-"+k), true)
		}
		for _, k := range incrs {
			check(k, kv.Int(11), true)
		}
		for _, k := range adds {
			check(k, kv.Int(10), true)
		}
		var got []string
		for it, err := range dataClient(t, u, tok).Deque(qname).Items(ctx, false, 10) {
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, fmt.Sprint(it.Value.Int))
		}
		if strings.Join(got, ",") != "1,2,3,4" {
			t.Errorf("through %s: deque %s = %v; want 1,2,3,4", u, qname, got)
		}
	}
}

// TestDeletionsDuringAMove: evict and clear through any shard while items
// are in flight reach the current and the previous owners (a departing
// shard too) and nothing they removed comes back with a late copy.
func TestDeletionsDuringAMove(t *testing.T) {
	ctx := context.Background()
	c := testserver.StartCluster(t, 3, testserver.Options{Args: slowMove})
	tok := c.Shards[0].Token
	m := &mover{t: t, admin: c.AdminToken, layout: topology.Layout{Epoch: 1, Shards: c.URLs}}
	cl := dataClient(t, c.URLs[0], tok).Cache("")
	filler := strings.Repeat("f", 300)
	var tagged, plain []string
	for i := 0; i < 240; i++ {
		k := "e" + strconv.Itoa(i)
		opts := kv.SetOptions{}
		if i%2 == 0 {
			opts.Tag = kv.TextKey("gone")
			tagged = append(tagged, k)
		} else {
			plain = append(plain, k)
		}
		if err := cl.Set(ctx, kv.TextKey(k), kv.Text(k+filler), opts); err != nil {
			t.Fatal(err)
		}
	}
	check := func(when string, keys []string, found bool) {
		t.Helper()
		for _, u := range m.layout.Shards {
			cc := dataClient(t, u, tok).Cache("")
			for _, k := range keys {
				it, ok, err := cc.Get(ctx, kv.TextKey(k))
				if err != nil || ok != found || (found && string(it.Value.Data) != k+filler) {
					t.Errorf("%s, through %s: %s found %v (%v); want found %v", when, u, k, ok, err, found)
				}
			}
		}
	}

	// Shrink 3 → 2; evict the tag while shard 2 drains.
	// (Moving at --rebalance-rate 4096, the items take seconds: the move
	// is in flight when the deletion is sent. Once it removed everything,
	// the move may end at once.)
	all := m.announce(c.URLs[:2])
	if !stillMoving(t, m, all) {
		t.Fatal("the move ended before the evict: nothing was in flight")
	}
	if n, err := dataClient(t, c.URLs[1], tok).Cache("").Evict(ctx, kv.TextKey("gone")); err != nil || n != int64(len(tagged)) {
		t.Errorf("evict during the move removed %d, %v; want %d", n, err, len(tagged))
	}
	m.waitDrained(all)
	m.end(all)
	check("after evict during 3 → 2", tagged, false)
	check("after evict during 3 → 2", plain, true)
	if n := itemsOn(t, c.Shards[2]); n != 0 {
		t.Errorf("the departing shard holds %d items after it drained", n)
	}

	// Grow 2 → 3 again; clear while items move.
	all = m.announce(c.URLs)
	if !stillMoving(t, m, all) {
		t.Fatal("the move ended before the clear: nothing was in flight")
	}
	if n, err := dataClient(t, c.URLs[2], tok).Cache("").Clear(ctx); err != nil || n != int64(len(plain)) {
		t.Errorf("clear during the move removed %d, %v; want %d", n, err, len(plain))
	}
	m.waitDrained(all)
	m.end(all)
	check("after clear during 2 → 3", plain, false)
	for _, s := range c.Shards {
		if n := itemsOn(t, s); n != 0 {
			t.Errorf("shard %s holds %d items after a clear", s.URL, n)
		}
	}
}

// TestStaleReturningShardDropsItsData: a shard leaves without handing off
// (it was down when the cache shrank and its claim was kept), the others
// write newer values for its keys, and when the cache grows again the
// shard comes back with its old data: it must drop it, never serve or send
// it over the newer writes. It learns the new topology either from the
// operator's PUT or, at start, from its mounted topology file.
func TestStaleReturningShardDropsItsData(t *testing.T) {
	for _, viaFile := range []bool{false, true} {
		t.Run(map[bool]string{false: "announced", true: "mounted file"}[viaFile], func(t *testing.T) {
			testStaleReturningShard(t, viaFile)
		})
	}
}

func testStaleReturningShard(t *testing.T, viaFile bool) {
	ctx := context.Background()
	c := testserver.StartCluster(t, 3, testserver.Options{})
	tok := c.Shards[0].Token
	m := &mover{t: t, admin: c.AdminToken, layout: topology.Layout{Epoch: 1, Shards: c.URLs}}
	keys := movingKeys("s", 30, 2, 3, 2) // on shard 2 with 3 shards, elsewhere with 2
	cl := dataClient(t, c.URLs[0], tok).Cache("")
	for _, k := range keys {
		if err := cl.Set(ctx, kv.TextKey(k), kv.Text("old"), kv.SetOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// Shard 2 goes away with its data; the cache goes on with 2 shards
	// (the move of shard 2's keys cannot happen: it is down) and the keys
	// get newer values there.
	c.Shards[2].Kill()
	m.layout = topology.Layout{Epoch: 3, Shards: c.URLs[:2]}
	for _, u := range c.URLs[:2] {
		m.put(u, topology.Announcement{Layout: m.layout})
	}
	for _, k := range keys {
		if err := cl.Set(ctx, kv.TextKey(k), kv.Text("new"), kv.SetOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// It comes back (same claim, persisted epoch 1) and the cache grows.
	if viaFile {
		next := topology.Announcement{Layout: topology.Layout{Epoch: m.layout.Epoch + 1, Shards: c.URLs}, Previous: &m.layout}
		b, _ := json.Marshal(next)
		file := filepath.Join(t.TempDir(), "topology.json")
		if err := os.WriteFile(file, b, 0o600); err != nil {
			t.Fatal(err)
		}
		c.Shards[2].Args = append(c.Shards[2].Args, "--topology-file", file)
	}
	c.Shards[2].Restart(t)
	all := m.announce(c.URLs)
	m.waitDrained(all)
	m.end(all)
	for _, u := range c.URLs {
		cc := dataClient(t, u, tok).Cache("")
		for _, k := range keys {
			it, ok, err := cc.Get(ctx, kv.TextKey(k))
			if err != nil || !ok || string(it.Value.Data) != "new" {
				t.Errorf("through %s: %s = %q (found %v, %v); want the newer value", u, k, it.Value.Data, ok, err)
			}
		}
	}
	if !strings.Contains(c.Shards[2].Logs(), "its data is stale") {
		t.Error("the returning shard did not log that it dropped stale data")
	}
}

// metricValue reads one sample of a shard's /metrics.
func metricValue(t *testing.T, s *testserver.Server, series string) float64 {
	t.Helper()
	resp, err := http.Get(s.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	t.Fatalf("no %s in /metrics of %s", series, s.URL)
	return 0
}

// TestMoveHandsOffCollectionsWhole: a named cache and an index nobody
// touches during a grow are handed off whole by their previous owner,
// tags and file-sized values included, and leave it; also when the shards
// keep one collection open at a time (--max-open-collections 1), so that
// each closes under the other during the handoff.
func TestMoveHandsOffCollectionsWhole(t *testing.T) {
	t.Run("default", func(t *testing.T) { moveHandsOffCollectionsWhole(t) })
	t.Run("one open collection", func(t *testing.T) { moveHandsOffCollectionsWhole(t, "--max-open-collections", "1") })
}

func moveHandsOffCollectionsWhole(t *testing.T, args ...string) {
	ctx := context.Background()
	c := testserver.StartCluster(t, 2, testserver.Options{Args: args})
	tok := c.Shards[0].Token
	m := &mover{t: t, admin: c.AdminToken, layout: topology.Layout{Epoch: 1, Shards: c.URLs}}
	// A named cache and an index nobody touches during the move: they are
	// handed off whole, tags and file-sized values included.
	cname, xname := movingName("c", 2, 3, 2), movingName("x", 2, 3, 2)
	nc, ix := dataClient(t, c.URLs[0], tok).Cache(cname), dataClient(t, c.URLs[0], tok).Index(xname)
	bigValue := strings.Repeat("b", 50000)
	for i := 0; i < 20; i++ {
		if err := nc.Set(ctx, kv.IntKey(int64(i)), kv.Text(bigValue), kv.SetOptions{Tag: kv.TextKey("nt")}); err != nil {
			t.Fatal(err)
		}
		if err := ix.Set(ctx, kv.TextKey("ik"+strconv.Itoa(i)), kv.Int(int64(i))); err != nil {
			t.Fatal(err)
		}
	}
	oldOwner := c.Shards[topology.Owner([]byte(cname), 2)]

	s2 := startShard(t, c, 2, m.layout, args...)
	three := append(append([]string(nil), c.URLs...), s2.URL)
	all := m.announce(three)
	logProgress(t, "2 → 3", m.waitDrained(all))
	m.end(all)
	for _, u := range three {
		for i := 0; i < 20; i++ {
			it, ok, err := dataClient(t, u, tok).Cache(cname).Get(ctx, kv.IntKey(int64(i)))
			if err != nil || !ok || string(it.Value.Data) != bigValue {
				t.Errorf("through %s: named cache %s[%d]: found %v, %v", u, cname, i, ok, err)
			}
			it, ok, err = dataClient(t, u, tok).Index(xname).Get(ctx, kv.TextKey("ik"+strconv.Itoa(i)))
			if err != nil || !ok || !it.Value.Equal(kv.Int(int64(i))) {
				t.Errorf("through %s: index %s[ik%d] = %v, %v, %v", u, xname, i, it.Value, ok, err)
			}
		}
	}
	if st, _, body := do(t, "GET", oldOwner.URL+"/v1/caches/"+cname+"/info", tok, nil,
		map[string]string{wire.HeaderScope: "shard"}); st != 200 || !strings.Contains(string(body), `"count":0`) {
		t.Errorf("the previous owner still holds the named cache after the move: %d %s", st, body)
	}
	if n, err := nc.Evict(ctx, kv.TextKey("nt")); err != nil || n != 20 {
		t.Errorf("evict of the moved named cache's tag = %d, %v; want 20 (tags move with the items)", n, err)
	}
}

// TestTouchedKeysSurviveARestart: the new owner records the keys deleted
// during a move before it answers; killed with SIGKILL and started again in
// the middle of the move, it still refuses the late copies of those keys.
func TestTouchedKeysSurviveARestart(t *testing.T) {
	ctx := context.Background()
	c := testserver.StartCluster(t, 2, testserver.Options{Args: slowMove})
	tok := c.Shards[0].Token
	m := &mover{t: t, admin: c.AdminToken, layout: topology.Layout{Epoch: 1, Shards: c.URLs}}
	cl := dataClient(t, c.URLs[0], tok).Cache("")
	deletes := movingKeys("t", 80, 2, 3, 2)
	filler := strings.Repeat("f", 400)
	for _, k := range deletes {
		if err := cl.Set(ctx, kv.TextKey(k), kv.Text(k+filler), kv.SetOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	s2 := startShard(t, c, 2, m.layout, slowMove...)
	three := append(append([]string(nil), c.URLs...), s2.URL)
	all := m.announce(three)
	via := dataClient(t, three[0], tok).Cache("")
	for _, k := range deletes {
		if ok, err := via.Delete(ctx, kv.TextKey(k)); err != nil || !ok {
			t.Fatalf("delete %s during the move: %v %v", k, ok, err)
		}
	}
	if !stillMoving(t, m, c.URLs) {
		t.Fatal("the move ended before the restart: nothing was in flight")
	}
	s2.Kill()
	s2.Restart(t)
	m.waitDrained(all)
	m.end(all)
	for _, u := range three {
		cc := dataClient(t, u, tok).Cache("")
		for _, k := range deletes {
			if _, ok, err := cc.Get(ctx, kv.TextKey(k)); err != nil || ok {
				t.Errorf("through %s: %s deleted during the move came back after the owner restarted (found %v, %v)", u, k, ok, err)
			}
		}
	}
}

// stalledMove caps the handoff at 1 byte/s: nothing moves while a test
// runs, so every key is still at its previous owner.
var stalledMove = []string{"--rebalance-rate", "1"}

// stalledGrow sets n keys (to "old") that move to the third shard when a
// cache of 2 shards grows to 3, starts that shard, announces the grow with
// its handoff stalled, and returns the keys and the new owner's cache.
func stalledGrow(t *testing.T, prefix string, n int) ([]string, *client.Cache) {
	t.Helper()
	c := testserver.StartCluster(t, 2, testserver.Options{Args: stalledMove})
	tok := c.Shards[0].Token
	m := &mover{t: t, admin: c.AdminToken, layout: topology.Layout{Epoch: 1, Shards: c.URLs}}
	keys := movingKeys(prefix, n, 2, 3, 2)
	cl := dataClient(t, c.URLs[0], tok).Cache("")
	for _, k := range keys {
		if err := cl.Set(context.Background(), kv.TextKey(k), kv.Text("old"), kv.SetOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	s2 := startShard(t, c, 2, m.layout, stalledMove...)
	m.announce(append(append([]string(nil), c.URLs...), s2.URL))
	return keys, dataClient(t, s2.URL, tok).Cache("")
}

// TestReadDuringFirstOverwriteFindsAValue: at the new owner, a read that
// runs while the first overwrite of a key not yet moved is under way finds
// the old value or the new one, never nothing: the key holds a value
// before, during and after the write.
func TestReadDuringFirstOverwriteFindsAValue(t *testing.T) {
	ctx := context.Background()
	keys, owner := stalledGrow(t, "o", 100)
	var misses, reads atomic.Int64
	var wg sync.WaitGroup
	for _, k := range keys {
		wg.Add(2)
		written := make(chan struct{})
		go func() {
			defer wg.Done()
			defer close(written)
			if err := owner.Set(ctx, kv.TextKey(k), kv.Text("new"), kv.SetOptions{}); err != nil {
				t.Error(err)
			}
		}()
		go func() {
			defer wg.Done()
			for {
				select {
				case <-written:
					return
				default:
				}
				_, ok, err := owner.Get(ctx, kv.TextKey(k))
				if err != nil {
					t.Error(err)
					return
				}
				reads.Add(1)
				if !ok {
					misses.Add(1)
				}
			}
		}()
		wg.Wait()
	}
	t.Logf("%d reads during the first overwrite of %d keys at their new owner: %d found nothing", reads.Load(), len(keys), misses.Load())
	if misses.Load() > 0 {
		t.Errorf("%d reads found nothing while the key held a value", misses.Load())
	}
}

// TestLaggingPreviousOwnerCatchesUpWithAPull: a new owner that learned the
// move before the key's previous owner did pulls the key anyway: the
// previous owner learns the announcement from the puller (whose request
// carries the admin token) instead of refusing it. It answered 409, which
// the new owner's read turned into 503 shard_unavailable, and a batch get
// cut its stream at the first such key, until the operator's announcement
// reached the previous owner.
func TestLaggingPreviousOwnerCatchesUpWithAPull(t *testing.T) {
	ctx := context.Background()
	var prevs []int
	for range 12 {
		prevs = append(prevs, 1)
	}
	c, m, keys, s2 := growWithShard1Behind(t, "lag", prevs)
	tok := c.Shards[0].Token
	newOwner := dataClient(t, s2.URL, tok).Cache("")
	items, err := newOwner.GetMany(ctx, keys)
	if err != nil {
		t.Fatalf("batch get from the new owner: %v", err)
	}
	for i, it := range items {
		if !it.Found || string(it.Value.Data) != "v" {
			t.Errorf("batch get: %v: %+v", keys[i], it)
		}
	}
	if it, ok, err := newOwner.Get(ctx, keys[len(keys)-1]); err != nil || !ok || string(it.Value.Data) != "v" {
		t.Fatalf("get %v from its new owner: %q %v %v", keys[len(keys)-1], it.Value.Data, ok, err)
	}
	if tp, err := m.topology(c.URLs[1]); err != nil || tp.Epoch != 2 {
		t.Fatalf("the previous owner's topology: %+v %v; want epoch 2, learned from the puller", tp, err)
	}
}

// TestBatchGetWithAPreviousOwnerDownIsAnError: a batch get whose keys must
// be pulled from a previous owner that is down answers 503
// shard_unavailable, whatever the place of those keys in the batch. Keys
// were claimed as their records went out, so one after a key already
// answered cut the stream, which a client takes for a shard gone away.
func TestBatchGetWithAPreviousOwnerDownIsAnError(t *testing.T) {
	ctx := context.Background()
	// The first key comes from shard 0, the second from shard 1.
	c, _, keys, s2 := growWithShard1Behind(t, "cut", []int{0, 1})
	tok := c.Shards[0].Token
	c.Shards[1].Kill()
	_, err := dataClient(t, s2.URL, tok).Cache("").GetMany(ctx, keys)
	var e *client.Error
	if !errors.As(err, &e) || e.Code != wire.CodeShardUnavailable {
		t.Fatalf("batch get with a previous owner down: %v, want 503 shard_unavailable", err)
	}
}

// growWithShard1Behind starts a cluster of 2 shards, writes a key "v" for
// each of prevs, moving to shard 2 in a grow 2 → 3 from the previous owner
// prevs[i], starts shard 2 and announces the grow to it and shard 0 only:
// shard 1 has not got the announcement yet.
func growWithShard1Behind(t *testing.T, prefix string, prevs []int) (*testserver.Cluster, *mover, []kv.Key, *testserver.Server) {
	t.Helper()
	c := testserver.StartCluster(t, 2, testserver.Options{})
	m := &mover{t: t, admin: c.AdminToken, layout: topology.Layout{Epoch: 1, Shards: c.URLs}}
	cl := dataClient(t, c.URLs[0], c.Shards[0].Token).Cache("")
	moving := movingKeys(prefix, 200, 2, 3, 2)
	used := map[string]bool{}
	var keys []kv.Key
	for _, prev := range prevs {
		for _, k := range moving {
			if !used[k] && topology.Owner(wire.Routing(kv.TextKey(k)), 2) == prev {
				used[k] = true
				keys = append(keys, kv.TextKey(k))
				if err := cl.Set(context.Background(), kv.TextKey(k), kv.Text("v"), kv.SetOptions{}); err != nil {
					t.Fatal(err)
				}
				break
			}
		}
	}
	if len(keys) != len(prevs) {
		t.Fatalf("found %d of %d moving keys", len(keys), len(prevs))
	}
	s2 := startShard(t, c, 2, m.layout)
	prev := m.layout
	m.layout = topology.Layout{Epoch: 2, Shards: append(append([]string(nil), c.URLs...), s2.URL)}
	for _, u := range []string{s2.URL, c.URLs[0]} {
		m.put(u, topology.Announcement{Layout: m.layout, Previous: &prev})
	}
	return c, m, keys, s2
}

// TestTopologyGaugesDuringAMove: a shard that has the announcement of a
// grow says so in /metrics (epoch, shards, moving), one that has not yet
// still reports the layout it routes by.
func TestTopologyGaugesDuringAMove(t *testing.T) {
	c, _, _, s2 := growWithShard1Behind(t, "gauge", []int{0})
	for _, g := range []struct {
		s                     *testserver.Server
		epoch, shards, moving float64
	}{{c.Shards[0], 2, 3, 1}, {s2, 2, 3, 1}, {c.Shards[1], 1, 2, 0}} {
		e, n, m := metricValue(t, g.s, "diskcache_topology_epoch"), metricValue(t, g.s, "diskcache_topology_shards"), metricValue(t, g.s, "diskcache_topology_moving")
		if e != g.epoch || n != g.shards || m != g.moving {
			t.Errorf("%s: epoch %v, shards %v, moving %v; want %v, %v, %v", g.s.URL, e, n, m, g.epoch, g.shards, g.moving)
		}
	}
}

// TestFailedWriteKeepsThePreviousOwnersCopy: at the new owner, a set of a
// key not yet moved whose previous owner cannot be asked goes on without
// its item; when that set then fails (here a value that is not the number
// it claims to be), the previous owner's copy, the last write
// acknowledged, must still be taken in when the move hands it over. A set
// that succeeds wins over the copy. (Recorded as written before the set
// ran, the failed one made the new owner refuse the copy, which its
// sender then deleted: the key was gone. Under load with kill -9 that
// showed as a stale read, TestRebalanceSurvivesKill9.)
func TestFailedWriteKeepsThePreviousOwnersCopy(t *testing.T) {
	ctx := context.Background()
	c := testserver.StartCluster(t, 2, testserver.Options{Args: stalledMove})
	tok := c.Shards[0].Token
	m := &mover{t: t, admin: c.AdminToken, layout: topology.Layout{Epoch: 1, Shards: c.URLs}}
	keys := movingKeys("fw", 2, 2, 3, 2)
	failed, overwritten := keys[0], keys[1]
	for _, k := range keys {
		if err := dataClient(t, c.URLs[0], tok).Cache("").Set(ctx, kv.TextKey(k), kv.Text("old"), kv.SetOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	s2 := startShard(t, c, 2, m.layout, stalledMove...)
	all := m.announce(append(append([]string(nil), c.URLs...), s2.URL))
	for _, s := range c.Shards {
		s.Kill() // the previous owners cannot be asked
	}
	st, _, body := do(t, "PUT", s2.URL+"/v1/keys/"+failed, tok, []byte("not a number"), map[string]string{wire.HeaderValueType: "int"})
	if st != http.StatusBadRequest {
		t.Fatalf("PUT of a bad number while the previous owner is down: %d %s; want 400", st, body)
	}
	if st, _, body := do(t, "PUT", s2.URL+"/v1/keys/"+overwritten, tok, []byte("new"), nil); st >= 300 {
		t.Fatalf("PUT while the previous owner is down: %d %s", st, body)
	}
	for _, s := range c.Shards { // back, handing off at full speed
		for i, a := range s.Args {
			if a == "--rebalance-rate" {
				s.Args[i+1] = "0"
			}
		}
		s.Restart(t)
	}
	m.waitDrained(all)
	owner := dataClient(t, s2.URL, tok).Cache("")
	for k, want := range map[string]string{failed: "old", overwritten: "new"} {
		it, ok, err := owner.Get(ctx, kv.TextKey(k))
		if err != nil || !ok || string(it.Value.Data) != want {
			t.Errorf("%s after the move: %q found %v, %v; want %q", k, it.Value.Data, ok, err, want)
		}
	}
}
