package controllers

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
	cacheclient "github.com/diskcache-operator/diskcache-operator/client"
	"github.com/diskcache-operator/diskcache-operator/controllers/maintenance"
	"github.com/diskcache-operator/diskcache-operator/kv"
	"github.com/diskcache-operator/diskcache-operator/topology"
)

func findEvent(t *testing.T, ns, name, reason string) (eventsv1.Event, bool) {
	for _, e := range eventsFor(t, ns, name) {
		if e.Reason == reason {
			return e, true
		}
	}
	return eventsv1.Event{}, false
}

func TestMaintenanceEndToEnd(t *testing.T) {
	needEnv(t)
	ns := newNamespace(t)
	// Its own manager, clock and maintenance memory: moving the clock
	// touches no other test, nor a repeated run of this one.
	clk := clocktesting.NewFakePassiveClock(time.Now())
	startTestManager(t, ns, "maintenance", newTestMaintenance(clk))
	const sizeLimit = 256 << 10
	newDiskCache(t, ns, "maint", func(dc *cachev1alpha1.DiskCache) {
		dc.Labels = map[string]string{otherManagerLabel: "maintenance"}
		dc.Spec.Shards = 3
		dc.Spec.SizeLimit = ptrTo(resource.MustParse(fmt.Sprint(sizeLimit)))
		dc.Spec.CullLimit = ptrTo[int32](0) // writes do not cull: only maintenance does
		dc.Spec.Maintenance.Schedule = "0 3 * * *"
	})
	tok := waitToken(t, ns, "maint")
	servers := startShardsWithSizeLimit(t, ns, "maint", 3, tok, sizeLimit)
	cc := func(i int) *cacheclient.Cache {
		return shardClient(t, servers[i].URL, tok).Cache("")
	}
	// Keys each shard owns: the servers route the others to their owners.
	for _, k := range keysOwnedBy("dead-", 0, 3, 10) {
		if err := cc(0).Set(bg, kv.TextKey(k), kv.Bytes([]byte("x")), kv.SetOptions{Expire: kv.ExpireAfterSeconds(-60)}); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range keysOwnedBy("big-", 1, 3, 100) {
		if err := cc(1).Set(bg, kv.TextKey(k), kv.Bytes(make([]byte, 8<<10)), kv.SetOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if in, _ := cc(1).Info(bg); in.Volume <= sizeLimit {
		t.Fatalf("shard 1 not over its limit: %d", in.Volume)
	}
	servers[2].Kill()

	// Nothing ran yet; the next run is reported.
	eventually(t, "nextScheduleTime", func() error {
		dc := get(t, ns, "maint", &cachev1alpha1.DiskCache{})
		if m := dc.Status.Maintenance; m == nil || m.NextScheduleTime == nil || m.LastScheduleTime != nil {
			return fmt.Errorf("status.maintenance %+v", m)
		}
		return nil
	})

	// 03:00 tomorrow arrives (the fake clock), and a reconcile happens.
	now := clk.Now().UTC()
	due := time.Date(now.Year(), now.Month(), now.Day()+1, 3, 0, 0, 0, time.UTC)
	clk.SetTime(due.Add(5 * time.Second))
	updateDiskCache(t, ns, "maint", func(dc *cachev1alpha1.DiskCache) { dc.Labels["poke"] = "1" })

	var m *cachev1alpha1.MaintenanceStatus
	eventually(t, "scheduled run in status", func() error {
		dc := get(t, ns, "maint", &cachev1alpha1.DiskCache{})
		m = dc.Status.Maintenance
		if m == nil || m.LastScheduleTime == nil || !m.LastScheduleTime.Time.Equal(due) {
			return fmt.Errorf("status.maintenance %+v", m)
		}
		return nil
	})
	if m.Expired != 10 || len(m.PerShard) != 3 || m.PerShard[0].Expired != 10 || m.PerShard[1].Culled == 0 || m.Culled != m.PerShard[1].Culled {
		t.Errorf("counts: %+v", m)
	}
	if !strings.Contains(m.PerShard[2].Error, "connection refused") || m.PerShard[0].Error != "" || m.PerShard[1].Error != "" ||
		!strings.HasPrefix(m.LastError, "shard 2: expire: ") || m.LastSuccessfulTime != nil {
		t.Errorf("down shard: %+v", m)
	}
	if !m.NextScheduleTime.Time.Equal(due.Add(24 * time.Hour)) {
		t.Errorf("next %v", m.NextScheduleTime)
	}
	if in, _ := cc(1).Info(bg); in.Volume > sizeLimit {
		t.Errorf("shard 1 still over its limit: %d", in.Volume)
	}
	if in, _ := cc(0).Info(bg); in.Count != 0 {
		t.Errorf("shard 0 still holds %d items", in.Count)
	}
	eventually(t, "Warning event", func() error {
		e, ok := findEvent(t, ns, "maint", maintenance.ReasonFailed)
		if !ok {
			return fmt.Errorf("no %s event", maintenance.ReasonFailed)
		}
		if e.Type != "Warning" || !strings.Contains(e.Note, "(shard 2)") || !strings.Contains(e.Note, "2 other shards expired 10") {
			t.Fatalf("event %s %q", e.Type, e.Note)
		}
		return nil
	})

	// The down shard comes back; a manual trigger runs once and succeeds.
	servers[2].Restart(t)
	updateDiskCache(t, ns, "maint", func(dc *cachev1alpha1.DiskCache) {
		dc.Annotations = map[string]string{maintenance.TriggerAnnotation: "now"}
	})
	eventually(t, "manual run", func() error {
		dc := get(t, ns, "maint", &cachev1alpha1.DiskCache{})
		m = dc.Status.Maintenance
		if m == nil || m.LastTrigger != "now" || m.LastSuccessfulTime == nil {
			return fmt.Errorf("status.maintenance %+v", m)
		}
		return nil
	})
	eventually(t, "Normal event", func() error {
		e, ok := findEvent(t, ns, "maint", maintenance.ReasonSucceeded)
		if !ok {
			return fmt.Errorf("no %s event", maintenance.ReasonSucceeded)
		}
		if !strings.Contains(e.Note, `requested by cache.diskcache.dev/run-maintenance="now"`) {
			t.Fatalf("event %q", e.Note)
		}
		return nil
	})

	// An invalid schedule (accepted by the CRD pattern) is reported.
	updateDiskCache(t, ns, "maint", func(dc *cachev1alpha1.DiskCache) { dc.Spec.Maintenance.Schedule = "0 0 30 2 *" })
	eventually(t, "Degraded condition", func() error {
		dc := get(t, ns, "maint", &cachev1alpha1.DiskCache{})
		c := meta.FindStatusCondition(dc.Status.Conditions, cachev1alpha1.ConditionDegraded)
		if c == nil || c.Reason != maintenance.ReasonInvalidSchedule || !strings.Contains(c.Message, "never fires") {
			return fmt.Errorf("condition %+v", c)
		}
		if dc.Status.Maintenance.NextScheduleTime != nil {
			return fmt.Errorf("next %v", dc.Status.Maintenance.NextScheduleTime)
		}
		return nil
	})
	_ = client.ObjectKey{}
	_ = context.Background
}

// keysOwnedBy returns count keys starting with prefix that shard owns
// among n.
func keysOwnedBy(prefix string, shard, n, count int) []string {
	var keys []string
	for i := 0; len(keys) < count; i++ {
		if k := fmt.Sprint(prefix, i); topology.Owner([]byte(k), n) == shard {
			keys = append(keys, k)
		}
	}
	return keys
}
