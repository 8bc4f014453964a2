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

// Decide returns the shard count to have. rebalancing says whether data is
// moving between shards now; lastRebalanceEnd is when the last move ended
// (zero if none).
func Decide(spec Spec, obs Observation, st *State, rebalancing bool, lastRebalanceEnd time.Time) Decision {
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
	if rebalancing {
		return keep("a rebalance is running; no decision until it ends", false)
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
	seen, missing := false, []string{}
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
		if ratio := o / t.Value; math.Abs(ratio-1) > Tolerance {
			// In float first: a tiny target can make the product
			// overflow an int32, which would read as a shrink.
			want = int32(max(0, min(math.Ceil(float64(cur)*ratio), math.MaxInt32)))
		}
		why = append(why, fmt.Sprintf("%s %s per shard (target %s) → %d", t.Name, Format(o), Format(t.Value), want))
		if !seen || want > raw {
			raw = want
		}
		seen = true
	}
	if !seen {
		return keep("no figures for any target", true)
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

// record adds a recommendation, unless it repeats the last one.
func (st *State) record(r Recommendation) {
	if n := len(st.Recommendations); n > 0 && st.Recommendations[n-1] == r {
		return
	}
	st.Recommendations = append(st.Recommendations, r)
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
