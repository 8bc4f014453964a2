//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	cacheclient "github.com/diskcache-operator/diskcache-operator/client"
	"github.com/diskcache-operator/diskcache-operator/internal/loadcheck"
	"github.com/diskcache-operator/diskcache-operator/kv"
	"github.com/diskcache-operator/diskcache-operator/topology"
)

// keysOnEachShard returns perShard text keys owned by each of n shards (by
// the hash the clients and the servers route by), and each key's owner.
func keysOnEachShard(prefix string, n, perShard int) (keys []kv.Key, owner []int) {
	count := make([]int, n)
	for i := 0; len(keys) < n*perShard; i++ {
		k := kv.TextKey(prefix + "-" + strconv.Itoa(i))
		if o := topology.Owner(wire.Routing(k), n); count[o] < perShard {
			count[o]++
			keys, owner = append(keys, k), append(owner, o)
		}
	}
	return keys, owner
}

func downValue(k kv.Key) kv.Value { return kv.Text("value of " + k.Text()) }

// deadlineStore gives each operation of a load a deadline, as an
// application's client has (the Django backend's is 5 s): a call held by
// a frozen pod fails, and the load goes on with the other pods.
type deadlineStore struct {
	loadcheck.Store
	d time.Duration
}

func (s deadlineStore) Set(ctx context.Context, k string, v []byte) error {
	ctx, cancel := context.WithTimeout(ctx, s.d)
	defer cancel()
	return s.Store.Set(ctx, k, v)
}

func (s deadlineStore) Delete(ctx context.Context, k string) error {
	ctx, cancel := context.WithTimeout(ctx, s.d)
	defer cancel()
	return s.Store.Delete(ctx, k)
}

func (s deadlineStore) Get(ctx context.Context, k string) ([]byte, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, s.d)
	defer cancel()
	return s.Store.Get(ctx, k)
}

// startServiceLoad starts a load of workers through the Service of
// DiskCache name, keeping a ledger, whose client does not retry: a call for
// the keys of a shard that is away fails at once, or at its deadline of 2 s
// (the ledger takes it as maybe applied), and the load keeps its pace on
// the other shards' keys. stopLoad ends it (once; the test's end does too).
func startServiceLoad(t *testing.T, ns, name, tok, prefix string, workers int) (l *loadcheck.Ledger, store *rescaleStore, stopLoad func()) {
	t.Helper()
	lc, err := cacheclient.New(serviceURL(t, ns, name), cacheclient.Options{Token: tok, Retries: -1, DirectOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	store = &rescaleStore{c: lc.Cache("")}
	l = loadcheck.New(deadlineStore{store, 2 * time.Second}, loadcheck.Config{Workers: workers, KeysPerWorker: 100, Prefix: prefix})
	stop, done := make(chan struct{}), make(chan struct{})
	go func() { l.Run(context.Background(), stop); close(done) }()
	stopLoad = sync.OnceFunc(func() { close(stop); <-done })
	t.Cleanup(stopLoad)
	return l, store, stopLoad
}

// waitLoadRuns waits until the load has run n more operations.
func waitLoadRuns(t *testing.T, store *rescaleStore, n int64) {
	t.Helper()
	ops0 := store.ops.Load()
	eventually(t, time.Minute, "the load to run", func(context.Context) (bool, string) {
		ran := store.ops.Load() - ops0
		return ran >= n, fmt.Sprintf("%d operations so far", ran)
	})
}

// waitLoadGoesOn waits until the load has had 100 more writes
// acknowledged (what says what is awaited).
func waitLoadGoesOn(t *testing.T, l *loadcheck.Ledger, what string) {
	t.Helper()
	acked := l.Acked()
	eventually(t, time.Minute, what, func(context.Context) (bool, string) {
		n := l.Acked() - acked
		return n >= 100, fmt.Sprintf("%d writes acknowledged since", n)
	})
}

// verifyServiceLoad checks the ledger of a load through the Service,
// reading with c, and logs its LOADCHECK line (what says when): 0 lost,
// 0 stale, 0 resurrected, and a load that ran.
func verifyServiceLoad(t *testing.T, l *loadcheck.Ledger, c *cacheclient.Cache, what string) {
	t.Helper()
	counts, err := l.VerifyThrough(ctxT(t, 3*time.Minute), &rescaleStore{c: c})
	if err != nil {
		t.Fatalf("verify through the Service: %v", err)
	}
	t.Logf("LOADCHECK %s: lost %d, stale %d, resurrected %d, stale reads %d (%v)",
		what, counts.Lost, counts.Stale, counts.Resurrected, counts.StaleReads, counts)
	if !counts.Safe() {
		t.Errorf("%v; last: %v", counts, l.LastError())
	}
	if counts.Sets == 0 || counts.Deletes == 0 || counts.Reads == 0 {
		t.Errorf("%v: the load did not run", counts)
	}
}

// Batches through the Service with one shard of 3 down, under load.
// Shard 1's cacheserver is frozen (SIGSTOP from this node: its sockets
// take connections and it answers nothing, as on a stalled node) while a
// load through the Service keeps a ledger of every acknowledged write.
// Once the Service has left the frozen pod out (its readiness probe
// failed), a batch get of keys of all 3 shards answers the live shards'
// values and marks the frozen shard's keys shard_unavailable
// (Result.Err, an error matching ErrPartialFailure; the raw answer's
// Diskcache-Failed-Keys counts them), and a batch delete deletes the live
// shards' keys and answers 502 partial_failure naming exactly the frozen
// shard's keys. Thawed, the shard serves its keys again, and the ledger
// counts 0 lost, 0 stale, 0 resurrected.
func TestBatchesWithAShardDown(t *testing.T) {
	const (
		name     = "down"
		shards   = 3
		down     = 1 // the shard frozen
		perShard = 10
	)
	live := []int{0, 2}
	p := newPhases(t)
	defer p.done()
	p.next("create 3 shards + Available + topology")
	ns := newNamespace(t, "down")
	createDiskCache(t, newDiskCache(ns, name, func(dc *cachev1alpha1.DiskCache) { dc.Spec.Shards = shards }))
	waitAvailable(t, ns, name, 5*time.Minute)
	waitTopologyAnnounced(t, ns, name, shards)
	tok := token(t, ns, name)
	svc := serviceClient(t, ns, name, tok)

	p.next("write the batches' keys through the Service")
	getKeys, getOwner := keysOnEachShard("get", shards, perShard)
	delKeys, delOwner := keysOnEachShard("del", shards, perShard)
	var items []cacheclient.SetItem
	for _, k := range slices.Concat(getKeys, delKeys) {
		items = append(items, cacheclient.SetItem{Key: k, Value: downValue(k)})
	}
	if res, err := svc.SetMany(ctxT(t, time.Minute), items); err != nil || res.Stored != len(items) {
		t.Fatalf("SetMany of the batches' keys: %+v, %v", res, err)
	}

	p.next("load through the Service")
	l, store, stopLoad := startServiceLoad(t, ns, name, tok, "down", 8)
	waitLoadRuns(t, store, 500)

	p.next("freeze shard 1 until the Service leaves it out")
	waitServiceRoutes(t, ns, name, 0, 1, 2) // the rules are read right
	pod := cachePod(t, ns, name, down)
	restarts := restartCount(pod)
	pid := cacheProcess(t, pod)
	opsFrozen, errsFrozen := store.ops.Load(), store.errs.Load()
	thaw := freezeProcess(t, pid)
	frozen := time.Now()
	// Readiness fails after 2 probes 5 s apart; the liveness probe would
	// restart the container after 3 failures 10 s apart (23 s at the
	// earliest), so the checks below end well before.
	waitServiceRoutes(t, ns, name, live...)
	t.Logf("the Service left shard %d's pod (pid %d, frozen) out %s after the freeze", down, pid, time.Since(frozen).Round(100*time.Millisecond))
	// A new client: the load's may hold connections to the frozen pod.
	c := serviceClient(t, ns, name, tok)
	waitLoadGoesOn(t, l, "the load to go on without shard 1")

	p.next("batch get through the Service")
	res, err := c.GetMany(ctxT(t, time.Minute), getKeys)
	if !errors.Is(err, cacheclient.ErrPartialFailure) || len(res) != len(getKeys) {
		t.Fatalf("GetMany with shard %d down: %d results, %v; want %d and a partial failure", down, len(res), err, len(getKeys))
	}
	for i, r := range res {
		switch {
		case getOwner[i] == down:
			if r.Found || !errors.Is(r.Err, cacheclient.ErrShardUnavailable) {
				t.Errorf("GetMany: %s (shard %d): found %v, %v; want shard_unavailable", getKeys[i], down, r.Found, r.Err)
			}
		case r.Err != nil || !r.Found || !bytes.Equal(r.Value.Data, downValue(getKeys[i]).Data):
			t.Errorf("GetMany: %s (shard %d): found %v %q, %v; want its value", getKeys[i], getOwner[i], r.Found, r.Value.Data, r.Err)
		}
	}
	rawBatchGet(t, serviceURL(t, ns, name), tok, getKeys, getOwner, down)

	p.next("batch delete through the Service")
	deleted, err := c.DeleteMany(ctxT(t, time.Minute), delKeys)
	var e *cacheclient.Error
	if !errors.Is(err, cacheclient.ErrPartialFailure) || !errors.As(err, &e) || len(deleted) != len(delKeys) {
		t.Fatalf("DeleteMany with shard %d down: %v, %v; want %d flags and a partial failure", down, deleted, err, len(delKeys))
	}
	var body struct {
		Count  int `json:"count"`
		Failed []struct {
			Index int    `json:"index"`
			Key   string `json:"key"`
			Error string `json:"error"`
		} `json:"failed"`
	}
	if err := json.Unmarshal(e.Body, &body); err != nil {
		t.Fatalf("DeleteMany's error body %s: %v", e.Body, err)
	}
	var failed, downIdx, liveDel []int
	var liveKeys []kv.Key
	for _, f := range body.Failed {
		failed = append(failed, f.Index)
		// shard_timeout when the part reached the frozen shard (which
		// may apply it when thawed), shard_unavailable when it did not.
		if f.Error != wire.CodeShardUnavailable && f.Error != wire.CodeShardTimeout {
			t.Errorf("DeleteMany: failed key %d (%s): %s, want %s or %s", f.Index, f.Key, f.Error, wire.CodeShardUnavailable, wire.CodeShardTimeout)
		}
	}
	for i, o := range delOwner {
		if o == down {
			downIdx = append(downIdx, i)
		} else {
			liveDel, liveKeys = append(liveDel, i), append(liveKeys, delKeys[i])
		}
		if deleted[i] != (o != down) {
			t.Errorf("DeleteMany: %s (shard %d) deleted %v", delKeys[i], o, deleted[i])
		}
	}
	if !slices.Equal(failed, downIdx) || body.Count != len(liveDel) {
		t.Errorf("DeleteMany: failed %v, count %d; want shard %d's %v and %d", failed, body.Count, down, downIdx, len(liveDel))
	}
	gone, err := c.GetMany(ctxT(t, time.Minute), liveKeys)
	if err != nil {
		t.Fatalf("GetMany of the live shards' deleted keys: %v", err)
	}
	for i, r := range gone {
		if r.Found {
			t.Errorf("%s (shard %d) is still there after DeleteMany", liveKeys[i], delOwner[liveDel[i]])
		}
	}

	// The checks ran on the frozen process, which the kubelet has not
	// begun to restart.
	if err := stillFrozen(pid); err != nil {
		t.Fatalf("shard %d, %s after the freeze: %v", down, time.Since(frozen).Round(100*time.Millisecond), err)
	}
	t.Logf("shard %d frozen for %s: the load ran %d operations, %d failed", down, time.Since(frozen).Round(100*time.Millisecond),
		store.ops.Load()-opsFrozen, store.errs.Load()-errsFrozen)

	p.next("thaw shard 1 until it is back in the Service")
	thaw()
	waitServiceRoutes(t, ns, name, 0, 1, 2)
	waitAvailable(t, ns, name, 2*time.Minute)
	if n := restartCount(cachePod(t, ns, name, down)); n != restarts {
		t.Errorf("shard %d's pod restarted %d times while frozen", down, n-restarts)
	}

	p.next("every key after the thaw")
	// The live shards forward to shard 1 again once one of their
	// forwards, tried once a second, is answered.
	eventually(t, time.Minute, "shard 1's keys to be answered through the Service", func(ctx context.Context) (bool, string) {
		res, err = c.GetMany(ctx, slices.Concat(getKeys, delKeys))
		return err == nil, fmt.Sprintf("GetMany: %v", err)
	})
	for i, r := range res {
		k := r.Key
		switch {
		case i < len(getKeys) && (!r.Found || !bytes.Equal(r.Value.Data, downValue(k).Data)):
			t.Errorf("after the thaw, %s (shard %d): found %v %q; want its value", k, getOwner[i], r.Found, r.Value.Data)
		case i >= len(getKeys) && delOwner[i-len(getKeys)] != down && r.Found:
			t.Errorf("after the thaw, %s (shard %d) is back", k, delOwner[i-len(getKeys)])
		case i >= len(getKeys) && r.Found && !bytes.Equal(r.Value.Data, downValue(k).Data):
			// The frozen shard's part of the delete is unknown: whether
			// it ran or not, the key is gone or has its value.
			t.Errorf("after the thaw, %s (shard %d): %q", k, down, r.Value.Data)
		}
	}

	t.Logf("shard %d counts %v requests whose clients had gone (code 499): the writes it took while frozen and dropped", down,
		clientsGone(t, podURL(cachePod(t, ns, name, down)), tok))

	p.next("stop the load and check the ledger")
	stopLoad()
	// Read with retries, not as the load's client.
	verifyServiceLoad(t, l, c, fmt.Sprintf("with shard %d frozen and thawed", down))
}

// rawBatchGet checks the HTTP answer of a batch get through the Service
// while shard number down is away: 200, Diskcache-Failed-Keys counting
// that shard's keys, and their records not found, with error
// shard_unavailable.
func rawBatchGet(t *testing.T, base, tok string, keys []kv.Key, owner []int, down int) {
	t.Helper()
	var req struct {
		Keys []wire.EncodeKeyJSON `json:"keys"`
	}
	want := 0
	for i, k := range keys {
		req.Keys = append(req.Keys, wire.KeyToJSON(k))
		if owner[i] == down {
			want++
		}
	}
	b, _ := json.Marshal(req)
	hr, err := http.NewRequestWithContext(ctxT(t, time.Minute), http.MethodPost, base+"/v1/batch/get", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	hr.Header.Set("Authorization", "Bearer "+tok)
	hr.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}).Do(hr)
	if err != nil {
		t.Fatalf("POST /v1/batch/get: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get(wire.HeaderFailedKeys) != strconv.Itoa(want) {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
		t.Fatalf("POST /v1/batch/get with shard %d down: %s, %s %q; want 200 and %d (%s)",
			down, resp.Status, wire.HeaderFailedKeys, resp.Header.Get(wire.HeaderFailedKeys), want, body)
	}
	rr := wire.NewRecordReader(resp.Body)
	for i, k := range keys {
		rec, val, err := rr.Next()
		if err != nil {
			t.Fatalf("POST /v1/batch/get: record %d: %v", i, err)
		}
		v, err := io.ReadAll(val)
		if err != nil {
			t.Fatalf("POST /v1/batch/get: record %d: %v", i, err)
		}
		switch {
		case rec.Key != k.Text():
			t.Fatalf("POST /v1/batch/get: record %d is %q, want %q", i, rec.Key, k.Text())
		case owner[i] == down && (rec.Error != wire.CodeShardUnavailable || rec.Found == nil || *rec.Found):
			t.Errorf("POST /v1/batch/get: %s (shard %d): %+v; want found false and error %s", k, down, rec, wire.CodeShardUnavailable)
		case owner[i] != down && (rec.Error != "" || !bytes.Equal(v, downValue(k).Data)):
			t.Errorf("POST /v1/batch/get: %s (shard %d): %+v %q; want its value", k, owner[i], rec, v)
		}
	}
	if _, _, err := rr.Next(); !errors.Is(err, io.EOF) {
		t.Errorf("POST /v1/batch/get: after %d records: %v, want the end", len(keys), err)
	}
}

// clientsGone is how many requests the server at url counts as ended by
// their client (code 499): writes whose client had closed the connection
// before they were served, requests cancelled while served.
func clientsGone(t *testing.T, url, tok string) float64 {
	t.Helper()
	req, err := http.NewRequestWithContext(ctxT(t, 30*time.Second), http.MethodGet, url+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil}}).Do(req)
	if err != nil {
		t.Fatalf("GET %s/metrics: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s/metrics: %s, %v", url, resp.Status, err)
	}
	n := 0.0
	for _, line := range strings.Split(string(b), "\n") {
		series, v, _ := strings.Cut(line, " ")
		if strings.HasPrefix(series, "diskcache_http_requests_total{") && strings.Contains(series, `code="499"`) {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s/metrics: %q: %v", url, line, err)
			}
			n += f
		}
	}
	return n
}
