package maintenance

import (
	"math"
	"testing"
	"time"

	"k8s.io/utils/ptr"
)

func at(h, m, s int) time.Time { return time.Date(2026, 5, 1, h, m, s, 0, time.UTC) }

func TestDecideWaitsForTheNextRun(t *testing.T) {
	s := MustParse("*/5 * * * *", "UTC")
	// Created at 12:03: nothing before creation is due, no busy polling.
	d := Decide(Input{Schedule: s, CreationTime: at(12, 3, 0), Now: at(12, 4, 0)})
	if d.Run || d.Manual || !d.Missed.IsZero() || d.Suspended {
		t.Fatalf("decision %+v, want a wait", d)
	}
	if !d.NextScheduleTime.Equal(at(12, 5, 0)) || d.RequeueAfter != time.Minute {
		t.Fatalf("next %v requeue %v, want 12:05 in 1m", d.NextScheduleTime, d.RequeueAfter)
	}
	// The requeue lands on the run time: it is due then.
	d = Decide(Input{Schedule: s, CreationTime: at(12, 3, 0), Now: at(12, 5, 0)})
	if !d.Run || !d.ScheduledTime.Equal(at(12, 5, 0)) || !d.NextScheduleTime.Equal(at(12, 10, 0)) || d.RequeueAfter != 5*time.Minute {
		t.Fatalf("at 12:05: %+v", d)
	}
	// After it ran, lastScheduleTime says so.
	d = Decide(Input{Schedule: s, CreationTime: at(12, 3, 0), LastScheduleTime: at(12, 5, 0), Now: at(12, 5, 2)})
	if d.Run || d.RequeueAfter != 5*time.Minute-2*time.Second {
		t.Fatalf("after the run: %+v", d)
	}
}

func TestDecideMissedRun(t *testing.T) {
	s := MustParse("*/5 * * * *", "UTC")
	last := at(12, 0, 0)
	for _, tc := range []struct {
		name     string
		deadline *int64
		now      time.Time
		run      bool
		missed   time.Time
	}{
		{"no deadline, just late", nil, at(12, 5, 30), true, time.Time{}},
		{"no deadline, long outage", nil, at(15, 2, 10), true, time.Time{}},
		{"within deadline", ptr.To[int64](60), at(12, 5, 59), true, time.Time{}},
		{"at the deadline", ptr.To[int64](60), at(12, 6, 0), true, time.Time{}},
		{"beyond deadline", ptr.To[int64](60), at(12, 6, 1), false, at(12, 5, 0)},
		{"long outage within deadline of the latest", ptr.To[int64](300), at(15, 2, 10), true, time.Time{}},
		{"long outage beyond deadline of the latest", ptr.To[int64](60), at(15, 2, 10), false, at(15, 0, 0)},
		{"deadline 0, same second", ptr.To[int64](0), at(12, 5, 0).Add(400 * time.Millisecond), true, time.Time{}},
		{"deadline 0, next second", ptr.To[int64](0), at(12, 5, 1), false, at(12, 5, 0)},
		// Past what time.Duration holds (it overflowed to a negative
		// deadline, which skipped every run).
		{"deadline of 1e10 s", ptr.To[int64](1e10), at(12, 5, 2), true, time.Time{}},
		{"largest deadline", ptr.To[int64](math.MaxInt64), at(15, 2, 10), true, time.Time{}},
	} {
		d := Decide(Input{Schedule: s, StartingDeadlineSeconds: tc.deadline, LastScheduleTime: last, CreationTime: at(8, 0, 0), Now: tc.now})
		if d.Run != tc.run || !d.Missed.Equal(tc.missed) {
			t.Errorf("%s: run=%v missed=%v, want run=%v missed=%v", tc.name, d.Run, d.Missed, tc.run, tc.missed)
		}
		if d.Run {
			// Only the most recent missed time counts.
			want := tc.now.Truncate(5 * time.Minute)
			if !d.ScheduledTime.Equal(want) {
				t.Errorf("%s: runs for %v, want the most recent %v", tc.name, d.ScheduledTime, want)
			}
		}
		next := tc.now.Truncate(5 * time.Minute).Add(5 * time.Minute)
		if !d.NextScheduleTime.Equal(next) || d.RequeueAfter != max(next.Sub(tc.now), MinRequeue) {
			t.Errorf("%s: next %v requeue %v, want %v", tc.name, d.NextScheduleTime, d.RequeueAfter, next)
		}
	}
}

// TestDecideOneRunAfterOutage replays reconciles after three hours of
// downtime the way the reconciler does, each decision fed the status the
// previous run wrote: exactly one catch-up run, then the normal schedule.
func TestDecideOneRunAfterOutage(t *testing.T) {
	s := MustParse("*/5 * * * *", "UTC")
	last := at(12, 0, 0)
	var runs []time.Time
	now := at(15, 2, 10) // back after missing 36 runs
	for now.Before(at(15, 16, 0)) {
		d := Decide(Input{Schedule: s, LastScheduleTime: last, Now: now})
		if d.Run {
			runs = append(runs, d.ScheduledTime)
			last = d.ScheduledTime
		}
		// Also reconciles in between (pod events): they change nothing.
		extra := Decide(Input{Schedule: s, LastScheduleTime: last, Now: now.Add(time.Second)})
		if extra.Run {
			t.Fatalf("second reconcile at %v runs again for %v", now, extra.ScheduledTime)
		}
		now = now.Add(d.RequeueAfter)
	}
	checkTimes(t, "runs", runs, at(15, 0, 0), at(15, 5, 0), at(15, 10, 0), at(15, 15, 0))
}

func TestDecideLongOutageIsCheap(t *testing.T) {
	// A year of every-minute runs missed: one run, found without a year of
	// Next calls (mostRecent looks back in doubling windows).
	s := MustParse("* * * * *", "Europe/Berlin")
	now := time.Date(2026, 7, 1, 12, 0, 30, 0, time.UTC)
	d := Decide(Input{Schedule: s, LastScheduleTime: now.AddDate(-1, 0, 0), Now: now})
	if !d.Run || !d.ScheduledTime.Equal(now.Truncate(time.Minute)) {
		t.Fatalf("%+v", d)
	}
	y := MustParse("0 0 1 1 *", "UTC")
	d = Decide(Input{Schedule: y, LastScheduleTime: time.Date(2019, 1, 1, 0, 0, 0, 0, time.UTC), Now: now})
	if !d.Run || !d.ScheduledTime.Equal(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)) || !d.NextScheduleTime.Equal(time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("yearly: %+v", d)
	}
}

func TestDecideSuspend(t *testing.T) {
	s := MustParse("*/5 * * * *", "UTC")
	in := Input{Schedule: s, Suspend: true, LastScheduleTime: at(12, 0, 0), Now: at(12, 5, 0)}
	d := Decide(in)
	if d.Run || !d.Suspended || !d.Missed.IsZero() {
		t.Fatalf("suspended: %+v", d)
	}
	// nextScheduleTime is still reported, and the requeue keeps it fresh.
	if !d.NextScheduleTime.Equal(at(12, 10, 0)) || d.RequeueAfter != 5*time.Minute {
		t.Fatalf("suspended next %v requeue %v", d.NextScheduleTime, d.RequeueAfter)
	}
	// Nothing due: not "suspended", just waiting.
	in.Now = at(12, 4, 0)
	if d := Decide(in); d.Run || d.Suspended {
		t.Fatalf("suspended, nothing due: %+v", d)
	}
	// Resumed an hour later: like CronJob, the most recent run suspend
	// skipped runs once without a deadline…
	in.Suspend, in.Now = false, at(13, 2, 0)
	if d := Decide(in); !d.Run || !d.ScheduledTime.Equal(at(13, 0, 0)) {
		t.Fatalf("resumed: %+v", d)
	}
	// …and is skipped with one it missed.
	in.StartingDeadlineSeconds = ptr.To[int64](60)
	if d := Decide(in); d.Run || !d.Missed.Equal(at(13, 0, 0)) {
		t.Fatalf("resumed with a deadline: %+v", d)
	}
}

func TestDecideManualTrigger(t *testing.T) {
	s := MustParse("0 3 * * *", "UTC")
	base := Input{Schedule: s, LastScheduleTime: at(3, 0, 0), Now: at(12, 0, 7)}
	for _, tc := range []struct {
		name              string
		trigger, last     string
		suspend           bool
		schedule          *Schedule
		now               time.Time
		run, manual       bool
		scheduled         time.Time
		wantRecordTrigger string
	}{
		{"absent", "", "", false, s, base.Now, false, false, time.Time{}, ""},
		{"new value", "now", "", false, s, base.Now, true, true, base.Now, "now"},
		{"handled already", "now", "now", false, s, base.Now, false, false, time.Time{}, ""},
		{"another value", "2026-05-01T12:00", "now", false, s, base.Now, true, true, base.Now, "2026-05-01T12:00"},
		{"removed after handling", "", "now", false, s, base.Now, false, false, time.Time{}, ""},
		{"while suspended", "x", "", true, s, base.Now, true, true, base.Now, "x"},
		{"without a schedule", "x", "", false, nil, base.Now, true, true, base.Now, "x"},
		// Trigger and a due scheduled run: one run, for the scheduled time.
		{"with a due run", "x", "", false, s, time.Date(2026, 5, 2, 3, 0, 20, 0, time.UTC), true, true, time.Date(2026, 5, 2, 3, 0, 0, 0, time.UTC), "x"},
	} {
		in := base
		in.Trigger, in.LastTrigger, in.Suspend, in.Schedule, in.Now = tc.trigger, tc.last, tc.suspend, tc.schedule, tc.now
		d := Decide(in)
		if d.Run != tc.run || d.Manual != tc.manual || !d.ScheduledTime.Equal(tc.scheduled) || d.Trigger != tc.wantRecordTrigger {
			t.Errorf("%s: %+v", tc.name, d)
		}
		if tc.schedule == nil && (d.RequeueAfter != 0 || !d.NextScheduleTime.IsZero()) {
			t.Errorf("%s: no schedule but next %v requeue %v", tc.name, d.NextScheduleTime, d.RequeueAfter)
		}
	}
}

func TestDecideClockWentBack(t *testing.T) {
	s := MustParse("*/5 * * * *", "UTC")
	// lastScheduleTime in the future: nothing is overdue; wait for the
	// next time after now, not after lastScheduleTime.
	d := Decide(Input{Schedule: s, LastScheduleTime: at(13, 0, 0), Now: at(12, 1, 0)})
	if d.Run || !d.NextScheduleTime.Equal(at(12, 5, 0)) || d.RequeueAfter != 4*time.Minute {
		t.Fatalf("%+v", d)
	}
	// No creation time and no last run: nothing overdue either.
	d = Decide(Input{Schedule: s, Now: at(12, 1, 0)})
	if d.Run {
		t.Fatalf("without history: %+v", d)
	}
}

func TestDecideAcrossDST(t *testing.T) {
	ny := mustLoad(t, "America/New_York")
	s := MustParse("30 2 * * *", "America/New_York")
	// The operator wakes up at 03:00:30 EDT on the spring-forward day: the
	// 02:30 that did not exist ran at 03:00.
	d := Decide(Input{Schedule: s, LastScheduleTime: time.Date(2026, 3, 7, 2, 30, 0, 0, ny), Now: time.Date(2026, 3, 8, 3, 0, 30, 0, ny)})
	if !d.Run || !d.ScheduledTime.Equal(time.Date(2026, 3, 8, 7, 0, 0, 0, time.UTC)) {
		t.Fatalf("spring forward: %+v", d)
	}
	if !d.NextScheduleTime.Equal(time.Date(2026, 3, 9, 6, 30, 0, 0, time.UTC)) {
		t.Fatalf("spring forward next: %v", d.NextScheduleTime)
	}
	// Fall back: after the 01:30 EDT run, the second 01:30 is not a run.
	s = MustParse("30 1 * * *", "America/New_York")
	d = Decide(Input{Schedule: s, LastScheduleTime: time.Date(2026, 11, 1, 5, 30, 0, 0, time.UTC), Now: time.Date(2026, 11, 1, 6, 30, 5, 0, time.UTC)})
	if d.Run || !d.NextScheduleTime.Equal(time.Date(2026, 11, 2, 6, 30, 0, 0, time.UTC)) {
		t.Fatalf("fall back: %+v", d)
	}
	if want := time.Date(2026, 11, 2, 6, 30, 0, 0, time.UTC).Sub(time.Date(2026, 11, 1, 6, 30, 5, 0, time.UTC)); d.RequeueAfter != want {
		t.Fatalf("fall back requeue %v, want %v", d.RequeueAfter, want)
	}
}

func TestRequeueAfter(t *testing.T) {
	now := at(12, 0, 0)
	for _, tc := range []struct {
		next time.Time
		want time.Duration
	}{
		{time.Time{}, 0},
		{now.Add(3 * time.Minute), 3 * time.Minute},
		{now.Add(300 * time.Millisecond), MinRequeue},
		{now, MinRequeue},
		{now.Add(-time.Minute), MinRequeue}, // a run outlasted the period
	} {
		if got := RequeueAfter(tc.next, now); got != tc.want {
			t.Errorf("RequeueAfter(%v) = %v, want %v", tc.next, got, tc.want)
		}
	}
}
