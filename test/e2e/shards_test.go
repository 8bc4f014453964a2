//go:build e2e

package e2e

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
	cacheclient "github.com/diskcache-operator/diskcache-operator/client"
	"github.com/diskcache-operator/diskcache-operator/kv"
)

// shardScope sends every request with Diskcache-Scope: shard, so a pod
// answers about itself only (no forwarding, no fan-out).
type shardScope struct{ next http.RoundTripper }

func (s shardScope) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header.Set("Diskcache-Scope", "shard")
	return s.next.RoundTrip(req)
}

// podCache is a client of one pod's own data, over https verified with
// tlsConfig when it is set (spec.tls), over http otherwise.
func podCache(t *testing.T, pod *corev1.Pod, tok string, tlsConfig *tls.Config) *cacheclient.Cache {
	t.Helper()
	tr := http.DefaultTransport
	if tlsConfig != nil {
		tt := http.DefaultTransport.(*http.Transport).Clone()
		tt.TLSClientConfig = tlsConfig.Clone()
		tr = tt
	}
	c, err := cacheclient.New(dataURL(pod.Status.PodIP, tlsConfig), cacheclient.Options{Token: tok, Retries: 3, DirectOnly: true,
		HTTPClient: &http.Client{Transport: shardScope{tr}}})
	if err != nil {
		t.Fatal(err)
	}
	return c.Cache("")
}

// foundOf counts which of items [from,to) with the given predicate a cache has.
func foundOf(t *testing.T, c *cacheclient.Cache, from, to int, keep func(int) bool) int {
	t.Helper()
	var keys []kv.Key
	for i := from; i < to; i++ {
		if keep(i) {
			keys = append(keys, dataItem(i).Key)
		}
	}
	found := 0
	for lo := 0; lo < len(keys); lo += 1000 {
		res, err := c.GetMany(ctxT(t, time.Minute), keys[lo:min(lo+1000, len(keys))])
		if err != nil {
			t.Fatalf("GetMany: %v", err)
		}
		for _, r := range res {
			if r.Found {
				found++
			}
		}
	}
	return found
}

// 8. The sample's three shards are one cache through the Service: every
// key written through it reads back through it, evict by tag empties the
// tag on every pod, and stats and counts through the Service are the sums
// of the pods'.
func TestShardsAreOneCache(t *testing.T) {
	const n = 10000
	p := newPhases(t)
	defer p.done()
	p.next("create 3 shards + Available")
	ns := newNamespace(t, "shards")
	const name = "shards"
	createDiskCache(t, newDiskCache(ns, name, func(dc *cachev1alpha1.DiskCache) {
		dc.Spec.Shards = 3
		dc.Spec.Statistics = true
		dc.Spec.TagIndex = true
	}))
	waitAvailable(t, ns, name, 5*time.Minute)

	p.next("topology announced to every shard")
	waitTopologyAnnounced(t, ns, name, 3)
	out, _ := kubectl(t, "-n", ns, "get", "dcache", name, "-o", "wide")
	t.Logf("kubectl get dcache -o wide:\n%s", out)

	tok := token(t, ns, name)
	// Through the Service only: no client-side routing, so the servers
	// route every key.
	svc := serviceClient(t, ns, name, tok)
	var pods []*cacheclient.Cache
	for i := range 3 {
		pods = append(pods, podCache(t, cachePod(t, ns, name, i), tok, nil))
	}

	p.next(fmt.Sprintf("write %d keys through the Service", n))
	writeItems(t, svc, 0, n, 500)

	p.next(fmt.Sprintf("read %d keys back through the Service", n))
	if _, _, err := svc.Stats(ctxT(t, time.Minute), true, true); err != nil { // count from zero
		t.Fatal(err)
	}
	checkItems(t, svc, 0, n, 1000) // fails on any miss
	hits, misses, err := svc.Stats(ctxT(t, time.Minute), true, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("through the Service: %d hits, %d misses", hits, misses)
	if hits != n || misses != 0 {
		t.Errorf("stats through the Service: %d hits %d misses, want %d and 0", hits, misses, n)
	}

	p.next("counts and stats are the pods' sums")
	var podHits, podMisses, podCount int64
	for i, pc := range pods {
		h, m, err := pc.Stats(ctxT(t, time.Minute), true, false)
		if err != nil {
			t.Fatal(err)
		}
		in, err := pc.Info(ctxT(t, time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("shard %d: %d items, %d hits, %d misses", i, in.Count, h, m)
		if in.Count == 0 || in.Count == n {
			t.Errorf("shard %d holds %d of %d keys: want a share", i, in.Count, n)
		}
		podHits, podMisses, podCount = podHits+h, podMisses+m, podCount+in.Count
	}
	in, err := svc.Info(ctxT(t, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if in.Count != n || podCount != n || podHits != hits || podMisses != misses {
		t.Errorf("Service: %d items %d hits %d misses; pods sum to %d items %d hits %d misses; want %d items",
			in.Count, hits, misses, podCount, podHits, podMisses, n)
	}

	p.next("list the keys through the Service while writes go on")
	listKeysUnderLoad(t, svc, pods, n)

	p.next("evict by tag through the Service")
	tagged := func(i int) bool { return i%10 != 0 && i%7 == 3 }
	for i, pc := range pods {
		if got := foundOf(t, pc, 0, n, tagged); got == 0 {
			t.Errorf("shard %d has no tag-3 key before the evict: the test would prove nothing", i)
		}
	}
	evicted, err := svc.Evict(ctxT(t, 2*time.Minute), kv.TextKey("tag-3"))
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	for i := 0; i < n; i++ {
		if tagged(i) {
			want++
		}
	}
	if evicted != int64(want) {
		t.Errorf("evicted %d, want %d", evicted, want)
	}
	for i, pc := range pods {
		if got := foundOf(t, pc, 0, n, tagged); got != 0 {
			t.Errorf("shard %d still has %d tag-3 keys", i, got)
		}
	}
	if got := foundOf(t, svc, 0, n, func(i int) bool { return !tagged(i) }); got != n-want {
		t.Errorf("%d of the %d other keys left through the Service", got, n-want)
	}
}

// listKeysUnderLoad lists the cache's keys through the Service (GET
// /v1/keys, which goes from shard to shard) while another goroutine keeps
// writing new keys through it: the n keys written before (dataItem's) are
// each listed once, the text ones once with a match, every key
// acknowledged before the listing started is listed, and nothing is listed
// that was not written. The pods' own parts add up to the same keys.
func listKeysUnderLoad(t *testing.T, svc *cacheclient.Cache, pods []*cacheclient.Cache, n int) {
	t.Helper()
	ctx := ctxT(t, 5*time.Minute)
	stop := make(chan struct{})
	var acked atomic.Int64 // load keys load-0 .. load-(acked-1) are stored
	var loadErrs atomic.Int64
	done, started := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for i := int64(0); ; i++ {
			if i == 200 { // the load is under way: the listing may start
				close(started)
			}
			select {
			case <-stop:
				return
			default:
			}
			if err := svc.Set(ctx, kv.TextKey(fmt.Sprintf("load-%d", i)), kv.Int(i), kv.SetOptions{}); err != nil {
				loadErrs.Add(1)
				return
			}
			acked.Store(i + 1)
		}
	}()
	select {
	case <-started:
	case <-done:
		t.Fatalf("the load stopped after %d writes (%d errors)", acked.Load(), loadErrs.Load())
	}
	before := acked.Load()
	listed := map[string]int{}
	for k, err := range svc.Keys(ctx, cacheclient.KeysOptions{Limit: 700}) {
		if err != nil {
			t.Fatal(err)
		}
		listed[k.String()]++
	}
	matched := map[string]int{}
	for k, err := range svc.Keys(ctx, cacheclient.KeysOptions{Match: "key-*", Limit: 500}) {
		if err != nil {
			t.Fatal(err)
		}
		matched[k.String()]++
	}
	close(stop)
	<-done
	after := acked.Load()
	var lost, duplicated, unknown, matchLost int
	for k, c := range listed {
		if c > 1 {
			duplicated++
		}
		var i int64
		if _, err := fmt.Sscanf(k, "load-%d", &i); err == nil && i >= after {
			unknown++
		}
	}
	// dataItem's keys: text "key-NNNNN" for odd i, ints for even i (which
	// no glob matches).
	wantMatched := 0
	for i := 0; i < n; i++ {
		k := dataItem(i).Key
		if listed[k.String()] != 1 {
			lost++
		}
		if i%2 == 1 {
			wantMatched++
			if matched[k.String()] != 1 {
				matchLost++
			}
		}
	}
	for i := int64(0); i < before; i++ {
		if listed[kv.TextKey(fmt.Sprintf("load-%d", i)).String()] != 1 {
			lost++
		}
	}
	t.Logf("KEYLIST listed %d keys (%d of the %d load writes acknowledged while it ran, %d before it started), "+
		"matched %d: lost %d, duplicated %d, unknown %d, lost by match %d, load errors %d",
		len(listed), after-before, after, before, len(matched), lost, duplicated, unknown, matchLost, loadErrs.Load())
	if lost != 0 || duplicated != 0 || unknown != 0 || matchLost != 0 || len(matched) != wantMatched || loadErrs.Load() != 0 {
		t.Errorf("listing through the Service: lost %d, duplicated %d, unknown %d, lost by match %d, matched %d of %d, load errors %d",
			lost, duplicated, unknown, matchLost, len(matched), wantMatched, loadErrs.Load())
	}
	if after == before {
		t.Error("no write landed while the listing ran: it was not under load")
	}
	total := 0
	for i, pc := range pods {
		own := 0
		for _, err := range pc.Keys(ctx, cacheclient.KeysOptions{Match: "key-*"}) {
			if err != nil {
				t.Fatal(err)
			}
			own++
		}
		t.Logf("shard %d lists %d of the keys as its own", i, own)
		total += own
	}
	if total != wantMatched {
		t.Errorf("the shards' own listings hold %d matching keys, want %d", total, wantMatched)
	}
}
