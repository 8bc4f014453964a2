package controllers

import (
	"fmt"
	"testing"

	"github.com/diskcache-operator/diskcache-operator/topology"
)

// TestPlanTopology walks the orchestration's decisions over observed
// states, without a cluster: each case is a state a reconcile can find
// (also after an operator restart, since nothing else is remembered).
func TestPlanTopology(t *testing.T) {
	urls := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("http://s%d", i)
		}
		return out
	}
	layout := func(epoch int64, n int) topology.Layout { return topology.Layout{Epoch: epoch, Shards: urls(n)} }
	settled := func(epoch int64, n int) *topology.Announcement {
		return &topology.Announcement{Layout: layout(epoch, n)}
	}
	moving := func(epoch int64, n, from int) *topology.Announcement {
		p := layout(epoch-1, from)
		return &topology.Announcement{Layout: layout(epoch, n), Previous: &p}
	}
	// shards builds the observed shards: ready ones report epoch (with
	// rebalancing), "-" is a shard without a ready pod.
	type obs struct {
		ready       bool
		epoch       int64
		rebalancing bool
	}
	up := func(epoch int64) obs { return obs{true, epoch, false} }
	busy := func(epoch int64) obs { return obs{true, epoch, true} }
	down := obs{}
	shards := func(os ...obs) map[int]shardState {
		m := map[int]shardState{}
		for i, o := range os {
			s := shardState{pod: fmt.Sprint("p", i), ready: o.ready}
			if o.ready {
				s.rep = &shardReport{topo: &topology.Topology{Announcement: topology.Announcement{Layout: topology.Layout{Epoch: o.epoch}}, Rebalancing: o.rebalancing}}
			}
			m[i] = s
		}
		return m
	}
	for _, tc := range []struct {
		name     string
		cur      *topology.Announcement
		target   int
		shards   map[int]shardState
		sts      int32
		want     topology.Announcement
		replicas int32
		start    bool
		finish   bool
	}{
		{"creation", nil, 3, nil, 0, *settled(1, 3), 3, false, false},
		{"steady", settled(4, 2), 2, shards(up(4), up(4)), 2, *settled(4, 2), 2, false, false},
		{"single shard", settled(1, 1), 1, shards(up(1)), 1, *settled(1, 1), 1, false, false},
		{"grow: new shard not ready yet", settled(4, 2), 3, shards(up(4), up(4), down), 3, *settled(4, 2), 3, false, false},
		{"grow: new shard ready", settled(4, 2), 3, shards(up(4), up(4), up(4)), 3, *moving(5, 3, 2), 3, true, false},
		{"grow: a shard has not the last epoch", settled(4, 2), 3, shards(up(4), up(3), up(4)), 3, *settled(4, 2), 3, false, false},
		{"shrink: announce first, keep the pods", settled(4, 3), 1, shards(up(4), up(4), up(4)), 3, *moving(5, 1, 3), 3, true, false},
		{"move: a shard still hands off", moving(5, 1, 3), 1, shards(up(5), busy(5), up(5)), 3, *moving(5, 1, 3), 3, false, false},
		{"move: a departing shard is down", moving(5, 1, 3), 1, shards(up(5), up(5), down), 3, *moving(5, 1, 3), 3, false, false},
		{"move: a shard has not heard of it", moving(5, 1, 3), 1, shards(up(5), up(4), up(5)), 3, *moving(5, 1, 3), 3, false, false},
		{"move: spec changed meanwhile", moving(5, 1, 3), 4, shards(up(5), busy(5), up(5)), 3, *moving(5, 1, 3), 3, false, false},
		{"move: every shard handed off", moving(5, 1, 3), 1, shards(up(5), up(5), up(5)), 3, *settled(6, 1), 3, false, true},
		{"ended: shrink once the remaining shards have it", settled(6, 1), 1, shards(up(6), up(5), up(5)), 3, *settled(6, 1), 1, false, false},
		{"ended: not before", settled(6, 1), 1, shards(up(5), up(6), up(6)), 3, *settled(6, 1), 3, false, false},
		{"ended: the next move starts", settled(6, 1), 2, shards(up(6), up(6), up(6)), 3, *moving(7, 2, 1), 2, true, false},
		{"new addresses: same shards, new epoch", &topology.Announcement{Layout: topology.Layout{Epoch: 2, Shards: []string{"http://old0", "http://old1"}}},
			2, shards(up(2), up(2)), 2, *settled(3, 2), 2, false, false},
	} {
		p := planTopology(planInput{cur: tc.cur, target: tc.target, urls: urls, shards: tc.shards, stsReplicas: tc.sts})
		if !p.want.Equal(tc.want) || p.replicas != tc.replicas || p.start != tc.start || p.finish != tc.finish {
			t.Errorf("%s: announce %+v (previous %+v), %d replicas, start %v, finish %v; want %+v (previous %+v), %d, %v, %v",
				tc.name, p.want.Layout, p.want.Previous, p.replicas, p.start, p.finish, tc.want.Layout, tc.want.Previous, tc.replicas, tc.start, tc.finish)
		}
	}
}

// TestMoveStatusIgnoresAnEarlierMovesFigures: a shard keeps reporting the
// progress of its last move until its first pass of the next one; the
// status must not show those figures as this move's.
func TestMoveStatusIgnoresAnEarlierMovesFigures(t *testing.T) {
	prev := topology.Layout{Epoch: 6, Shards: []string{"http://s0", "http://s1"}}
	a := topology.Announcement{Layout: topology.Layout{Epoch: 7, Shards: []string{"http://s0"}}, Previous: &prev}
	report := func(progressEpoch int64) shardState {
		return shardState{pod: "p", ready: true, rep: &shardReport{topo: &topology.Topology{
			Announcement: topology.Announcement{Layout: topology.Layout{Epoch: 7}}, Rebalancing: true,
			Progress: topology.Progress{Epoch: progressEpoch, ItemsMoved: 584, ItemsRemaining: 10},
		}}}
	}
	ps, blocked := moveStatus(a, map[int]shardState{0: report(5), 1: report(7)}, func(i int) string { return fmt.Sprint("p", i) })
	if len(blocked) != 0 || len(ps) != 2 {
		t.Fatalf("moveStatus: %+v, blocked %v", ps, blocked)
	}
	if got := ps[0]; got.ItemsMoved != 0 || got.ItemsRemaining != 0 || !got.Rebalancing {
		t.Errorf("shard 0 reports the move of epoch 5: status %+v, want no figures and still rebalancing", got)
	}
	if got := ps[1]; got.ItemsMoved != 584 || got.ItemsRemaining != 10 {
		t.Errorf("shard 1 reports this move: status %+v, want 584 moved, 10 left", got)
	}
}
