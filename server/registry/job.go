package registry

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/uptrace/bun"
)

// CreateJob inserts job, its first event and the audit event (when not nil)
// in one transaction. When job.IdempotencyKey is set and a job with that key
// exists, it writes nothing and returns that job with existing true; two
// concurrent submits with one key yield one job.
func (r *Registry) CreateJob(ctx context.Context, job *Job, audit *AuditEvent) (saved *Job, existing bool, err error) {
	job.CreatedAt = normalize(job.CreatedAt)
	job.UpdatedAt = job.CreatedAt
	if job.IdempotencyKey == nil && r.inserter != nil {
		return job, false, r.inserter.insert(ctx, job, audit)
	}
	err = r.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		insert := tx.NewInsert().Model(job)
		if job.IdempotencyKey != nil {
			insert = insert.On("CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING")
		}
		res, err := insert.Exec(ctx)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			existing = true
			return nil
		}
		if _, err := tx.NewInsert().Model(firstEvent(job)).Exec(ctx); err != nil {
			return err
		}
		return insertAudit(ctx, tx, audit)
	})
	if err != nil {
		return nil, false, fmt.Errorf("create job: %w", err)
	}
	if !existing {
		return job, false, nil
	}
	found := new(Job)
	err = r.db.NewSelect().Model(found).Where("idempotency_key = ?", *job.IdempotencyKey).Scan(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("create job: read the job with idempotency key %q: %w", *job.IdempotencyKey, err)
	}
	return found, true, nil
}

func firstEvent(job *Job) *JobEvent {
	return &JobEvent{
		JobID:    job.ID,
		Time:     job.CreatedAt,
		ToStatus: job.Status,
		Attempt:  job.Attempt,
		Reason:   "submitted",
		Actor:    job.CreatedBy,
	}
}

// GetJob returns the job with the id, or ErrNotFound.
func (r *Registry) GetJob(ctx context.Context, id string) (*Job, error) {
	job := new(Job)
	err := r.db.NewSelect().Model(job).Where("id = ?", id).Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("get job %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get job %s: %w", id, err)
	}
	return job, nil
}

// JobEvents returns the job's events, oldest first.
func (r *Registry) JobEvents(ctx context.Context, jobID string) ([]JobEvent, error) {
	var events []JobEvent
	err := r.db.NewSelect().Model(&events).Where("job_id = ?", jobID).OrderExpr("id ASC").Scan(ctx)
	if err != nil {
		return nil, fmt.Errorf("job events %s: %w", jobID, err)
	}
	return events, nil
}

// JobFilter narrows ListJobs; zero fields match everything.
type JobFilter struct {
	Statuses     []JobStatus
	WorkflowName string
	RobotID      string
}

// ListJobs returns jobs newest first. nextToken is "" on the last page; a
// token from another filter gives ErrInvalidPageToken.
func (r *Registry) ListJobs(ctx context.Context, f JobFilter, p Page) (jobs []Job, nextToken string, err error) {
	statuses := slices.Clone(f.Statuses)
	slices.Sort(statuses)
	query := []any{"jobs", statuses, f.WorkflowName, f.RobotID}
	after, err := decodePageToken(p.Token, query...)
	if err != nil {
		return nil, "", fmt.Errorf("list jobs: %w", err)
	}
	q := r.db.NewSelect().Model(&jobs)
	if len(statuses) > 0 {
		q = q.Where("status IN (?)", bun.In(statuses))
	}
	if f.WorkflowName != "" {
		q = q.Where("workflow_name = ?", f.WorkflowName)
	}
	if f.RobotID != "" {
		q = q.Where("robot_id = ?", f.RobotID)
	}
	if after != "" {
		q = q.Where("id < ?", after)
	}
	size := p.size()
	if err := q.OrderExpr("id DESC").Limit(int64(size + 1)).Scan(ctx); err != nil {
		return nil, "", fmt.Errorf("list jobs: %w", err)
	}
	if len(jobs) > size {
		jobs = jobs[:size]
		nextToken = encodePageToken(jobs[size-1].ID, query...)
	}
	return jobs, nextToken, nil
}

// Transition is a change of a job's status; see TransitionJob.
type Transition struct {
	JobID string
	// From lists the statuses the job may be in for the change to apply.
	From []JobStatus
	// Attempt, when not zero, fences the change: it applies only while the
	// job is on that attempt, so news about a superseded attempt is ignored.
	Attempt int32
	// Robot, when not empty, fences the change to the job's robot: a robot
	// the job was taken from cannot move it.
	Robot string
	To    JobStatus
	// NextAttempt starts the next attempt (a job sent back for another robot).
	NextAttempt bool
	// RobotID, when not nil, becomes the job's robot.
	RobotID *string
	// Message is the new status message.
	Message string
	// Reason and Actor go to the job event.
	Reason string
	Actor  string
	// Result, when not nil, becomes the job's result.
	Result *string
	// Now is the time of the change; zero means now.
	Now time.Time
}

// TransitionJob applies t with its job event and audit event in one
// transaction, and returns the updated job. When the job is not in one of
// t.From or not on t.Attempt, it changes nothing and returns the job as it
// is together with an error wrapping ErrConflict. ErrNotFound when there is
// no such job.
func (r *Registry) TransitionJob(ctx context.Context, t Transition, audit *AuditEvent) (*Job, error) {
	// The message and reason are made of what robots report and what jobs
	// require; a character a text column cannot hold must not keep a job
	// from moving on.
	t.Message, t.Reason = CleanText(t.Message), CleanText(t.Reason)
	at := normalize(t.Now)
	job, err := r.transitionJob(ctx, t, at, audit)
	if err == nil && t.To.Finished() && r.jobFinished != nil {
		r.jobFinished(job)
	}
	return job, err
}

func (r *Registry) transitionJob(ctx context.Context, t Transition, at time.Time, audit *AuditEvent) (*Job, error) {
	if r.dialect == "postgres" && audit == nil {
		return r.transitionInOneStatement(ctx, t, at)
	}
	job := new(Job)
	var conflict error
	err := r.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if err := r.lockRow(ctx, tx.NewSelect().Model(job).Where("id = ?", t.JobID)); err != nil {
			return err
		}
		if conflict = t.conflict(job); conflict != nil {
			return nil
		}
		from := job.Status
		job.Status = t.To
		job.StatusMessage = t.Message
		job.UpdatedAt = at
		if t.NextAttempt {
			job.Attempt++
		}
		if t.NextAttempt || t.To == JobPending || t.To == JobAssigned {
			// A new start: nothing of an earlier try's progress holds.
			job.Progress, job.CurrentStep = 0, ""
		}
		if t.RobotID != nil {
			job.RobotID = *t.RobotID
		}
		if t.Result != nil {
			job.Result = *t.Result
		}
		if t.To == JobRunning && job.StartedAt == nil {
			job.StartedAt = &at
		}
		if t.To.Finished() {
			job.FinishedAt = &at
		}
		if t.To == JobSucceeded {
			// Progress reports are thinned out on the way; a job that
			// succeeded went all the way.
			job.Progress = 100
		}
		// Only what a transition changes: the row also holds the workflow,
		// which need not be written again.
		if _, err := tx.NewUpdate().Model(job).Column(transitionColumns...).WherePK().Exec(ctx); err != nil {
			return err
		}
		event := &JobEvent{
			JobID:      job.ID,
			Time:       at,
			FromStatus: from,
			ToStatus:   t.To,
			Attempt:    job.Attempt,
			RobotID:    job.RobotID,
			Reason:     t.Reason,
			Actor:      t.Actor,
		}
		if _, err := tx.NewInsert().Model(event).Exec(ctx); err != nil {
			return err
		}
		return insertAudit(ctx, tx, audit)
	})
	if err != nil {
		return nil, fmt.Errorf("transition job %s to %s: %w", t.JobID, t.To, err)
	}
	if conflict != nil {
		return job, conflict
	}
	return job, nil
}

// lockRow reads the row q selects, locked until the transaction ends on
// PostgreSQL (SQLite lets one writer in at a time anyway); ErrNotFound
// when there is none.
func (r *Registry) lockRow(ctx context.Context, q *bun.SelectQuery) error {
	if r.dialect == "postgres" {
		q = q.For("UPDATE")
	}
	if err := q.Scan(ctx); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		return err
	}
	return nil
}

// transitionColumns are the columns a transition may change.
var transitionColumns = []string{
	"status", "status_message", "updated_at", "attempt", "progress", "current_step",
	"robot_id", "result", "started_at", "finished_at",
}

// conflict says why t does not apply to job as it is, or nil when it does.
func (t Transition) conflict(job *Job) error {
	switch {
	case !slices.Contains(t.From, job.Status):
		return fmt.Errorf("job %s is %s: %w", job.ID, job.Status, ErrConflict)
	case t.Attempt != 0 && t.Attempt != job.Attempt:
		return fmt.Errorf("job %s is on attempt %d, not %d: %w", job.ID, job.Attempt, t.Attempt, ErrConflict)
	case t.Robot != "" && t.Robot != job.RobotID:
		return fmt.Errorf("job %s is on robot %q, not %q: %w", job.ID, job.RobotID, t.Robot, ErrConflict)
	}
	return nil
}

// transitionInOneStatement applies t on PostgreSQL with one statement: the
// fenced update and the job event together, in one round trip. Every job
// makes three transitions on its way (assigned, running, ended), and as a
// transaction of select, update and insert each would cost five round
// trips. The rules are those of the transaction SQLite uses.
func (r *Registry) transitionInOneStatement(ctx context.Context, t Transition, at time.Time) (*Job, error) {
	set := []string{"status = ?", "status_message = ?", "updated_at = ?"}
	args := []any{t.JobID, t.To, t.Message, at}
	if t.NextAttempt {
		set = append(set, "attempt = j.attempt + 1")
	}
	if t.NextAttempt || t.To == JobPending || t.To == JobAssigned {
		set = append(set, "progress = 0", "current_step = ''")
	}
	if t.RobotID != nil {
		set = append(set, "robot_id = ?")
		args = append(args, *t.RobotID)
	}
	if t.Result != nil {
		set = append(set, "result = ?")
		args = append(args, *t.Result)
	}
	if t.To == JobRunning {
		set = append(set, "started_at = COALESCE(j.started_at, ?)")
		args = append(args, at)
	}
	if t.To.Finished() {
		set = append(set, "finished_at = ?")
		args = append(args, at)
	}
	if t.To == JobSucceeded {
		set = append(set, "progress = 100")
	}
	where := "j.id = old.id AND old.status IN (?)"
	args = append(args, bun.In(t.From))
	if t.Attempt != 0 {
		where += " AND old.attempt = ?"
		args = append(args, t.Attempt)
	}
	if t.Robot != "" {
		where += " AND old.robot_id = ?"
		args = append(args, t.Robot)
	}
	args = append(args, at, t.Reason, t.Actor)
	query := `WITH old AS (SELECT id, status, attempt, robot_id FROM jobs WHERE id = ? FOR UPDATE),
upd AS (UPDATE jobs AS j SET ` + strings.Join(set, ", ") + ` FROM old WHERE ` + where + `
	RETURNING j.*, old.status AS from_status),
event AS (INSERT INTO job_events (job_id, time, from_status, to_status, attempt, robot_id, reason, actor)
	SELECT id, ?, from_status, status, attempt, robot_id, ?, ? FROM upd)
SELECT * FROM upd`
	var row struct {
		Job        `bun:",extend"`
		FromStatus JobStatus `bun:"from_status"`
	}
	err := r.db.NewRaw(query, args...).Scan(ctx, &row)
	if errors.Is(err, sql.ErrNoRows) {
		// Nothing changed: say why, from the job as it is now.
		job, err := r.GetJob(ctx, t.JobID)
		if err != nil {
			return nil, err
		}
		if conflict := t.conflict(job); conflict != nil {
			return job, conflict
		}
		// It moved into place in between; a caller retrying would be
		// acting on news older than the change that did that.
		return job, fmt.Errorf("job %s changed while it was being moved: %w", job.ID, ErrConflict)
	}
	if err != nil {
		return nil, fmt.Errorf("transition job %s to %s: %w", t.JobID, t.To, err)
	}
	return &row.Job, nil
}

// PendingJob is a pending job as the reconciler needs it.
type PendingJob struct {
	ID       string
	Attempt  int32
	Priority Priority
}

// PendingJobs returns up to limit pending jobs with ids after afterID, in id
// order.
func (r *Registry) PendingJobs(ctx context.Context, afterID string, limit int) ([]PendingJob, error) {
	var out []PendingJob
	q := r.db.NewSelect().Model((*Job)(nil)).Column("id", "attempt", "priority").Where("status = ?", JobPending)
	if afterID != "" {
		q = q.Where("id > ?", afterID)
	}
	if err := q.OrderExpr("id ASC").Limit(int64(limit)).Scan(ctx, &out); err != nil {
		return nil, fmt.Errorf("pending jobs: %w", err)
	}
	return out, nil
}
