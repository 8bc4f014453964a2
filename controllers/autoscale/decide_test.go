package autoscale

import (
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)

func spec() Spec {
	return Spec{
		MinShards: 1, MaxShards: 8,
		Targets:  []Target{{Name: "fill", Value: 0.8}, {Name: "requestRate", Value: 1000}},
		Behavior: Behavior{UpWindow: 0, DownWindow: 5 * time.Minute, MaxStepUp: 2, Cooldown: 2 * time.Minute},
	}
}

func obs(at time.Duration, cur int32, fill, rate float64) Observation {
	return Observation{At: t0.Add(at), Current: cur, Average: map[string]float64{"fill": fill, "requestRate": rate}}
}

func TestTheHPAFormulaTheLargestTargetWins(t *testing.T) {
	var st State
	// fill 0.9 of 0.8 on 2 shards: ceil(2×1.125) = 3; rate 2500 of 1000:
	// ceil(2×2.5) = 5, limited to 2+2 = 4 by the step.
	d := Decide(spec(), obs(0, 2, 0.9, 2500), &st, false, time.Time{})
	if d.Desired != 4 || !d.Change || !strings.Contains(d.Reason, "requestRate") {
		t.Fatalf("%+v", d)
	}
	// Within tolerance (0.84/0.8 = 1.05): no change.
	st = State{}
	if d := Decide(spec(), obs(0, 3, 0.84, 1000), &st, false, time.Time{}); d.Change {
		t.Fatalf("within tolerance: %+v", d)
	}
}

func TestClampedToMinAndMax(t *testing.T) {
	s := spec()
	s.Behavior = Behavior{}
	var st State
	if d := Decide(s, obs(0, 7, 5, 0), &st, false, time.Time{}); d.Desired != 8 {
		t.Fatalf("above max: %+v", d)
	}
	st = State{}
	if d := Decide(s, obs(0, 3, 0.01, 1), &st, false, time.Time{}); d.Desired != 1 {
		t.Fatalf("down to min: %+v", d)
	}
	s.MinShards = 4 // a raised minimum applies even when calm
	st = State{}
	if d := Decide(s, obs(0, 3, 0.8, 1000), &st, false, time.Time{}); d.Desired != 4 {
		t.Fatalf("below a raised min: %+v", d)
	}
}

func TestScaleDownWaitsForTheWindow(t *testing.T) {
	var st State
	s := spec()
	// Busy, then quiet: the quiet recommendations do not shrink the cache
	// until the busy one has left the 5-minute window.
	Decide(s, obs(0, 4, 0.8, 4000), &st, false, time.Time{})
	for _, at := range []time.Duration{time.Minute, 3 * time.Minute, 5 * time.Minute} {
		if d := Decide(s, obs(at, 4, 0.1, 10), &st, false, time.Time{}); d.Change {
			t.Fatalf("at %s: %+v", at, d)
		}
	}
	d := Decide(s, obs(5*time.Minute+time.Second, 4, 0.1, 10), &st, false, time.Time{})
	if !d.Change || d.Desired != 1 {
		t.Fatalf("after the window: %+v", d)
	}
}

func TestNoFlapping(t *testing.T) {
	var st State
	s := spec()
	cur := int32(3)
	changes := 0
	// A load that swings every 15 s for an hour; per-shard figures are the
	// load spread over the shards there are.
	for i := 0; i < 240; i++ {
		load := 0.95 * 3
		if i%2 == 1 {
			load = 0.5 * 3
		}
		d := Decide(s, obs(time.Duration(i)*15*time.Second, cur, load/float64(cur), 500), &st, false, time.Time{})
		if d.Change {
			changes++
			cur = d.Desired
		}
	}
	// It may grow once to absorb the peaks, never shrink back and forth.
	if changes > 1 {
		t.Fatalf("%d changes for oscillating figures", changes)
	}
}

func TestNothingDuringOrJustAfterARebalance(t *testing.T) {
	var st State
	if d := Decide(spec(), obs(0, 2, 3, 0), &st, true, time.Time{}); d.Change || !strings.Contains(d.Reason, "rebalance is running") {
		t.Fatalf("during a rebalance: %+v", d)
	}
	ended := t0.Add(-time.Minute)
	if d := Decide(spec(), obs(0, 2, 3, 0), &st, false, ended); d.Change || !strings.Contains(d.Reason, "cooldown") {
		t.Fatalf("within the cooldown: %+v", d)
	}
	if d := Decide(spec(), obs(2*time.Minute, 2, 3, 0), &st, false, ended); !d.Change {
		t.Fatalf("after the cooldown: %+v", d)
	}
}

func TestMissingFiguresChangeNothing(t *testing.T) {
	var st State
	d := Decide(spec(), Observation{At: t0, Current: 3}, &st, false, time.Time{})
	if d.Change || !strings.Contains(d.Reason, "no figures") {
		t.Fatalf("%+v", d)
	}
}
