//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
	"github.com/diskcache-operator/diskcache-operator/kv"
)

// autoscaleValue is the value of key i: 64 KiB (a value file), its own
// bytes.
func autoscaleValue(i int) []byte {
	return bytes.Repeat([]byte(fmt.Sprintf("%08d", i)), 64<<10/8)
}

// The built-in autoscaler: a one-shard cache (minShards 1, maxShards
// 3, fill target 0.5 of a 16Mi sizeLimit) filled through the Service past
// the target but below sizeLimit, so culling removes nothing: the operator
// grows it, the keys move to the new shard, and every key written reads
// back.
func TestAutoscalingGrowsOnFill(t *testing.T) {
	p := newPhases(t)
	defer p.done()
	p.next("create 1 shard with autoscaling + Available")
	ns := newNamespace(t, "autoscale")
	const name = "auto"
	createDiskCache(t, newDiskCache(ns, name, func(dc *cachev1alpha1.DiskCache) {
		dc.Spec.SizeLimit = ptr.To(resource.MustParse("16Mi"))
		dc.Spec.Fanout = 2
		dc.Spec.Autoscaling = &cachev1alpha1.AutoscalingSpec{
			Enabled: true, MinShards: 1, MaxShards: 3,
			Targets:      &cachev1alpha1.AutoscalingTargets{FillPercent: ptr.To(int32(50))},
			Behavior:     cachev1alpha1.AutoscalingBehavior{Cooldown: &metav1.Duration{Duration: 10 * time.Second}},
			PollInterval: &metav1.Duration{Duration: 5 * time.Second},
		}
	}))
	waitAvailable(t, ns, name, 4*time.Minute)
	eventually(t, time.Minute, "a first reading", func(context.Context) (bool, string) {
		a := getDiskCache(t, ns, name).Status.Autoscaling
		return a != nil && a.Fill != "", fmt.Sprintf("status.autoscaling %+v", a)
	})

	p.next("fill through the Service to ~0.6 of sizeLimit")
	tok := token(t, ns, name)
	svc := serviceClient(t, ns, name, tok)
	const n = 160 // 10 MiB of values: fill about 0.63 on one shard, no culling
	ctx := ctxT(t, 2*time.Minute)
	for i := range n {
		if err := svc.Set(ctx, kv.TextKey(fmt.Sprint("auto-", i)), kv.Bytes(autoscaleValue(i)), kv.SetOptions{}); err != nil {
			t.Fatalf("set auto-%d: %v", i, err)
		}
	}
	if in, err := svc.Info(ctx); err != nil || in.Count != n {
		t.Fatalf("info after writing %d keys: %+v %v", n, in, err)
	}

	p.next("the autoscaler grows the cache")
	eventually(t, 2*time.Minute, "spec.shards 2", func(context.Context) (bool, string) {
		dc := getDiskCache(t, ns, name)
		return dc.Spec.Shards == 2, fmt.Sprintf("spec.shards %d, status.autoscaling %+v", dc.Spec.Shards, dc.Status.Autoscaling)
	})
	// The Event is recorded asynchronously, after the spec changed.
	var note string
	eventually(t, time.Minute, "a ScaledUp event naming the fill", func(context.Context) (bool, string) {
		for _, e := range eventsOf(t, ns, name) {
			if e.Reason == "ScaledUp" {
				note = e.Note
			}
		}
		return strings.Contains(note, "spec.shards 1 → 2: fill"), fmt.Sprintf("ScaledUp event %q", note)
	})
	t.Logf("ScaledUp: %s", note)

	p.next("rebalanced onto 2 shards")
	dc := waitAvailable(t, ns, name, 4*time.Minute)
	eventually(t, 3*time.Minute, "the move ended", func(context.Context) (bool, string) {
		dc = getDiskCache(t, ns, name)
		st := dc.Status.Topology
		return st != nil && st.Shards == 2 && !st.Rebalancing && st.ReadyShardsOnEpoch == 2, fmt.Sprintf("status.topology %+v", st)
	})

	p.next("every key reads back; both shards hold a share")
	for i := range n {
		it, ok, err := svc.Get(ctx, kv.TextKey(fmt.Sprint("auto-", i)))
		if err != nil || !ok || !bytes.Equal(it.Value.Data, autoscaleValue(i)) {
			t.Fatalf("auto-%d after the scale: found %v, %d bytes, %v", i, ok, len(it.Value.Data), err)
		}
	}
	total := int64(0)
	for shard := range 2 {
		in, err := podCache(t, cachePod(t, ns, name, shard), tok, nil).Info(ctx)
		if err != nil || in.Count == 0 {
			t.Errorf("shard %d holds %d keys (%v): want a share", shard, in.Count, err)
		}
		total += in.Count
	}
	if total != n {
		t.Errorf("the shards hold %d keys together, want %d (one copy each)", total, n)
	}
	a := getDiskCache(t, ns, name).Status.Autoscaling
	t.Logf("status.autoscaling after the move: shards %d, fill %s, decision %q", dc.Spec.Shards, a.Fill, a.Decision)
}
