package maintenance

import (
	"math"
	"time"
)

// TriggerAnnotation runs maintenance once on demand: any value that differs
// from the last one handled (Status.LastTrigger) starts a run, e.g.
//
//	kubectl annotate dcache/x cache.diskcache.dev/run-maintenance="$(date +%s)" --overwrite
//
// Comparing with the last handled value, instead of removing the
// annotation, keeps the operator off the user's metadata (GitOps tools
// re-applying the same value do not cause another run).
const TriggerAnnotation = "cache.diskcache.dev/run-maintenance"

// MinRequeue is the shortest wait RequeueAfter returns for a future run:
// runs are minute-granular, so nothing is gained by waking up sooner, and a
// clock that misbehaves cannot turn the requeue into a hot loop.
const MinRequeue = time.Second

// Input is everything Decide looks at.
type Input struct {
	// Schedule is the parsed schedule; nil means no scheduled runs (an
	// invalid schedule, or expire and cull both off): only the trigger runs.
	Schedule *Schedule
	// Suspend skips scheduled runs (a trigger still runs).
	Suspend bool
	// StartingDeadlineSeconds: a scheduled run that is due but was missed by
	// more than this (the operator was down) is skipped. nil means no
	// deadline: the most recent missed run always runs, once.
	StartingDeadlineSeconds *int64
	// LastScheduleTime is the scheduled time of the last run (zero: none).
	LastScheduleTime time.Time
	// CreationTime is when the DiskCache was created: without a last run,
	// times before it are not due.
	CreationTime time.Time
	// Trigger is the value of TriggerAnnotation ("" when absent) and
	// LastTrigger the last value a run answered.
	Trigger, LastTrigger string
	// Now is the current time.
	Now time.Time
}

// Decision is what to do now.
type Decision struct {
	// Run is true when maintenance must run now.
	Run bool
	// ScheduledTime is the time the run stands for and becomes the status'
	// lastScheduleTime: the most recent due scheduled time, or Now for a
	// run that only answers the trigger.
	ScheduledTime time.Time
	// Manual is true when the run answers the trigger; Trigger is the
	// value to record as handled.
	Manual  bool
	Trigger string
	// Missed is the most recent due scheduled time that was skipped because
	// it was missed by more than the starting deadline (zero: none).
	Missed time.Time
	// Suspended is true when a scheduled time is due but suspend skips it.
	Suspended bool
	// NextScheduleTime is the first scheduled time after Now (zero: none,
	// there is no schedule). It is reported while suspended too.
	NextScheduleTime time.Time
	// RequeueAfter is how long to wait before deciding again: until
	// NextScheduleTime (0: there is nothing to wait for).
	RequeueAfter time.Duration
}

// Decide is the scheduling logic, a pure function of its input.
//
// The scheduled times due are those in (LastScheduleTime, Now], or
// (CreationTime, Now] before the first run. Like CronJob, only the most
// recent of them counts: however many were missed while the operator was
// down, at most one run happens, and only if Now is within the starting
// deadline of that time. Nothing is due before the next scheduled time, so
// the caller requeues for RequeueAfter instead of polling.
func Decide(in Input) Decision {
	now := in.Now
	var d Decision
	if in.Schedule != nil {
		earliest := in.LastScheduleTime
		if earliest.IsZero() {
			earliest = in.CreationTime
		}
		if earliest.IsZero() || earliest.After(now) {
			// Unknown start, or a clock that went back: nothing is overdue.
			earliest = now
		}
		if due, ok := in.Schedule.mostRecent(earliest, now); ok {
			switch {
			case in.Suspend:
				d.Suspended = true
			case tooLate(due, now, in.StartingDeadlineSeconds):
				d.Missed = due
			default:
				d.Run, d.ScheduledTime = true, due
			}
		}
		d.NextScheduleTime = in.Schedule.Next(now)
	}
	if in.Trigger != "" && in.Trigger != in.LastTrigger {
		d.Run, d.Manual, d.Trigger = true, true, in.Trigger
		if d.ScheduledTime.IsZero() {
			d.ScheduledTime = now
		}
	}
	d.RequeueAfter = RequeueAfter(d.NextScheduleTime, now)
	return d
}

// tooLate: the deadline counts whole seconds, so 0 means "within the
// scheduled second".
func tooLate(due, now time.Time, deadline *int64) bool {
	if deadline == nil {
		return false
	}
	if *deadline > int64(math.MaxInt64/time.Second) {
		return false // longer than time.Duration holds: never too late
	}
	return now.Truncate(time.Second).Sub(due) > time.Duration(*deadline)*time.Second
}

// RequeueAfter is the wait from now until next: 0 when next is zero (no
// run to wait for), at least MinRequeue otherwise, so a run that is already
// due (a run that outlasted the period) comes back promptly but not in a
// hot loop.
func RequeueAfter(next, now time.Time) time.Duration {
	if next.IsZero() {
		return 0
	}
	return max(next.Sub(now), MinRequeue)
}
