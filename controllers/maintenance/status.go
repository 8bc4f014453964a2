package maintenance

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
)

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
func StatusWithNext(prev *cachev1alpha1.MaintenanceStatus, next time.Time) *cachev1alpha1.MaintenanceStatus {
	st := prev.DeepCopy()
	if st == nil {
		st = &cachev1alpha1.MaintenanceStatus{}
	}
	st.NextScheduleTime = Time(next)
	return st
}

// StatusAfterRun returns the status after a run: prev (nil: empty) with the
// run of decision d, its result and the next scheduled time. PerShard is
// rebuilt from the result, so shards removed by a scale-down drop out.
// LastSuccessfulTime moves only when every shard succeeded.
func StatusAfterRun(prev *cachev1alpha1.MaintenanceStatus, d Decision, res *Result, next time.Time) *cachev1alpha1.MaintenanceStatus {
	st := StatusWithNext(prev, next)
	st.LastScheduleTime = Time(d.ScheduledTime)
	if d.Manual {
		st.LastTrigger = d.Trigger
	}
	st.Expired, st.Culled = res.Expired, res.Culled
	st.DurationMillis = res.Duration().Milliseconds()
	st.PerShard = make([]cachev1alpha1.ShardMaintenanceStatus, len(res.Shards))
	for i, s := range res.Shards {
		ss := cachev1alpha1.ShardMaintenanceStatus{
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
