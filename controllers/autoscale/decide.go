// Package autoscale decides how many shards a DiskCache should have from
// figures its shards report, the way the HorizontalPodAutoscaler decides
// replicas: per target, desired = ceil(current × observed / target); the
// largest over the targets, clamped to [min, max], held by stabilization
// windows and a largest step, never while data moves between shards and
// not within a cooldown after a move ended.
//
// Decide is a pure function of its inputs and the State it keeps; the
// controller feeds it observations on an interval and applies what it
// says through the scale subresource.
package autoscale

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Tolerance is the HPA's: a ratio of observed to target within 10% of 1
// changes nothing, so noise does not flap the shard count.
const Tolerance = 0.1

// Target names, as in spec.autoscaling.targets.
const (
	Fill         = "fill"
	RequestRate  = "requestRate"
	EvictionRate = "evictionRate"
)

// Target is one figure to hold at a value per shard.
type Target struct {
	// Name says what the figure is ("fill", "requestRate", "evictionRate").
	Name string
	// Value is the wanted average per shard; it must be > 0.
	Value float64
}

// Behavior holds the shard count steady.
type Behavior struct {
	// UpWindow and DownWindow: a change is made only if every
	// recommendation within the window agrees (scale-up takes the lowest
	// recommendation of the window, scale-down the highest).
	UpWindow, DownWindow time.Duration
	// MaxStepUp and MaxStepDown bound one change in shards; 0 means no
	// bound.
	MaxStepUp, MaxStepDown int32
	// Cooldown after a rebalance ended before the next change.
	Cooldown time.Duration
}

// Spec is what the user asked for.
type Spec struct {
	MinShards, MaxShards int32
	Targets              []Target
	Behavior             Behavior
}

// Observation is the figures read at one time: per target name, the
// average over the shards.
type Observation struct {
	At      time.Time
	Current int32              // shards now
	Average map[string]float64 // target name -> average per shard
}

// State is what Decide remembers between calls; the controller keeps one
// per DiskCache (and may persist Recommendations in status to survive a
// restart).
type State struct {
	Recommendations []Recommendation
}

// Recommendation is what one observation alone asked for.
type Recommendation struct {
	At     time.Time
	Shards int32
}

// Decision is the outcome of one call.
type Decision struct {
	// Desired is the shard count to have; equal to Observation.Current when
	// nothing changes.
	Desired int32
	// Change is true when Desired differs from the current count.
	Change bool
	// Reason explains the decision for status and Events.
	Reason string
}

// Phase is where the cache stands between layouts.
type Phase int

const (
	// Settled: one layout, serving; the figures describe it.
	Settled Phase = iota
	// Settling: between layouts with no data moving (a scale waiting for
	// its pods, a rollout, a spec not reconciled yet): the figures describe
	// neither layout, so no decision is made on them, but a count outside
	// the bounds is moved into them (a scale-up whose pods never come is
	// undone by lowering maxShards).
	Settling
	// Moving: data moves between shards (or no shard has said whether it
	// does): nothing changes.
	Moving
)

// Decide returns the shard count to have. phase says whether the cache is
// between layouts; lastRebalanceEnd is when it last settled (zero if
// never seen).
func Decide(spec Spec, obs Observation, st *State, phase Phase, lastRebalanceEnd time.Time) Decision {
	cur := obs.Current
	horizon := max(spec.Behavior.UpWindow, spec.Behavior.DownWindow)
	st.forget(obs.At, horizon)
	if len(st.Recommendations) == 0 {
		// As the HPA's first recommendation: the windows start when the
		// autoscaler starts watching (enabled, or back after a gap longer
		// than the windows), with the count there is, so the first
		// reading alone does not shrink the cache.
		st.record(Recommendation{At: obs.At, Shards: cur})
	}
	// keep makes no decision now. It records the count there is, so that
	// a window that spanned a move or a cooldown starts again after it
	// rather than finding itself empty, and still moves a count that the
	// user's bounds no longer allow (no figures needed, as for the HPA).
	keep := func(reason string, bounded bool) Decision {
		st.record(Recommendation{At: obs.At, Shards: cur})
		d := Decision{Desired: cur, Reason: reason}
		if bounded {
			if d.Desired = clamp(cur, spec.MinShards, spec.MaxShards); d.Desired != cur {
				d.Change = true
				d.Reason += fmt.Sprintf("; %d kept within [%d, %d]", cur, spec.MinShards, spec.MaxShards)
			}
		}
		return d
	}
	switch phase {
	case Moving:
		return keep("no decision while data moves", false)
	case Settling:
		return keep("no decision on the figures until the cache settles", true)
	}
	if spec.Behavior.Cooldown > 0 && !lastRebalanceEnd.IsZero() && obs.At.Sub(lastRebalanceEnd) < spec.Behavior.Cooldown {
		return keep(fmt.Sprintf("cooldown: the last rebalance ended %s ago (cooldown %s)",
			obs.At.Sub(lastRebalanceEnd).Round(time.Second), spec.Behavior.Cooldown), true)
	}

	// What this observation alone asks for: the largest over the targets.
	raw, why := cur, []string{}
	if cur < 1 {
		raw = 1
	}
	// seen: a figure for some target; opinion: one that asks for a count.
	seen, opinion, missing := false, false, []string{}
	for _, t := range spec.Targets {
		if t.Value <= 0 {
			continue
		}
		o, ok := obs.Average[t.Name]
		if !ok || math.IsNaN(o) || math.IsInf(o, 0) {
			missing = append(missing, t.Name)
			continue
		}
		want := cur
		ratio := o / t.Value
		if math.Abs(ratio-1) > Tolerance {
			// In float first: a tiny target can make the product
			// overflow an int32, which would read as a shrink.
			want = int32(max(0, min(math.Ceil(float64(cur)*ratio), math.MaxInt32)))
		}
		seen = true
		if t.Name == EvictionRate && want <= cur {
			// Culling is the cache saying it is too small; culling less
			// than the target is no sign that it is too large (a cache of
			// the right size culls nothing): this target only ever asks
			// for more shards, and the others decide the rest.
			why = append(why, fmt.Sprintf("%s %s per shard (target %s) → no more", t.Name, Format(o), Format(t.Value)))
			continue
		}
		why = append(why, fmt.Sprintf("%s %s per shard (target %s) → %d", t.Name, Format(o), Format(t.Value), want))
		if !opinion || want > raw {
			raw = want
		}
		opinion = true
	}
	if !seen {
		return keep("no figures for any target", true)
	}
	if !opinion {
		raw = cur // only figures that ask for no more: stay
	}
	if len(missing) > 0 && raw < cur {
		// A target without a figure (a shard did not answer, a rate needs
		// a second reading) might want more: never shrink on part of the
		// figures.
		raw = cur
		why = append(why, fmt.Sprintf("no figure for %s: not below %d", strings.Join(missing, ", "), cur))
	}
	rec := clamp(raw, spec.MinShards, spec.MaxShards)
	if rec != raw {
		why = append(why, fmt.Sprintf("%d kept within [%d, %d]", raw, spec.MinShards, spec.MaxShards))
	}

	// Stabilization: remember this recommendation and hold the count
	// unless the window agrees.
	upTo, downTo := rec, rec
	for _, r := range st.Recommendations {
		// A window of 0 is this reading alone.
		age := obs.At.Sub(r.At)
		if age <= spec.Behavior.UpWindow && spec.Behavior.UpWindow > 0 && r.Shards < upTo {
			upTo = r.Shards
		}
		if age <= spec.Behavior.DownWindow && spec.Behavior.DownWindow > 0 && r.Shards > downTo {
			downTo = r.Shards
		}
	}
	st.record(Recommendation{At: obs.At, Shards: rec})
	desired := cur
	switch {
	case upTo > cur:
		desired = upTo
		if s := spec.Behavior.MaxStepUp; s > 0 && desired > cur+s {
			desired = cur + s
		}
	case downTo < cur:
		desired = downTo
		if s := spec.Behavior.MaxStepDown; s > 0 && desired < cur-s {
			desired = cur - s
		}
	}
	// Bounds apply even when the figures are calm (for example a user who
	// raised minShards).
	unbounded := desired
	desired = clamp(desired, spec.MinShards, spec.MaxShards)
	reason := strings.Join(why, "; ")
	switch {
	case desired != unbounded:
		reason += fmt.Sprintf("; %d kept within [%d, %d]", unbounded, spec.MinShards, spec.MaxShards)
	case desired == cur && rec != cur:
		reason += fmt.Sprintf("; held at %d by the stabilization window", cur)
	case desired != rec:
		reason += fmt.Sprintf("; %d limited to %d by the step or window", rec, desired)
	}
	return Decision{Desired: desired, Change: desired != cur, Reason: reason}
}

// record adds a recommendation and drops those that no window can need
// any more: one is needed only while no later one is as low (for the
// up-window's lowest) or as high (the down-window's highest). So the list
// holds at most two entries per shard count whatever the windows and the
// poll interval (it is written into status at every reading), and every
// window's lowest and highest are what they were with all of them.
func (st *State) record(r Recommendation) {
	recs := append(st.Recommendations, r)
	lo, hi := r.Shards, r.Shards
	keep := len(recs) - 1
	for i := len(recs) - 2; i >= 0; i-- {
		s := recs[i].Shards
		if s < lo || s > hi {
			keep--
			recs[keep] = recs[i]
		}
		lo, hi = min(lo, s), max(hi, s)
	}
	st.Recommendations = append(recs[:0], recs[keep:]...)
}

// forget drops the recommendations older than the windows.
func (st *State) forget(now time.Time, horizon time.Duration) {
	kept := st.Recommendations[:0]
	for _, r := range st.Recommendations {
		if now.Sub(r.At) <= horizon {
			kept = append(kept, r)
		}
	}
	st.Recommendations = kept
}

// Format writes a figure with at most three decimals: 0.811, 1500, 2.5;
// a figure too small for that with three significant digits: 1e-06.
func Format(v float64) string {
	if v != 0 && math.Abs(v) < 0.001 {
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
	s := strconv.FormatFloat(v, 'f', 3, 64)
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, ".")
}

func clamp(n, lo, hi int32) int32 {
	if lo > 0 && n < lo {
		n = lo
	}
	if hi > 0 && n > hi {
		n = hi
	}
	return n
}
