package registry

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

func newSchedule(name string, next time.Time) *Schedule {
	return &Schedule{
		ID:            NewID(),
		Name:          name,
		WorkflowName:  "invoice",
		Cron:          "@every 1m",
		Inputs:        "{}",
		Requires:      "{}",
		OverlapPolicy: "skip",
		MisfirePolicy: "skip",
		NextFireTime:  &next,
		CreatedBy:     "tester",
	}
}

func TestScheduleLifecycle(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		base := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
		cal := &Calendar{Name: "holidays", ExcludedDates: `["2026-12-25"]`, Weekdays: "[]", Hours: "[]", CreatedBy: "tester"}
		if err := r.CreateCalendar(ctx, cal, &AuditEvent{Actor: "tester", Action: "create", Target: "calendar/holidays", Outcome: "ok"}); err != nil {
			t.Fatal(err)
		}
		if err := r.CreateCalendar(ctx, &Calendar{Name: "holidays", ExcludedDates: "[]", Weekdays: "[]", Hours: "[]"}, nil); !errors.Is(err, ErrAlreadyExists) {
			t.Fatalf("second CreateCalendar = %v, want ErrAlreadyExists", err)
		}

		s := newSchedule("nightly", base)
		s.Calendars = []string{"holidays"}
		if err := r.CreateSchedule(ctx, s, &AuditEvent{Actor: "tester", Action: "create", Target: "schedule/nightly", Outcome: "ok"}); err != nil {
			t.Fatal(err)
		}
		if err := r.CreateSchedule(ctx, newSchedule("nightly", base), nil); !errors.Is(err, ErrAlreadyExists) {
			t.Fatalf("duplicate CreateSchedule = %v, want ErrAlreadyExists", err)
		}
		missing := newSchedule("other", base)
		missing.Calendars = []string{"nope"}
		if err := r.CreateSchedule(ctx, missing, nil); !errors.Is(err, ErrNotFound) {
			t.Fatalf("CreateSchedule with a missing calendar = %v, want ErrNotFound", err)
		}
		if _, err := r.GetSchedule(ctx, "other"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("a refused schedule was stored: %v", err)
		}
		got, err := r.GetSchedule(ctx, "nightly")
		if err != nil || len(got.Calendars) != 1 || got.Calendars[0] != "holidays" || !got.NextFireTime.Equal(base) {
			t.Fatalf("GetSchedule = %+v, %v", got, err)
		}
		audits, _, err := r.ListAudit(ctx, AuditFilter{Target: "schedule/nightly"}, Page{})
		if err != nil || len(audits) != 1 {
			t.Fatalf("audit of the create = %+v, %v", audits, err)
		}

		if err := r.DeleteCalendar(ctx, "holidays", nil); !errors.Is(err, ErrConflict) {
			t.Fatalf("DeleteCalendar of a calendar in use = %v, want ErrConflict", err)
		}

		// Due: only schedules not paused whose next fire has come.
		later := newSchedule("later", base.Add(time.Hour))
		if err := r.CreateSchedule(ctx, later, nil); err != nil {
			t.Fatal(err)
		}
		due, err := r.DueSchedules(ctx, base, 100)
		if err != nil || len(due) != 1 || due[0].Name != "nightly" || len(due[0].Calendars) != 1 {
			t.Fatalf("DueSchedules = %+v, %v", due, err)
		}
		if n, err := r.NextDueTime(ctx); err != nil || !n.Equal(base) {
			t.Fatalf("NextDueTime = %v, %v", n, err)
		}

		// A fire recorded against the version read is stored; one against
		// an older version (the schedule was paused meanwhile) is not.
		next := base.Add(time.Minute)
		ok, err := r.RecordScheduleFired(ctx, ScheduleFired{ID: got.ID, UpdatedAt: got.UpdatedAt, NextFireTime: &next, LastFireTime: &base, LastJobID: "job-1"})
		if err != nil || !ok {
			t.Fatalf("RecordScheduleFired = %v, %v", ok, err)
		}
		paused, err := r.SetSchedulePaused(ctx, "nightly", true, nil, nil)
		if err != nil || !paused.Paused || paused.NextFireTime != nil {
			t.Fatalf("SetSchedulePaused = %+v, %v", paused, err)
		}
		ok, err = r.RecordScheduleFired(ctx, ScheduleFired{ID: got.ID, UpdatedAt: got.UpdatedAt, NextFireTime: &next})
		if err != nil || ok {
			t.Fatalf("RecordScheduleFired on a stale version = %v, %v; want false", ok, err)
		}
		due, err = r.DueSchedules(ctx, base.Add(24*time.Hour), 100)
		if err != nil || len(due) != 1 || due[0].Name != "later" {
			t.Fatalf("DueSchedules with one paused = %+v, %v", due, err)
		}
		resumed, err := r.SetSchedulePaused(ctx, "nightly", false, func(*Schedule, map[string]*Calendar) (*time.Time, error) { return &next, nil }, nil)
		if err != nil || resumed.Paused || !resumed.NextFireTime.Equal(next) || resumed.LastJobID != "job-1" {
			t.Fatalf("resume = %+v, %v", resumed, err)
		}

		// Updating a calendar sets the next fire of its schedules.
		moved := base.Add(48 * time.Hour)
		cal.ExcludedDates = `["2026-12-07"]`
		err = r.UpdateCalendar(ctx, cal, func(s *Schedule, cals map[string]*Calendar) (*time.Time, error) {
			if cals["holidays"].ExcludedDates != `["2026-12-07"]` {
				return nil, fmt.Errorf("next computed with the old calendar")
			}
			return &moved, nil
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := r.GetSchedule(ctx, "nightly"); !got.NextFireTime.Equal(moved) {
			t.Fatalf("next fire after the calendar changed = %v, want %v", got.NextFireTime, moved)
		}

		list, next1, err := r.ListSchedules(ctx, ScheduleFilter{}, Page{Size: 1})
		if err != nil || len(list) != 1 || list[0].Name != "later" || next1 == "" {
			t.Fatalf("ListSchedules page 1 = %+v, %q, %v", list, next1, err)
		}
		list, _, err = r.ListSchedules(ctx, ScheduleFilter{}, Page{Size: 1, Token: next1})
		if err != nil || len(list) != 1 || list[0].Name != "nightly" || len(list[0].Calendars) != 1 {
			t.Fatalf("ListSchedules page 2 = %+v, %v", list, err)
		}

		if err := r.DeleteSchedule(ctx, "nightly", nil); err != nil {
			t.Fatal(err)
		}
		if err := r.DeleteSchedule(ctx, "nightly", nil); !errors.Is(err, ErrNotFound) {
			t.Fatalf("second DeleteSchedule = %v, want ErrNotFound", err)
		}
		if err := r.DeleteCalendar(ctx, "holidays", nil); err != nil {
			t.Fatalf("DeleteCalendar once unused = %v", err)
		}
	})
}

// TestRecordSchedulesFiredInOneWrite: a batch of fires is stored at once;
// the schedule changed since it was read keeps what the change wrote, and
// one that made no job keeps its last job.
func TestRecordSchedulesFiredInOneWrite(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		base := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
		var list []*Schedule
		for i := range 3 {
			s := newSchedule(fmt.Sprintf("s%d", i), base)
			s.LastJobID = "old"
			if err := r.CreateSchedule(ctx, s, nil); err != nil {
				t.Fatal(err)
			}
			list = append(list, s)
		}
		// s2 is paused after it was read.
		if _, err := r.SetSchedulePaused(ctx, "s2", true, nil, nil); err != nil {
			t.Fatal(err)
		}
		next, queued := base.Add(time.Minute), base.Add(30*time.Second)
		n, err := r.RecordSchedulesFired(ctx, []ScheduleFired{
			{ID: list[0].ID, UpdatedAt: list[0].UpdatedAt, NextFireTime: &next, LastFireTime: &base, LastJobID: "job-0"},
			{ID: list[1].ID, UpdatedAt: list[1].UpdatedAt, NextFireTime: &next, QueuedFireTime: &queued},
			{ID: list[2].ID, UpdatedAt: list[2].UpdatedAt, NextFireTime: &next},
		})
		if err != nil || n != 2 {
			t.Fatalf("RecordSchedulesFired = %d, %v; want 2 stored", n, err)
		}
		s0, _ := r.GetSchedule(ctx, "s0")
		if !s0.NextFireTime.Equal(next) || s0.LastJobID != "job-0" || !s0.LastFireTime.Equal(base) || s0.QueuedFireTime != nil {
			t.Errorf("s0 = %+v", s0)
		}
		s1, _ := r.GetSchedule(ctx, "s1")
		if !s1.NextFireTime.Equal(next) || s1.LastJobID != "old" || s1.LastFireTime != nil || !s1.QueuedFireTime.Equal(queued) {
			t.Errorf("s1 = %+v", s1)
		}
		s2, _ := r.GetSchedule(ctx, "s2")
		if !s2.Paused || s2.NextFireTime != nil {
			t.Errorf("s2, paused after it was read, = %+v; want it as the pause left it", s2)
		}
	})
}

// TestMissedFiresAreOneEvent: fires missed while no scheduler ran become
// one schedule.missed event, committed with the schedule's next fire, once
// however often the pass is stored again.
func TestMissedFiresAreOneEvent(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		base := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
		s := newSchedule("nightly", base)
		if err := r.CreateSchedule(ctx, s, nil); err != nil {
			t.Fatal(err)
		}
		newSubscription(t, r, "ops", "", EventScheduleMissed)
		next := base.Add(3 * time.Hour)
		f := ScheduleFired{ID: s.ID, UpdatedAt: s.UpdatedAt, NextFireTime: &next,
			Missed: []time.Time{base, base.Add(time.Hour), base.Add(2 * time.Hour)}}
		for range 2 {
			if _, err := r.RecordSchedulesFired(ctx, []ScheduleFired{f}); err != nil {
				t.Fatal(err)
			}
		}
		var events []Event
		if err := r.db.NewSelect().Model(&events).Where("type = ?", EventScheduleMissed).Scan(ctx); err != nil {
			t.Fatal(err)
		}
		if len(events) != 1 || events[0].ResourceID != s.ID || events[0].ResourceKind != ResourceSchedule || !events[0].Time.Equal(base.Add(2*time.Hour)) {
			t.Fatalf("events = %+v; want one schedule.missed for %s at the last missed instant", events, s.ID)
		}
		if got := countRows(t, r, (*Delivery)(nil), "event_seq = ?", events[0].Seq); got != 1 {
			t.Errorf("%d deliveries, want 1 to the subscription", got)
		}
		got, err := r.GetScheduleByID(ctx, s.ID)
		if err != nil || got.Name != "nightly" || !got.NextFireTime.Equal(next) {
			t.Errorf("GetScheduleByID = %+v, %v", got, err)
		}
	})
}
