package maintenance

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/robfig/cron/v3"
)

func mustLoad(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

func TestParseGood(t *testing.T) {
	for _, tc := range []struct{ expr, zone, want string }{
		{"*/5 * * * *", "", "*/5 * * * *"},
		{"  0   3 * *  * ", "UTC", "0 3 * * *"},
		{"30 2 * * 1-5", "America/New_York", "30 2 * * 1-5"},
		{"0 0 1 jan *", "Europe/Berlin", "0 0 1 jan *"},
		{"0 22 * * sun", "Asia/Kathmandu", "0 22 * * sun"},
		{"0,30 8-18/2 * * mon-fri", "Australia/Lord_Howe", "0,30 8-18/2 * * mon-fri"},
		{"? * * * ?", "EST5EDT", "? * * * ?"},
		{"0 0 29 2 *", "UTC", "0 0 29 2 *"}, // leap days only: still fires
	} {
		s, err := Parse(tc.expr, tc.zone)
		if err != nil {
			t.Errorf("Parse(%q, %q): %v", tc.expr, tc.zone, err)
			continue
		}
		if s.String() != tc.want {
			t.Errorf("Parse(%q).String() = %q, want %q", tc.expr, s.String(), tc.want)
		}
		zone := tc.zone
		if zone == "" {
			zone = "UTC"
		}
		if s.Location().String() != zone {
			t.Errorf("Parse(%q, %q).Location() = %v", tc.expr, tc.zone, s.Location())
		}
		if err := ValidateSchedule(tc.expr); err != nil {
			t.Errorf("ValidateSchedule(%q): %v", tc.expr, err)
		}
	}
}

func TestParseBadSchedule(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string // substrings of the message
	}{
		{"", []string{"empty", "five fields"}},
		{"   ", []string{"empty"}},
		{"@hourly", []string{"descriptors are not supported", `"0 * * * *"`}},
		{"@daily", []string{`"0 0 * * *"`}},
		{"@weekly", []string{`"0 0 * * 0"`}},
		{"@annually", []string{`"0 0 1 1 *"`}},
		{"@reboot", []string{"descriptors are not supported", "five fields"}},
		{"@every 5m", []string{"@every is not supported", "*/10 * * * *"}},
		{"0 */5 * * * *", []string{"6 fields", "seconds field is not supported"}},
		{"* * * *", []string{"has 4 fields", "write five"}},
		{"* * * * * * *", []string{"has 7 fields"}},
		{"61 * * * *", []string{"minute field \"61\"", "above maximum", "0-59"}},
		{"* 24 * * *", []string{"hour field \"24\"", "0-23"}},
		{"* * 0 * *", []string{"day-of-month field \"0\"", "below minimum"}},
		{"* * * 13 *", []string{"month field \"13\""}},
		{"* * * * 7", []string{"day-of-week field \"7\"", "0 is Sunday"}},
		{"* * * * funday", []string{"day-of-week field \"funday\""}},
		{"*/0 * * * *", []string{"minute field", "step"}},
		{"a b c d e", []string{"minute field \"a\""}},
		{"5-1 * * * *", []string{"minute field", "beyond end"}},
		{"TZ=UTC 0 3 * * *", []string{"time zone prefix", TimeZoneField}},
		{"CRON_TZ=Europe/Berlin 0 3 * * *", []string{"time zone prefix"}},
		{"TZ=UTC", []string{"time zone prefix"}}, // robfig/cron itself panics on this
		{"0 0 30 2 *", []string{"never fires"}},
		{"0 0 31 4,6,9,11 *", []string{"never fires"}},
	} {
		_, err := Parse(tc.expr, "UTC")
		if err == nil {
			t.Errorf("Parse(%q) accepted it", tc.expr)
			continue
		}
		var se *ScheduleError
		if !errors.As(err, &se) || se.Field != ScheduleField || !IsScheduleError(err) {
			t.Errorf("Parse(%q) = %T %v, want a *ScheduleError for %s", tc.expr, err, err, ScheduleField)
			continue
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, ScheduleField+" ") {
			t.Errorf("Parse(%q): message %q does not start with the field", tc.expr, msg)
		}
		for _, w := range tc.want {
			if !strings.Contains(msg, w) {
				t.Errorf("Parse(%q): message %q lacks %q", tc.expr, msg, w)
			}
		}
		if ValidateSchedule(tc.expr) == nil {
			t.Errorf("ValidateSchedule(%q) accepted it", tc.expr)
		}
	}
}

func TestParseBadTimeZone(t *testing.T) {
	for _, zone := range []string{"Mars/Olympus_Mons", "Local", "europe/berlin", "Europe/Berlin ", "../../etc/passwd", "UTC+2"} {
		_, err := Parse("*/5 * * * *", zone)
		var se *ScheduleError
		if !errors.As(err, &se) || se.Field != TimeZoneField {
			t.Errorf("Parse(_, %q) = %v, want a *ScheduleError for %s", zone, err, TimeZoneField)
			continue
		}
		if !strings.Contains(err.Error(), "IANA time zone") || !strings.Contains(err.Error(), TimeZoneField) {
			t.Errorf("Parse(_, %q): unhelpful message %q", zone, err)
		}
		if ValidateTimeZone(zone) == nil {
			t.Errorf("ValidateTimeZone(%q) accepted it", zone)
		}
	}
	if err := ValidateTimeZone(""); err != nil {
		t.Errorf("empty zone: %v", err)
	}
}

// TestNextAcrossZones: the same expression fires at the wall-clock time of
// its zone.
func TestNextAcrossZones(t *testing.T) {
	from := time.Date(2026, 6, 15, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		zone string
		want time.Time // UTC
	}{
		{"UTC", time.Date(2026, 6, 16, 3, 0, 0, 0, time.UTC)},
		{"Asia/Tokyo", time.Date(2026, 6, 15, 18, 0, 0, 0, time.UTC)},       // 03:00 JST = 18:00Z
		{"America/New_York", time.Date(2026, 6, 16, 7, 0, 0, 0, time.UTC)},  // 03:00 EDT
		{"Europe/Berlin", time.Date(2026, 6, 16, 1, 0, 0, 0, time.UTC)},     // 03:00 CEST
		{"Asia/Kathmandu", time.Date(2026, 6, 15, 21, 15, 0, 0, time.UTC)},  // 03:00 +05:45
		{"Pacific/Chatham", time.Date(2026, 6, 15, 14, 15, 0, 0, time.UTC)}, // 03:00 +12:45 (winter)
	} {
		s := MustParse("0 3 * * *", tc.zone)
		got := s.Next(from)
		if !got.Equal(tc.want) {
			t.Errorf("%s: Next(%v) = %v, want %v", tc.zone, from, got.UTC(), tc.want)
		}
		if got.Location() != s.Location() {
			t.Errorf("%s: Next is in %v, want the schedule's zone", tc.zone, got.Location())
		}
		if h, m := got.Hour(), got.Minute(); h != 3 || m != 0 {
			t.Errorf("%s: Next = %v, not 03:00 local", tc.zone, got)
		}
	}
}

// nexts returns the first n run times after from.
func nexts(s interface{ Next(time.Time) time.Time }, from time.Time, n int) []time.Time {
	var out []time.Time
	for t := from; len(out) < n; {
		t = s.Next(t)
		out = append(out, t)
	}
	return out
}

func checkTimes(t *testing.T, what string, got []time.Time, want ...time.Time) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %d times, want %d", what, len(got), len(want))
	}
	for i := range want {
		if !got[i].Equal(want[i]) {
			t.Errorf("%s: run %d at %v (%v), want %v (%v)", what, i, got[i], got[i].UTC(), want[i].In(got[i].Location()), want[i].UTC())
		}
	}
}

func utc(y int, mo time.Month, d, h, mi int) time.Time {
	return time.Date(y, mo, d, h, mi, 0, 0, time.UTC)
}

// TestRobfigDSTBehaviour documents what robfig/cron/v3 alone does at the
// transitions (and so what Kubernetes CronJob does): a fixed time in the
// spring-forward gap is skipped for that day, a fixed time in the
// fall-back repeat fires twice. Schedule.Next corrects both (next tests).
// It also loses runs in zones with 30-minute transitions.
func TestRobfigDSTBehaviour(t *testing.T) {
	ny := mustLoad(t, "America/New_York")
	raw := func(expr string) cron.Schedule {
		s, err := cron.ParseStandard(expr)
		if err != nil {
			t.Fatal(err)
		}
		s.(*cron.SpecSchedule).Location = ny
		return s
	}
	// 2026-03-08: 02:00 EST → 03:00 EDT. 02:30 does not exist.
	checkTimes(t, "robfig 30 2 * * * spring forward",
		nexts(raw("30 2 * * *"), time.Date(2026, 3, 7, 12, 0, 0, 0, ny), 2),
		utc(2026, 3, 9, 6, 30), // 2026-03-09 02:30 EDT: the 8th has no run
		utc(2026, 3, 10, 6, 30))
	// 2026-11-01: 02:00 EDT → 01:00 EST. 01:30 happens twice.
	checkTimes(t, "robfig 30 1 * * * fall back",
		nexts(raw("30 1 * * *"), time.Date(2026, 10, 31, 12, 0, 0, 0, ny), 3),
		utc(2026, 11, 1, 5, 30), // 01:30 EDT
		utc(2026, 11, 1, 6, 30), // 01:30 EST, an hour later
		utc(2026, 11, 2, 6, 30))
	// Lord Howe Island turns its clocks back 30 minutes (2026-04-05 02:00
	// +11 → 01:30 +10:30): robfig/cron walks hours in absolute time, lands
	// on half hours and loses 02:00 +10:30.
	lh := mustLoad(t, "Australia/Lord_Howe")
	s, _ := cron.ParseStandard("0 */2 * * *")
	s.(*cron.SpecSchedule).Location = lh
	from := time.Date(2026, 4, 5, 0, 0, 0, 0, lh)
	if got := s.Next(from); !got.Equal(time.Date(2026, 4, 5, 4, 0, 0, 0, lh)) {
		t.Errorf("robfig Lord Howe: Next(%v) = %v; the documented bug is gone?", from, got)
	}
	want := time.Date(2026, 4, 4, 15, 30, 0, 0, time.UTC) // 02:00 +10:30
	if got := MustParse("0 */2 * * *", "Australia/Lord_Howe").Next(from); !got.Equal(want) {
		t.Errorf("Schedule Lord Howe: Next(%v) = %v, want %v", from, got, want.In(lh))
	}
}

func TestNextDSTNewYork(t *testing.T) {
	ny := mustLoad(t, "America/New_York")
	// Spring forward, 2026-03-08 02:00 EST (07:00Z) → 03:00 EDT.
	spring := time.Date(2026, 3, 7, 12, 0, 0, 0, ny)
	checkTimes(t, "30 2 * * * (in the gap)", nexts(MustParse("30 2 * * *", "America/New_York"), spring, 3),
		utc(2026, 3, 8, 7, 0),   // 02:30 is in the gap: runs at 03:00 EDT
		utc(2026, 3, 9, 6, 30),  // 02:30 EDT
		utc(2026, 3, 10, 6, 30)) // 02:30 EDT
	checkTimes(t, "0 2 * * * (start of the gap)", nexts(MustParse("0 2 * * *", "America/New_York"), spring, 2),
		utc(2026, 3, 8, 7, 0), utc(2026, 3, 9, 6, 0))
	checkTimes(t, "0 3 * * * (just after the gap: once)", nexts(MustParse("0 3 * * *", "America/New_York"), spring, 2),
		utc(2026, 3, 8, 7, 0), utc(2026, 3, 9, 7, 0))
	checkTimes(t, "* 2 * * * (the whole gap hour: one run)", nexts(MustParse("* 2 * * *", "America/New_York"), time.Date(2026, 3, 8, 1, 59, 0, 0, ny), 3),
		utc(2026, 3, 8, 7, 0), utc(2026, 3, 9, 6, 0), utc(2026, 3, 9, 6, 1))
	// Wildcard hours keep real time: no extra run at the transition.
	checkTimes(t, "*/30 * * * *", nexts(MustParse("*/30 * * * *", "America/New_York"), time.Date(2026, 3, 8, 1, 0, 0, 0, ny), 3),
		utc(2026, 3, 8, 6, 30), // 01:30 EST
		utc(2026, 3, 8, 7, 0),  // 03:00 EDT, 30 minutes later
		utc(2026, 3, 8, 7, 30))
	checkTimes(t, "15 * * * *", nexts(MustParse("15 * * * *", "America/New_York"), time.Date(2026, 3, 8, 1, 0, 0, 0, ny), 2),
		utc(2026, 3, 8, 6, 15), // 01:15 EST
		utc(2026, 3, 8, 7, 15)) // 03:15 EDT, an hour later

	// Fall back, 2026-11-01 02:00 EDT (06:00Z) → 01:00 EST.
	fall := time.Date(2026, 10, 31, 12, 0, 0, 0, ny)
	checkTimes(t, "30 1 * * * (in the repeat: once)", nexts(MustParse("30 1 * * *", "America/New_York"), fall, 2),
		utc(2026, 11, 1, 5, 30), // 01:30 EDT, the first one
		utc(2026, 11, 2, 6, 30)) // next day 01:30 EST
	// Asked between the two 01:30s, the second is not a new run.
	between := time.Date(2026, 11, 1, 5, 45, 0, 0, time.UTC)
	checkTimes(t, "30 1 * * * from between", nexts(MustParse("30 1 * * *", "America/New_York"), between, 1),
		utc(2026, 11, 2, 6, 30))
	checkTimes(t, "0 2 * * * (after the repeat)", nexts(MustParse("0 2 * * *", "America/New_York"), fall, 2),
		utc(2026, 11, 1, 7, 0), utc(2026, 11, 2, 7, 0))
	checkTimes(t, "*/30 * * * * (real time through the repeat)", nexts(MustParse("*/30 * * * *", "America/New_York"), time.Date(2026, 11, 1, 0, 45, 0, 0, ny), 5),
		utc(2026, 11, 1, 5, 0),  // 01:00 EDT
		utc(2026, 11, 1, 5, 30), // 01:30 EDT
		utc(2026, 11, 1, 6, 0),  // 01:00 EST
		utc(2026, 11, 1, 6, 30), // 01:30 EST
		utc(2026, 11, 1, 7, 0))  // 02:00 EST
}

func TestNextDSTBerlin(t *testing.T) {
	be := mustLoad(t, "Europe/Berlin")
	// Spring forward, 2026-03-29 02:00 CET (01:00Z) → 03:00 CEST.
	checkTimes(t, "30 2 * * * spring", nexts(MustParse("30 2 * * *", "Europe/Berlin"), time.Date(2026, 3, 28, 12, 0, 0, 0, be), 2),
		utc(2026, 3, 29, 1, 0),  // 03:00 CEST
		utc(2026, 3, 30, 0, 30)) // 02:30 CEST
	checkTimes(t, "0 * * * * spring", nexts(MustParse("0 * * * *", "Europe/Berlin"), time.Date(2026, 3, 29, 0, 30, 0, 0, be), 3),
		utc(2026, 3, 29, 0, 0), // 01:00 CET
		utc(2026, 3, 29, 1, 0), // 03:00 CEST, an hour later
		utc(2026, 3, 29, 2, 0))
	// Fall back, 2026-10-25 03:00 CEST (01:00Z) → 02:00 CET.
	checkTimes(t, "30 2 * * * fall", nexts(MustParse("30 2 * * *", "Europe/Berlin"), time.Date(2026, 10, 24, 12, 0, 0, 0, be), 2),
		utc(2026, 10, 25, 0, 30), // 02:30 CEST only
		utc(2026, 10, 26, 1, 30)) // 02:30 CET
	checkTimes(t, "0 * * * * fall", nexts(MustParse("0 * * * *", "Europe/Berlin"), time.Date(2026, 10, 25, 1, 30, 0, 0, be), 3),
		utc(2026, 10, 25, 0, 0), // 02:00 CEST
		utc(2026, 10, 25, 1, 0), // 02:00 CET: hourly keeps real time
		utc(2026, 10, 25, 2, 0)) // 03:00 CET
}

// TestNextYearInvariants walks a whole year in zones with unusual
// transitions: run times strictly increase; a schedule naming fixed hours
// runs exactly once per named wall-clock time per day (never skipped, never
// doubled); a wildcard-hour schedule runs at real-time intervals.
func TestNextYearInvariants(t *testing.T) {
	zones := []string{"UTC", "America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "America/Santiago", "Asia/Kathmandu", "Pacific/Chatham", "America/Havana"}
	for _, zone := range zones {
		loc := mustLoad(t, zone)
		start := time.Date(2026, 1, 1, 0, 0, 0, 0, loc)
		end := time.Date(2027, 1, 1, 0, 0, 0, 0, loc)
		runs := func(expr string) []time.Time {
			s := MustParse(expr, zone)
			var out []time.Time
			prev := start.Add(-time.Second)
			for t0 := s.Next(prev); t0.Before(end); t0 = s.Next(t0) {
				if !t0.After(prev) {
					t.Fatalf("%s %q: %v after %v", zone, expr, t0, prev)
				}
				prev = t0
				out = append(out, t0)
			}
			return out
		}
		days := int(end.Sub(start).Round(24*time.Hour) / (24 * time.Hour))
		for _, expr := range []string{"30 2 * * *", "0 0 * * *", "15 1 * * *", "45 23 * * *"} {
			got := runs(expr)
			seen := map[string]bool{}
			for _, r := range got {
				day := r.Format("2006-01-02")
				if seen[day] {
					t.Errorf("%s %q: two runs on %s", zone, expr, day)
				}
				seen[day] = true
			}
			if len(got) != days {
				t.Errorf("%s %q: %d runs in the year, want %d (one a day)", zone, expr, len(got), days)
			}
		}
		// Every 15 minutes: real-time spacing, except where the zone's
		// offset is not a multiple of 15 minutes (none of these).
		got := runs("*/15 * * * *")
		for i := 1; i < len(got); i++ {
			if d := got[i].Sub(got[i-1]); d != 15*time.Minute {
				t.Errorf("%s */15: %v after %v (%v)", zone, got[i], got[i-1], d)
				break
			}
		}
	}
}

func TestMostRecent(t *testing.T) {
	s := MustParse("*/5 * * * *", "UTC")
	now := time.Date(2026, 5, 1, 12, 7, 30, 0, time.UTC)
	for _, tc := range []struct {
		after time.Time
		want  time.Time
		ok    bool
	}{
		{now.Add(-time.Minute), time.Time{}, false},
		{time.Date(2026, 5, 1, 12, 5, 0, 0, time.UTC), time.Time{}, false}, // exclusive
		{time.Date(2026, 5, 1, 12, 4, 59, 0, time.UTC), time.Date(2026, 5, 1, 12, 5, 0, 0, time.UTC), true},
		{time.Date(2016, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 5, 1, 12, 5, 0, 0, time.UTC), true},
		{now, time.Time{}, false},
		{now.Add(time.Hour), time.Time{}, false},
	} {
		got, ok := s.mostRecent(tc.after, now)
		if ok != tc.ok || !got.Equal(tc.want) {
			t.Errorf("mostRecent(%v) = %v %v, want %v %v", tc.after, got, ok, tc.want, tc.ok)
		}
	}
	// Exactly at a run time, that run is due.
	at := time.Date(2026, 5, 1, 12, 5, 0, 0, time.UTC)
	if got, ok := s.mostRecent(at.Add(-time.Hour), at); !ok || !got.Equal(at) {
		t.Errorf("mostRecent at a run time = %v %v", got, ok)
	}
	// A yearly schedule ten years back.
	y := MustParse("0 0 1 1 *", "UTC")
	if got, ok := y.mostRecent(time.Date(2016, 6, 1, 0, 0, 0, 0, time.UTC), now); !ok || !got.Equal(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("yearly mostRecent = %v %v", got, ok)
	}
}

// TestNextAgainstOracle compares Next, around every transition of 2026 in
// zones with unusual rules, with a brute-force oracle on the minute grid:
//   - wildcard-hour schedules run at every instant whose wall clock matches;
//   - fixed-hour schedules run, for every matching wall-clock time W, at the
//     first instant whose wall clock reads W or later (the first of two
//     occurrences; the end of the gap for a skipped W).
func TestNextAgainstOracle(t *testing.T) {
	zones := []string{"America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "America/Santiago",
		"America/Havana", "Pacific/Chatham", "America/St_Johns", "Europe/Dublin", "Asia/Gaza"}
	fixed := []string{"30 2 * * *", "0 2 * * *", "15 1 * * *", "* 2 * * *", "0,30 1-3 * * *", "45 0 * * *", "0 0 * * *", "59 23 * * *"}
	wild := []string{"*/15 * * * *", "0 * * * *", "30 * * * *", "0 */2 * * *", "*/7 * * * *", "15,45 * * * *"}
	for _, zone := range zones {
		loc := mustLoad(t, zone)
		var transitions []time.Time
		for _, end := time.Date(2026, 1, 1, 0, 0, 0, 0, loc).ZoneBounds(); !end.IsZero() && end.Year() < 2027; _, end = end.ZoneBounds() {
			transitions = append(transitions, end)
		}
		if len(transitions) == 0 {
			t.Fatalf("%s: no transitions in 2026", zone)
		}
		for _, tr := range transitions {
			a, b := tr.Add(-30*time.Hour).Truncate(time.Minute), tr.Add(30*time.Hour)
			var grid, walls []time.Time
			for i := a; !i.After(b); i = i.Add(time.Minute) {
				grid = append(grid, i)
				walls = append(walls, wallClock(i.In(loc)))
			}
			// prefixMax[k] is the latest wall reading among grid[0..k].
			prefixMax := make([]time.Time, len(walls))
			for k, w := range walls {
				prefixMax[k] = w
				if k > 0 && prefixMax[k-1].After(w) {
					prefixMax[k] = prefixMax[k-1]
				}
			}
			lo, hi := a.Add(4*time.Hour), b.Add(-4*time.Hour)
			check := func(expr string, want []time.Time) {
				s := MustParse(expr, zone)
				var got []time.Time
				for i := s.Next(lo.Add(-time.Second)); !i.After(hi); i = s.Next(i) {
					got = append(got, i)
				}
				if len(got) != len(want) {
					t.Errorf("%s %q around %v: %d runs, oracle %d\n got %v\nwant %v", zone, expr, tr, len(got), len(want), got, want)
					return
				}
				for k := range want {
					if !got[k].Equal(want[k]) {
						t.Errorf("%s %q around %v: run %d at %v, oracle %v", zone, expr, tr, k, got[k], want[k].In(loc))
						return
					}
				}
			}
			inRange := func(i time.Time) bool { return !i.Before(lo) && !i.After(hi) }
			for _, expr := range wild {
				s := MustParse(expr, zone)
				var want []time.Time
				for k, i := range grid {
					if inRange(i) && s.wall.Next(walls[k].Add(-time.Second)).Equal(walls[k]) {
						want = append(want, i)
					}
				}
				check(expr, want)
			}
			for _, expr := range fixed {
				s := MustParse(expr, zone)
				var want []time.Time
				for w := s.wall.Next(walls[0]); !w.After(prefixMax[len(prefixMax)-1]); w = s.wall.Next(w) {
					k := sortSearch(len(prefixMax), func(k int) bool { return !prefixMax[k].Before(w) })
					i := grid[k]
					if inRange(i) && (len(want) == 0 || !want[len(want)-1].Equal(i)) {
						want = append(want, i)
					}
				}
				check(expr, want)
			}
		}
	}
}

func sortSearch(n int, f func(int) bool) int {
	lo, hi := 0, n
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if !f(m) {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}
