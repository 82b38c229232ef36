package registry

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/uptrace/bun"
)

// ActiveStatuses are the statuses of a job a robot holds.
var ActiveStatuses = []JobStatus{JobAssigned, JobRunning}

// ProgressNote is how far an attempt of a job got.
type ProgressNote struct {
	JobID   string
	Attempt int32
	RobotID string
	// From lists the statuses the job may be in for the note to apply.
	From    []JobStatus
	Percent int32
	Step    string
}

// SetJobProgress records how far an attempt got. It changes nothing when
// the job has moved on from that attempt on that robot or is in none of
// p.From, and reports whether it changed the job. Notes of many jobs share
// one statement and one commit.
func (r *Registry) SetJobProgress(ctx context.Context, p ProgressNote) (bool, error) {
	res := r.progress.do(ctx, p)
	return res.changed, res.err
}

type progressResult struct {
	changed bool
	err     error
}

// progressBatch writes progress notes of distinct jobs: one statement on
// PostgreSQL, one transaction on SQLite.
func (r *Registry) progressBatch(ctx context.Context, notes []ProgressNote) []progressResult {
	out := make([]progressResult, len(notes))
	at := now()
	changed := map[string]bool{}
	var err error
	if r.dialect == "postgres" {
		err = r.progressStatement(ctx, notes, at, changed)
	} else {
		err = r.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			for _, p := range notes {
				res, err := tx.NewUpdate().Model((*Job)(nil)).
					Set("progress = ?", p.Percent).
					Set("current_step = ?", CleanText(p.Step)).
					Set("updated_at = ?", at).
					Where("id = ?", p.JobID).Where("attempt = ?", p.Attempt).Where("robot_id = ?", p.RobotID).
					Where("status IN (?)", bun.In(p.From)).
					Exec(ctx)
				if err != nil {
					return err
				}
				if n, _ := res.RowsAffected(); n > 0 {
					changed[p.JobID] = true
				}
			}
			return nil
		})
	}
	for i, p := range notes {
		if err != nil {
			out[i].err = fmt.Errorf("set progress of job %s: %w", p.JobID, err)
			continue
		}
		out[i].changed = changed[p.JobID]
	}
	return out
}

func (r *Registry) progressStatement(ctx context.Context, notes []ProgressNote, at time.Time, changed map[string]bool) error {
	var values strings.Builder
	args := make([]any, 0, len(notes)*6+1)
	for i, p := range notes {
		if i > 0 {
			values.WriteString(", ")
		}
		values.WriteString("(?::text, ?::int, ?::text, ?::text, ?::int, ?::text)")
		from := make([]string, len(p.From))
		for k, s := range p.From {
			from[k] = string(s)
		}
		args = append(args, p.JobID, p.Attempt, p.RobotID, strings.Join(from, ","), p.Percent, CleanText(p.Step))
	}
	args = append(args, at)
	var ids []string
	// The rows are locked in id order first, as a batch of transitions
	// locks them: two batches that lock the same rows in different orders
	// would deadlock.
	err := r.db.NewRaw(`WITH v (id, attempt, robot_id, from_statuses, percent, step) AS (VALUES `+values.String()+`),
locked AS (SELECT j.id FROM jobs AS j JOIN v ON v.id = j.id ORDER BY j.id FOR UPDATE OF j)
UPDATE jobs AS j SET progress = v.percent, current_step = v.step, updated_at = ?::timestamptz
	FROM v, locked
	WHERE j.id = v.id AND locked.id = j.id AND j.attempt = v.attempt AND j.robot_id = v.robot_id
		AND j.status = ANY (string_to_array(v.from_statuses, ','))
	RETURNING j.id`, args...).Scan(ctx, &ids)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	for _, id := range ids {
		changed[id] = true
	}
	return nil
}

// SetPendingMessage says in a pending job's status message what it waits
// for. It reports whether the message changed.
func (r *Registry) SetPendingMessage(ctx context.Context, jobID string, attempt int32, message string) (bool, error) {
	message = CleanText(message)
	res, err := r.db.NewUpdate().Model((*Job)(nil)).
		Set("status_message = ?", message).
		Set("updated_at = ?", now()).
		Where("id = ?", jobID).Where("attempt = ?", attempt).
		Where("status = ?", JobPending).Where("status_message <> ?", message).
		Exec(ctx)
	if err != nil {
		return false, fmt.Errorf("set status message of job %s: %w", jobID, err)
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}

// ActiveJobs returns the jobs assigned to or running on the robot.
func (r *Registry) ActiveJobs(ctx context.Context, robotID string) ([]Job, error) {
	var jobs []Job
	err := r.db.NewSelect().Model(&jobs).
		Where("robot_id = ?", robotID).Where("status IN (?)", bun.In(ActiveStatuses)).
		OrderExpr("id ASC").Scan(ctx)
	if err != nil {
		return nil, fmt.Errorf("active jobs of robot %s: %w", robotID, err)
	}
	return jobs, nil
}

// ActiveJobIDs returns the jobs each robot holds (assigned or running), in
// id order, for the robots named, or for every robot when none is named.
// A robot that holds none is absent.
func (r *Registry) ActiveJobIDs(ctx context.Context, robotIDs ...string) (map[string][]string, error) {
	var rows []struct {
		ID      string `bun:"id"`
		RobotID string `bun:"robot_id"`
	}
	q := r.db.NewSelect().Model((*Job)(nil)).Column("id", "robot_id").
		Where("status IN (?)", bun.In(ActiveStatuses)).Where("robot_id <> ''").OrderExpr("id ASC")
	if len(robotIDs) > 0 {
		q = q.Where("robot_id IN (?)", bun.In(robotIDs))
	}
	if err := q.Scan(ctx, &rows); err != nil {
		return nil, fmt.Errorf("list the jobs robots hold: %w", err)
	}
	out := map[string][]string{}
	for _, row := range rows {
		out[row.RobotID] = append(out[row.RobotID], row.ID)
	}
	return out, nil
}

// ActiveJobCounts returns how many jobs each robot holds.
func (r *Registry) ActiveJobCounts(ctx context.Context) (map[string]int, error) {
	var rows []struct {
		RobotID string `bun:"robot_id"`
		N       int    `bun:"n"`
	}
	err := r.db.NewSelect().Model((*Job)(nil)).ColumnExpr("robot_id, count(*) AS n").
		Where("status IN (?)", bun.In(ActiveStatuses)).Group("robot_id").Scan(ctx, &rows)
	if err != nil {
		return nil, fmt.Errorf("count active jobs: %w", err)
	}
	out := make(map[string]int, len(rows))
	for _, row := range rows {
		out[row.RobotID] = row.N
	}
	return out, nil
}

// OrphanedJobs returns up to limit jobs held by robots that have not been
// seen since staleBefore, or that no longer exist: their control plane
// replica is gone, or they are, and nobody else will end those jobs.
func (r *Registry) OrphanedJobs(ctx context.Context, staleBefore time.Time, limit int) ([]Job, error) {
	var jobs []Job
	stale := normalize(staleBefore)
	err := r.db.NewSelect().Model(&jobs).
		Where("status IN (?)", bun.In(ActiveStatuses)).
		Where("updated_at < ?", stale).
		Where("NOT EXISTS (SELECT 1 FROM robots WHERE robots.id = job.robot_id AND robots.status <> 'offline' AND robots.last_seen >= ?)", stale).
		OrderExpr("id ASC").Limit(int64(limit)).Scan(ctx)
	if err != nil {
		return nil, fmt.Errorf("orphaned jobs: %w", err)
	}
	return jobs, nil
}

// AppendJobLogs stores log lines; a line stored before is skipped. Text a
// column cannot hold is stored as CleanText makes it.
func (r *Registry) AppendJobLogs(ctx context.Context, lines []JobLog) error {
	if len(lines) == 0 {
		return nil
	}
	for i := range lines {
		l := &lines[i]
		l.Time = normalize(l.Time)
		l.Level, l.StepID, l.Message = CleanText(l.Level), CleanText(l.StepID), CleanText(l.Message)
	}
	_, err := r.db.NewInsert().Model(&lines).ExcludeColumn("id").
		On("CONFLICT (job_id, attempt, line) DO NOTHING").Returning("NULL").Exec(ctx)
	if err != nil {
		return fmt.Errorf("store log lines of job %s: %w", lines[0].JobID, err)
	}
	return nil
}

// JobLogs returns up to limit of a job's log lines after the id afterID,
// in order.
func (r *Registry) JobLogs(ctx context.Context, jobID string, afterID int64, limit int) ([]JobLog, error) {
	var lines []JobLog
	err := r.db.NewSelect().Model(&lines).Where("job_id = ?", jobID).Where("id > ?", afterID).
		OrderExpr("id ASC").Limit(int64(limit)).Scan(ctx)
	if err != nil {
		return nil, fmt.Errorf("log of job %s: %w", jobID, err)
	}
	return lines, nil
}

// ListAllRobots returns every enrolled robot, by name.
func (r *Registry) ListAllRobots(ctx context.Context) ([]Robot, error) {
	var robots []Robot
	if err := r.db.NewSelect().Model(&robots).OrderExpr("name ASC").Scan(ctx); err != nil {
		return nil, fmt.Errorf("list robots: %w", err)
	}
	return robots, nil
}

// PendingCounts counts the pending jobs by priority.
func (r *Registry) PendingCounts(ctx context.Context) (map[Priority]int, error) {
	var rows []struct {
		Priority Priority `bun:"priority"`
		N        int      `bun:"n"`
	}
	err := r.db.NewSelect().Model((*Job)(nil)).ColumnExpr("priority, count(*) AS n").
		Where("status = ?", JobPending).Group("priority").Scan(ctx, &rows)
	if err != nil {
		return nil, fmt.Errorf("count pending jobs: %w", err)
	}
	out := make(map[Priority]int, len(rows))
	for _, row := range rows {
		out[row.Priority] = row.N
	}
	return out, nil
}

// CountJobLogs returns how many log lines of the attempt are stored.
func (r *Registry) CountJobLogs(ctx context.Context, jobID string, attempt int32) (int64, error) {
	n, err := r.db.NewSelect().Model((*JobLog)(nil)).Where("job_id = ?", jobID).Where("attempt = ?", attempt).Count(ctx)
	if err != nil {
		return 0, fmt.Errorf("count log lines of job %s: %w", jobID, err)
	}
	return int64(n), nil
}
