//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrlclient "sigs.k8s.io/controller-runtime/pkg/client"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
	cacheclient "github.com/diskcache-operator/diskcache-operator/client"
	"github.com/diskcache-operator/diskcache-operator/internal/loadcheck"
)

// 11. A DiskCache deleted with its claims kept (whenDeleted: Retain) and
// created again with another shard count: 2 shards under load, delete,
// create with 3. The shards start on their kept volumes, which hold the
// layout of 2; the operator carries on from it (Warning TopologyFromShards)
// and moves the keys to 3 shards. A load runs through the new Service
// from its creation on: no pod serves the keys by the layout of the spec
// before the kept shards have reported theirs. Every write acknowledged
// before the delete and during the re-create reads back through the new
// Service, and a scale to 2 under load afterwards brings back nothing
// deleted or overwritten meanwhile: 0 lost, 0 stale, 0 resurrected. The token is the user's Secret, which outlives
// the DiskCache, so the same clients carry on.
func TestRecreatedOnKeptVolumesKeepsEveryWrite(t *testing.T) {
	p := newPhases(t)
	defer p.done()
	p.next("create 2 shards (whenDeleted: Retain) + Available")
	ns := newNamespace(t, "recreate")
	const name, tok = "recreate", "e2e-recreate-token-0123456789"
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "recreate-auth"},
		StringData: map[string]string{cachev1alpha1.TokenKey: tok}}
	if err := k8s.Create(ctxT(t, 30*time.Second), sec); err != nil {
		t.Fatal(err)
	}
	spec := func(shards int32) *cachev1alpha1.DiskCache {
		return newDiskCache(ns, name, func(dc *cachev1alpha1.DiskCache) {
			dc.Spec.Shards = shards
			dc.Spec.TagIndex = true
			dc.Spec.Auth.SecretName = sec.Name
			dc.Spec.Storage.PVCRetentionPolicy.WhenDeleted = cachev1alpha1.RetainPVC
		})
	}
	createDiskCache(t, spec(2))
	waitAvailable(t, ns, name, 5*time.Minute)
	waitTopologyAnnounced(t, ns, name, 2)
	store := &rescaleStore{c: serviceClient(t, ns, name, tok)}
	l := loadcheck.New(store, loadcheck.Config{Workers: 8, KeysPerWorker: 250, Prefix: "recreate"})

	p.next("load on 2 shards")
	runLoad(t, l, store, 4000)
	counts, err := l.VerifyThrough(ctxT(t, 3*time.Minute), store)
	if err != nil || !counts.Safe() {
		t.Fatalf("before the delete: %v, %v", counts, err)
	}

	p.next("delete the DiskCache, claims kept")
	before := getDiskCache(t, ns, name)
	epoch := before.Status.Topology.Epoch
	if err := k8s.Delete(ctxT(t, 30*time.Second), before); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Minute, "the DiskCache and its pods gone", func(ctx context.Context) (bool, string) {
		err := k8s.Get(ctx, ctrlclient.ObjectKey{Namespace: ns, Name: name}, &cachev1alpha1.DiskCache{})
		var pods corev1.PodList
		if lerr := k8s.List(ctx, &pods, ctrlclient.InNamespace(ns), ctrlclient.MatchingLabels{"app.kubernetes.io/instance": name}); lerr != nil {
			return false, lerr.Error()
		}
		return apierrors.IsNotFound(err) && len(pods.Items) == 0, fmt.Sprintf("get: %v, %d pods", err, len(pods.Items))
	})
	var claims corev1.PersistentVolumeClaimList
	if err := k8s.List(ctxT(t, 30*time.Second), &claims, ctrlclient.InNamespace(ns)); err != nil || len(claims.Items) != 2 {
		t.Fatalf("claims kept: %d, %v; want 2", len(claims.Items), err)
	}

	p.next("create again with 3 shards under load: the keys move to 3")
	createDiskCache(t, spec(3))
	// The load runs through the new Service from the moment it has an
	// address, so it meets every pod as soon as it is ready: a shard
	// serving keys by a layout they were not placed by would answer
	// deletes and increments there, which the move brings back over.
	var svc corev1.Service
	eventually(t, 2*time.Minute, "the new Service", func(ctx context.Context) (bool, string) {
		err := k8s.Get(ctx, ctrlclient.ObjectKey{Namespace: ns, Name: name}, &svc)
		return err == nil && svc.Spec.ClusterIP != "", fmt.Sprintf("get: %v", err)
	})
	c, err := cacheclient.New(fmt.Sprintf("http://%s:%d", svc.Spec.ClusterIP, cachePort), cacheclient.Options{Token: tok, Retries: 3, DirectOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	store.c = c.Cache("")
	ops0, errs0 := store.ops.Load(), store.errs.Load()
	stop, done := make(chan struct{}), make(chan struct{})
	go func() { l.Run(context.Background(), stop); close(done) }()
	waitAvailable(t, ns, name, 5*time.Minute)
	eventually(t, 5*time.Minute, "the move to 3 shards to end", func(ctx context.Context) (bool, string) {
		topo, err := readTopology(ctx, ns, name)
		return err == nil && topo.Shards == 3 && topo.Epoch > epoch && !topo.Rebalancing && topo.PreviousShards == 0 && topo.ReadyShardsOnEpoch == 3,
			fmt.Sprintf("status.topology %+v (%v); the deleted DiskCache's epoch was %d", topo, err, epoch)
	})
	close(stop)
	<-done
	// The new shard's pod was made only once the kept shards had reported:
	// it started by their layout (or the move from it), never by the
	// spec's own first one (epoch 1, 3 shards), which would have served
	// keys where they were never placed.
	logs, err := kubectl(t, "-n", ns, "logs", name+"-2")
	if err != nil {
		t.Fatalf("logs of %s-2: %v\n%s", name, err, logs)
	}
	start := servingTopology(t, logs)
	t.Logf("%s-2 started by topology epoch %d with %d shards (previous: %d shards)", name, start.Epoch, start.Shards, start.PreviousShards)
	if start.Epoch == 1 && start.Shards == 3 && start.PreviousShards == 0 {
		t.Errorf("%s-2 started by the spec's first layout (epoch 1, 3 shards), not the kept shards' one", name)
	}
	t.Logf("the load during the re-create: %d operations, %d errors (no pod ready at first)", store.ops.Load()-ops0, store.errs.Load()-errs0)
	out, _ := kubectl(t, "-n", ns, "get", "events", "--field-selector", "reason=TopologyFromShards", "-o", "custom-columns=MESSAGE:.message")
	t.Logf("TopologyFromShards events:\n%s", strings.TrimSpace(out))
	if !strings.Contains(out, "carrying on from it") {
		t.Errorf("no TopologyFromShards event")
	}
	counts, err = l.VerifyThrough(ctxT(t, 3*time.Minute), store)
	t.Logf("LOADCHECK after the delete and a re-create with 3 shards: lost %d, stale %d, resurrected %d (%v, %v)",
		counts.Lost, counts.Stale, counts.Resurrected, counts, err)
	if err != nil || !counts.Safe() {
		t.Fatalf("after the re-create: %v, %v", counts, err)
	}

	p.next("kubectl scale 3 → 2 under load")
	rescaleStep(t, ns, name, tok, l, store, 3, 2)
}

// runLoad runs the ledger's workers until they have sent n more
// operations.
func runLoad(t *testing.T, l *loadcheck.Ledger, store *rescaleStore, n int64) {
	t.Helper()
	stop, done := make(chan struct{}), make(chan struct{})
	go func() { l.Run(context.Background(), stop); close(done) }()
	defer func() { close(stop); <-done }()
	ops0 := store.ops.Load()
	eventually(t, 2*time.Minute, "the load", func(context.Context) (bool, string) {
		sent := store.ops.Load() - ops0
		return sent >= n, fmt.Sprintf("%d of %d operations", sent, n)
	})
}

// startTopology is what a server's "serving" log line says of the topology
// it started by.
type startTopology struct {
	Epoch          int64 `json:"topology_epoch"`
	Shards         int   `json:"topology_shards"`
	PreviousShards int   `json:"topology_previous_shards"`
}

// servingTopology reads the last "serving" line of a server's logs.
func servingTopology(t *testing.T, logs string) startTopology {
	t.Helper()
	var last *startTopology
	for _, line := range strings.Split(logs, "\n") {
		var rec struct {
			Msg string `json:"msg"`
			startTopology
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "serving" {
			last = &rec.startTopology
		}
	}
	if last == nil {
		t.Fatalf("no serving line in the logs:\n%s", logs)
	}
	return *last
}
