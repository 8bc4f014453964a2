package controllers

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
	"github.com/diskcache-operator/diskcache-operator/controllers/maintenance"
)

// TestMaintenanceRunHoldsUpOnlyItsCache: a maintenance run whose shards do
// not answer blocks its own DiskCache's reconcile (until the per-shard
// timeout), but another DiskCache is reconciled meanwhile. With a single
// worker the other cache waited for the whole run.
func TestMaintenanceRunHoldsUpOnlyItsCache(t *testing.T) {
	needEnv(t)
	const shards = 8 // two rounds of the runner's parallelism of 4
	var started, ended atomic.Int32
	release := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started.Add(1)
		defer ended.Add(1)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(release); hang.Close() })

	nsA := newNamespace(t)
	newDiskCache(t, nsA, "slow", func(dc *cachev1alpha1.DiskCache) { dc.Spec.Shards = shards })
	for i := range shards {
		key := fmt.Sprintf("%s/slow-%d", nsA, i)
		podAddrs.Store(key, hang.URL)
		t.Cleanup(func() { podAddrs.Delete(key) })
	}
	waitChildren(t, nsA, "slow")
	updateDiskCache(t, nsA, "slow", func(dc *cachev1alpha1.DiskCache) {
		dc.Annotations = map[string]string{maintenance.TriggerAnnotation: "now"}
	})
	eventually(t, "the maintenance run reaches the shards", func() error {
		if started.Load() == 0 {
			return fmt.Errorf("no shard called yet")
		}
		return nil
	})

	nsB := newNamespace(t)
	newDiskCache(t, nsB, "other", nil)
	waitChildren(t, nsB, "other")
	if n := ended.Load(); n >= shards {
		t.Fatalf("another DiskCache got its children only after the run ended (%d of %d shard calls over)", n, shards)
	}
}

// TestMaintenanceDuringAScaleUpCoversTheLayout: a run while the pods of a
// scale-up do not exist yet covers the shards of the announced layout. It
// called the new shards too, and every ordinary scale-up failed a run.
func TestMaintenanceDuringAScaleUpCoversTheLayout(t *testing.T) {
	needEnv(t)
	ns := newNamespace(t)
	newDiskCache(t, ns, "grow", func(dc *cachev1alpha1.DiskCache) { dc.Spec.Shards = 1 })
	tok := waitToken(t, ns, "grow")
	startShards(t, ns, "grow", 1, tok)
	updateDiskCache(t, ns, "grow", func(dc *cachev1alpha1.DiskCache) { dc.Spec.Shards = 2 })
	eventually(t, "StatefulSet grown", func() error {
		return want(replicas(t, ns, "grow") == 2, "replicas %d", replicas(t, ns, "grow"))
	})
	updateDiskCache(t, ns, "grow", func(dc *cachev1alpha1.DiskCache) {
		dc.Annotations = map[string]string{maintenance.TriggerAnnotation: "now"}
	})
	eventually(t, "the triggered run", func() error {
		dc := get(t, ns, "grow", &cachev1alpha1.DiskCache{})
		m := dc.Status.Maintenance
		return want(m != nil && m.LastTrigger == "now", "maintenance %+v", m)
	})
	m := get(t, ns, "grow", &cachev1alpha1.DiskCache{}).Status.Maintenance
	if m.LastError != "" || m.LastSuccessfulTime == nil || len(m.PerShard) != 1 {
		t.Errorf("a run while shard 1's pod does not exist yet: lastError %q, lastSuccessfulTime %v, %d shards run; want shard 0 only, without error", m.LastError, m.LastSuccessfulTime, len(m.PerShard))
	}
}
