package schedule

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

func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

// TestRobfigDST records robfig/cron's own reading of a spec in a zone with
// daylight saving, which is why Spec steps through wall-clock times and
// places them itself: 02:30 on the spring day has no fire at all, and
// 01:30 on the autumn day fires twice.
func TestRobfigDST(t *testing.T) {
	ny := mustLoad(t, "America/New_York")
	spring, _ := cron.ParseStandard("30 2 * * *")
	spring.(*cron.SpecSchedule).Location = ny
	if got := spring.Next(time.Date(2026, 3, 7, 12, 0, 0, 0, ny)); !got.Equal(utc("2026-03-09T06:30:00Z")) {
		t.Errorf("robfig/cron spring: %v; it skipped the day before, now it does not", got.UTC())
	}
	autumn, _ := cron.ParseStandard("30 1 * * *")
	autumn.(*cron.SpecSchedule).Location = ny
	first := autumn.Next(time.Date(2026, 10, 31, 12, 0, 0, 0, ny))
	if second := autumn.Next(first); !second.Equal(utc("2026-11-01T06:30:00Z")) {
		t.Errorf("robfig/cron autumn: %v after %v; it fired the repeated hour twice before, now it does not", second.UTC(), first.UTC())
	}
}

func TestNextAcrossDaylightSaving(t *testing.T) {
	tests := []struct {
		name string
		cron string
		zone string
		from string
		want []string // UTC
	}{
		{
			name: "NewYorkSpringGapFiresAtTheJump",
			cron: "30 2 * * *", zone: "America/New_York", from: "2026-03-07T17:00:00Z",
			// 02:30 does not exist on 8 March: 03:00 EDT, then 02:30 EDT.
			want: []string{"2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"},
		},
		{
			name: "NewYorkAutumnRepeatedHourFiresOnce",
			cron: "30 1 * * *", zone: "America/New_York", from: "2026-10-31T16:00:00Z",
			want: []string{"2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"},
		},
		{
			name: "NewYorkHourlyAcrossTheRepeatedHour",
			cron: "@hourly", zone: "America/New_York", from: "2026-11-01T04:30:00Z",
			// 01:00 EDT, then 02:00 EST: the wall clock's 01:00 fires once.
			want: []string{"2026-11-01T05:00:00Z", "2026-11-01T07:00:00Z", "2026-11-01T08:00:00Z"},
		},
		{
			name: "NewYorkEveryMinuteInTheGapFiresOnce",
			cron: "* 2 * * *", zone: "America/New_York", from: "2026-03-08T06:58:00Z",
			// 01:58 EST; all of 02:xx is skipped: one fire at 03:00 EDT, then 02:00 EDT next day.
			want: []string{"2026-03-08T07:00:00Z", "2026-03-09T06:00:00Z"},
		},
		{
			name: "BerlinSpringGap",
			cron: "30 2 * * *", zone: "Europe/Berlin", from: "2026-03-28T12:00:00Z",
			want: []string{"2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"},
		},
		{
			name: "BerlinAutumnRepeatedHour",
			cron: "30 2 * * *", zone: "Europe/Berlin", from: "2026-10-24T12:00:00Z",
			want: []string{"2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"},
		},
		{
			name: "SydneySpringGap",
			cron: "30 2 * * *", zone: "Australia/Sydney", from: "2026-10-03T00:00:00Z",
			// 4 October 02:00 AEST → 03:00 AEDT (16:00Z on the 3rd).
			want: []string{"2026-10-03T16:00:00Z", "2026-10-04T15:30:00Z"},
		},
		{
			name: "SydneyAutumnRepeatedHour",
			cron: "30 2 * * *", zone: "Australia/Sydney", from: "2026-04-04T00:00:00Z",
			want: []string{"2026-04-04T15:30:00Z", "2026-04-05T16:30:00Z"},
		},
		{
			name: "TokyoWithoutDaylightSaving",
			cron: "0 9 * * 1-5", zone: "Asia/Tokyo", from: "2026-12-04T01:00:00Z",
			// Friday 10:00 JST → Monday 09:00 JST.
			want: []string{"2026-12-07T00:00:00Z", "2026-12-08T00:00:00Z"},
		},
		{
			name: "SecondsField",
			cron: "*/20 * * * * *", zone: "UTC", from: "2026-12-07T10:00:05Z",
			want: []string{"2026-12-07T10:00:20Z", "2026-12-07T10:00:40Z", "2026-12-07T10:01:00Z"},
		},
		{
			name: "EveryIsAnInterval",
			cron: "@every 90m", zone: "America/New_York", from: "2026-11-01T04:30:00Z",
			want: []string{"2026-11-01T06:00:00Z", "2026-11-01T07:30:00Z"},
		},
		{
			name: "EmptyZoneIsUTC",
			cron: "@daily", zone: "", from: "2026-12-07T10:00:00Z",
			want: []string{"2026-12-08T00:00:00Z"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec, err := NewSpec(SpecOptions{Cron: tt.cron, TimeZone: tt.zone}, utc(tt.from))
			if err != nil {
				t.Fatal(err)
			}
			at := utc(tt.from)
			for i, w := range tt.want {
				next, ok := spec.Next(at)
				if !ok || !next.Equal(utc(w)) {
					t.Fatalf("fire %d after %s = %v, %v; want %s", i, at.Format(time.RFC3339), next.UTC().Format(time.RFC3339), ok, w)
				}
				at = next
			}
		})
	}
}

func TestNextThroughCalendars(t *testing.T) {
	weekdays, err := NewCalendar("weekdays", []string{"2026-12-25"}, []string{"mon", "tue", "wed", "thu", "fri"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	office, err := NewCalendar("office", nil, nil, []int32{9, 10})
	if err != nil {
		t.Fatal(err)
	}
	start, end := utc("2026-12-10T00:00:00Z"), utc("2026-12-12T00:00:00Z")
	tests := []struct {
		name string
		opts SpecOptions
		from string
		want []string
	}{
		{
			name: "HolidayAndWeekendSkipped",
			opts: SpecOptions{Cron: "0 9 * * *", TimeZone: "Europe/Berlin", Calendars: []*Calendar{weekdays}},
			// Thursday 24th, then Friday 25th (holiday), weekend → Monday 28th.
			from: "2026-12-23T12:00:00Z",
			want: []string{"2026-12-24T08:00:00Z", "2026-12-28T08:00:00Z"},
		},
		{
			name: "HoursAllowed",
			opts: SpecOptions{Cron: "0 * * * *", TimeZone: "UTC", Calendars: []*Calendar{office}},
			from: "2026-12-07T09:30:00Z",
			want: []string{"2026-12-07T10:00:00Z", "2026-12-08T09:00:00Z"},
		},
		{
			name: "EveryBehindAWeekendCalendar",
			opts: SpecOptions{Cron: "@every 1s", TimeZone: "UTC", Calendars: []*Calendar{weekdays}},
			// Saturday noon: the first allowed second is Monday 00:00.
			from: "2026-12-05T12:00:00Z",
			want: []string{"2026-12-07T00:00:00Z", "2026-12-07T00:00:01Z"},
		},
		{
			name: "BetweenStartAndEnd",
			opts: SpecOptions{Cron: "@daily", Start: &start, End: &end},
			from: "2026-12-01T00:00:00Z",
			want: []string{"2026-12-10T00:00:00Z", "2026-12-11T00:00:00Z", "2026-12-12T00:00:00Z"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec, err := NewSpec(tt.opts, utc(tt.from))
			if err != nil {
				t.Fatal(err)
			}
			at := utc(tt.from)
			for i, w := range tt.want {
				next, ok := spec.Next(at)
				if !ok || !next.Equal(utc(w)) {
					t.Fatalf("fire %d after %s = %v, %v; want %s", i, at.Format(time.RFC3339), next.UTC().Format(time.RFC3339), ok, w)
				}
				at = next
			}
			if tt.opts.End != nil {
				if next, ok := spec.Next(at); ok {
					t.Fatalf("a fire after the end: %v", next)
				}
			}
		})
	}
}

func TestSpecRefusesBadInput(t *testing.T) {
	weekend, err := NewCalendar("weekend", nil, []string{"sat", "sun"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	start, end := utc("2026-12-10T00:00:00Z"), utc("2026-12-09T00:00:00Z")
	tests := []struct {
		name  string
		opts  SpecOptions
		field string
		msg   string
	}{
		{"HourOutOfRange", SpecOptions{Cron: "0 25 * * *"}, "cron", `field 2 (hour) "25": value out of range 0-23`},
		{"MinuteOutOfRange", SpecOptions{Cron: "61 * * * *"}, "cron", `field 1 (minute) "61": value out of range 0-59`},
		{"SecondsFieldOutOfRange", SpecOptions{Cron: "0 60 * * * *"}, "cron", `field 2 (minute) "60": value out of range 0-59`},
		{"DayOfWeekOutOfRange", SpecOptions{Cron: "0 9 * * 8"}, "cron", `field 5 (day of week) "8": value out of range 0-6`},
		{"NotANumber", SpecOptions{Cron: "x 9 * * *"}, "cron", `field 1 (minute) "x": `},
		{"TooFewFields", SpecOptions{Cron: "* * *"}, "cron", "3 fields; want 5"},
		{"Empty", SpecOptions{Cron: ""}, "cron", "required"},
		{"ZoneInSpec", SpecOptions{Cron: "CRON_TZ=UTC 0 9 * * *"}, "cron", "set time_zone"},
		{"BadEvery", SpecOptions{Cron: "@every soon"}, "cron", `"@every soon"`},
		{"EveryTooShort", SpecOptions{Cron: "@every 100ms"}, "cron", "at least 1s"},
		{"UnknownDescriptor", SpecOptions{Cron: "@fortnightly"}, "cron", `"@fortnightly"`},
		{"UnknownZone", SpecOptions{Cron: "@daily", TimeZone: "Mars/Olympus"}, "time_zone", `unknown time zone "Mars/Olympus"`},
		{"LocalZone", SpecOptions{Cron: "@daily", TimeZone: "Local"}, "time_zone", "IANA"},
		{"EndBeforeStart", SpecOptions{Cron: "@daily", Start: &start, End: &end}, "end_time", "is not after start_time"},
		{"CalendarExcludesEveryFire", SpecOptions{Cron: "0 9 * * 1-5", Calendars: []*Calendar{weekend}}, "calendars", "exclude every time"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewSpec(tt.opts, utc("2026-12-07T00:00:00Z"))
			var ferr *FieldError
			if !errors.As(err, &ferr) || ferr.Field != tt.field || !strings.Contains(ferr.Msg, tt.msg) {
				t.Fatalf("NewSpec(%+v) = %v; want %s: …%s…", tt.opts, err, tt.field, tt.msg)
			}
		})
	}
}

func TestNewCalendarRefusesBadLists(t *testing.T) {
	if _, err := NewCalendar("c", []string{"2026-02-30"}, nil, nil); err == nil || !strings.Contains(err.Error(), "excluded_dates[0]") {
		t.Errorf("an impossible date: %v", err)
	}
	if _, err := NewCalendar("c", nil, []string{"monday"}, nil); err == nil || !strings.Contains(err.Error(), "weekdays[0]") {
		t.Errorf("a long weekday name: %v", err)
	}
	if _, err := NewCalendar("c", nil, nil, []int32{24}); err == nil || !strings.Contains(err.Error(), "hours[0]") {
		t.Errorf("hour 24: %v", err)
	}
}

// FuzzParseCron: no spec makes the parser panic or hang, and a spec it
// takes always has a next fire computable.
func FuzzParseCron(f *testing.F) {
	for _, s := range []string{"0 9 * * 1-5", "*/5 * * * * *", "@every 1h", "@daily", "0 25 * * *", "1-5/0 * * * *"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		spec, err := NewSpec(SpecOptions{Cron: s, TimeZone: "Europe/Berlin"}, utc("2026-12-07T00:00:00Z"))
		if err != nil {
			return
		}
		spec.Next(utc("2026-12-07T00:00:00Z"))
	})
}
