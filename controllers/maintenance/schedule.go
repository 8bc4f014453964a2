package maintenance

import (
	"errors"
	"fmt"
	"strings"
	"time"
	// Time zone data compiled in, so spec.maintenance.timeZone works in
	// images without /usr/share/zoneinfo (distroless static, scratch).
	_ "time/tzdata"

	"github.com/robfig/cron/v3"
)

// Field paths named in validation messages.
const (
	ScheduleField = "spec.maintenance.schedule"
	TimeZoneField = "spec.maintenance.timeZone"
)

// DefaultTimeZone is the zone of an empty timeZone.
const DefaultTimeZone = "UTC"

// ScheduleError is an invalid schedule or time zone. Its message names the
// field and says how to fix it, so it serves as an admission (webhook or
// CLI) error and as a status condition message.
type ScheduleError struct {
	Field  string // ScheduleField or TimeZoneField
	Value  string
	Reason string
}

func (e *ScheduleError) Error() string {
	return fmt.Sprintf("%s %q: %s", e.Field, e.Value, e.Reason)
}

// IsScheduleError reports whether err is (or wraps) a *ScheduleError.
func IsScheduleError(err error) bool {
	var se *ScheduleError
	return errors.As(err, &se)
}

// The five fields of a standard cron expression, in order.
var cronFields = [5]struct {
	name   string
	option cron.ParseOption
	hint   string
}{
	{"minute", cron.Minute, "0-59"},
	{"hour", cron.Hour, "0-23"},
	{"day-of-month", cron.Dom, "1-31"},
	{"month", cron.Month, "1-12 or jan-dec"},
	{"day-of-week", cron.Dow, "0-6 or sun-sat, 0 is Sunday"},
}

// descriptorEquivalents maps the descriptors robfig/cron would accept to
// the five-field expression to write instead.
var descriptorEquivalents = map[string]string{
	"@yearly":   "0 0 1 1 *",
	"@annually": "0 0 1 1 *",
	"@monthly":  "0 0 1 * *",
	"@weekly":   "0 0 * * 0",
	"@daily":    "0 0 * * *",
	"@midnight": "0 0 * * *",
	"@hourly":   "0 * * * *",
}

// Schedule is a parsed five-field cron expression read in a time zone.
//
// Syntax and matching are robfig/cron/v3's ParseStandard (what Kubernetes
// CronJob uses), restricted to five fields. Run times are the instants at
// which the zone's clocks show a matching time, with two rules, in the
// spirit of Vixie cron, for schedules that name specific hours (an hour
// field that does not start with '*' and does not cover all 24 hours):
//
//   - Spring forward: a time the schedule names that does not exist that
//     day (02:30 on the day New York or Berlin skips from 02:00 to 03:00)
//     runs once, at the first instant after the gap (03:00 local).
//     robfig/cron alone skips it, leaving two days between daily runs.
//   - Fall back: a time that happens twice (01:30 on the day New York
//     repeats 01:00-01:59) runs only at its first occurrence.
//     robfig/cron alone runs it twice, an hour apart.
//
// So a daily schedule runs exactly once every local day. Schedules whose
// hour field is a wildcard ("*/5 * * * *", "15 * * * *", "0 */2 * * *")
// follow elapsed time, as robfig/cron does: nothing runs for the readings
// a gap skips (the next reading simply comes sooner) and a repeated hour
// runs again. Unlike robfig/cron, this also holds for zones whose clocks
// move by 30 minutes (Lord Howe Island), where robfig/cron loses runs.
type Schedule struct {
	expr      string
	loc       *time.Location
	wall      *cron.SpecSchedule // the fields, matched in UTC: wall-clock readings without transitions
	fixedHour bool
}

// ValidateSchedule checks a cron expression on its own (for admission).
func ValidateSchedule(expr string) error {
	_, err := parseSpec(expr)
	return err
}

// ValidateTimeZone checks an IANA time zone name on its own.
func ValidateTimeZone(name string) error {
	_, err := LoadLocation(name)
	return err
}

// LoadLocation loads an IANA time zone; "" is UTC. "Local" is refused: the
// operator's own zone is no property of the DiskCache.
func LoadLocation(name string) (*time.Location, error) {
	if name == "" {
		name = DefaultTimeZone
	}
	if name == "Local" {
		return nil, &ScheduleError{TimeZoneField, name, "\"Local\" is the operator's own zone; name an IANA time zone such as UTC or Europe/Berlin"}
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, &ScheduleError{TimeZoneField, name, "unknown time zone; name an IANA time zone such as UTC, America/New_York or Europe/Berlin"}
	}
	return loc, nil
}

// Parse parses a standard five-field cron expression (minute hour
// day-of-month month day-of-week, robfig/cron's ParseStandard syntax) read
// in the IANA time zone timeZone ("" is UTC). Descriptors (@hourly,
// @every 5m), a seconds field and TZ= prefixes are refused with a message
// saying what to write instead, as are expressions that never fire (such as
// "0 0 30 2 *"). Errors are *ScheduleError.
func Parse(expr, timeZone string) (*Schedule, error) {
	loc, err := LoadLocation(timeZone)
	if err != nil {
		return nil, err
	}
	s, err := parseSpec(expr)
	if err != nil {
		return nil, err
	}
	s.loc = loc
	return s, nil
}

// MustParse is Parse for tests and constants; it panics on an error.
func MustParse(expr, timeZone string) *Schedule {
	s, err := Parse(expr, timeZone)
	if err != nil {
		panic(err)
	}
	return s
}

func parseSpec(expr string) (s *Schedule, err error) {
	bad := func(format string, args ...any) error {
		return &ScheduleError{ScheduleField, expr, fmt.Sprintf(format, args...)}
	}
	// robfig/cron panics on some malformed input (a TZ= prefix without a
	// space); nothing a user writes may crash the operator.
	defer func() {
		if r := recover(); r != nil {
			s, err = nil, bad("not a valid cron expression")
		}
	}()
	trimmed := strings.TrimSpace(expr)
	switch {
	case trimmed == "":
		return nil, bad("empty; write five fields: minute hour day-of-month month day-of-week, e.g. \"*/5 * * * *\"")
	case strings.HasPrefix(trimmed, "TZ=") || strings.HasPrefix(trimmed, "CRON_TZ="):
		return nil, bad("a time zone prefix is not allowed here; set %s instead", TimeZoneField)
	case strings.HasPrefix(trimmed, "@every"):
		return nil, bad("@every is not supported; use a step in a five-field expression, e.g. \"*/10 * * * *\" for every 10 minutes")
	case strings.HasPrefix(trimmed, "@"):
		if eq, ok := descriptorEquivalents[strings.ToLower(strings.Fields(trimmed)[0])]; ok {
			return nil, bad("descriptors are not supported; write %q instead", eq)
		}
		return nil, bad("descriptors are not supported; write five fields: minute hour day-of-month month day-of-week")
	}
	fields := strings.Fields(trimmed)
	switch n := len(fields); {
	case n == 6:
		return nil, bad("has 6 fields; a seconds field is not supported: write five fields, minute hour day-of-month month day-of-week")
	case n != 5:
		return nil, bad("has %d fields; write five: minute hour day-of-month month day-of-week", n)
	}
	// Each field on its own, so the message names the field at fault.
	for i, f := range cronFields {
		if _, err := cron.NewParser(f.option).Parse(fields[i]); err != nil {
			return nil, bad("%s field %q: %v (allowed: %s)", f.name, fields[i], err, f.hint)
		}
	}
	sched, err := cron.ParseStandard(strings.Join(fields, " "))
	if err != nil {
		return nil, bad("%v", err)
	}
	spec, ok := sched.(*cron.SpecSchedule)
	if !ok {
		return nil, bad("not a five-field cron expression")
	}
	wall := *spec
	wall.Location = time.UTC
	// Five years from any date include a 29 February, so an expression
	// that matches no day in them never matches one.
	if wall.Next(time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)).IsZero() {
		return nil, bad("never fires: no date matches its day-of-month, month and day-of-week")
	}
	const allHours = 1<<24 - 1
	hourField := fields[1]
	fixed := !strings.HasPrefix(hourField, "*") && !strings.HasPrefix(hourField, "?") && spec.Hour&allHours != allHours
	return &Schedule{expr: strings.Join(fields, " "), wall: &wall, fixedHour: fixed}, nil
}

// String is the expression, fields separated by single spaces.
func (s *Schedule) String() string { return s.expr }

// Location is the zone the schedule is read in.
func (s *Schedule) Location() *time.Location { return s.loc }

// maxShift bounds how far clocks are ever turned back at once (an hour in
// most zones, 30 minutes on Lord Howe Island, two hours historically).
const maxShift = 3 * time.Hour

// Next returns the first run time strictly after t, in the schedule's zone,
// or the zero time if there is none within five years. See Schedule for
// the behaviour at daylight-saving transitions.
//
// It walks the wall-clock times the expression matches, in UTC where there
// are no transitions (robfig/cron's matcher), and maps each to the instants
// at which the zone's clocks show it (Go's zone data via ZoneBounds).
// robfig/cron's own in-zone walk is not used: it adds hours in absolute
// time and so loses runs around 30-minute transitions (Lord Howe Island).
func (s *Schedule) Next(t time.Time) time.Time {
	t = t.In(s.loc)
	w := wallClock(t)
	if s.fixedHour {
		// Each matching reading stands for one instant (the first of a
		// repeat, the end of a gap), in the order of the readings; readings
		// up to t's own map to instants up to t.
		for wt := s.wall.Next(w); !wt.IsZero(); wt = s.wall.Next(wt) {
			if i := instantOf(wt, s.loc); i.After(t) {
				return i.In(s.loc)
			}
		}
		return time.Time{}
	}
	// Real time: every instant whose reading matches. Readings come in
	// instant order except where clocks go back, so near a transition look
	// from maxShift before t's reading, and on until no earlier instant can
	// turn up.
	_, end := t.ZoneBounds()
	near := !end.IsZero() && end.Sub(t) < 24*time.Hour+maxShift
	from := w
	if near {
		from = w.Add(-maxShift)
	}
	var best, bestReading time.Time
	for wt := s.wall.Next(from); !wt.IsZero(); wt = s.wall.Next(wt) {
		if !best.IsZero() && (!near || wt.After(bestReading.Add(maxShift))) {
			break
		}
		at, _ := readings(wt, s.loc)
		for _, i := range at {
			if i.After(t) && (best.IsZero() || i.Before(best)) {
				best, bestReading = i, wt
			}
		}
	}
	if best.IsZero() {
		return best
	}
	return best.In(s.loc)
}

// wallClock is t's wall-clock reading in its location, as a UTC time.
func wallClock(t time.Time) time.Time {
	return time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), t.Nanosecond(), time.UTC)
}

// instantOf returns the instant a named wall-clock time stands for: the
// first of the two instants for a reading that a fall-back transition
// repeats, the first instant after the gap for a reading that a
// spring-forward transition skips.
func instantOf(w time.Time, loc *time.Location) time.Time {
	at, gapEnd := readings(w, loc)
	if len(at) > 0 {
		return at[0]
	}
	return gapEnd
}

// readings returns the instants, in order, at which loc's clocks read the
// wall-clock time w (given as a UTC time): none, one, or two. For none, it
// also returns the end of the gap that skips w.
func readings(w time.Time, loc *time.Location) (at []time.Time, gapEnd time.Time) {
	// UTC offsets are within ±14h, so the zone periods from a day before
	// to a day after w hold every candidate.
	limit := w.Add(26 * time.Hour)
	beyondPrev := false
	for p := w.Add(-26 * time.Hour).In(loc); ; {
		start, end := p.ZoneBounds()
		_, off := p.Zone()
		c := w.Add(-time.Duration(off) * time.Second)
		afterStart := start.IsZero() || !c.Before(start)
		beforeEnd := end.IsZero() || c.Before(end)
		switch {
		case afterStart && beforeEnd:
			// Read with this period's offset, w falls in the period.
			at = append(at, c)
		case beyondPrev && !afterStart && len(at) == 0 && gapEnd.IsZero():
			// Past the end of the previous period and before the start of
			// this one: w is in the gap between them.
			gapEnd = start
		}
		beyondPrev = !beforeEnd
		if end.IsZero() || end.After(limit) {
			return at, gapEnd
		}
		p = end.In(loc)
	}
}

// mostRecent returns the latest run time in (after, now], and whether there
// is one. It looks back in doubling windows, so a long outage of a frequent
// schedule costs a few dozen Next calls, not one per missed run.
func (s *Schedule) mostRecent(after, now time.Time) (time.Time, bool) {
	if !after.Before(now) {
		return time.Time{}, false
	}
	for window := time.Hour; ; window *= 2 {
		lo := now.Add(-window)
		if !lo.After(after) {
			lo = after
		}
		var last time.Time
		for t := s.Next(lo); !t.IsZero() && !t.After(now); t = s.Next(t) {
			last = t
		}
		if !last.IsZero() {
			return last, true
		}
		if lo.Equal(after) || window > 100*365*24*time.Hour {
			return time.Time{}, false
		}
	}
}
