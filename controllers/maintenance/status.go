package maintenance

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Status mirrors the DiskCache's status.maintenance field by field and JSON
// name (api/v1alpha1.MaintenanceStatus), plus DurationMillis and
// LastTrigger, which the API needs too: without a persisted LastTrigger a
// restarted operator would answer the trigger annotation again.
//
// Times are kept at the second precision the API server stores, so a status
// written and read back compares equal and steady reconciles write nothing.
type Status struct {
	// LastScheduleTime is the scheduled time of the last run (the time the
	// trigger was handled, for a run that only answered it).
	LastScheduleTime *metav1.Time `json:"lastScheduleTime,omitempty"`
	// LastSuccessfulTime is when the last run that succeeded on every shard finished.
	LastSuccessfulTime *metav1.Time `json:"lastSuccessfulTime,omitempty"`
	// NextScheduleTime is when the next run is due.
	NextScheduleTime *metav1.Time `json:"nextScheduleTime,omitempty"`
	// Expired and Culled are the items the last run removed, over all shards.
	Expired int64 `json:"expired,omitempty"`
	Culled  int64 `json:"culled,omitempty"`
	// PerShard is the last run's result and usage of each shard.
	PerShard []ShardStatus `json:"perShard,omitempty"`
	// DurationMillis is how long the last run took.
	DurationMillis int64 `json:"durationMillis,omitempty"`
	// LastError is the last run's error ("shard N: …; …"), empty when it succeeded.
	LastError string `json:"lastError,omitempty"`
	// LastTrigger is the TriggerAnnotation value the last manual run answered.
	LastTrigger string `json:"lastTrigger,omitempty"`
}

// ShardStatus mirrors api/v1alpha1.ShardMaintenanceStatus.
type ShardStatus struct {
	Shard       int32        `json:"shard"`
	LastRunTime *metav1.Time `json:"lastRunTime,omitempty"`
	Expired     int64        `json:"expired,omitempty"`
	Culled      int64        `json:"culled,omitempty"`
	Count       int64        `json:"count,omitempty"`
	VolumeBytes int64        `json:"volumeBytes,omitempty"`
	Error       string       `json:"error,omitempty"`
}

// maxErrorLen bounds LastError and the per-shard errors in the status.
const maxErrorLen = 1024

// Time converts to the status' representation: nil for the zero time,
// truncated to seconds otherwise.
func Time(t time.Time) *metav1.Time {
	if t.IsZero() {
		return nil
	}
	mt := metav1.NewTime(t).Rfc3339Copy()
	return &mt
}

// StatusWithNext returns a copy of prev (nil: empty) with NextScheduleTime
// set (cleared for a zero next): the status of a reconcile that ran nothing.
func StatusWithNext(prev *Status, next time.Time) *Status {
	st := prev.DeepCopy()
	if st == nil {
		st = &Status{}
	}
	st.NextScheduleTime = Time(next)
	return st
}

// StatusAfterRun returns the status after a run: prev (nil: empty) with the
// run of decision d, its result and the next scheduled time. PerShard is
// rebuilt from the result, so shards removed by a scale-down drop out.
// LastSuccessfulTime moves only when every shard succeeded.
func StatusAfterRun(prev *Status, d Decision, res *Result, next time.Time) *Status {
	st := StatusWithNext(prev, next)
	st.LastScheduleTime = Time(d.ScheduledTime)
	if d.Manual {
		st.LastTrigger = d.Trigger
	}
	st.Expired, st.Culled = res.Expired, res.Culled
	st.DurationMillis = res.Duration().Milliseconds()
	st.PerShard = make([]ShardStatus, len(res.Shards))
	for i, s := range res.Shards {
		ss := ShardStatus{
			Shard:       int32(s.Shard),
			LastRunTime: Time(s.Finished),
			Expired:     s.Expired,
			Culled:      s.Culled,
		}
		if s.HasUsage {
			ss.Count, ss.VolumeBytes = s.Count, s.Volume
		}
		if s.Err != nil {
			ss.Error = truncate(s.Err.Error(), maxErrorLen)
		}
		st.PerShard[i] = ss
	}
	st.LastError = ""
	if err := res.Err(); err != nil {
		st.LastError = truncate(strings.ReplaceAll(err.Error(), "\n", "; "), maxErrorLen)
	} else {
		st.LastSuccessfulTime = Time(res.Finished)
	}
	return st
}

// DeepCopy copies the status (nil stays nil).
func (s *Status) DeepCopy() *Status {
	if s == nil {
		return nil
	}
	out := *s
	out.LastScheduleTime = s.LastScheduleTime.DeepCopy()
	out.LastSuccessfulTime = s.LastSuccessfulTime.DeepCopy()
	out.NextScheduleTime = s.NextScheduleTime.DeepCopy()
	if s.PerShard != nil {
		out.PerShard = make([]ShardStatus, len(s.PerShard))
		for i, p := range s.PerShard {
			p.LastRunTime = p.LastRunTime.DeepCopy()
			out.PerShard[i] = p
		}
	}
	return &out
}

// Event reasons and the action of maintenance Events.
const (
	ReasonSucceeded = "MaintenanceSucceeded"
	ReasonFailed    = "MaintenanceFailed"
	ReasonMissed    = "MaintenanceMissed"
	// ReasonInvalidSchedule is for a Degraded condition (or an Event) when
	// Parse fails.
	ReasonInvalidSchedule = "InvalidMaintenanceSchedule"
	Action                = "Maintenance"
)

// Event is an Event to record on the DiskCache.
type Event struct {
	Type    string // corev1.EventTypeNormal or corev1.EventTypeWarning
	Reason  string
	Action  string
	Message string
}

// maxEventLen is the events.k8s.io/v1 note limit.
const maxEventLen = 1024

// EventFor is the Event of a run: Normal MaintenanceSucceeded with the
// counts, or Warning MaintenanceFailed naming the failing shards and what
// the others removed.
func EventFor(d Decision, res *Result) Event {
	what := "scheduled for " + d.ScheduledTime.Format(time.RFC3339)
	if d.Manual {
		what = fmt.Sprintf("requested by %s=%q", TriggerAnnotation, d.Trigger)
	}
	failed := res.Failed()
	if len(failed) == 0 {
		return Event{
			Type:   corev1.EventTypeNormal,
			Reason: ReasonSucceeded,
			Action: Action,
			Message: truncate(fmt.Sprintf("expired %d and culled %d items on %d %s in %s (%s)",
				res.Expired, res.Culled, len(res.Shards), plural(len(res.Shards), "shard", "shards"),
				res.Duration().Round(time.Millisecond), what), maxEventLen),
		}
	}
	ids := make([]string, len(failed))
	for i, s := range failed {
		ids[i] = strconv.Itoa(s.Shard)
	}
	var details []string
	for _, s := range failed {
		details = append(details, fmt.Sprintf("shard %d: %v", s.Shard, s.Err))
	}
	ok := len(res.Shards) - len(failed)
	msg := fmt.Sprintf("failed on %d of %d shards (%s %s); %d %s expired %d and culled %d items (%s): %s",
		len(failed), len(res.Shards), plural(len(failed), "shard", "shards"), strings.Join(ids, ", "),
		ok, plural(ok, "other shard", "other shards"), res.Expired, res.Culled, what, strings.Join(details, "; "))
	return Event{Type: corev1.EventTypeWarning, Reason: ReasonFailed, Action: Action, Message: truncate(msg, maxEventLen)}
}

// MissedEvent is the Warning for a scheduled run skipped because it was
// missed by more than the starting deadline.
func MissedEvent(missed time.Time, deadlineSeconds *int64) Event {
	msg := fmt.Sprintf("skipped the run scheduled for %s: missed by more than startingDeadlineSeconds", missed.Format(time.RFC3339))
	if deadlineSeconds != nil {
		msg += fmt.Sprintf(" (%d)", *deadlineSeconds)
	}
	return Event{Type: corev1.EventTypeWarning, Reason: ReasonMissed, Action: Action, Message: msg}
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const ellipsis = "…"
	cut := n - len(ellipsis)
	for cut > 0 && !utf8Start(s[cut]) {
		cut--
	}
	return s[:cut] + ellipsis
}

func utf8Start(b byte) bool { return b&0xC0 != 0x80 }
