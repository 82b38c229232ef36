package registry

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/uptrace/bun"
)

// Schedule is a row of schedules: a stored workflow made into jobs at the
// times a cron spec names. Calendars is not a column: it is read from and
// written to schedule_calendars, in order.
type Schedule struct {
	bun.BaseModel `bun:"table:schedules"`

	ID              string     `bun:"id,pk"`
	Name            string     `bun:"name,notnull"`
	Description     string     `bun:"description,notnull"`
	WorkflowName    string     `bun:"workflow_name,notnull"`
	WorkflowVersion int32      `bun:"workflow_version,notnull"`
	Cron            string     `bun:"cron,notnull"`
	TimeZone        string     `bun:"time_zone,notnull"`
	Inputs          string     `bun:"inputs,notnull"`   // protojson of google.protobuf.Struct
	Priority        Priority   `bun:"priority,notnull"` // 0: the job's default
	Requires        string     `bun:"requires,notnull"` // protojson of casare.v1.Requirements
	MaxAttempts     int32      `bun:"max_attempts,notnull"`
	StartTime       *time.Time `bun:"start_time"`
	EndTime         *time.Time `bun:"end_time"`
	OverlapPolicy   string     `bun:"overlap_policy,notnull"` // allow, skip, queue_one, cancel_previous
	MisfirePolicy   string     `bun:"misfire_policy,notnull"` // skip, run_once, run_all
	MisfireLimit    int32      `bun:"misfire_limit,notnull"`
	Paused          bool       `bun:"paused,notnull"`
	NextFireTime    *time.Time `bun:"next_fire_time"`
	LastFireTime    *time.Time `bun:"last_fire_time"`
	LastJobID       string     `bun:"last_job_id,notnull"`
	// QueuedFireTime is the instant of a fire held back, under queue_one,
	// until the job of the previous one ends.
	QueuedFireTime *time.Time `bun:"queued_fire_time"`
	CreatedBy      string     `bun:"created_by,notnull"`
	CreatedAt      time.Time  `bun:"created_at,notnull"`
	UpdatedAt      time.Time  `bun:"updated_at,notnull"`

	Calendars []string `bun:"-"`
}

// ScheduleCalendar is a row of schedule_calendars: one calendar a schedule
// uses, at its position in the schedule's list.
type ScheduleCalendar struct {
	bun.BaseModel `bun:"table:schedule_calendars"`

	ScheduleID   string `bun:"schedule_id,pk"`
	CalendarName string `bun:"calendar_name,pk"`
	Position     int    `bun:"position,notnull"`
}

// Calendar is a row of calendars: dates without fires and the weekdays and
// hours with them, shared by schedules. The lists are JSON arrays.
type Calendar struct {
	bun.BaseModel `bun:"table:calendars"`

	Name          string    `bun:"name,pk"`
	Description   string    `bun:"description,notnull"`
	ExcludedDates string    `bun:"excluded_dates,notnull"` // JSON array of YYYY-MM-DD
	Weekdays      string    `bun:"weekdays,notnull"`       // JSON array of mon…sun
	Hours         string    `bun:"hours,notnull"`          // JSON array of 0…23
	CreatedBy     string    `bun:"created_by,notnull"`
	CreatedAt     time.Time `bun:"created_at,notnull"`
	UpdatedAt     time.Time `bun:"updated_at,notnull"`
}

func normalizePtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	n := t.UTC().Truncate(time.Microsecond)
	return &n
}

func (s *Schedule) normalizeTimes() {
	s.StartTime = normalizePtr(s.StartTime)
	s.EndTime = normalizePtr(s.EndTime)
	s.NextFireTime = normalizePtr(s.NextFireTime)
	s.LastFireTime = normalizePtr(s.LastFireTime)
	s.QueuedFireTime = normalizePtr(s.QueuedFireTime)
}

// checkCalendars returns ErrNotFound naming the first of names no
// calendar has.
func checkCalendars(ctx context.Context, tx bun.IDB, names []string) error {
	if len(names) == 0 {
		return nil
	}
	var have []string
	if err := tx.NewSelect().Model((*Calendar)(nil)).Column("name").Where("name IN (?)", bun.In(names)).Scan(ctx, &have); err != nil {
		return err
	}
	for _, n := range names {
		if !containsString(have, n) {
			return fmt.Errorf("calendar %q: %w", n, ErrNotFound)
		}
	}
	return nil
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func writeScheduleCalendars(ctx context.Context, tx bun.IDB, s *Schedule) error {
	if _, err := tx.NewDelete().Model((*ScheduleCalendar)(nil)).Where("schedule_id = ?", s.ID).Exec(ctx); err != nil {
		return err
	}
	if len(s.Calendars) == 0 {
		return nil
	}
	rows := make([]ScheduleCalendar, len(s.Calendars))
	for i, c := range s.Calendars {
		rows[i] = ScheduleCalendar{ScheduleID: s.ID, CalendarName: c, Position: i}
	}
	_, err := tx.NewInsert().Model(&rows).Exec(ctx)
	return err
}

// loadScheduleCalendars fills in the Calendars of the schedules.
func loadScheduleCalendars(ctx context.Context, db bun.IDB, list []*Schedule) error {
	if len(list) == 0 {
		return nil
	}
	byID := make(map[string]*Schedule, len(list))
	ids := make([]string, 0, len(list))
	for _, s := range list {
		s.Calendars = nil
		byID[s.ID] = s
		ids = append(ids, s.ID)
	}
	var rows []ScheduleCalendar
	// Chunks keep the IN list inside SQLite's limit on bound values.
	for start := 0; start < len(ids); start += 500 {
		end := min(start+500, len(ids))
		var chunk []ScheduleCalendar
		if err := db.NewSelect().Model(&chunk).Where("schedule_id IN (?)", bun.In(ids[start:end])).
			OrderExpr("schedule_id, position").Scan(ctx); err != nil {
			return fmt.Errorf("read schedule calendars: %w", err)
		}
		rows = append(rows, chunk...)
	}
	for _, r := range rows {
		s := byID[r.ScheduleID]
		s.Calendars = append(s.Calendars, r.CalendarName)
	}
	return nil
}

// CreateSchedule stores s, its calendars and the audit event in one
// transaction. ErrAlreadyExists when a schedule has the name; ErrNotFound
// naming a calendar that does not exist.
func (r *Registry) CreateSchedule(ctx context.Context, s *Schedule, audit *AuditEvent) error {
	s.CreatedAt = normalize(s.CreatedAt)
	s.UpdatedAt = s.CreatedAt
	s.normalizeTimes()
	err := r.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if err := checkCalendars(ctx, tx, s.Calendars); err != nil {
			return err
		}
		if _, err := tx.NewInsert().Model(s).Exec(ctx); err != nil {
			return err
		}
		if err := writeScheduleCalendars(ctx, tx, s); err != nil {
			return err
		}
		return insertAudit(ctx, tx, audit)
	})
	if isUniqueViolation(err) {
		return fmt.Errorf("schedule %q: %w", s.Name, ErrAlreadyExists)
	}
	if err != nil {
		return fmt.Errorf("create schedule %s: %w", s.Name, err)
	}
	return nil
}

// GetSchedule returns the named schedule with its calendars, or
// ErrNotFound.
func (r *Registry) GetSchedule(ctx context.Context, name string) (*Schedule, error) {
	return getSchedule(ctx, r.db, name)
}

// GetScheduleByID returns the schedule with the id, or ErrNotFound: events
// name their schedule by id, which stays when it is renamed.
func (r *Registry) GetScheduleByID(ctx context.Context, id string) (*Schedule, error) {
	return getScheduleWhere(ctx, r.db, "id", id)
}

func getSchedule(ctx context.Context, db bun.IDB, name string) (*Schedule, error) {
	return getScheduleWhere(ctx, db, "name", name)
}

func getScheduleWhere(ctx context.Context, db bun.IDB, column, name string) (*Schedule, error) {
	s := new(Schedule)
	err := db.NewSelect().Model(s).Where("? = ?", bun.Ident(column), name).Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("schedule %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get schedule %s: %w", name, err)
	}
	if err := loadScheduleCalendars(ctx, db, []*Schedule{s}); err != nil {
		return nil, err
	}
	return s, nil
}

// ScheduleFilter narrows ListSchedules; zero fields match everything.
type ScheduleFilter struct {
	WorkflowName string
}

// ListSchedules returns schedules by name, with their calendars.
func (r *Registry) ListSchedules(ctx context.Context, f ScheduleFilter, p Page) ([]*Schedule, string, error) {
	query := []any{"schedules", f.WorkflowName}
	after, err := decodePageToken(p.Token, query...)
	if err != nil {
		return nil, "", fmt.Errorf("list schedules: %w", err)
	}
	var list []*Schedule
	q := r.db.NewSelect().Model(&list)
	if f.WorkflowName != "" {
		q = q.Where("workflow_name = ?", f.WorkflowName)
	}
	if after != "" {
		q = q.Where("name > ?", after)
	}
	size := p.size()
	if err := q.OrderExpr("name ASC").Limit(int64(size + 1)).Scan(ctx); err != nil {
		return nil, "", fmt.Errorf("list schedules: %w", err)
	}
	next := ""
	if len(list) > size {
		list = list[:size]
		next = encodePageToken(list[size-1].Name, query...)
	}
	if err := loadScheduleCalendars(ctx, r.db, list); err != nil {
		return nil, "", err
	}
	return list, next, nil
}

// UpdateSchedule replaces the definition of the schedule named s.Name: all
// but its id, its creation and its last fire, which it fills into s. A
// fire held back under queue_one is dropped, since the definition that
// held it is gone. ErrNotFound when no schedule has the name or a calendar
// does not exist.
func (r *Registry) UpdateSchedule(ctx context.Context, s *Schedule, audit *AuditEvent) error {
	s.UpdatedAt = normalize(s.UpdatedAt)
	s.normalizeTimes()
	err := r.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		old, err := getSchedule(ctx, tx, s.Name)
		if err != nil {
			return err
		}
		if err := checkCalendars(ctx, tx, s.Calendars); err != nil {
			return err
		}
		s.ID, s.CreatedAt, s.CreatedBy = old.ID, old.CreatedAt, old.CreatedBy
		s.LastFireTime, s.LastJobID, s.QueuedFireTime = old.LastFireTime, old.LastJobID, nil
		if _, err := tx.NewUpdate().Model(s).WherePK().Exec(ctx); err != nil {
			return err
		}
		if err := writeScheduleCalendars(ctx, tx, s); err != nil {
			return err
		}
		return insertAudit(ctx, tx, audit)
	})
	if err != nil {
		return fmt.Errorf("update schedule %s: %w", s.Name, err)
	}
	return nil
}

// DeleteSchedule deletes the named schedule; its jobs stay. ErrNotFound
// when there is none.
func (r *Registry) DeleteSchedule(ctx context.Context, name string, audit *AuditEvent) error {
	err := r.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		res, err := tx.NewDelete().Model((*Schedule)(nil)).Where("name = ?", name).Exec(ctx)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("schedule %q: %w", name, ErrNotFound)
		}
		return insertAudit(ctx, tx, audit)
	})
	if err != nil {
		return fmt.Errorf("delete schedule %s: %w", name, err)
	}
	return nil
}

// SetSchedulePaused pauses or resumes the named schedule. next computes the
// next fire of a schedule resumed (nil when it never fires again) from the
// calendars it uses, read in the same transaction; a paused
// schedule has none, nor a fire held back. It returns the schedule as
// stored, or ErrNotFound.
func (r *Registry) SetSchedulePaused(ctx context.Context, name string, paused bool, next func(*Schedule, map[string]*Calendar) (*time.Time, error), audit *AuditEvent) (*Schedule, error) {
	var s *Schedule
	err := r.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var err error
		if s, err = getSchedule(ctx, tx, name); err != nil {
			return err
		}
		s.Paused = paused
		s.UpdatedAt = now()
		s.NextFireTime, s.QueuedFireTime = nil, nil
		if !paused {
			// Read within the transaction: on SQLite it holds the one
			// connection.
			cals, err := calendarsIn(ctx, tx, s.Calendars)
			if err != nil {
				return err
			}
			if s.NextFireTime, err = next(s, cals); err != nil {
				return err
			}
			s.NextFireTime = normalizePtr(s.NextFireTime)
		}
		if _, err := tx.NewUpdate().Model(s).Column("paused", "updated_at", "next_fire_time", "queued_fire_time").WherePK().Exec(ctx); err != nil {
			return err
		}
		return insertAudit(ctx, tx, audit)
	})
	if err != nil {
		return nil, fmt.Errorf("pause schedule %s: %w", name, err)
	}
	return s, nil
}

// DueSchedules returns up to limit schedules not paused whose next fire is
// at or before now, earliest first, with their calendars. It reads the
// schedules_due index: the cost is the number due, not the number stored.
func (r *Registry) DueSchedules(ctx context.Context, now time.Time, limit int) ([]*Schedule, error) {
	var list []*Schedule
	err := r.db.NewSelect().Model(&list).
		Where("NOT paused AND next_fire_time IS NOT NULL AND next_fire_time <= ?", now.UTC()).
		OrderExpr("next_fire_time ASC").Limit(int64(limit)).Scan(ctx)
	if err != nil {
		return nil, fmt.Errorf("due schedules: %w", err)
	}
	if err := loadScheduleCalendars(ctx, r.db, list); err != nil {
		return nil, err
	}
	return list, nil
}

// NextDueTime returns the earliest next fire of a schedule not paused, or
// nil when none will fire.
func (r *Registry) NextDueTime(ctx context.Context) (*time.Time, error) {
	var s Schedule
	err := r.db.NewSelect().Model(&s).Column("next_fire_time").
		Where("NOT paused AND next_fire_time IS NOT NULL").
		OrderExpr("next_fire_time ASC").Limit(1).Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("next due schedule: %w", err)
	}
	return s.NextFireTime, nil
}

// QueuedSchedules returns up to limit schedules not paused that hold back
// a fire (queue_one), with their calendars.
func (r *Registry) QueuedSchedules(ctx context.Context, limit int) ([]*Schedule, error) {
	var list []*Schedule
	err := r.db.NewSelect().Model(&list).
		Where("queued_fire_time IS NOT NULL AND NOT paused").
		OrderExpr("queued_fire_time ASC").Limit(int64(limit)).Scan(ctx)
	if err != nil {
		return nil, fmt.Errorf("queued schedules: %w", err)
	}
	if err := loadScheduleCalendars(ctx, r.db, list); err != nil {
		return nil, err
	}
	return list, nil
}

// ScheduleFired is what a scheduler records after handling the due fires
// of a schedule.
type ScheduleFired struct {
	ID string
	// UpdatedAt is the version of the definition the fires were computed
	// from: a schedule changed since (updated, paused) is left as the
	// change made it.
	UpdatedAt    time.Time
	NextFireTime *time.Time
	// LastFireTime and LastJobID, when LastJobID is set, name the job made.
	LastFireTime   *time.Time
	LastJobID      string
	QueuedFireTime *time.Time
	// Missed are the instants that went without a job because no
	// scheduler ran then and the misfire policy made none up; they become
	// one schedule.missed event, in the same commit.
	Missed []time.Time
}

// RecordSchedulesFired stores what handling the due fires of schedules
// came to, all in one transaction (on PostgreSQL one statement, whatever
// their number). A schedule changed or gone meanwhile keeps what the
// change wrote. It returns how many were stored.
func (r *Registry) RecordSchedulesFired(ctx context.Context, fired []ScheduleFired) (int, error) {
	if len(fired) == 0 {
		return 0, nil
	}
	missed := missedEvents(fired)
	if r.dialect == "postgres" {
		var c scheduleFiredColumns
		for i := range fired {
			c.add(&fired[i])
		}
		args := append([]any{pgx.QueryExecModeCacheStatement}, c.args()...)
		if len(missed) == 0 {
			res, err := r.db.DB.ExecContext(ctx, recordFiredQuery, args...)
			if err != nil {
				return 0, fmt.Errorf("record schedules fired: %w", err)
			}
			n, _ := res.RowsAffected()
			return int(n), nil
		}
		stored := 0
		err := r.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			res, err := tx.Tx.ExecContext(ctx, recordFiredQuery, args...)
			if err != nil {
				return err
			}
			n, _ := res.RowsAffected()
			stored = int(n)
			return AppendEvents(ctx, tx, missed...)
		})
		if err != nil {
			return 0, fmt.Errorf("record schedules fired: %w", err)
		}
		return stored, nil
	}
	stored := 0
	err := r.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		stored = 0
		for _, f := range fired {
			q := tx.NewUpdate().Model((*Schedule)(nil)).
				Set("next_fire_time = ?", normalizePtr(f.NextFireTime)).
				Set("queued_fire_time = ?", normalizePtr(f.QueuedFireTime))
			if f.LastJobID != "" {
				q = q.Set("last_fire_time = ?", normalizePtr(f.LastFireTime)).Set("last_job_id = ?", f.LastJobID)
			}
			res, err := q.Where("id = ? AND updated_at = ?", f.ID, f.UpdatedAt.UTC().Truncate(time.Microsecond)).Exec(ctx)
			if err != nil {
				return err
			}
			n, _ := res.RowsAffected()
			stored += int(n)
		}
		return AppendEvents(ctx, tx, missed...)
	})
	if err != nil {
		return 0, fmt.Errorf("record schedules fired: %w", err)
	}
	return stored, nil
}

// missedEvents are the schedule.missed events of fired: one a schedule,
// at its latest missed instant, keyed by its first so a pass that is
// repeated after a failure tells subscribers once.
func missedEvents(fired []ScheduleFired) []Event {
	var out []Event
	for _, f := range fired {
		if len(f.Missed) == 0 {
			continue
		}
		key := EventScheduleMissed + "/" + f.ID + "/" + f.Missed[0].UTC().Format(time.RFC3339Nano)
		out = append(out, Event{Type: EventScheduleMissed, ResourceKind: ResourceSchedule, ResourceID: f.ID,
			Time: f.Missed[len(f.Missed)-1], DedupeKey: &key})
	}
	return out
}

// RecordScheduleFired stores what handling the due fires of one schedule
// came to; see RecordSchedulesFired. It reports false when the schedule
// changed or went meanwhile.
func (r *Registry) RecordScheduleFired(ctx context.Context, f ScheduleFired) (bool, error) {
	n, err := r.RecordSchedulesFired(ctx, []ScheduleFired{f})
	return n == 1, err
}

// recordFiredQuery is RecordSchedulesFired's statement on PostgreSQL: the
// values go as one array a column, so its text is the same for every batch.
const recordFiredQuery = `UPDATE schedules AS s SET
	next_fire_time = f.next_fire_time,
	queued_fire_time = f.queued_fire_time,
	last_fire_time = CASE WHEN f.last_job_id <> '' THEN f.last_fire_time ELSE s.last_fire_time END,
	last_job_id = CASE WHEN f.last_job_id <> '' THEN f.last_job_id ELSE s.last_job_id END
FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[], $4::timestamptz[], $5::timestamptz[], $6::text[])
	AS f(id, updated_at, next_fire_time, queued_fire_time, last_fire_time, last_job_id)
WHERE s.id = f.id AND s.updated_at = f.updated_at`

type scheduleFiredColumns struct {
	id                     []string
	updatedAt              []time.Time
	next, queued, lastFire []*time.Time
	lastJobID              []string
}

func (c *scheduleFiredColumns) add(f *ScheduleFired) {
	c.id, c.updatedAt = append(c.id, f.ID), append(c.updatedAt, f.UpdatedAt.UTC().Truncate(time.Microsecond))
	c.next, c.queued = append(c.next, normalizePtr(f.NextFireTime)), append(c.queued, normalizePtr(f.QueuedFireTime))
	c.lastFire, c.lastJobID = append(c.lastFire, normalizePtr(f.LastFireTime)), append(c.lastJobID, f.LastJobID)
}

func (c *scheduleFiredColumns) args() []any {
	return []any{c.id, c.updatedAt, c.next, c.queued, c.lastFire, c.lastJobID}
}

// RecordScheduleTriggered names the job a "run now" made as the schedule's
// last, whatever its definition's version.
func (r *Registry) RecordScheduleTriggered(ctx context.Context, id string, at time.Time, jobID string) error {
	_, err := r.db.NewUpdate().Model((*Schedule)(nil)).
		Set("last_fire_time = ?", at.UTC().Truncate(time.Microsecond)).Set("last_job_id = ?", jobID).
		Where("id = ?", id).Exec(ctx)
	if err != nil {
		return fmt.Errorf("record schedule %s triggered: %w", id, err)
	}
	return nil
}

// JobStatuses returns the status of each of the jobs that exist.
func (r *Registry) JobStatuses(ctx context.Context, ids []string) (map[string]JobStatus, error) {
	out := make(map[string]JobStatus, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	for start := 0; start < len(ids); start += 500 {
		end := min(start+500, len(ids))
		var rows []Job
		if err := r.db.NewSelect().Model(&rows).Column("id", "status").Where("id IN (?)", bun.In(ids[start:end])).Scan(ctx); err != nil {
			return nil, fmt.Errorf("job statuses: %w", err)
		}
		for _, j := range rows {
			out[j.ID] = j.Status
		}
	}
	return out, nil
}

// CreateCalendar stores c with the audit event. ErrAlreadyExists when a
// calendar has the name.
func (r *Registry) CreateCalendar(ctx context.Context, c *Calendar, audit *AuditEvent) error {
	c.CreatedAt = normalize(c.CreatedAt)
	c.UpdatedAt = c.CreatedAt
	err := r.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.NewInsert().Model(c).Exec(ctx); err != nil {
			return err
		}
		return insertAudit(ctx, tx, audit)
	})
	if isUniqueViolation(err) {
		return fmt.Errorf("calendar %q: %w", c.Name, ErrAlreadyExists)
	}
	if err != nil {
		return fmt.Errorf("create calendar %s: %w", c.Name, err)
	}
	return nil
}

// GetCalendar returns the named calendar or ErrNotFound.
func (r *Registry) GetCalendar(ctx context.Context, name string) (*Calendar, error) {
	c := new(Calendar)
	err := r.db.NewSelect().Model(c).Where("name = ?", name).Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("calendar %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get calendar %s: %w", name, err)
	}
	return c, nil
}

// GetCalendars returns the named calendars by name; ErrNotFound names the
// first missing.
func (r *Registry) GetCalendars(ctx context.Context, names []string) (map[string]*Calendar, error) {
	return calendarsIn(ctx, r.db, names)
}

func calendarsIn(ctx context.Context, db bun.IDB, names []string) (map[string]*Calendar, error) {
	out := make(map[string]*Calendar, len(names))
	if len(names) == 0 {
		return out, nil
	}
	var list []*Calendar
	if err := db.NewSelect().Model(&list).Where("name IN (?)", bun.In(names)).Scan(ctx); err != nil {
		return nil, fmt.Errorf("get calendars: %w", err)
	}
	for _, c := range list {
		out[c.Name] = c
	}
	for _, n := range names {
		if out[n] == nil {
			return nil, fmt.Errorf("calendar %q: %w", n, ErrNotFound)
		}
	}
	return out, nil
}

// ListCalendars returns calendars by name.
func (r *Registry) ListCalendars(ctx context.Context, p Page) ([]*Calendar, string, error) {
	after, err := decodePageToken(p.Token, "calendars")
	if err != nil {
		return nil, "", fmt.Errorf("list calendars: %w", err)
	}
	var list []*Calendar
	q := r.db.NewSelect().Model(&list)
	if after != "" {
		q = q.Where("name > ?", after)
	}
	size := p.size()
	if err := q.OrderExpr("name ASC").Limit(int64(size + 1)).Scan(ctx); err != nil {
		return nil, "", fmt.Errorf("list calendars: %w", err)
	}
	next := ""
	if len(list) > size {
		list = list[:size]
		next = encodePageToken(list[size-1].Name, "calendars")
	}
	return list, next, nil
}

// UpdateCalendar replaces the calendar named c.Name and, in the same
// transaction, sets the next fire of every schedule using it (not paused)
// to what next computes with the new calendar. An error of next (the
// calendar would leave a schedule no fire) undoes it all. ErrNotFound when
// no calendar has the name.
func (r *Registry) UpdateCalendar(ctx context.Context, c *Calendar, next func(*Schedule, map[string]*Calendar) (*time.Time, error), audit *AuditEvent) error {
	c.UpdatedAt = normalize(c.UpdatedAt)
	err := r.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		old := new(Calendar)
		err := tx.NewSelect().Model(old).Where("name = ?", c.Name).Scan(ctx)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("calendar %q: %w", c.Name, ErrNotFound)
		}
		if err != nil {
			return err
		}
		c.CreatedAt, c.CreatedBy = old.CreatedAt, old.CreatedBy
		if _, err := tx.NewUpdate().Model(c).WherePK().Exec(ctx); err != nil {
			return err
		}
		var users []*Schedule
		err = tx.NewSelect().Model(&users).
			Where("id IN (SELECT schedule_id FROM schedule_calendars WHERE calendar_name = ?)", c.Name).
			Where("NOT paused").Scan(ctx)
		if err != nil {
			return err
		}
		if err := loadScheduleCalendars(ctx, tx, users); err != nil {
			return err
		}
		var names []string
		for _, s := range users {
			names = append(names, s.Calendars...)
		}
		cals := map[string]*Calendar{}
		if len(names) > 0 {
			var list []*Calendar
			if err := tx.NewSelect().Model(&list).Where("name IN (?)", bun.In(names)).Scan(ctx); err != nil {
				return err
			}
			for _, cal := range list {
				cals[cal.Name] = cal
			}
		}
		cals[c.Name] = c
		for _, s := range users {
			n, err := next(s, cals)
			if err != nil {
				return err
			}
			// The version changes with the definition the fire is
			// computed from, so a scheduler that read the old one does
			// not write over it.
			_, err = tx.NewUpdate().Model((*Schedule)(nil)).
				Set("next_fire_time = ?", normalizePtr(n)).Set("updated_at = ?", c.UpdatedAt).
				Where("id = ?", s.ID).Exec(ctx)
			if err != nil {
				return err
			}
		}
		return insertAudit(ctx, tx, audit)
	})
	if err != nil {
		return fmt.Errorf("update calendar %s: %w", c.Name, err)
	}
	return nil
}

// DeleteCalendar deletes the named calendar. ErrNotFound when there is
// none; ErrConflict naming the schedules that use it.
func (r *Registry) DeleteCalendar(ctx context.Context, name string, audit *AuditEvent) error {
	err := r.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var users []string
		err := tx.NewSelect().Model((*Schedule)(nil)).Column("name").
			Where("id IN (SELECT schedule_id FROM schedule_calendars WHERE calendar_name = ?)", name).
			OrderExpr("name").Limit(6).Scan(ctx, &users)
		if err != nil {
			return err
		}
		if len(users) > 0 {
			list := strings.Join(users[:min(len(users), 5)], ", ")
			if len(users) > 5 {
				list += ", …"
			}
			return fmt.Errorf("calendar %q is used by schedules %s; remove it from them first: %w", name, list, ErrConflict)
		}
		res, err := tx.NewDelete().Model((*Calendar)(nil)).Where("name = ?", name).Exec(ctx)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("calendar %q: %w", name, ErrNotFound)
		}
		return insertAudit(ctx, tx, audit)
	})
	if errors.Is(err, ErrConflict) {
		return err
	}
	if err != nil {
		return fmt.Errorf("delete calendar %s: %w", name, err)
	}
	return nil
}
