//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"hash/fnv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrlclient "sigs.k8s.io/controller-runtime/pkg/client"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
	cacheclient "github.com/diskcache-operator/diskcache-operator/client"
	"github.com/diskcache-operator/diskcache-operator/internal/loadcheck"
	"github.com/diskcache-operator/diskcache-operator/kv"
)

// rescaleStore is the load of the rescale test through one Go client of
// the Service: one key in 20 carries a value above diskMinFileSize (a value
// file), six in 20 a tag, six in 20 an expiry (an hour: they stay live), so
// every kind of item moves, and three in 20 are written as a batch set
// (through a shard that may not have learned the newer layout yet). It
// counts the operations it sends.
type rescaleStore struct {
	c *cacheclient.Cache
	// tls is what c verifies the Service's https with (a DiskCache with
	// spec.tls), and the shards are asked with; nil over plain http.
	tls       *tls.Config
	ops, errs atomic.Int64
	// Batch sets (three keys in 20 are written with SetMany, which the
	// shard that takes it splits by owner), and those that failed.
	batches, batchErrs atomic.Int64
	// colls, when set, runs beside the load: named deques and caches
	// written and dropped through the Service, checked after each step.
	colls *collectionLoad
	// standing, when set, are keys written before the scales and never
	// changed: listings through the Service run back to back during each
	// scale, and every one must hold all of them (listDuringScale).
	standing []string
	// killDuringMove, when set, is the pod force-deleted (its cacheserver
	// killed, as kill -9) once the next scale's move is under way.
	killDuringMove string
}

// listingCounts is what the listings during one scale found.
type listingCounts struct {
	listings, keys, missed, twice, errs int64
	firstMissed                         []string
	lastErr                             error
}

// listDuringScale lists the cache's keys through c, a page of 500 at a
// time, again and again until stop, and counts for each complete listing
// the standing keys it missed and those it listed twice (which a key that
// moved meanwhile may be, as with Redis's SCAN).
func listDuringScale(ctx context.Context, c *cacheclient.Cache, standing []string, stop <-chan struct{}) listingCounts {
	var out listingCounts
	for {
		select {
		case <-stop:
			return out
		default:
		}
		seen := make(map[string]int, len(standing))
		var err error
		for k, kerr := range c.Keys(ctx, cacheclient.KeysOptions{Limit: 500}) {
			if kerr != nil {
				err = kerr
				break
			}
			out.keys++
			seen[k.Text()]++
		}
		if err != nil {
			out.errs++
			out.lastErr = err
			continue
		}
		out.listings++
		for _, k := range standing {
			switch n := seen[k]; {
			case n == 0:
				out.missed++
				if len(out.firstMissed) < 5 {
					out.firstMissed = append(out.firstMissed, k)
				}
			case n > 1:
				out.twice += int64(n - 1)
			}
		}
	}
}

// fileSized pads a value past the CRD's default diskMinFileSize (32Ki).
var fileSized = bytes.Repeat([]byte("f"), 40<<10)

func rescaleClass(k string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(k))
	return h.Sum32() % 20
}

func (s *rescaleStore) count(err error) error {
	s.ops.Add(1)
	if err != nil {
		s.errs.Add(1)
	}
	return err
}

func (s *rescaleStore) Set(ctx context.Context, k string, v []byte) error {
	var opts kv.SetOptions
	switch c := rescaleClass(k); {
	case c == 0:
		v = append(append(append([]byte(nil), v...), '|'), fileSized...)
	case c <= 6:
		opts.Tag = kv.TextKey("rescale")
	case c <= 12:
		opts.Expire = kv.ExpireAfter(time.Hour)
	case c >= 17:
		s.batches.Add(1)
		res, err := s.c.SetMany(ctx, []cacheclient.SetItem{{Key: kv.TextKey(k), Value: kv.Bytes(v)}})
		if err == nil && res.Stored != 1 {
			err = fmt.Errorf("batch set of %s: stored %d, failed %+v", k, res.Stored, res.Failed)
		}
		if err != nil {
			s.batchErrs.Add(1)
		}
		return s.count(err)
	}
	return s.count(s.c.Set(ctx, kv.TextKey(k), kv.Bytes(v), opts))
}

func (s *rescaleStore) Delete(ctx context.Context, k string) error {
	_, err := s.c.Delete(ctx, kv.TextKey(k))
	return s.count(err)
}

func (s *rescaleStore) Get(ctx context.Context, k string) ([]byte, bool, error) {
	it, ok, err := s.c.Get(ctx, kv.TextKey(k))
	v, _, _ := bytes.Cut(it.Value.Data, []byte("|"))
	return v, ok, s.count(err)
}

// readTopology is status.topology (empty before the first report).
func readTopology(ctx context.Context, ns, name string) (cachev1alpha1.TopologyStatus, error) {
	dc := &cachev1alpha1.DiskCache{}
	if err := k8s.Get(ctx, ctrlclient.ObjectKey{Namespace: ns, Name: name}, dc); err != nil {
		return cachev1alpha1.TopologyStatus{}, err
	}
	return ptr.Deref(dc.Status.Topology, cachev1alpha1.TopologyStatus{}), nil
}

// 10. kubectl scale of a DiskCache under load moves the data: 3 shards,
// a load generator through the Service (writers, readers and deleters of
// internal/loadcheck, with tagged, expiring and file-sized values), then
// kubectl scale --replicas=5, 2 and 4. After each step the operator has
// ended the move (status.topology on a newer epoch, not rebalancing, no
// previous layout, the StatefulSet at the new size) and every acknowledged
// write reads back: 0 lost, 0 stale, 0 resurrected. Beside the keys, 12
// named deques and 12 named caches (file-sized values) are written and
// dropped through the Service (collectionLoad): each holds exactly what was
// acknowledged since its last drop, nothing lost and nothing a drop removed
// coming back with a handoff. During each scale, listings of the keys
// through the Service run back to back (KEYLIST): each must hold the 500
// keys written before the scales (django-redis's delete_pattern during a
// scale misses nothing). The way back to 4
// reuses the claims of shards 2 and 3 that 5 → 2 drained and kept
// (whenScaled: Retain), and in its middle pod 0, a sender, is killed
// (force-deleted): the move resumes when it is back, and the ledger still
// counts nothing lost, stale or resurrected.
func TestRescaleKeepsEveryWrite(t *testing.T) {
	p := newPhases(t)
	defer p.done()
	p.next("create 3 shards + Available + topology")
	ns := newNamespace(t, "rescale")
	const name = "rescale"
	createDiskCache(t, newDiskCache(ns, name, func(dc *cachev1alpha1.DiskCache) {
		dc.Spec.Shards = 3
		dc.Spec.TagIndex = true
		// Slow enough for a move to last a few seconds, so that a pod can
		// be killed in the middle of one.
		dc.Spec.Rebalance.Rate = ptr.To(resource.MustParse("512Ki"))
	}))
	waitAvailable(t, ns, name, 5*time.Minute)
	waitTopologyAnnounced(t, ns, name, 3)

	tok := token(t, ns, name)
	store := &rescaleStore{c: serviceClient(t, ns, name, tok)}
	cl, err := cacheclient.New(serviceURL(t, ns, name), cacheclient.Options{Token: tok, Retries: 3, DirectOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	store.colls = newCollectionLoad(cl, "rescale", 12)
	for i := range 500 {
		k := fmt.Sprintf("standing-%03d", i)
		if err := store.c.Set(ctxT(t, time.Minute), kv.TextKey(k), kv.Text(k), kv.SetOptions{}); err != nil {
			t.Fatal(err)
		}
		store.standing = append(store.standing, k)
	}
	// 2000 keys, 8 writers/readers/deleters, each on its own 250 keys.
	l := loadcheck.New(store, loadcheck.Config{Workers: 8, KeysPerWorker: 250, Prefix: "rescale"})

	from := int32(3)
	for _, to := range []int32{5, 2, 4} {
		p.next(fmt.Sprintf("kubectl scale %d → %d under load", from, to))
		if to == 4 {
			// A sender of 2 → 4 killed in the middle of its handoff: the
			// StatefulSet starts it again, the move resumes, and no
			// acknowledged write is lost, stale or back.
			store.killDuringMove = name + "-0"
		}
		rescaleStep(t, ns, name, tok, l, store, from, to)
		from = to
	}
}

// rescaleStep runs the load, scales from → to, waits for the operator to
// end the move, stops the load and checks the ledger.
func rescaleStep(t *testing.T, ns, name, tok string, l *loadcheck.Ledger, store *rescaleStore, from, to int32) {
	step := fmt.Sprintf("%d → %d", from, to)
	before, err := readTopology(ctxT(t, 30*time.Second), ns, name)
	if err != nil {
		t.Fatal(err)
	}
	if before.Shards != from || before.Rebalancing {
		t.Fatalf("%s: status.topology %+v before the scale, want %d shards and no move", step, before, from)
	}

	stop, done := make(chan struct{}), make(chan struct{})
	go func() { l.Run(context.Background(), stop); close(done) }()
	collsDone := make(chan struct{})
	if store.colls != nil {
		go func() { store.colls.run(context.Background(), stop); close(collsDone) }()
	} else {
		close(collsDone)
	}
	stopped := false
	stopLoad := func() {
		if !stopped {
			close(stop)
			<-done
			<-collsDone
			stopped = true
		}
	}
	defer stopLoad()
	// The load must be running when the scale starts; its first 1000
	// operations give its throughput before the scale.
	ops0, load0 := store.ops.Load(), time.Now()
	eventually(t, time.Minute, "the load to run", func(context.Context) (bool, string) {
		n := store.ops.Load() - ops0
		return n >= 1000, fmt.Sprintf("%d operations so far", n)
	})
	rateBefore := float64(store.ops.Load()-ops0) / time.Since(load0).Seconds()

	opsStart, errsStart, ackedStart := store.ops.Load(), store.errs.Load(), l.Acked()
	var collOps0, collDrops0, collErrs0 int64
	if cl := store.colls; cl != nil {
		collOps0, collDrops0, collErrs0 = cl.ops.Load(), cl.drops.Load(), cl.errs.Load()
	}
	batchesStart, batchErrsStart := store.batches.Load(), store.batchErrs.Load()
	listStop, listed := make(chan struct{}), make(chan listingCounts, 1)
	if len(store.standing) > 0 {
		go func() { listed <- listDuringScale(context.Background(), store.c, store.standing, listStop) }()
	}
	start := time.Now()
	if out, err := kubectl(t, "-n", ns, "scale", "dcache/"+name, fmt.Sprintf("--replicas=%d", to)); err != nil {
		t.Fatalf("kubectl scale: %v\n%s", err, out)
	}
	var (
		sawMove             bool
		firstMove, lastMove time.Duration
		moved, movedBytes   int64
		maxPrevious         int32
		last                cachev1alpha1.TopologyStatus
		killed              bool
	)
	eventually(t, 5*time.Minute, "the move "+step+" to end", func(ctx context.Context) (bool, string) {
		topo, err := readTopology(ctx, ns, name)
		if err != nil {
			return false, err.Error()
		}
		last = topo
		if kill := store.killDuringMove; kill != "" && !killed && topo.Rebalancing {
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: kill}}
			if err := k8s.Delete(ctx, pod, ctrlclient.GracePeriodSeconds(0)); err != nil {
				return false, "kill " + kill + ": " + err.Error()
			}
			killed = true
			t.Logf("KILL %s: pod %s force-deleted at +%s, in the middle of the move (progress %+v)",
				step, kill, time.Since(start).Round(100*time.Millisecond), topo.Progress)
		}
		if topo.Rebalancing || topo.PreviousShards != 0 {
			if !sawMove {
				firstMove = time.Since(start)
			}
			sawMove, lastMove = true, time.Since(start)
			maxPrevious = max(maxPrevious, topo.PreviousShards)
		}
		var items, size int64
		for _, pr := range topo.Progress {
			items, size = items+pr.ItemsMoved, size+pr.BytesMoved
		}
		moved, movedBytes = max(moved, items), max(movedBytes, size)
		sts := &appsv1.StatefulSet{}
		if err := k8s.Get(ctx, ctrlclient.ObjectKey{Namespace: ns, Name: name}, sts); err != nil {
			return false, err.Error()
		}
		// Two announcements: the start of the move (with the previous
		// layout) and its end (without).
		ok := topo.Epoch >= before.Epoch+2 && !topo.Rebalancing && topo.PreviousShards == 0 &&
			topo.Shards == to && topo.ReadyShardsOnEpoch == to &&
			ptr.Deref(sts.Spec.Replicas, 0) == to && sts.Status.Replicas == to && sts.Status.ReadyReplicas == to
		return ok, fmt.Sprintf("status.topology %+v, StatefulSet replicas %d, status %d (%d ready)",
			topo, ptr.Deref(sts.Spec.Replicas, 0), sts.Status.Replicas, sts.Status.ReadyReplicas)
	})
	took := time.Since(start)
	if store.killDuringMove != "" {
		if !killed {
			t.Errorf("%s: the move ended before pod %s could be killed in its middle", step, store.killDuringMove)
		}
		store.killDuringMove = ""
	}
	close(listStop)
	if len(store.standing) > 0 {
		lc := <-listed
		t.Logf("KEYLIST during %s through the Service, under load: %d complete listings (%d keys listed), standing keys missed %d %v, listed twice %d; %d listings failed (last: %v)",
			step, lc.listings, lc.keys, lc.missed, lc.firstMissed, lc.twice, lc.errs, lc.lastErr)
		if lc.missed != 0 {
			t.Errorf("during %s a listing through the Service missed %d standing keys, first %v", step, lc.missed, lc.firstMissed)
		}
		if lc.listings == 0 {
			t.Errorf("during %s no listing through the Service completed (%d failed, last: %v)", step, lc.errs, lc.lastErr)
		}
	}
	ops, errs, acked := store.ops.Load()-opsStart, store.errs.Load()-errsStart, l.Acked()-ackedStart
	var collOps, collDrops, collErrs int64
	if cl := store.colls; cl != nil {
		collOps, collDrops, collErrs = cl.ops.Load()-collOps0, cl.drops.Load()-collDrops0, cl.errs.Load()-collErrs0
	}
	stopLoad()

	t.Logf("RESCALE %s: the operator ended the move %s after kubectl scale (epoch %d → %d); the status showed it from +%s to +%s (previous layout of %d shards), its progress up to %d items (%d value bytes) moved",
		step, took.Round(100*time.Millisecond), before.Epoch, last.Epoch, firstMove.Round(100*time.Millisecond),
		lastMove.Round(100*time.Millisecond), maxPrevious, moved, movedBytes)
	t.Logf("RESCALE %s: the load through the Service during it: %d operations (%.0f/s; %.0f/s before the scale), %d acknowledged writes, %d errors; %d of them batch sets, %d failed",
		step, ops, float64(ops)/took.Seconds(), rateBefore, acked, errs,
		store.batches.Load()-batchesStart, store.batchErrs.Load()-batchErrsStart)
	if !sawMove {
		t.Logf("RESCALE %s: no poll of the status saw the move under way (it ended between two polls)", step)
	}

	waitAvailable(t, ns, name, 2*time.Minute)
	out, _ := kubectl(t, "-n", ns, "get", "dcache", name, "-o", "wide")
	t.Logf("kubectl get dcache -o wide:\n%s", strings.TrimSpace(out))
	out, _ = kubectl(t, "-n", ns, "get", "events", "--field-selector", "reason=RebalanceFinished",
		"-o", "custom-columns=MESSAGE:.message", "--sort-by=.metadata.creationTimestamp")
	t.Logf("the operator's RebalanceFinished events so far:\n%s", strings.TrimSpace(out))

	counts, err := l.VerifyThrough(ctxT(t, 3*time.Minute), store)
	if err != nil {
		t.Fatalf("%s: verify through the Service: %v", step, err)
	}
	t.Logf("LOADCHECK after %s: lost %d, stale %d, resurrected %d, stale reads %d (%v)",
		step, counts.Lost, counts.Stale, counts.Resurrected, counts.StaleReads, counts)
	if !counts.Safe() {
		t.Errorf("after %s: %v; last: %v", step, counts, l.LastError())
	}
	if counts.Sets == 0 || counts.Deletes == 0 || counts.Reads == 0 || acked == 0 {
		t.Errorf("after %s: %v, %d writes acknowledged during the scale: the load did not exercise the move", step, counts, acked)
	}
	if cl := store.colls; cl != nil {
		cc, err := cl.verify(ctxT(t, 3*time.Minute))
		if err != nil {
			t.Fatalf("%s: verify the named collections through the Service: %v", step, err)
		}
		t.Logf("COLLECTIONS after %s: %d calls on named deques and caches during the scale (%d drops acknowledged, %d errors); %v",
			step, collOps, collDrops, collErrs, cc)
		for msg, n := range cl.errors {
			t.Logf("COLLECTIONS: %d× %s", n, msg)
		}
		clear(cl.errors)
		if cc.Lost != 0 || cc.Resurrected != 0 {
			t.Errorf("after %s, the named collections: %v", step, cc)
		}
		if collDrops == 0 || cc.Checked == 0 || cc.Items == 0 {
			t.Errorf("after %s: %d drops during the scale, %v: the collections did not exercise the move", step, collDrops, cc)
		}
	}

	// Each shard of the new layout holds a share, and together they hold
	// what the Service counts (asked with Diskcache-Scope: shard, a pod
	// answers about itself).
	var total int64
	for i := range int(to) {
		in, err := podCache(t, cachePod(t, ns, name, i), tok, store.tls).Info(ctxT(t, time.Minute))
		if err != nil {
			t.Fatalf("shard %d: %v", i, err)
		}
		t.Logf("after %s, shard %d holds %d items", step, i, in.Count)
		if in.Count == 0 {
			t.Errorf("after %s, shard %d holds nothing", step, i)
		}
		total += in.Count
	}
	all, err := store.c.Info(ctxT(t, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if all.Count != total {
		t.Errorf("after %s: the Service counts %d items, the %d shards %d", step, all.Count, to, total)
	}
}
