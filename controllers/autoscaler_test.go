package controllers

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	klabels "k8s.io/apimachinery/pkg/labels"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
	cacheclient "github.com/diskcache-operator/diskcache-operator/client"
	"github.com/diskcache-operator/diskcache-operator/controllers/autoscale"
	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
	"github.com/diskcache-operator/diskcache-operator/kv"
)

// autoscalerRig is a manager of the test's own (reconciler and autoscaler,
// no maintenance) on a fake clock, for the DiskCaches of one namespace
// labelled for it.
type autoscalerRig struct {
	t      *testing.T
	ns     string
	name   string
	clk    *clocktesting.FakeClock
	period time.Duration
	stop   func()
	// cached reads what the autoscaler reads: the manager's cache, which
	// may lag behind the API server.
	cached client.Reader
}

func startAutoscaler(t *testing.T, ns, name, label string, period time.Duration) *autoscalerRig {
	t.Helper()
	// Whole seconds: status times are written with second precision.
	return startAutoscalerAt(t, ns, name, label, period, time.Now().Truncate(time.Second))
}

func startAutoscalerAt(t *testing.T, ns, name, label string, period time.Duration, start time.Time) *autoscalerRig {
	t.Helper()
	clk := clocktesting.NewFakeClock(start)
	opts := CacheOptions()
	opts.DefaultNamespaces = map[string]cache.Config{ns: {}}
	opts.ByObject[&cachev1alpha1.DiskCache{}] = cache.ByObject{Label: klabels.SelectorFromSet(klabels.Set{otherManagerLabel: label})}
	mgr, r, err := newTestManager(restCfg, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := mgr.Add(&Autoscaler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(),
		Recorder: mgr.GetEventRecorder(ManagerName), Reconciler: r, Clock: clk, Tick: time.Second}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(bg)
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("the test's manager: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	eventually(t, "the autoscaler's ticker", func() error { return want(clk.HasWaiters(), "no ticker yet") })
	return &autoscalerRig{t: t, ns: ns, name: name, clk: clk, period: period, stop: stop, cached: mgr.GetClient()}
}

// poll moves the clock by one poll interval and waits for the autoscaler's
// reading of that moment in the status.
func (r *autoscalerRig) poll() *cachev1alpha1.DiskCache {
	r.t.Helper()
	r.clk.Step(r.period)
	now := r.clk.Now()
	var dc *cachev1alpha1.DiskCache
	eventually(r.t, "a reading at "+now.Format(time.TimeOnly), func() error {
		dc = get(r.t, r.ns, r.name, &cachev1alpha1.DiskCache{})
		a := dc.Status.Autoscaling
		return want(a != nil && a.LastObservationTime != nil && a.LastObservationTime.Unix() == now.Unix(), "status.autoscaling %+v", a)
	})
	return dc
}

// settle plays the StatefulSet controller with n ready, updated pods (once
// the operator has set n replicas, and again whenever it changes the
// StatefulSet), and waits for the operator to see a cache that is not
// moving: topology on n shards, Progressing False, in the API server and
// in the cache the autoscaler reads.
func (r *autoscalerRig) settle(n int32) {
	r.t.Helper()
	eventually(r.t, fmt.Sprintf("settled on %d shards", n), func() error {
		sts := get(r.t, r.ns, r.name, &appsv1.StatefulSet{})
		if sts.Spec.Replicas == nil || *sts.Spec.Replicas != n {
			return fmt.Errorf("StatefulSet replicas %v", sts.Spec.Replicas)
		}
		if st := sts.Status; st.ObservedGeneration != sts.Generation || st.Replicas != n || st.ReadyReplicas != n {
			sts.Status = appsv1.StatefulSetStatus{ObservedGeneration: sts.Generation, Replicas: n, ReadyReplicas: n, AvailableReplicas: n,
				UpdatedReplicas: n, CurrentReplicas: n, CurrentRevision: "r1", UpdateRevision: "r1"}
			if err := k8s.Status().Update(bg, sts); err != nil {
				return err
			}
		}
		dc := get(r.t, r.ns, r.name, &cachev1alpha1.DiskCache{})
		if phase, why := settling(dc); phase != autoscale.Settled {
			return fmt.Errorf("%s", why)
		}
		if err := want(dc.Spec.Shards == n, "spec.shards %d", dc.Spec.Shards); err != nil {
			return err
		}
		// The next reading must see it settled too.
		seen := &cachev1alpha1.DiskCache{}
		if err := r.cached.Get(bg, client.ObjectKeyFromObject(dc), seen); err != nil {
			return err
		}
		if phase, why := settling(seen); phase != autoscale.Settled {
			return fmt.Errorf("the autoscaler's cache: %s", why)
		}
		return want(seen.Spec.Shards == n, "the autoscaler's cache: spec.shards %d", seen.Spec.Shards)
	})
}

// addShard runs a cacheserver as shard i of the DiskCache, as a pod the
// StatefulSet created for a scale-up.
func addShard(t *testing.T, ns, name string, i int, token string) *testserver.Server {
	t.Helper()
	adminFile := filepath.Join(t.TempDir(), "admin-token")
	if err := os.WriteFile(adminFile, []byte(waitAdminToken(t, ns, name)), 0o600); err != nil {
		t.Fatal(err)
	}
	pod := fmt.Sprintf("%s-%d", name, i)
	srv := testserver.Start(t, testserver.Options{Token: token,
		Args: []string{"--shard-index", strconv.Itoa(i), "--admin-token-file", adminFile}})
	podAddrs.Store(ns+"/"+pod, srv.URL)
	t.Cleanup(func() { podAddrs.Delete(ns + "/" + pod) })
	createPod(t, ns, name, pod, true)
	return srv
}

func findEventNote(t *testing.T, ns, name, reason, contains string) error {
	for _, e := range eventsFor(t, ns, name) {
		if e.Reason == reason && strings.Contains(e.Note, contains) {
			return nil
		}
	}
	return fmt.Errorf("no %s event saying %q", reason, contains)
}

// TestAutoscalerFollowsFill runs the autoscaler against real cacheservers:
// filled past the fill target, the cache grows (through the scale
// subresource) and the Event says why; emptied, it shrinks only once the
// down window has passed, and never below minShards.
func TestAutoscalerFollowsFill(t *testing.T) {
	needEnv(t)
	ns := newNamespace(t)
	const name, poll, downWindow = "auto", 10 * time.Second, 2 * time.Minute
	rig := startAutoscaler(t, ns, name, "autoscaler", poll)
	const sizeLimit = 8 << 20
	newDiskCache(t, ns, name, func(dc *cachev1alpha1.DiskCache) {
		dc.Labels = map[string]string{otherManagerLabel: "autoscaler"}
		dc.Spec.Shards = 2
		dc.Spec.SizeLimit = ptrTo(resource.MustParse(strconv.Itoa(sizeLimit)))
		dc.Spec.Autoscaling = &cachev1alpha1.AutoscalingSpec{
			Enabled: true, MinShards: 2, MaxShards: 3,
			Targets: &cachev1alpha1.AutoscalingTargets{FillPercent: ptrTo(int32(50))},
			Behavior: cachev1alpha1.AutoscalingBehavior{
				ScaleUp:   cachev1alpha1.ScalingRules{StabilizationWindow: &metav1.Duration{}},
				ScaleDown: cachev1alpha1.ScalingRules{StabilizationWindow: &metav1.Duration{Duration: downWindow}, MaxStep: ptrTo[int32](1)},
				Cooldown:  &metav1.Duration{},
			},
			PollInterval: &metav1.Duration{Duration: poll},
		}
	})
	tok := waitToken(t, ns, name)
	servers := startShardsWithSizeLimit(t, ns, name, 2, tok, sizeLimit)
	rig.settle(2)

	// Empty: a reading, and nothing to do (already at minShards).
	dc := rig.poll()
	if a := dc.Status.Autoscaling; dc.Spec.Shards != 2 || a.DesiredShards != 2 || a.Fill == "" || a.ObservedShards != 2 {
		t.Fatalf("empty cache: shards %d, status.autoscaling %+v", dc.Spec.Shards, a)
	}
	if err := conditionIs(dc, cachev1alpha1.ConditionAutoscalingConflict, metav1.ConditionFalse, cachev1alpha1.ReasonNoHPA); err != nil {
		t.Error(err)
	}

	// Fill each shard to about 0.7 of sizeLimit (files of 100 KiB, no
	// culling): ceil(2 × 0.7 / 0.5) = 3.
	c, err := cacheclient.New(servers[0].URL, cacheclient.Options{Token: tok})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if err := c.Cache("").Set(bg, kv.TextKey(fmt.Sprint("k", i)), kv.Bytes(make([]byte, 100<<10)), kv.SetOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	dc = rig.poll()
	if dc.Spec.Shards != 3 {
		t.Fatalf("filled past the target: spec.shards %d, status.autoscaling %+v", dc.Spec.Shards, dc.Status.Autoscaling)
	}
	a := dc.Status.Autoscaling
	if a.LastScaleTime == nil || !strings.Contains(a.LastScaleReason, "fill") || a.DesiredShards != 3 {
		t.Errorf("status.autoscaling after the scale-up: %+v", a)
	}
	t.Logf("scaled up: %s", a.LastScaleReason)
	eventually(t, "ScaledUp event", func() error { return findEventNote(t, ns, name, "ScaledUp", "spec.shards 2 → 3: fill") })
	grewAt := a.LastScaleTime.Time

	// While the new shard is not serving, no decision.
	if dc = rig.poll(); !strings.Contains(dc.Status.Autoscaling.Decision, "no decision") {
		t.Errorf("decision while the scale-up is under way: %q", dc.Status.Autoscaling.Decision)
	}
	servers = append(servers, addShard(t, ns, name, 2, tok))
	rig.settle(3)

	// Emptied: the down window holds the cache at 3, then it shrinks by one.
	if _, err := c.Cache("").Clear(bg); err != nil {
		t.Fatal(err)
	}
	dc = rig.poll()
	if dc.Spec.Shards != 3 || !strings.Contains(dc.Status.Autoscaling.Decision, "held at 3 by the stabilization window") {
		t.Fatalf("right after emptying: spec.shards %d, decision %q", dc.Spec.Shards, dc.Status.Autoscaling.Decision)
	}
	for dc.Spec.Shards == 3 {
		if rig.clk.Now().Sub(grewAt) > 2*downWindow {
			t.Fatalf("not scaled down %s after the last high reading: %+v", rig.clk.Now().Sub(grewAt), dc.Status.Autoscaling)
		}
		dc = rig.poll()
	}
	a = dc.Status.Autoscaling
	if dc.Spec.Shards != 2 || a.LastScaleTime.Sub(grewAt) <= downWindow {
		t.Fatalf("scaled to %d at %s, %s after the last high reading (window %s)", dc.Spec.Shards, a.LastScaleTime, a.LastScaleTime.Sub(grewAt), downWindow)
	}
	eventually(t, "ScaledDown event", func() error { return findEventNote(t, ns, name, "ScaledDown", "spec.shards 3 → 2: fill") })

	// Still empty, at minShards: it stays there.
	rig.settle(2)
	for range 3 {
		rig.clk.Step(downWindow / 2)
		dc = rig.poll()
		if dc.Spec.Shards != 2 || dc.Status.Autoscaling.DesiredShards != 2 {
			t.Fatalf("below minShards: spec.shards %d, status.autoscaling %+v", dc.Spec.Shards, dc.Status.Autoscaling)
		}
	}
	t.Logf("at minShards: %s", dc.Status.Autoscaling.Decision)
}

// TestAutoscalerStandsAsideForAnHPA: with a HorizontalPodAutoscaler on the
// DiskCache's scale subresource, the built-in autoscaler reports the
// conflict and changes nothing; without it, it goes back to work.
func TestAutoscalerStandsAsideForAnHPA(t *testing.T) {
	needEnv(t)
	ns := newNamespace(t)
	const name, poll = "hpa", 10 * time.Second
	rig := startAutoscaler(t, ns, name, "hpa-conflict", poll)
	newDiskCache(t, ns, name, func(dc *cachev1alpha1.DiskCache) {
		dc.Labels = map[string]string{otherManagerLabel: "hpa-conflict"}
		dc.Spec.Shards = 1
		dc.Spec.Autoscaling = &cachev1alpha1.AutoscalingSpec{Enabled: true, MinShards: 1, MaxShards: 3}
	})
	hpa := &autoscalingv2.HorizontalPodAutoscaler{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web-hpa"},
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{APIVersion: "cache.diskcache.dev/v1alpha1", Kind: "DiskCache", Name: name},
			MaxReplicas:    3,
		},
	}
	other := hpa.DeepCopy()
	other.Name, other.Spec.ScaleTargetRef.Name = "other-hpa", "another-cache"
	for _, h := range []*autoscalingv2.HorizontalPodAutoscaler{hpa, other} {
		if err := k8s.Create(bg, h); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "the reconciler saw it", func() error {
		dc := get(t, ns, name, &cachev1alpha1.DiskCache{})
		return want(dc.Status.ObservedGeneration == dc.Generation, "observedGeneration %d", dc.Status.ObservedGeneration)
	})
	rig.clk.Step(poll)
	eventually(t, "AutoscalingConflict", func() error {
		dc := get(t, ns, name, &cachev1alpha1.DiskCache{})
		if err := conditionIs(dc, cachev1alpha1.ConditionAutoscalingConflict, metav1.ConditionTrue, cachev1alpha1.ReasonHPAPresent); err != nil {
			return err
		}
		c := findCondition(dc, cachev1alpha1.ConditionAutoscalingConflict)
		return want(strings.Contains(c.Message, "web-hpa") && !strings.Contains(c.Message, "other-hpa"), "message %q", c.Message)
	})
	eventually(t, "conflict event", func() error {
		return findEventNote(t, ns, name, cachev1alpha1.ReasonHPAPresent, "HorizontalPodAutoscaler web-hpa")
	})
	if dc := get(t, ns, name, &cachev1alpha1.DiskCache{}); dc.Status.Autoscaling != nil {
		t.Errorf("the autoscaler read or decided despite the HPA: %+v", dc.Status.Autoscaling)
	}

	if err := k8s.Delete(bg, hpa); err != nil {
		t.Fatal(err)
	}
	eventually(t, "conflict cleared", func() error {
		rig.clk.Step(poll)
		dc := get(t, ns, name, &cachev1alpha1.DiskCache{})
		return conditionIs(dc, cachev1alpha1.ConditionAutoscalingConflict, metav1.ConditionFalse, cachev1alpha1.ReasonNoHPA)
	})
	// Turned off, the condition goes away.
	updateDiskCache(t, ns, name, func(dc *cachev1alpha1.DiskCache) { dc.Spec.Autoscaling.Enabled = false })
	eventually(t, "condition removed", func() error {
		rig.clk.Step(poll)
		dc := get(t, ns, name, &cachev1alpha1.DiskCache{})
		return want(findCondition(dc, cachev1alpha1.ConditionAutoscalingConflict) == nil, "conditions %+v", dc.Status.Conditions)
	})
}

// TestAutoscalerFollowsRequestRate: requests per second per shard, from
// the servers' counters over the poll interval (of the operator's clock),
// grow the cache; the first reading has no rate yet and changes nothing.
func TestAutoscalerFollowsRequestRate(t *testing.T) {
	needEnv(t)
	ns := newNamespace(t)
	const name, poll = "rate", 10 * time.Second
	rig := startAutoscaler(t, ns, name, "autoscaler-rate", poll)
	newDiskCache(t, ns, name, func(dc *cachev1alpha1.DiskCache) {
		dc.Labels = map[string]string{otherManagerLabel: "autoscaler-rate"}
		dc.Spec.Shards = 1
		dc.Spec.Autoscaling = &cachev1alpha1.AutoscalingSpec{
			Enabled: true, MinShards: 1, MaxShards: 4,
			Targets:      &cachev1alpha1.AutoscalingTargets{RequestRate: ptrTo(resource.MustParse("5"))},
			Behavior:     cachev1alpha1.AutoscalingBehavior{Cooldown: &metav1.Duration{}},
			PollInterval: &metav1.Duration{Duration: poll},
		}
	})
	tok := waitToken(t, ns, name)
	servers := startShards(t, ns, name, 1, tok)
	rig.settle(1)

	dc := rig.poll()
	if a := dc.Status.Autoscaling; dc.Spec.Shards != 1 || a.RequestRate != "" || !strings.Contains(a.Decision, "no figures for any target") {
		t.Fatalf("first reading: shards %d, status.autoscaling %+v", dc.Spec.Shards, a)
	}
	// 200 requests in the next 10 s of the clock: 20/s on one shard,
	// ceil(1 × 20 / 5) = 4 shards.
	c := shardClient(t, servers[0].URL, tok).Cache("")
	for i := range 200 {
		if _, _, err := c.Get(bg, kv.TextKey(fmt.Sprint("k", i))); err != nil {
			t.Fatal(err)
		}
	}
	dc = rig.poll()
	a := dc.Status.Autoscaling
	// The operator's own settings reads add a few requests.
	if rate, err := strconv.ParseFloat(a.RequestRate, 64); dc.Spec.Shards != 4 || err != nil || rate < 20 || rate >= 22 {
		t.Fatalf("after 200 requests in 10s: shards %d, status.autoscaling %+v", dc.Spec.Shards, a)
	}
	eventually(t, "ScaledUp event", func() error { return findEventNote(t, ns, name, "ScaledUp", "spec.shards 1 → 4: requestRate 2") })

	// Turned off, its figures and decision leave the status.
	updateDiskCache(t, ns, name, func(dc *cachev1alpha1.DiskCache) { dc.Spec.Autoscaling.Enabled = false })
	eventually(t, "status.autoscaling removed", func() error {
		rig.clk.Step(poll)
		dc := get(t, ns, name, &cachev1alpha1.DiskCache{})
		return want(dc.Status.Autoscaling == nil, "status.autoscaling %+v", dc.Status.Autoscaling)
	})
}

// TestAutoscalerKeepsToTheWindowAfterARestart: the recommendations inside
// the down window are kept in status.autoscaling, so an operator that
// restarts does not shrink a cache that was busy a minute ago.
func TestAutoscalerKeepsToTheWindowAfterARestart(t *testing.T) {
	needEnv(t)
	ns := newNamespace(t)
	const name, poll = "restart", 10 * time.Second
	rig := startAutoscaler(t, ns, name, "autoscaler-restart", poll)
	const sizeLimit = 16 << 20
	newDiskCache(t, ns, name, func(dc *cachev1alpha1.DiskCache) {
		dc.Labels = map[string]string{otherManagerLabel: "autoscaler-restart"}
		dc.Spec.Shards = 2
		dc.Spec.SizeLimit = ptrTo(resource.MustParse(strconv.Itoa(sizeLimit)))
		dc.Spec.Autoscaling = &cachev1alpha1.AutoscalingSpec{
			Enabled: true, MinShards: 1, MaxShards: 2,
			Targets: &cachev1alpha1.AutoscalingTargets{FillPercent: ptrTo(int32(50))},
			Behavior: cachev1alpha1.AutoscalingBehavior{
				ScaleDown: cachev1alpha1.ScalingRules{StabilizationWindow: &metav1.Duration{Duration: 2 * time.Minute}},
				Cooldown:  &metav1.Duration{},
			},
			PollInterval: &metav1.Duration{Duration: poll},
		}
	})
	tok := waitToken(t, ns, name)
	servers := startShardsWithSizeLimit(t, ns, name, 2, tok, sizeLimit)
	rig.settle(2)
	// About 0.3 of the limit per shard: 2 shards are right.
	c, err := cacheclient.New(servers[0].URL, cacheclient.Options{Token: tok})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 80 {
		if err := c.Cache("").Set(bg, kv.TextKey(fmt.Sprint("k", i)), kv.Bytes(make([]byte, 100<<10)), kv.SetOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	dc := rig.poll()
	if a := dc.Status.Autoscaling; dc.Spec.Shards != 2 || len(a.Recommendations) != 1 || a.Recommendations[0].Shards != 2 {
		t.Fatalf("busy: shards %d, status.autoscaling %+v", dc.Spec.Shards, a)
	}
	// Emptied: one shard would do, but not before the window has passed.
	if _, err := c.Cache("").Clear(bg); err != nil {
		t.Fatal(err)
	}
	dc = rig.poll()
	if dc.Spec.Shards != 2 || !strings.Contains(dc.Status.Autoscaling.Decision, "held at 2 by the stabilization window") {
		t.Fatalf("emptied: shards %d, decision %q", dc.Spec.Shards, dc.Status.Autoscaling.Decision)
	}

	// The operator restarts, with no memory but the status.
	rig.stop()
	rig = startAutoscalerAt(t, ns, name, "autoscaler-restart", poll, rig.clk.Now())
	dc = rig.poll()
	if dc.Spec.Shards != 2 || !strings.Contains(dc.Status.Autoscaling.Decision, "held at 2 by the stabilization window") {
		t.Fatalf("after a restart within the window: shards %d, decision %q", dc.Spec.Shards, dc.Status.Autoscaling.Decision)
	}
	for range 12 {
		if dc = rig.poll(); dc.Spec.Shards == 1 {
			return
		}
	}
	t.Fatalf("not scaled down once the window passed: %+v", dc.Status.Autoscaling)
}

// TestAutoscalerFollowsEvictionRate: items culled per second per shard,
// from the servers' eviction counters, grow a cache that is too small.
func TestAutoscalerFollowsEvictionRate(t *testing.T) {
	needEnv(t)
	ns := newNamespace(t)
	const name, poll = "evict", 10 * time.Second
	rig := startAutoscaler(t, ns, name, "autoscaler-evict", poll)
	const sizeLimit = 2 << 20
	newDiskCache(t, ns, name, func(dc *cachev1alpha1.DiskCache) {
		dc.Labels = map[string]string{otherManagerLabel: "autoscaler-evict"}
		dc.Spec.Shards = 1
		dc.Spec.SizeLimit = ptrTo(resource.MustParse(strconv.Itoa(sizeLimit)))
		dc.Spec.Autoscaling = &cachev1alpha1.AutoscalingSpec{
			Enabled: true, MinShards: 1, MaxShards: 2,
			Targets:      &cachev1alpha1.AutoscalingTargets{EvictionRate: ptrTo(resource.MustParse("1"))},
			Behavior:     cachev1alpha1.AutoscalingBehavior{Cooldown: &metav1.Duration{}},
			PollInterval: &metav1.Duration{Duration: poll},
		}
	})
	tok := waitToken(t, ns, name)
	servers := startShardsWithSizeLimit(t, ns, name, 1, tok, sizeLimit)
	rig.settle(1)
	if dc := rig.poll(); dc.Spec.Shards != 1 {
		t.Fatalf("first reading: shards %d", dc.Spec.Shards)
	}
	// Five times the limit in 10 s of the clock: culling evicts most of it.
	c := shardClient(t, servers[0].URL, tok).Cache("")
	for i := range 100 {
		if err := c.Set(bg, kv.TextKey(fmt.Sprint("k", i)), kv.Bytes(make([]byte, 100<<10)), kv.SetOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	dc := rig.poll()
	a := dc.Status.Autoscaling
	if rate, err := strconv.ParseFloat(a.EvictionRate, 64); dc.Spec.Shards != 2 || err != nil || rate < 5 {
		t.Fatalf("after culling: shards %d, status.autoscaling %+v", dc.Spec.Shards, a)
	}
	eventually(t, "ScaledUp event", func() error { return findEventNote(t, ns, name, "ScaledUp", "spec.shards 1 → 2: evictionRate") })
	t.Logf("scaled up: %s", a.LastScaleReason)
}

// TestAutoscalerMovesTheCountIntoNewBounds: lowering maxShards below the
// count is accepted (as an HPA's maxReplicas is) and the autoscaler
// brings the count down to it at its next reading; setting spec.shards
// outside the bounds stays refused.
func TestAutoscalerMovesTheCountIntoNewBounds(t *testing.T) {
	rig, ns, name := fillAutoscaled(t, "bounds", 3, 1, 4)
	updateDiskCache(t, ns, name, func(dc *cachev1alpha1.DiskCache) { dc.Spec.Autoscaling.MaxShards = 2 })
	rig.settle(3)
	dc := rig.poll()
	if dc.Spec.Shards != 2 || !strings.Contains(dc.Status.Autoscaling.Decision, "kept within [1, 2]") {
		t.Fatalf("after maxShards 4 → 2: shards %d, decision %q", dc.Spec.Shards, dc.Status.Autoscaling.Decision)
	}
	err := k8s.Update(bg, func() *cachev1alpha1.DiskCache { dc.Spec.Shards = 3; return dc }())
	if err == nil || !strings.Contains(err.Error(), "spec.shards must be within") {
		t.Fatalf("shards 3 above maxShards 2: %v", err)
	}
}

// A scale-up whose new pod never becomes ready keeps the cache between
// layouts, but no data moves: lowering maxShards brings the count back
// at the next reading. It stayed above the bounds for good (the bounds
// were held with every other decision until the cache settled, which it
// never would).
func TestLoweredMaxShardsUndoesAStuckScaleUp(t *testing.T) {
	rig, ns, name := fillAutoscaled(t, "stuck", 2, 1, 4)
	rig.poll()
	// kubectl scale --replicas=3, and the third pod never becomes ready.
	updateDiskCache(t, ns, name, func(dc *cachev1alpha1.DiskCache) { dc.Spec.Shards = 3 })
	eventually(t, "StatefulSet at 3", func() error {
		sts := get(t, ns, name, &appsv1.StatefulSet{})
		return want(sts.Spec.Replicas != nil && *sts.Spec.Replicas == 3, "replicas %v", sts.Spec.Replicas)
	})
	createPod(t, ns, name, name+"-2", false)
	setSTSStatus(t, ns, name, func(sts *appsv1.StatefulSet) {
		sts.Status = appsv1.StatefulSetStatus{ObservedGeneration: sts.Generation, Replicas: 3, ReadyReplicas: 2, AvailableReplicas: 2,
			UpdatedReplicas: 3, CurrentReplicas: 3, CurrentRevision: "r1", UpdateRevision: "r1"}
	})
	updateDiskCache(t, ns, name, func(dc *cachev1alpha1.DiskCache) { dc.Spec.Autoscaling.MaxShards = 2 })
	eventually(t, "the new bounds reconciled, in the autoscaler's cache", func() error {
		seen := &cachev1alpha1.DiskCache{}
		if err := rig.cached.Get(bg, client.ObjectKey{Namespace: ns, Name: name}, seen); err != nil {
			return err
		}
		return want(seen.Spec.Autoscaling.MaxShards == 2 && seen.Status.ObservedGeneration == seen.Generation,
			"maxShards %d, generation %d observed %d", seen.Spec.Autoscaling.MaxShards, seen.Generation, seen.Status.ObservedGeneration)
	})
	// A reading whose scale write meets the reconciler's status write (a
	// conflict) leaves it to the next reading.
	var dc *cachev1alpha1.DiskCache
	for range 3 {
		if dc = rig.poll(); dc.Spec.Shards == 2 {
			break
		}
	}
	if dc.Spec.Shards != 2 || !strings.Contains(dc.Status.Autoscaling.Decision, "kept within [1, 2]") {
		t.Fatalf("a stuck scale-up to 3 after maxShards 4 → 2: shards %d, decision %q", dc.Spec.Shards, dc.Status.Autoscaling.Decision)
	}
}

// A manifest that leaves shards to the autoscaler, as docs/autoscaling.md
// advises under GitOps, is created with the default 1 below minShards
// (it was refused), and the autoscaler moves the count up to minShards.
func TestManifestWithoutShardsStartsAtMinShards(t *testing.T) {
	rig, _, _ := fillAutoscaled(t, "gitops", 0, 2, 4)
	dc := rig.poll()
	if dc.Spec.Shards != 2 || !strings.Contains(dc.Status.Autoscaling.Decision, "kept within [2, 4]") {
		t.Fatalf("created without shards, minShards 2: shards %d, decision %q", dc.Spec.Shards, dc.Status.Autoscaling.Decision)
	}
}

// fillAutoscaling holds a fill of 80% within [minShards, maxShards],
// without a cooldown, read every poll.
func fillAutoscaling(minShards, maxShards int32, poll time.Duration) *cachev1alpha1.AutoscalingSpec {
	return &cachev1alpha1.AutoscalingSpec{
		Enabled: true, MinShards: minShards, MaxShards: maxShards,
		Targets:      &cachev1alpha1.AutoscalingTargets{FillPercent: ptrTo(int32(80))},
		Behavior:     cachev1alpha1.AutoscalingBehavior{Cooldown: &metav1.Duration{}},
		PollInterval: &metav1.Duration{Duration: poll},
	}
}

// fillAutoscaled starts an autoscaler rig and a DiskCache under
// fillAutoscaling(minShards, maxShards) with shards real shards, settled;
// shards 0 leaves spec.shards to the CRD's default (1).
func fillAutoscaled(t *testing.T, name string, shards, minShards, maxShards int32) (rig *autoscalerRig, ns, dcName string) {
	needEnv(t)
	ns = newNamespace(t)
	const poll = 10 * time.Second
	rig = startAutoscaler(t, ns, name, "autoscaler-"+name, poll)
	newDiskCache(t, ns, name, func(dc *cachev1alpha1.DiskCache) {
		dc.Labels = map[string]string{otherManagerLabel: "autoscaler-" + name}
		dc.Spec.Shards = shards
		dc.Spec.Autoscaling = fillAutoscaling(minShards, maxShards, poll)
	})
	running := max(shards, 1)
	startShards(t, ns, name, int(running), waitToken(t, ns, name))
	rig.settle(running)
	return rig, ns, name
}
