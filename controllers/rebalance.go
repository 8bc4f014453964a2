package controllers

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
	"github.com/diskcache-operator/diskcache-operator/topology"
)

// Changing the number of shards moves keys: the servers move them, the
// operator orchestrates (docs/operations.md, "Changing the number of
// shards"). Every step is derived from what is observed: the announcement
// in the <name>-topology ConfigMap (read from the API server, not the
// cache: it is the state of record), the StatefulSet, the pods and what each
// shard reports on GET /v1/topology. Nothing lives only in the operator's
// memory, so a restarted operator carries on where the last one stopped.
//
//	settled at n shards, spec.shards m > n: grow the StatefulSet to m; once
//	  the new pods are ready, announce epoch+1 (m shards, previous n)
//	settled at n, m < n: announce epoch+1 (m shards, previous n), the
//	  StatefulSet stays at n
//	a move in force (previous set): keep max(n, previous) pods; once every
//	  shard of both layouts reports the epoch and has handed off, announce
//	  epoch+1 without previous
//	settled at n with more pods than n: once every ready shard below n has
//	  the announcement, shrink the StatefulSet to n
//
// One move at a time: a change of spec.shards during a move waits for it to
// end and then starts from the layout it reached.

// RebalanceStartedAnno on the topology ConfigMap is when the operator
// announced the move in force (RFC 3339); it goes with the move.
const RebalanceStartedAnno = labelPrefix + "rebalance-started"

// rebalancePoll is how often a reconcile looks at the shards while a scale
// is under way: the shards report progress on request, not as events.
const rebalancePoll = 2 * time.Second

// shardState is what one reconcile knows of the shard with an ordinal.
type shardState struct {
	pod   string // the pod's name; empty when there is none
	ready bool
	rep   *shardReport // its answer (nil unless ready)
}

// reported is the shard's topology when it answered.
func (s shardState) reported() *topology.Topology {
	if s.rep == nil || s.rep.err != nil {
		return nil
	}
	return s.rep.topo
}

// plan is what the orchestration does in one reconcile.
type plan struct {
	// want is the announcement to hold in the ConfigMap and give the pods.
	want topology.Announcement
	// replicas is the StatefulSet's size.
	replicas int32
	// start and finish: this reconcile starts or ends a move.
	start, finish bool
}

// planInput is what planTopology decides from.
type planInput struct {
	cur         *topology.Announcement // announced; nil at creation
	target      int                    // spec.shards
	urls        func(n int) []string   // the first n shard URLs
	shards      map[int]shardState     // by ordinal
	stsReplicas int32                  // the StatefulSet's current size (0: none)
}

// planTopology decides the next step of the orchestration.
func planTopology(in planInput) plan {
	cur, m := in.cur, in.target
	if cur == nil {
		// Creation: no data anywhere yet, nothing to move.
		return plan{want: topology.Announcement{Layout: topology.Layout{Epoch: 1, Shards: in.urls(m)}}, replicas: int32(m)}
	}
	if cur.Previous != nil {
		span := max(len(cur.Shards), len(cur.Previous.Shards))
		p := plan{want: *cur, replicas: int32(span)}
		if drained(cur.Epoch, in.shards, span) {
			p.want = topology.Announcement{Layout: topology.Layout{Epoch: cur.Epoch + 1, Shards: cur.Shards}}
			p.finish = true
		}
		return p
	}
	n := len(cur.Shards)
	p := plan{want: *cur, replicas: int32(max(n, m))}
	if urls := in.urls(n); !slices.Equal(cur.Shards, urls) {
		// The shards' addresses changed (TLS turned on or off): the same
		// shards under their new URLs, nothing to move.
		p.want = topology.Announcement{Layout: topology.Layout{Epoch: cur.Epoch + 1, Shards: urls}}
		p.replicas = max(p.replicas, in.stsReplicas)
		return p
	}
	settled := settledOn(cur.Epoch, in.shards, n)
	if !settled {
		// Pods beyond the layout go only once every shard has left the
		// last move behind.
		p.replicas = max(p.replicas, in.stsReplicas)
		return p
	}
	start := m < n
	if m > n {
		// Grow first: the new shards take part once they are ready.
		start = true
		for i := n; i < m; i++ {
			if !in.shards[i].ready {
				start = false
			}
		}
	}
	if start {
		prev := topology.Layout{Epoch: cur.Epoch, Shards: cur.Shards}
		p.want = topology.Announcement{Layout: topology.Layout{Epoch: cur.Epoch + 1, Shards: in.urls(m)}, Previous: &prev}
		p.start = true
	}
	return p
}

// drained: every shard below span is ready, reports epoch and has nothing
// left to hand off.
func drained(epoch int64, shards map[int]shardState, span int) bool {
	for i := 0; i < span; i++ {
		t := shards[i].reported()
		if !shards[i].ready || t == nil || t.Epoch != epoch || t.Rebalancing {
			return false
		}
	}
	return true
}

// settledOn: every ready shard below n reports epoch (shards that are not
// ready read the announcement when they start).
func settledOn(epoch int64, shards map[int]shardState, n int) bool {
	for i, s := range shards {
		if i >= n || !s.ready {
			continue
		}
		if t := s.reported(); t == nil || t.Epoch != epoch {
			return false
		}
	}
	return true
}

// moveStatus describes a move in force from the shards' reports: per shard
// progress, and the shards the move waits for because they are not ready
// or do not answer.
func moveStatus(a topology.Announcement, shards map[int]shardState, podName func(int) string) ([]cachev1alpha1.ShardRebalanceProgress, []string) {
	span := max(len(a.Shards), len(a.Previous.Shards))
	var out []cachev1alpha1.ShardRebalanceProgress
	var blocked []string
	for i := 0; i < span; i++ {
		s := shards[i]
		sp := cachev1alpha1.ShardRebalanceProgress{Shard: int32(i), Rebalancing: true}
		t := s.reported()
		switch {
		case !s.ready:
			sp.Message = fmt.Sprintf("pod %s is not ready", podName(i))
			blocked = append(blocked, fmt.Sprintf("shard %d (%s)", i, sp.Message))
		case t == nil:
			sp.Message = fmt.Sprintf("pod %s does not answer: %v", podName(i), s.rep.err)
			blocked = append(blocked, fmt.Sprintf("shard %d (%s)", i, sp.Message))
		case t.Epoch != a.Epoch:
			sp.Message = fmt.Sprintf("has topology epoch %d, not %d yet", t.Epoch, a.Epoch)
		default:
			pr := t.Progress
			sp.Rebalancing = t.Rebalancing
			if pr.Epoch != a.Epoch {
				// A shard keeps reporting its last move until the first pass
				// of this one: those figures are not this move's.
				if t.Rebalancing {
					sp.Message = "has not started its first pass yet"
				}
				out = append(out, sp)
				continue
			}
			sp.ItemsMoved, sp.BytesMoved = pr.ItemsMoved, pr.BytesMoved
			sp.ItemsRemaining, sp.BytesRemaining = pr.ItemsRemaining, pr.BytesRemaining
			sp.ItemsReceived = pr.ItemsReceived
			sp.Message = pr.LastError
		}
		out = append(out, sp)
	}
	return out, blocked
}

// moveTotals sums the figures of every shard.
func moveTotals(ps []cachev1alpha1.ShardRebalanceProgress) (moved, movedBytes, left, leftBytes int64, busy []string) {
	for _, p := range ps {
		moved += p.ItemsMoved
		movedBytes += p.BytesMoved
		left += p.ItemsRemaining
		leftBytes += p.BytesRemaining
		if p.Rebalancing {
			busy = append(busy, fmt.Sprint(p.Shard))
		}
	}
	sort.Strings(busy)
	return
}

// rebalanceMessage is the Progressing message of a move in force.
func rebalanceMessage(a topology.Announcement, ps []cachev1alpha1.ShardRebalanceProgress) string {
	moved, movedBytes, left, leftBytes, busy := moveTotals(ps)
	msg := fmt.Sprintf("moving keys from %d to %d shards (topology epoch %d): %d items (%d bytes) moved, %d items (%d bytes) left",
		len(a.Previous.Shards), len(a.Shards), a.Epoch, moved, movedBytes, left, leftBytes)
	if len(busy) > 0 {
		msg += "; shards still handing off: " + strings.Join(busy, ", ")
	} else {
		msg += "; every shard has handed off, ending the move"
	}
	return msg
}

// recordMove records the start and the end of a move as Events and
// metrics. cur is the announcement before this reconcile, want the one it
// made; endedStart is when the move it ends started, if known.
func (r *DiskCacheReconciler) recordMove(dc *cachev1alpha1.DiskCache, cur *topology.Announcement, p plan, want topology.Announcement,
	endedStart *time.Time, reports []shardReport) {
	switch {
	case p.start:
		r.event(dc, corev1.EventTypeNormal, "RebalanceStarted", "Rebalance",
			"moving keys from %d to %d shards: announced topology epoch %d with the previous layout of epoch %d",
			len(want.Previous.Shards), len(want.Shards), want.Epoch, want.Previous.Epoch)
		r.Metrics.started(dc)
	case p.finish:
		var moved, movedBytes int64
		for _, rep := range reports {
			if rep.err == nil && rep.topo != nil {
				pr := rep.topo.Progress
				moved += pr.ItemsMoved
				movedBytes += pr.BytesMoved
			}
		}
		took := "an unknown time"
		var d time.Duration
		if endedStart != nil {
			d = time.Since(*endedStart)
			took = d.Round(time.Second).String()
		}
		r.event(dc, corev1.EventTypeNormal, "RebalanceFinished", "Rebalance",
			"every shard handed off: %d to %d shards in %s (%d items, %d bytes moved); announced topology epoch %d",
			len(cur.Previous.Shards), len(cur.Shards), took, moved, movedBytes, want.Epoch)
		r.Metrics.finished(dc, d, endedStart != nil)
	}
	r.Metrics.setRebalancing(dc, want.Previous != nil)
}
