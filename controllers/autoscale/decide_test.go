package autoscale

import (
	"math"
	"math/rand/v2"
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
	d := Decide(spec(), obs(0, 2, 0.9, 2500), &st, Settled, time.Time{})
	if d.Desired != 4 || !d.Change || !strings.Contains(d.Reason, "requestRate") {
		t.Fatalf("%+v", d)
	}
	// Within tolerance (0.84/0.8 = 1.05): no change.
	st = State{}
	if d := Decide(spec(), obs(0, 3, 0.84, 1000), &st, Settled, time.Time{}); d.Change {
		t.Fatalf("within tolerance: %+v", d)
	}
}

func TestClampedToMinAndMax(t *testing.T) {
	s := spec()
	s.Behavior = Behavior{}
	var st State
	if d := Decide(s, obs(0, 7, 5, 0), &st, Settled, time.Time{}); d.Desired != 8 {
		t.Fatalf("above max: %+v", d)
	}
	st = State{}
	if d := Decide(s, obs(0, 3, 0.01, 1), &st, Settled, time.Time{}); d.Desired != 1 {
		t.Fatalf("down to min: %+v", d)
	}
	s.MinShards = 4 // a raised minimum applies even when calm
	st = State{}
	if d := Decide(s, obs(0, 3, 0.8, 1000), &st, Settled, time.Time{}); d.Desired != 4 {
		t.Fatalf("below a raised min: %+v", d)
	}
}

func TestScaleDownWaitsForTheWindow(t *testing.T) {
	var st State
	s := spec()
	// Busy, then quiet: the quiet recommendations do not shrink the cache
	// until the busy one has left the 5-minute window.
	Decide(s, obs(0, 4, 0.8, 4000), &st, Settled, time.Time{})
	for _, at := range []time.Duration{time.Minute, 3 * time.Minute, 5 * time.Minute} {
		if d := Decide(s, obs(at, 4, 0.1, 10), &st, Settled, time.Time{}); d.Change {
			t.Fatalf("at %s: %+v", at, d)
		}
	}
	d := Decide(s, obs(5*time.Minute+time.Second, 4, 0.1, 10), &st, Settled, time.Time{})
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
		d := Decide(s, obs(time.Duration(i)*15*time.Second, cur, load/float64(cur), 500), &st, Settled, time.Time{})
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
	if d := Decide(spec(), obs(0, 2, 3, 0), &st, Moving, time.Time{}); d.Change || !strings.Contains(d.Reason, "data moves") {
		t.Fatalf("during a rebalance: %+v", d)
	}
	ended := t0.Add(-time.Minute)
	if d := Decide(spec(), obs(0, 2, 3, 0), &st, Settled, ended); d.Change || !strings.Contains(d.Reason, "cooldown") {
		t.Fatalf("within the cooldown: %+v", d)
	}
	if d := Decide(spec(), obs(2*time.Minute, 2, 3, 0), &st, Settled, ended); !d.Change {
		t.Fatalf("after the cooldown: %+v", d)
	}
}

func TestMissingFiguresChangeNothing(t *testing.T) {
	var st State
	d := Decide(spec(), Observation{At: t0, Current: 3}, &st, Settled, time.Time{})
	if d.Change || !strings.Contains(d.Reason, "no figures") {
		t.Fatalf("%+v", d)
	}
}

func TestToleranceBoundary(t *testing.T) {
	s := spec()
	s.Targets = []Target{{Name: Fill, Value: 0.8}}
	s.Behavior = Behavior{}
	for _, c := range []struct {
		fill float64
		want int32
	}{
		{0.87, 4}, // ratio 1.09: within the tolerance
		{0.73, 4}, // ratio 0.91
		{0.89, 5}, // ratio 1.11: ceil(4 × 1.11) = 5
		{0.70, 4}, // ratio 0.875: ceil(4 × 0.875) = 4
		{0.55, 3}, // ceil(4 × 0.6875) = 3
		{2.0, 8},  // ceil(4 × 2.5) = 10, clamped to 8
	} {
		var st State
		d := Decide(s, Observation{At: t0, Current: 4, Average: map[string]float64{Fill: c.fill}}, &st, Settled, time.Time{})
		if d.Desired != c.want || d.Change != (c.want != 4) {
			t.Errorf("fill %.2f on 4 shards: %+v, want %d", c.fill, d, c.want)
		}
	}
}

func TestScaleUpWindowNeedsASustainedRise(t *testing.T) {
	s := spec()
	s.Behavior = Behavior{UpWindow: time.Minute, DownWindow: 5 * time.Minute}
	var st State
	// A single busy reading among calm ones does not grow the cache.
	Decide(s, obs(0, 2, 0.8, 1000), &st, Settled, time.Time{})
	if d := Decide(s, obs(30*time.Second, 2, 1.6, 1000), &st, Settled, time.Time{}); d.Change || !strings.Contains(d.Reason, "held at 2") {
		t.Fatalf("a spike: %+v", d)
	}
	// Busy for the whole window: it grows to the lowest recommendation of
	// the window.
	Decide(s, obs(60*time.Second, 2, 1.6, 1000), &st, Settled, time.Time{})
	d := Decide(s, obs(91*time.Second, 2, 1.2, 1000), &st, Settled, time.Time{})
	if !d.Change || d.Desired != 3 {
		t.Fatalf("after a minute of high fill: %+v", d)
	}
}

func TestScaleDownStep(t *testing.T) {
	s := spec()
	s.Behavior = Behavior{MaxStepDown: 1}
	var st State
	d := Decide(s, obs(0, 6, 0.1, 100), &st, Settled, time.Time{})
	if d.Desired != 5 || !strings.Contains(d.Reason, "limited to 5") {
		t.Fatalf("%+v", d)
	}
}

func TestMissingFigureNeverShrinks(t *testing.T) {
	s := spec()
	s.Behavior = Behavior{}
	var st State
	// Fill alone says 1, but the request rate is unknown.
	d := Decide(s, Observation{At: t0, Current: 3, Average: map[string]float64{Fill: 0.05}}, &st, Settled, time.Time{})
	if d.Change || !strings.Contains(d.Reason, "no figure for requestRate") {
		t.Fatalf("%+v", d)
	}
	// It may still grow on the figures it has.
	st = State{}
	d = Decide(s, Observation{At: t0, Current: 3, Average: map[string]float64{Fill: 1.2}}, &st, Settled, time.Time{})
	if d.Desired != 5 {
		t.Fatalf("grow on fill alone: %+v", d)
	}
}

func TestAveragesOverShards(t *testing.T) {
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	prev := map[int]Reading{
		0: {At: at(0), Started: "a", Served: 100, Evicted: 0, DiskBytes: 40, SizeLimit: 100},
		1: {At: at(0), Started: "b", Served: 1000, Evicted: 50, DiskBytes: 80, SizeLimit: 100},
	}
	cur := map[int]Reading{
		0: {At: at(10 * time.Second), Started: "a", Served: 300, Evicted: 10, DiskBytes: 50, SizeLimit: 100},
		1: {At: at(10 * time.Second), Started: "b", Served: 1600, Evicted: 50, DiskBytes: 90, SizeLimit: 100},
	}
	avg, why := Averages(prev, cur, 2)
	// Fill (0.5 + 0.9) / 2; requests (20/s + 60/s) / 2; evictions (1/s + 0) / 2.
	if math.Abs(avg[Fill]-0.7) > 1e-9 || avg[RequestRate] != 40 || avg[EvictionRate] != 0.5 || len(why) != 0 {
		t.Fatalf("%v %q", avg, why)
	}
	// Shard 1 restarted: its counters start again, no rate this time.
	cur[1] = Reading{At: at(10 * time.Second), Started: "c", Served: 5000, Evicted: 60, DiskBytes: 90, SizeLimit: 100}
	avg, why = Averages(prev, cur, 2)
	if _, ok := avg[RequestRate]; ok || math.Abs(avg[Fill]-0.7) > 1e-9 || !strings.Contains(why[RequestRate], "from shards 1") || why[Fill] != "" {
		t.Fatalf("after a restart: %v %q", avg, why)
	}
	// A shard that did not answer: no average at all, not one over the others.
	delete(cur, 1)
	avg, why = Averages(prev, cur, 2)
	if len(avg) != 0 || why[Fill] != "no figures from shards 1" {
		t.Fatalf("a shard missing: %v %q", avg, why)
	}
	// The first reading has no rates yet.
	avg, _ = Averages(nil, prev, 2)
	if _, ok := avg[RequestRate]; ok || math.Abs(avg[Fill]-0.6) > 1e-9 {
		t.Fatalf("first reading: %v", avg)
	}
}

func TestReasonSaysWhy(t *testing.T) {
	s := spec()
	s.MinShards, s.MaxShards = 2, 3
	s.Behavior = Behavior{}
	var st State
	d := Decide(s, Observation{At: t0, Current: 2, Average: map[string]float64{Fill: 1.6, RequestRate: 900}}, &st, Settled, time.Time{})
	want := "fill 1.6 per shard (target 0.8) → 4; requestRate 900 per shard (target 1000) → 2; 4 kept within [2, 3]"
	if d.Desired != 3 || d.Reason != want {
		t.Fatalf("%+v\nwant reason %q", d, want)
	}
}

// TestTheWindowStartsWithTheCountThereIs: the first reading (autoscaling
// just enabled, or back after a gap) and the first reading after a move
// do not shrink the cache on their own; the scale-down window has to pass
// with agreeing figures first, as with the HPA.
func TestTheWindowStartsWithTheCountThereIs(t *testing.T) {
	s := spec()
	var st State
	for _, at := range []time.Duration{0, time.Minute, 5 * time.Minute} {
		if d := Decide(s, obs(at, 3, 0.1, 10), &st, Settled, time.Time{}); d.Change {
			t.Fatalf("calm from the first reading, at %s: %+v", at, d)
		}
	}
	if d := Decide(s, obs(5*time.Minute+30*time.Second, 3, 0.1, 10), &st, Settled, time.Time{}); !d.Change || d.Desired != 1 {
		t.Fatalf("after a calm window: %+v", d)
	}

	// A move longer than the window, then calm figures: the window starts
	// again when the move ends.
	st = State{}
	for at := time.Duration(0); at <= 10*time.Minute; at += 30 * time.Second {
		Decide(s, obs(at, 3, 0.1, 10), &st, Moving, time.Time{})
	}
	ended := t0.Add(10 * time.Minute)
	for _, at := range []time.Duration{12*time.Minute + 30*time.Second, 15 * time.Minute} {
		if d := Decide(s, obs(at, 3, 0.1, 10), &st, Settled, ended); d.Change {
			t.Fatalf("%s after a 10-minute move: %+v", at-10*time.Minute, d)
		}
	}
	if d := Decide(s, obs(15*time.Minute+30*time.Second, 3, 0.1, 10), &st, Settled, ended); !d.Change {
		t.Fatalf("a window after the move: %+v", d)
	}
}

// TestTinyTargetsDoNotOverflow: a target so small that current × ratio
// is past an int32 grows the cache to its maximum, never wraps to a
// shrink.
func TestTinyTargetsDoNotOverflow(t *testing.T) {
	s := spec()
	s.Targets = []Target{{Name: EvictionRate, Value: 1e-7}}
	s.Behavior = Behavior{}
	var st State
	d := Decide(s, Observation{At: t0, Current: 4, Average: map[string]float64{EvictionRate: 500}}, &st, Settled, time.Time{})
	if d.Desired != 8 || !strings.Contains(d.Reason, "target 1e-07") {
		t.Fatalf("%+v, want 8 (the maximum)", d)
	}
}

// TestBoundsMoveTheCountWithoutFigures: a count outside changed bounds is
// brought within them even with no figures or within a cooldown; not
// while data moves.
func TestBoundsMoveTheCountWithoutFigures(t *testing.T) {
	s := spec()
	s.MaxShards = 3
	var st State
	if d := Decide(s, Observation{At: t0, Current: 5}, &st, Settled, time.Time{}); d.Desired != 3 || !d.Change {
		t.Fatalf("no figures: %+v", d)
	}
	if d := Decide(s, obs(0, 5, 0.8, 1000), &st, Settled, t0.Add(-time.Minute)); d.Desired != 3 || !d.Change {
		t.Fatalf("within a cooldown: %+v", d)
	}
	if d := Decide(s, obs(0, 5, 0.8, 1000), &st, Moving, time.Time{}); d.Change {
		t.Fatalf("during a move: %+v", d)
	}
}

// Culling less than the target is no reason to shrink: a cache of the
// right size culls nothing. With evictionRate alone the count stays; with
// fill too, fill decides the way down. It flapped: no culling asked for
// minShards, the culling came back and asked for maxShards, each change a
// move of keys.
func TestEvictionRateOnlyAsksForMore(t *testing.T) {
	s := Spec{MinShards: 1, MaxShards: 8, Targets: []Target{{Name: EvictionRate, Value: 5}},
		Behavior: Behavior{DownWindow: 5 * time.Minute, MaxStepDown: 1, Cooldown: 2 * time.Minute}}
	var st State
	for at := time.Duration(0); at <= 2*time.Hour; at += 30 * time.Second {
		d := Decide(s, Observation{At: t0.Add(at), Current: 3, Average: map[string]float64{EvictionRate: 0}}, &st, Settled, time.Time{})
		if d.Change {
			t.Fatalf("at %v with no culling: %d → %d (%s)", at, 3, d.Desired, d.Reason)
		}
	}
	if d := Decide(s, Observation{At: t0.Add(3 * time.Hour), Current: 3, Average: map[string]float64{EvictionRate: 20}}, &st, Settled, time.Time{}); d.Desired != 8 {
		t.Errorf("culling 4 times the target: %d shards (%s), want 8 (the max)", d.Desired, d.Reason)
	}
	s.Targets = append(s.Targets, Target{Name: Fill, Value: 0.8})
	st = State{}
	var d Decision
	for at := time.Duration(0); at <= 6*time.Minute; at += 30 * time.Second {
		d = Decide(s, Observation{At: t0.Add(at), Current: 3, Average: map[string]float64{EvictionRate: 0, Fill: 0.2}}, &st, Settled, time.Time{})
	}
	if d.Desired != 2 {
		t.Errorf("no culling, fill a quarter of the target, after the down-window: %d shards (%s), want 2", d.Desired, d.Reason)
	}
}

// The recommendations kept are few whatever the windows and the poll
// interval (they are written into status at every reading: a 24-hour
// window polled every 10 s kept 8,640), and every window's lowest and
// highest stay what they were with all of them.
func TestRecommendationsKeepWhatTheWindowsNeed(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var st State
	var all []Recommendation
	for i := range 5000 {
		r := Recommendation{At: t0.Add(time.Duration(i) * 10 * time.Second), Shards: 1 + rng.Int32N(8)}
		st.record(r)
		all = append(all, r)
		if n := len(st.Recommendations); n > 2*8 {
			t.Fatalf("after %d readings over 8 counts: %d recommendations kept", i+1, n)
		}
		for _, w := range []time.Duration{0, 30 * time.Second, 5 * time.Minute, time.Hour, 24 * time.Hour} {
			lo, hi := extremes(all, r.At, w)
			if klo, khi := extremes(st.Recommendations, r.At, w); klo != lo || khi != hi {
				t.Fatalf("after %d readings, window %v: all give [%d, %d], the kept ones [%d, %d]", i+1, w, lo, hi, klo, khi)
			}
		}
	}
}

func extremes(rs []Recommendation, now time.Time, window time.Duration) (lo, hi int32) {
	lo, hi = math.MaxInt32, 0
	for _, r := range rs {
		if now.Sub(r.At) <= window {
			lo, hi = min(lo, r.Shards), max(hi, r.Shards)
		}
	}
	return lo, hi
}

// A cache between layouts with no data moving (a scale-up whose pods do
// not come) decides nothing on its figures, but a count outside the
// bounds is moved into them; while data moves nothing changes.
func TestSettlingKeepsToTheBounds(t *testing.T) {
	s := Spec{MinShards: 1, MaxShards: 2, Targets: []Target{{Name: Fill, Value: 0.8}}}
	hot := Observation{At: t0, Current: 3, Average: map[string]float64{Fill: 3}}
	var st State
	if d := Decide(s, hot, &st, Settling, time.Time{}); d.Desired != 2 || !d.Change {
		t.Errorf("settling, 3 shards above maxShards 2: %+v, want 2", d)
	}
	if d := Decide(s, hot, &st, Moving, time.Time{}); d.Change {
		t.Errorf("moving, 3 shards above maxShards 2: %+v, want no change", d)
	}
	hot.Current = 2
	s.MaxShards = 4
	if d := Decide(s, hot, &st, Settling, time.Time{}); d.Change {
		t.Errorf("settling within the bounds, figures that want more: %+v, want no change", d)
	}
}
