package controllers

import (
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
	"github.com/diskcache-operator/diskcache-operator/topology"
)

// computeStatus derives the status from the StatefulSet (nil if it does not
// exist yet), the topology outcome (nil when the reconcile failed before
// it) and the problems of this reconcile, keeping the fields owned by
// other parts of the operator (maintenance) and condition transition times.
func computeStatus(dc *cachev1alpha1.DiskCache, old *cachev1alpha1.DiskCacheStatus, sts *appsv1.StatefulSet, problems []problem, topo *topologyOutcome) *cachev1alpha1.DiskCacheStatus {
	st := old.DeepCopy()
	shards := dc.Spec.Shards
	// The pods there should be now: more than spec.shards while departing
	// shards hand their keys off.
	replicas := shards
	if topo != nil {
		replicas = topo.replicas
	}
	st.Selector = selectorString(dc)
	st.Endpoint = endpoint(dc)
	st.Shards, st.ReadyShards = 0, 0
	if sts != nil {
		st.Shards = sts.Status.Replicas
		st.ReadyShards = sts.Status.ReadyReplicas
	}
	topologyStatus(dc, st, topo)

	gen := dc.Generation
	set := func(t string, s metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{
			Type: t, Status: s, Reason: reason, Message: msg, ObservedGeneration: gen,
		})
	}

	ready := st.ReadyShards
	switch {
	case ready >= replicas && sts != nil && sts.Status.Replicas == replicas:
		set(cachev1alpha1.ConditionAvailable, metav1.ConditionTrue, cachev1alpha1.ReasonAllShardsReady,
			fmt.Sprintf("%d/%d shards ready", ready, replicas))
	case topo != nil && topo.layoutReady && sts != nil:
		// New pods of a scale-up are not ready yet, but no key routes to
		// them before they are: the cache serves every key.
		set(cachev1alpha1.ConditionAvailable, metav1.ConditionTrue, cachev1alpha1.ReasonAllShardsReady,
			fmt.Sprintf("every shard of topology epoch %d is ready (%d/%d pods ready)", topo.announced.Epoch, ready, replicas))
	default:
		set(cachev1alpha1.ConditionAvailable, metav1.ConditionFalse, cachev1alpha1.ReasonShardsUnavailable,
			fmt.Sprintf("%d/%d shards ready", ready, replicas))
	}

	var prev string
	if c := meta.FindStatusCondition(old.Conditions, cachev1alpha1.ConditionProgressing); c != nil && c.Status == metav1.ConditionTrue {
		prev = c.Reason
	}
	progressing, reason, msg := rollout(sts, replicas, prev)
	if topo != nil {
		a := topo.announced
		switch {
		case a.Previous != nil:
			progressing, reason = true, cachev1alpha1.ReasonRebalancing
			msg = rebalanceMessage(a, topo.progress)
			if len(a.Shards) != int(shards) {
				msg += fmt.Sprintf("; spec.shards %d comes next, once this move has ended", shards)
			}
		case !progressing && len(a.Shards) != int(shards):
			progressing, reason = true, cachev1alpha1.ReasonScaling
			msg = fmt.Sprintf("scaling from %d to %d shards: the keys move once the new shards are ready and every shard has topology epoch %d",
				len(a.Shards), shards, a.Epoch)
		}
	}
	if progressing {
		set(cachev1alpha1.ConditionProgressing, metav1.ConditionTrue, reason, msg)
	} else {
		set(cachev1alpha1.ConditionProgressing, metav1.ConditionFalse, cachev1alpha1.ReasonUpToDate,
			fmt.Sprintf("all %d shards run the current spec", shards))
	}

	switch {
	case len(problems) > 0:
		msg := problems[0].message
		for _, p := range problems[1:] {
			msg += "; " + p.message
		}
		set(cachev1alpha1.ConditionDegraded, metav1.ConditionTrue, problems[0].reason, msg)
	case !progressing && ready < replicas:
		set(cachev1alpha1.ConditionDegraded, metav1.ConditionTrue, cachev1alpha1.ReasonPodsNotReady,
			fmt.Sprintf("%d/%d shards ready and no rollout under way: see the pods' events", ready, replicas))
	default:
		set(cachev1alpha1.ConditionDegraded, metav1.ConditionFalse, cachev1alpha1.ReasonAsExpected, "no problems")
	}
	return st
}

// rollout tells whether the StatefulSet is still creating, scaling or
// rolling its pods. prev is the reason of the last Progressing=True
// condition, if any: pods that are not ready yet at the end of a creation,
// scale or rollout keep it progressing until they are ready, while pods
// that stop being ready later make the cache Degraded instead.
func rollout(sts *appsv1.StatefulSet, shards int32, prev string) (bool, string, string) {
	if sts == nil {
		return true, cachev1alpha1.ReasonCreating, "creating the StatefulSet"
	}
	s := sts.Status
	switch {
	case s.Replicas == 0 && s.ReadyReplicas == 0 && shards > 0 && (prev == "" || prev == cachev1alpha1.ReasonCreating):
		return true, cachev1alpha1.ReasonCreating, fmt.Sprintf("creating %d shards", shards)
	case (sts.Spec.Replicas != nil && *sts.Spec.Replicas != shards) || s.Replicas != shards:
		return true, cachev1alpha1.ReasonScaling, fmt.Sprintf("scaling from %d to %d shards", s.Replicas, shards)
	case s.ObservedGeneration < sts.Generation:
		return true, cachev1alpha1.ReasonRollingUpdate, "the StatefulSet controller has not seen the latest spec yet"
	case s.UpdatedReplicas < shards || (s.UpdateRevision != "" && s.CurrentRevision != s.UpdateRevision):
		return true, cachev1alpha1.ReasonRollingUpdate, fmt.Sprintf("%d/%d shards updated", s.UpdatedReplicas, shards)
	case s.ReadyReplicas < shards && prev != "":
		return true, prev, fmt.Sprintf("waiting for shards to be ready: %d/%d", s.ReadyReplicas, shards)
	}
	return false, "", ""
}

// topologyStatus sets status.topology and the TopologyAnnounced condition
// from what the ready shards reported (GET or PUT /v1/topology). Without
// an answer the last known topology stays: the status never shows a
// topology no server had.
func topologyStatus(dc *cachev1alpha1.DiskCache, st *cachev1alpha1.DiskCacheStatus, out *topologyOutcome) {
	set := func(s metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{
			Type: cachev1alpha1.ConditionTopologyAnnounced, Status: s, Reason: reason, Message: msg, ObservedGeneration: dc.Generation,
		})
	}
	if out == nil {
		return // the reconcile failed before it asked the servers
	}
	var newest *topology.Topology
	for _, rep := range out.reports {
		// Epoch 0 is a server that has no topology yet.
		if rep.err == nil && rep.topo != nil && rep.topo.Epoch > 0 && (newest == nil || rep.topo.Epoch > newest.Epoch) {
			newest = rep.topo
		}
	}
	if newest != nil {
		ts := &cachev1alpha1.TopologyStatus{Epoch: newest.Epoch, Shards: int32(len(newest.Shards))}
		for _, rep := range out.reports {
			if rep.err == nil && rep.topo != nil && rep.topo.Epoch == newest.Epoch {
				ts.ReadyShardsOnEpoch++
			}
		}
		st.Topology = ts
	}
	want := out.announced
	if ts := st.Topology; ts != nil {
		// A move is in force from its announcement to its end, whatever
		// the shards have heard of it yet.
		ts.Rebalancing, ts.PreviousShards, ts.RebalanceStartTime, ts.Progress = false, 0, nil, nil
		if want.Previous != nil {
			ts.Rebalancing = true
			ts.PreviousShards = int32(len(want.Previous.Shards))
			ts.Progress = out.progress
			if out.started != nil {
				ts.RebalanceStartTime = &metav1.Time{Time: *out.started}
			}
		}
	}
	onEpoch := 0
	for _, rep := range out.reports {
		if rep.err == nil && rep.topo != nil && rep.topo.Epoch == want.Epoch {
			onEpoch++
		}
	}
	switch {
	case out.ready == 0:
		set(metav1.ConditionUnknown, cachev1alpha1.ReasonTopologyUnknown,
			fmt.Sprintf("no ready shard to announce topology epoch %d (%d shards) to", want.Epoch, len(want.Shards)))
	case onEpoch == out.ready:
		set(metav1.ConditionTrue, cachev1alpha1.ReasonTopologyAnnounced,
			fmt.Sprintf("all %d ready shards have topology epoch %d (%d shards)", onEpoch, want.Epoch, len(want.Shards)))
	default:
		set(metav1.ConditionFalse, cachev1alpha1.ReasonTopologyAnnouncing,
			fmt.Sprintf("%d/%d ready shards have topology epoch %d (%d shards)", onEpoch, out.ready, want.Epoch, len(want.Shards)))
	}
}
