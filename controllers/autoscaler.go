package controllers

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
	cacheclient "github.com/diskcache-operator/diskcache-operator/client"
	"github.com/diskcache-operator/diskcache-operator/controllers/autoscale"
)

// +kubebuilder:rbac:groups=cache.diskcache.dev,resources=diskcaches/scale,verbs=get;update
// +kubebuilder:rbac:groups=autoscaling,resources=horizontalpodautoscalers,verbs=list;watch

// Autoscaler is the built-in autoscaler, a manager Runnable: on every tick
// of its clock it looks at the DiskCaches with spec.autoscaling.enabled,
// and for each whose poll interval has passed reads every shard's figures
// (GET /v1/usage), decides with autoscale.Decide, writes spec.shards
// through the scale subresource, and reports status.autoscaling, the
// AutoscalingConflict condition and an Event per change.
type Autoscaler struct {
	// Client reads DiskCaches and HorizontalPodAutoscalers through the
	// manager's cache and writes the scale subresource and status.
	Client client.Client
	// APIReader reads the latest DiskCache when a status write conflicts.
	APIReader client.Reader
	Recorder  events.EventRecorder
	// Reconciler lends its access to the shards (token, TLS, addresses).
	Reconciler *DiskCacheReconciler
	// Clock is the time source and ticker; nil means the real clock.
	Clock clock.WithTicker
	// Tick is how often it looks for DiskCaches whose poll interval has
	// passed; 0 means one second.
	Tick time.Duration

	mu     sync.Mutex
	caches map[types.UID]*scalerMemory
}

// scalerMemory is what the autoscaler remembers of one DiskCache.
type scalerMemory struct {
	state    autoscale.State
	readings map[int]autoscale.Reading
	lastRead time.Time
	// lastBusy is the last time a rebalance, scale or rollout was seen
	// under way: the cooldown runs from it.
	lastBusy time.Time
	conflict string // the HPA last reported, to record its Event once
}

func (a *Autoscaler) clock() clock.WithTicker {
	if a.Clock == nil {
		return clock.RealClock{}
	}
	return a.Clock
}

// NeedLeaderElection: only the leader scales.
func (a *Autoscaler) NeedLeaderElection() bool { return true }

// Start runs until ctx ends.
func (a *Autoscaler) Start(ctx context.Context) error {
	tick := a.Tick
	if tick <= 0 {
		tick = time.Second
	}
	t := a.clock().NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C():
			a.pass(ctx)
		}
	}
}

// pass looks at every DiskCache once.
func (a *Autoscaler) pass(ctx context.Context) {
	var list cachev1alpha1.DiskCacheList
	if err := a.Client.List(ctx, &list); err != nil {
		log.FromContext(ctx).Error(err, "autoscaler: list DiskCaches")
		return
	}
	seen := map[types.UID]bool{}
	for i := range list.Items {
		dc := &list.Items[i]
		seen[dc.UID] = true
		if err := a.scale(ctx, dc); err != nil {
			log.FromContext(ctx).Error(err, "autoscaler", "namespace", dc.Namespace, "name", dc.Name)
		}
	}
	a.mu.Lock()
	for uid := range a.caches {
		if !seen[uid] {
			delete(a.caches, uid)
		}
	}
	a.mu.Unlock()
}

func (a *Autoscaler) memory(uid types.UID) *scalerMemory {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.caches == nil {
		a.caches = map[types.UID]*scalerMemory{}
	}
	m := a.caches[uid]
	if m == nil {
		m = &scalerMemory{}
		a.caches[uid] = m
	}
	return m
}

func (a *Autoscaler) forget(uid types.UID) {
	a.mu.Lock()
	delete(a.caches, uid)
	a.mu.Unlock()
}

// scale runs one poll of one DiskCache when it is due.
func (a *Autoscaler) scale(ctx context.Context, dc *cachev1alpha1.DiskCache) error {
	if dc.DeletionTimestamp != nil {
		return nil
	}
	spec := dc.Spec.DeepCopy()
	spec.Default()
	as := spec.Autoscaling
	if as == nil || !as.Enabled {
		a.forget(dc.UID)
		// Turned off: its figures and last decision describe nothing now.
		if meta.FindStatusCondition(dc.Status.Conditions, cachev1alpha1.ConditionAutoscalingConflict) == nil && dc.Status.Autoscaling == nil {
			return nil
		}
		return a.writeStatus(ctx, dc, func(st *cachev1alpha1.DiskCacheStatus) {
			meta.RemoveStatusCondition(&st.Conditions, cachev1alpha1.ConditionAutoscalingConflict)
			st.Autoscaling = nil
		})
	}
	mem := a.memory(dc.UID)
	now := a.clock().Now()
	if !mem.lastRead.IsZero() && now.Sub(mem.lastRead) < as.PollInterval.Duration {
		return nil
	}
	mem.lastRead = now

	// A HorizontalPodAutoscaler on the scale subresource decides instead.
	hpa, err := a.hpaFor(ctx, dc)
	if err != nil {
		return err
	}
	if hpa != "" {
		if mem.conflict != hpa {
			a.Recorder.Eventf(dc, nil, corev1.EventTypeWarning, cachev1alpha1.ReasonHPAPresent, "Autoscale",
				"HorizontalPodAutoscaler %s targets this DiskCache: the built-in autoscaler stands aside; disable spec.autoscaling or delete the HPA", hpa)
		}
		mem.conflict = hpa
		return a.writeStatus(ctx, dc, func(st *cachev1alpha1.DiskCacheStatus) {
			setAutoscalingConflict(st, dc.Generation, metav1.ConditionTrue, cachev1alpha1.ReasonHPAPresent,
				fmt.Sprintf("HorizontalPodAutoscaler %s targets this DiskCache: the built-in autoscaler does not scale while both are on", hpa))
		})
	}
	mem.conflict = ""

	// Read every shard, then decide.
	readings := a.read(ctx, dc, int(spec.Shards), now)
	avg, missing := autoscale.Averages(mem.readings, readings, int(spec.Shards))
	mem.readings = readings
	phase, why := settling(dc)
	busy := phase != autoscale.Settled
	if busy {
		mem.lastBusy = now
	}
	lastEnd := mem.lastBusy
	if lastEnd.IsZero() {
		// Nothing seen since the operator started: the cache settled when
		// Progressing last turned False.
		if c := meta.FindStatusCondition(dc.Status.Conditions, cachev1alpha1.ConditionProgressing); c != nil && c.Status == metav1.ConditionFalse {
			lastEnd = c.LastTransitionTime.Time
		}
	}
	if len(mem.state.Recommendations) == 0 && dc.Status.Autoscaling != nil {
		// Keep to the windows across an operator restart.
		for _, r := range dc.Status.Autoscaling.Recommendations {
			mem.state.Recommendations = append(mem.state.Recommendations, autoscale.Recommendation{At: r.Time.Time, Shards: r.Shards})
		}
	}
	d := autoscale.Decide(decideSpec(as), autoscale.Observation{At: now, Current: spec.Shards, Average: avg}, &mem.state, phase, lastEnd)
	if busy {
		d.Reason = why + "; " + d.Reason
	}
	for _, t := range decideSpec(as).Targets {
		if why, ok := missing[t.Name]; ok && !busy {
			d.Reason += fmt.Sprintf(" (%s: %s)", t.Name, why)
		}
	}

	var scaled bool
	if d.Change {
		if scaled, err = a.writeShards(ctx, dc, spec.Shards, d.Desired); err != nil {
			a.Recorder.Eventf(dc, nil, corev1.EventTypeWarning, "AutoscaleFailed", "Autoscale",
				"could not scale from %d to %d shards: %v", spec.Shards, d.Desired, err)
			return err
		}
	}
	if scaled {
		reason := "ScaledUp"
		if d.Desired < spec.Shards {
			reason = "ScaledDown"
		}
		a.Recorder.Eventf(dc, nil, corev1.EventTypeNormal, reason, "Autoscale",
			"spec.shards %d → %d: %s", spec.Shards, d.Desired, d.Reason)
		mem.lastBusy = now // the scale itself: no next decision before its cooldown
	}
	return a.writeStatus(ctx, dc, func(st *cachev1alpha1.DiskCacheStatus) {
		setAutoscalingConflict(st, dc.Generation, metav1.ConditionFalse, cachev1alpha1.ReasonNoHPA,
			"no HorizontalPodAutoscaler targets this DiskCache")
		out := st.Autoscaling
		if out == nil {
			out = &cachev1alpha1.AutoscalingStatus{}
		} else {
			out = out.DeepCopy()
		}
		t := metav1.NewTime(now)
		out.LastObservationTime = &t
		out.ObservedShards = int32(len(readings))
		out.Fill, out.RequestRate, out.EvictionRate = figure(avg, autoscale.Fill), figure(avg, autoscale.RequestRate), figure(avg, autoscale.EvictionRate)
		out.DesiredShards = d.Desired
		out.Decision = d.Reason
		if scaled {
			out.LastScaleTime = &t
			out.LastScaleReason = fmt.Sprintf("%d → %d: %s", spec.Shards, d.Desired, d.Reason)
		}
		out.Recommendations = nil
		for _, r := range mem.state.Recommendations {
			out.Recommendations = append(out.Recommendations, cachev1alpha1.AutoscalingRecommendation{Time: metav1.NewTime(r.At), Shards: r.Shards})
		}
		st.Autoscaling = out
	})
}

// settling reports whether the cache is between layouts, when figures
// say nothing about the layout to come and no decision is made on them:
// keys moving between shards (or no shard has said whether they do:
// autoscale.Moving), a scale or rollout under way, a spec change not
// reconciled yet, or a topology that does not have spec.shards shards
// (autoscale.Settling: a count outside the bounds is still moved into
// them, as a scale-up whose pods never come is undone by lowering
// maxShards).
func settling(dc *cachev1alpha1.DiskCache) (autoscale.Phase, string) {
	st := &dc.Status
	switch {
	case st.Topology == nil:
		return autoscale.Moving, "no shard has reported a topology yet"
	case st.Topology.Rebalancing:
		return autoscale.Moving, "a rebalance is running"
	case st.ObservedGeneration < dc.Generation:
		return autoscale.Settling, "the operator has not reconciled the latest spec yet"
	case st.Topology.Shards != dc.Spec.Shards:
		return autoscale.Settling, fmt.Sprintf("keys are spread over %d shards, not spec.shards %d yet", st.Topology.Shards, dc.Spec.Shards)
	}
	if c := meta.FindStatusCondition(st.Conditions, cachev1alpha1.ConditionProgressing); c != nil && c.Status == metav1.ConditionTrue {
		return autoscale.Settling, "Progressing (" + c.Reason + ")"
	}
	return autoscale.Settled, ""
}

// decideSpec is spec.autoscaling (defaulted) for autoscale.Decide.
func decideSpec(as *cachev1alpha1.AutoscalingSpec) autoscale.Spec {
	s := autoscale.Spec{MinShards: as.MinShards, MaxShards: as.MaxShards}
	if p := as.Targets.FillPercent; p != nil {
		// Decide works on the fill as a fraction, as GET /v1/usage gives it.
		s.Targets = append(s.Targets, autoscale.Target{Name: autoscale.Fill, Value: float64(*p) / 100})
	}
	for _, t := range []struct {
		name string
		q    *resource.Quantity
	}{
		{autoscale.RequestRate, as.Targets.RequestRate},
		{autoscale.EvictionRate, as.Targets.EvictionRate},
	} {
		if t.q != nil {
			s.Targets = append(s.Targets, autoscale.Target{Name: t.name, Value: t.q.AsApproximateFloat64()})
		}
	}
	b := as.Behavior
	s.Behavior = autoscale.Behavior{
		UpWindow:   durationOf(b.ScaleUp.StabilizationWindow),
		DownWindow: durationOf(b.ScaleDown.StabilizationWindow),
		Cooldown:   durationOf(b.Cooldown),
	}
	if b.ScaleUp.MaxStep != nil {
		s.Behavior.MaxStepUp = *b.ScaleUp.MaxStep
	}
	if b.ScaleDown.MaxStep != nil {
		s.Behavior.MaxStepDown = *b.ScaleDown.MaxStep
	}
	return s
}

func durationOf(d *metav1.Duration) time.Duration {
	if d == nil {
		return 0
	}
	return d.Duration
}

func figure(avg map[string]float64, name string) string {
	v, ok := avg[name]
	if !ok {
		return ""
	}
	return autoscale.Format(v)
}

// read asks shards 0..n-1 for their figures, in parallel; a shard that
// does not answer is left out.
func (a *Autoscaler) read(ctx context.Context, dc *cachev1alpha1.DiskCache, n int, now time.Time) map[int]autoscale.Reading {
	logger := log.FromContext(ctx).WithValues("namespace", dc.Namespace, "name", dc.Name)
	access, err := a.Reconciler.maintenanceAccess(ctx, dc)
	if err != nil {
		logger.Error(err, "autoscaler: no access to the shards")
		return nil
	}
	timeout := a.Reconciler.SettingsTimeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	out := map[int]autoscale.Reading{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			c, err := cacheclient.New(access.Resolve(i), cacheclient.Options{Token: access.Token, HTTPClient: access.HTTPClient, Retries: -1, DirectOnly: true})
			if err != nil {
				logger.V(1).Info("autoscaler: shard figures", "shard", i, "error", err.Error())
				return
			}
			u, err := c.Usage(ctx)
			if err != nil {
				logger.V(1).Info("autoscaler: shard figures", "shard", i, "error", err.Error())
				return
			}
			mu.Lock()
			out[i] = autoscale.Reading{At: now, Started: u.Started, Served: u.ServedRequests, Evicted: u.EvictedItems,
				DiskBytes: u.DiskBytes, SizeLimit: u.SizeLimit}
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// hpaFor names a HorizontalPodAutoscaler in the DiskCache's namespace whose
// scaleTargetRef is the DiskCache; empty when there is none.
func (a *Autoscaler) hpaFor(ctx context.Context, dc *cachev1alpha1.DiskCache) (string, error) {
	var hpas autoscalingv2.HorizontalPodAutoscalerList
	if err := a.Client.List(ctx, &hpas, client.InNamespace(dc.Namespace)); err != nil {
		return "", fmt.Errorf("list HorizontalPodAutoscalers: %w", err)
	}
	var names []string
	for _, h := range hpas.Items {
		ref := h.Spec.ScaleTargetRef
		gv, err := schema.ParseGroupVersion(ref.APIVersion)
		if err == nil && gv.Group == cachev1alpha1.GroupVersion.Group && ref.Kind == "DiskCache" && ref.Name == dc.Name {
			names = append(names, h.Name)
		}
	}
	return strings.Join(names, ", "), nil
}

// writeShards sets spec.shards from cur to want through the scale
// subresource, as kubectl scale and an HPA do (visible in the audit log as
// an update of diskcaches/scale). It changes nothing when spec.shards is
// no longer cur (someone scaled meanwhile) and reports whether it wrote.
func (a *Autoscaler) writeShards(ctx context.Context, dc *cachev1alpha1.DiskCache, cur, want int32) (bool, error) {
	scale := &autoscalingv1.Scale{}
	if err := a.Client.SubResource("scale").Get(ctx, dc, scale); err != nil {
		return false, fmt.Errorf("get scale: %w", err)
	}
	if scale.Spec.Replicas != cur {
		return false, nil
	}
	scale.Spec.Replicas = want
	if err := a.Client.SubResource("scale").Update(ctx, dc, client.WithSubResourceBody(scale), client.FieldOwner(ManagerName)); err != nil {
		if apierrors.IsConflict(err) {
			return false, nil // changed meanwhile: the next poll sees it
		}
		return false, fmt.Errorf("update scale: %w", err)
	}
	return true, nil
}

// writeStatus applies change to the latest status and writes it when it
// differs, retrying on conflicts with the reconciler's writes.
func (a *Autoscaler) writeStatus(ctx context.Context, dc *cachev1alpha1.DiskCache, change func(*cachev1alpha1.DiskCacheStatus)) error {
	cur := dc.DeepCopy()
	first := true
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if !first {
			if err := a.APIReader.Get(ctx, client.ObjectKeyFromObject(dc), cur); err != nil {
				return err
			}
		}
		first = false
		next := cur.Status.DeepCopy()
		change(next)
		if equality.Semantic.DeepEqual(&cur.Status, next) {
			return nil
		}
		cur.Status = *next
		return a.Client.Status().Update(ctx, cur)
	})
}

func setAutoscalingConflict(st *cachev1alpha1.DiskCacheStatus, gen int64, s metav1.ConditionStatus, reason, msg string) {
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{
		Type: cachev1alpha1.ConditionAutoscalingConflict, Status: s, Reason: reason, Message: msg, ObservedGeneration: gen,
	})
}
