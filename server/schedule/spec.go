// Package schedule turns schedules into jobs: it reads cron specs in a time
// zone and through calendars (spec.go), and runs the scheduler that fires
// the due schedules from the one replica that leads (scheduler.go,
// leader.go).
package schedule

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"time"
	// Time zones come with the binary: a container without tzdata still
	// knows Europe/Berlin.
	_ "time/tzdata"

	"github.com/robfig/cron/v3"

	"github.com/casarerpa/casare/server/registry"
)

// FieldError is a problem with one field of a schedule or calendar, named
// as in the API message (cron, time_zone, calendars, …).
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

func fieldError(field, format string, args ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// Horizon is how far ahead a next fire is looked for: a schedule with none
// within it never fires (a calendar excludes every time its cron names).
const Horizon = 5 * 366 * 24 * time.Hour

// maxSteps bounds the candidates tried for one next fire, so a spec that
// fires every second behind a calendar that rarely allows one costs a
// bounded time.
const maxSteps = 200_000

// cronFields names the fields of a six-field spec, seconds first.
var cronFields = []struct {
	name     string
	min, max int
}{
	{"second", 0, 59}, {"minute", 0, 59}, {"hour", 0, 23},
	{"day of month", 1, 31}, {"month", 1, 12}, {"day of week", 0, 6},
}

var (
	specParser = cron.NewParser(cron.Second | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)
	// rangeError matches robfig/cron's messages for a value out of range.
	rangeError = regexp.MustCompile(`(above maximum|below minimum)`)
)

// ParseCron parses a cron spec: five fields (minute hour day-of-month
// month day-of-week), six with seconds first, or a descriptor (@hourly,
// @daily, @every 5m). An error names the field at fault by its position,
// e.g. `field 2 (hour) "25": value out of range 0-23`.
func ParseCron(spec string) (cron.Schedule, error) {
	spec = strings.TrimSpace(spec)
	switch {
	case spec == "":
		return nil, fmt.Errorf("required, e.g. \"0 9 * * 1-5\" or @hourly")
	case strings.HasPrefix(spec, "TZ=") || strings.HasPrefix(spec, "CRON_TZ="):
		return nil, fmt.Errorf("a time zone in the spec is not taken; set time_zone")
	case strings.HasPrefix(spec, "@every "):
		d, err := time.ParseDuration(strings.TrimSpace(strings.TrimPrefix(spec, "@every ")))
		if err != nil {
			return nil, fmt.Errorf("%q: want an interval such as @every 5m", spec)
		}
		if d < time.Second {
			return nil, fmt.Errorf("%q: the interval must be at least 1s", spec)
		}
		return cron.Every(d), nil
	case strings.HasPrefix(spec, "@"):
		sched, err := specParser.Parse(spec)
		if err != nil {
			return nil, fmt.Errorf("%q: %s", spec, strings.TrimPrefix(err.Error(), "failed to parse duration "))
		}
		return civil(sched), nil
	}
	fields := strings.Fields(spec)
	if len(fields) != 5 && len(fields) != 6 {
		return nil, fmt.Errorf("%d fields; want 5 (minute hour day-of-month month day-of-week) or 6 with seconds first", len(fields))
	}
	offset := 0 // index in cronFields of fields[0]
	if len(fields) == 5 {
		offset = 1
	}
	for i, f := range fields {
		probe := []string{"0", "*", "*", "*", "*", "*"}
		probe[i+offset] = f
		if _, err := specParser.Parse(strings.Join(probe, " ")); err != nil {
			def := cronFields[i+offset]
			msg := err.Error()
			if rangeError.MatchString(msg) {
				msg = fmt.Sprintf("value out of range %d-%d", def.min, def.max)
			} else {
				// robfig/cron ends its messages with the field again.
				msg = strings.TrimSuffix(msg, ": "+f)
			}
			return nil, fmt.Errorf("field %d (%s) %q: %s", i+1, def.name, f, msg)
		}
	}
	if offset == 1 {
		fields = append([]string{"0"}, fields...)
	}
	sched, err := specParser.Parse(strings.Join(fields, " "))
	if err != nil {
		return nil, fmt.Errorf("%q: %w", spec, err)
	}
	return civil(sched), nil
}

// civil makes a parsed spec count in wall-clock time: with UTC as its
// location, its Next steps through the wall-clock times that match,
// which Spec.Next then places in the schedule's zone. Left in a zone with
// daylight saving, robfig/cron's Next never fires a time that falls in
// the hour skipped in spring (the day has no fire at all) and can fire a
// time of the repeated hour in autumn twice.
func civil(s cron.Schedule) cron.Schedule {
	if spec, ok := s.(*cron.SpecSchedule); ok {
		spec.Location = time.UTC
	}
	return s
}

// LoadLocation returns the IANA time zone named, UTC for "".
func LoadLocation(name string) (*time.Location, error) {
	if name == "" || name == "UTC" {
		return time.UTC, nil
	}
	if name == "Local" {
		return nil, fmt.Errorf("%q depends on the server's machine; name an IANA zone such as Europe/Berlin", name)
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("unknown time zone %q; want an IANA name such as Europe/Berlin or America/New_York", name)
	}
	return loc, nil
}

// Calendar is a parsed calendar: a fire is allowed when its date (in the
// schedule's zone) is not excluded and its weekday and hour are allowed.
type Calendar struct {
	Name     string
	excluded map[string]bool
	weekdays [7]bool // by time.Weekday; all true when the calendar names none
	hours    [24]bool
}

var weekdayNames = map[string]time.Weekday{
	"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday,
}

// NewCalendar checks and parses a calendar's lists.
func NewCalendar(name string, excludedDates, weekdays []string, hours []int32) (*Calendar, error) {
	c := &Calendar{Name: name, excluded: make(map[string]bool, len(excludedDates))}
	for i, d := range excludedDates {
		if _, err := time.Parse(time.DateOnly, d); err != nil {
			return nil, fieldError(fmt.Sprintf("excluded_dates[%d]", i), "%q is not a date YYYY-MM-DD", d)
		}
		c.excluded[d] = true
	}
	for i, w := range weekdays {
		day, ok := weekdayNames[w]
		if !ok {
			return nil, fieldError(fmt.Sprintf("weekdays[%d]", i), "%q is not one of mon, tue, wed, thu, fri, sat, sun", w)
		}
		c.weekdays[day] = true
	}
	if len(weekdays) == 0 {
		c.weekdays = [7]bool{true, true, true, true, true, true, true}
	}
	for i, h := range hours {
		if h < 0 || h > 23 {
			return nil, fieldError(fmt.Sprintf("hours[%d]", i), "%d is not an hour 0-23", h)
		}
		c.hours[h] = true
	}
	if len(hours) == 0 {
		for h := range c.hours {
			c.hours[h] = true
		}
	}
	return c, nil
}

// CalendarFromRegistry parses a stored calendar.
func CalendarFromRegistry(rc *registry.Calendar) (*Calendar, error) {
	var dates, weekdays []string
	var hours []int32
	for _, col := range []struct {
		text string
		into any
	}{{rc.ExcludedDates, &dates}, {rc.Weekdays, &weekdays}, {rc.Hours, &hours}} {
		if col.text == "" {
			continue
		}
		if err := json.Unmarshal([]byte(col.text), col.into); err != nil {
			return nil, fmt.Errorf("calendar %s: stored lists: %w", rc.Name, err)
		}
	}
	return NewCalendar(rc.Name, dates, weekdays, hours)
}

// Spec is when a schedule fires: its cron spec read in its zone, between
// its start and end, on the times its calendars allow.
type Spec struct {
	cron      cron.Schedule
	loc       *time.Location
	start     *time.Time
	end       *time.Time
	calendars []*Calendar
}

// SpecOptions is what NewSpec reads.
type SpecOptions struct {
	Cron      string
	TimeZone  string
	Start     *time.Time
	End       *time.Time
	Calendars []*Calendar
}

// NewSpec checks and parses a schedule's timing. Errors are *FieldError
// naming cron, time_zone, end_time or calendars; a spec that never fires
// within Horizon of from (its calendars exclude every time it names) is
// refused.
func NewSpec(opts SpecOptions, from time.Time) (*Spec, error) {
	sched, err := ParseCron(opts.Cron)
	if err != nil {
		return nil, &FieldError{Field: "cron", Msg: err.Error()}
	}
	loc, err := LoadLocation(opts.TimeZone)
	if err != nil {
		return nil, &FieldError{Field: "time_zone", Msg: err.Error()}
	}
	if opts.Start != nil && opts.End != nil && !opts.End.After(*opts.Start) {
		return nil, fieldError("end_time", "%s is not after start_time %s", opts.End.UTC().Format(time.RFC3339), opts.Start.UTC().Format(time.RFC3339))
	}
	s := &Spec{cron: sched, loc: loc, start: opts.Start, end: opts.End, calendars: opts.Calendars}
	if len(s.calendars) > 0 {
		bare := &Spec{cron: sched, loc: loc, start: opts.Start, end: opts.End}
		after := from
		if s.start != nil && s.start.After(after) {
			after = *s.start
		}
		if _, ok := bare.Next(after); ok {
			if _, ok := s.Next(after); !ok {
				names := make([]string, len(s.calendars))
				for i, c := range s.calendars {
					names[i] = c.Name
				}
				return nil, fieldError("calendars", "%s exclude every time the cron spec names within %d years; the schedule would never fire",
					strings.Join(names, ", "), int(Horizon/(366*24*time.Hour)))
			}
		}
	}
	return s, nil
}

// Location returns the zone the spec is read in.
func (s *Spec) Location() *time.Location { return s.loc }

// Next returns the first fire strictly after t, or false when there is
// none within Horizon (or before the end). A wall-clock time the spring
// change of daylight saving skips fires once, at the first instant after
// the gap; a time the autumn change repeats fires once, at its first
// occurrence.
func (s *Spec) Next(t time.Time) (time.Time, bool) {
	if s.start != nil && t.Before(*s.start) {
		t = s.start.Add(-time.Nanosecond)
	}
	limit := t.Add(Horizon)
	for range maxSteps {
		c, ok := s.candidate(t)
		if !ok || c.After(limit) || (s.end != nil && c.After(*s.end)) {
			return time.Time{}, false
		}
		skipTo, allowed := s.allowed(c)
		if allowed {
			return c, true
		}
		// The next candidate comes after skipTo - 1ns, at skipTo or later.
		t = skipTo.Add(-time.Nanosecond)
		if t.Before(c) {
			t = c
		}
	}
	return time.Time{}, false
}

// candidate returns the next instant after t the cron spec names,
// calendars aside.
func (s *Spec) candidate(t time.Time) (time.Time, bool) {
	if _, ok := s.cron.(cron.ConstantDelaySchedule); ok {
		return s.cron.Next(t), true
	}
	c := wallClock(t, s.loc)
	// Several wall-clock times may fall in one spring gap and resolve to
	// the same instant; the loop steps past those already passed.
	for range 10_000 {
		c = s.cron.Next(c)
		if c.IsZero() {
			return time.Time{}, false
		}
		if at := resolve(c, s.loc); at.After(t) {
			return at, true
		}
	}
	return time.Time{}, false
}

// wallClock returns t's wall-clock time in loc, written as a UTC time.
func wallClock(t time.Time, loc *time.Location) time.Time {
	l := t.In(loc)
	return time.Date(l.Year(), l.Month(), l.Day(), l.Hour(), l.Minute(), l.Second(), l.Nanosecond(), time.UTC)
}

// resolve returns the instant of the wall-clock time c (written as UTC) in
// loc: the earlier of two in a repeated hour, the end of the gap for a
// time the clocks skip.
func resolve(c time.Time, loc *time.Location) time.Time {
	// The offsets a day before and after cover the one change near c.
	_, before := c.Add(-24 * time.Hour).In(loc).Zone()
	_, after := c.Add(24 * time.Hour).In(loc).Zone()
	a := c.Add(-time.Duration(before) * time.Second)
	b := c.Add(-time.Duration(after) * time.Second)
	aOK, bOK := wallClock(a, loc).Equal(c), wallClock(b, loc).Equal(c)
	switch {
	case aOK && bOK:
		if b.Before(a) {
			return b
		}
		return a
	case aOK:
		return a
	case bOK:
		return b
	}
	// In a gap: the clocks jumped over c somewhere between the two
	// readings; the first instant whose wall clock is past c is the jump.
	lo, hi := a, b
	if hi.Before(lo) {
		lo, hi = hi, lo
	}
	if !wallClock(hi, loc).After(c) {
		// Not a gap the two offsets explain (two changes within a day);
		// the time package's reading is as good as any.
		return time.Date(c.Year(), c.Month(), c.Day(), c.Hour(), c.Minute(), c.Second(), 0, loc)
	}
	for hi.Sub(lo) > time.Second {
		mid := lo.Add(hi.Sub(lo) / 2).Truncate(time.Second)
		if wallClock(mid, loc).After(c) {
			hi = mid
		} else {
			lo = mid
		}
	}
	return hi
}

// allowed reports whether every calendar allows the instant c; when one
// does not, skipTo is the first instant that could be allowed again (the
// next day or the next hour).
func (s *Spec) allowed(c time.Time) (skipTo time.Time, ok bool) {
	l := c.In(s.loc)
	for _, cal := range s.calendars {
		if cal.excluded[l.Format(time.DateOnly)] || !cal.weekdays[l.Weekday()] {
			return time.Date(l.Year(), l.Month(), l.Day()+1, 0, 0, 0, 0, s.loc), false
		}
		if !cal.hours[l.Hour()] {
			return time.Date(l.Year(), l.Month(), l.Day(), l.Hour()+1, 0, 0, 0, s.loc), false
		}
	}
	return c, true
}
