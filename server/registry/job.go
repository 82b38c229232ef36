package registry

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/uptrace/bun"
)

// CreateJob inserts job, its first event and the audit event (when not nil)
// in one transaction. When job.IdempotencyKey is set and a job with that key
// exists, it writes nothing and returns that job with existing true; two
// concurrent submits with one key yield one job.
func (r *Registry) CreateJob(ctx context.Context, job *Job, audit *AuditEvent) (saved *Job, existing bool, err error) {
	job.CreatedAt = normalize(job.CreatedAt)
	job.UpdatedAt = job.CreatedAt
	if r.inserter != nil {
		existing, err = r.inserter.insert(ctx, job, audit)
		if err != nil {
			return nil, false, err
		}
		if !existing {
			return job, false, nil
		}
		return r.jobByIdempotencyKey(ctx, *job.IdempotencyKey)
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
	return r.jobByIdempotencyKey(ctx, *job.IdempotencyKey)
}

// jobByIdempotencyKey returns the job a submit with key found already made.
func (r *Registry) jobByIdempotencyKey(ctx context.Context, key string) (*Job, bool, error) {
	found := new(Job)
	err := r.db.NewSelect().Model(found).Where("idempotency_key = ?", key).Scan(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("create job: read the job with idempotency key %q: %w", key, err)
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
// no such job. Transitions without an audit event share a commit with the
// others in flight (see TransitionJobs).
func (r *Registry) TransitionJob(ctx context.Context, t Transition, audit *AuditEvent) (*Job, error) {
	if audit == nil {
		// The batch tells jobFinished itself (see transitionBatch).
		res := r.transitions.do(ctx, t)
		return res.Job, res.Err
	}
	t.clean()
	at := normalize(t.Now)
	job := new(Job)
	var conflict error
	err := r.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var err error
		conflict, err = r.transitionInTx(ctx, tx, t, at, job)
		if err != nil || conflict != nil {
			return err
		}
		if err := appendJobEvents(ctx, tx, job); err != nil {
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
	r.heardFinished(job)
	return job, nil
}

// heardFinished tells jobFinished of a job a transition just ended.
func (r *Registry) heardFinished(job *Job) {
	if r.jobFinished != nil && job != nil && job.Status.Finished() {
		r.jobFinished(job)
	}
}

// TransitionResult is what became of one transition of TransitionJobs.
type TransitionResult struct {
	// Job is the job after the transition, or as it is when refused.
	Job *Job
	// Err wraps ErrConflict when the job was not in the state the
	// transition requires, ErrNotFound when there is no such job.
	Err error
}

// TransitionJobs applies transitions of many jobs with one statement and
// one commit on PostgreSQL, one transaction on SQLite, each fenced as
// TransitionJob fences it and each writing its job event: a member that is
// refused changes nothing and leaves the others to apply. Transitions of
// one job apply in order, each in a commit of its own.
func (r *Registry) TransitionJobs(ctx context.Context, ts []Transition) []TransitionResult {
	out := make([]TransitionResult, len(ts))
	rest := make([]int, len(ts))
	for i := range ts {
		rest[i] = i
	}
	for len(rest) > 0 {
		seen := map[string]bool{}
		var round, later []int
		for _, i := range rest {
			if seen[ts[i].JobID] {
				later = append(later, i)
				continue
			}
			seen[ts[i].JobID] = true
			round = append(round, i)
		}
		batch := make([]Transition, len(round))
		for k, i := range round {
			batch[k] = ts[i]
		}
		for k, res := range r.transitionBatch(ctx, batch) {
			out[round[k]] = res
		}
		rest = later
	}
	return out
}

// transitionBatch applies transitions of distinct jobs together. Should
// the batch fail as a whole (a row no column can hold, say), each is tried
// on its own, so one cannot fail the others.
func (r *Registry) transitionBatch(ctx context.Context, ts []Transition) []TransitionResult {
	for i := range ts {
		ts[i].clean()
	}
	var out []TransitionResult
	var err error
	if r.dialect == "postgres" {
		out, err = r.transitionStatement(ctx, ts)
	} else {
		out, err = r.transitionTx(ctx, ts)
	}
	if err == nil {
		for _, res := range out {
			if res.Err == nil {
				r.heardFinished(res.Job)
			}
		}
		return out
	}
	out = make([]TransitionResult, len(ts))
	for i, t := range ts {
		if len(ts) == 1 {
			out[i] = TransitionResult{Err: fmt.Errorf("transition job %s to %s: %w", t.JobID, t.To, err)}
			continue
		}
		out[i] = r.transitionBatch(ctx, []Transition{t})[0]
	}
	return out
}

// clean makes the text of t storable: the message and reason are made of
// what robots report and what jobs require, and a character a text column
// cannot hold must not keep a job from moving on.
func (t *Transition) clean() {
	t.Message, t.Reason = CleanText(t.Message), CleanText(t.Reason)
}

// transitionTx applies the transitions in one transaction: SQLite lets
// one writer in at a time, so the statements cost little; the commit is
// what costs.
func (r *Registry) transitionTx(ctx context.Context, ts []Transition) ([]TransitionResult, error) {
	out := make([]TransitionResult, len(ts))
	err := r.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var applied []*Job
		for i, t := range ts {
			job := new(Job)
			conflict, err := r.transitionInTx(ctx, tx, t, normalize(t.Now), job)
			switch {
			case errors.Is(err, ErrNotFound):
				out[i] = TransitionResult{Err: fmt.Errorf("transition job %s to %s: %w", t.JobID, t.To, err)}
			case err != nil:
				return err
			default:
				out[i] = TransitionResult{Job: job, Err: conflict}
				if conflict == nil {
					applied = append(applied, job)
				}
			}
		}
		// The events of the jobs that ended, with one read of the
		// subscriptions for the batch.
		return appendJobEvents(ctx, tx, applied...)
	})
	return out, err
}

// transitionInTx applies t in tx to the job it reads into job. It returns
// the conflict, changing nothing, when t does not apply to the job as it is.
func (r *Registry) transitionInTx(ctx context.Context, tx bun.Tx, t Transition, at time.Time, job *Job) (conflict error, err error) {
	if err := r.lockRow(ctx, tx.NewSelect().Model(job).Where("id = ?", t.JobID)); err != nil {
		return nil, err
	}
	if conflict = t.conflict(job); conflict != nil {
		return conflict, nil
	}
	from, fromAttempt := job.Status, job.Attempt
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
		return nil, err
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
		return nil, err
	}
	if attemptEnded(from, fromAttempt, job) {
		// Items the attempt still holds are let go with the transition,
		// in its commit, so none waits on an attempt that is over.
		if _, err := r.abandonHeld(ctx, tx, job.ID, fromAttempt, at, "the job's attempt ended: "+string(job.Status)); err != nil {
			return nil, err
		}
	}
	return nil, nil
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

// transitionStatement applies transitions of distinct jobs on PostgreSQL
// with one statement: the fenced updates and their job events together,
// in one round trip and one commit. Every job makes three transitions on
// its way (assigned, running, ended); as a transaction of select, update
// and insert each, they would cost five round trips and a WAL flush apiece.
// The rules are those of transitionInTx; what each row does is in the
// input row, so one statement serves transitions of every kind.
func (r *Registry) transitionStatement(ctx context.Context, ts []Transition) ([]TransitionResult, error) {
	in := transitionInput{
		n: make([]int32, len(ts)), id: make([]string, len(ts)), fromStatuses: make([]string, len(ts)),
		attempt: make([]int32, len(ts)), robot: make([]string, len(ts)), toStatus: make([]string, len(ts)),
		nextAttempt: make([]bool, len(ts)), setRobot: make([]bool, len(ts)), robotID: make([]string, len(ts)),
		message: make([]string, len(ts)), reason: make([]string, len(ts)), actor: make([]string, len(ts)),
		setResult: make([]bool, len(ts)), result: make([]string, len(ts)), at: make([]time.Time, len(ts)),
	}
	for i, t := range ts {
		from := make([]string, len(t.From))
		for k, s := range t.From {
			from[k] = string(s)
		}
		in.n[i], in.id[i], in.fromStatuses[i] = int32(i), t.JobID, strings.Join(from, ",")
		in.attempt[i], in.robot[i], in.toStatus[i], in.nextAttempt[i] = t.Attempt, t.Robot, string(t.To), t.NextAttempt
		if t.RobotID != nil {
			in.setRobot[i], in.robotID[i] = true, *t.RobotID
		}
		in.message[i], in.reason[i], in.actor[i] = t.Message, t.Reason, t.Actor
		if t.Result != nil {
			in.setResult[i], in.result[i] = true, *t.Result
		}
		in.at[i] = normalize(t.Now)
	}
	// The statement goes to database/sql itself, not through bun: bun
	// would write every value into the SQL text, making each batch a new
	// statement for PostgreSQL to parse and plan and a long string to
	// build here. With the values as arrays the text never changes, so
	// each connection prepares it once and then only sends the values.
	sqlRows, err := r.db.DB.QueryContext(ctx, transitionQuery, pgx.QueryExecModeCacheStatement,
		in.n, in.id, in.fromStatuses, in.attempt, in.robot, in.toStatus, in.nextAttempt,
		in.setRobot, in.robotID, in.message, in.reason, in.actor, in.setResult, in.result, in.at)
	if err != nil {
		return nil, err
	}
	var rows []struct {
		Job        `bun:",extend"`
		FromStatus JobStatus `bun:"from_status"`
		N          int       `bun:"input_n"`
		Reason     string    `bun:"input_reason"`
		Actor      string    `bun:"input_actor"`
	}
	if err := r.db.ScanRows(ctx, sqlRows, &rows); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, err
	}
	out := make([]TransitionResult, len(ts))
	applied := make([]bool, len(ts))
	var ended []heldAttempt
	for i := range rows {
		job := rows[i].Job
		out[rows[i].N] = TransitionResult{Job: &job}
		applied[rows[i].N] = true
		from := job.Attempt
		if ts[rows[i].N].NextAttempt {
			from--
		}
		if attemptEnded(rows[i].FromStatus, from, &job) {
			ended = append(ended, heldAttempt{JobID: job.ID, Attempt: from})
		}
	}
	r.releaseStragglers(ctx, ended)
	var refused []string
	for i, t := range ts {
		if !applied[i] {
			refused = append(refused, t.JobID)
		}
	}
	if len(refused) == 0 {
		return out, nil
	}
	// Say why, from the jobs as they are now.
	var now []Job
	if err := r.db.NewSelect().Model(&now).Where("id IN (?)", bun.In(refused)).Scan(ctx); err != nil {
		return nil, err
	}
	byID := make(map[string]*Job, len(now))
	for i := range now {
		byID[now[i].ID] = &now[i]
	}
	for i, t := range ts {
		if applied[i] {
			continue
		}
		job := byID[t.JobID]
		switch conflict := error(nil); {
		case job == nil:
			out[i] = TransitionResult{Err: fmt.Errorf("transition job %s to %s: %w", t.JobID, t.To, ErrNotFound)}
		default:
			if conflict = t.conflict(job); conflict == nil {
				// It moved into place in between; a caller retrying would
				// be acting on news older than the change that did that.
				conflict = fmt.Errorf("job %s changed while it was being moved: %w", job.ID, ErrConflict)
			}
			out[i] = TransitionResult{Job: job, Err: conflict}
		}
	}
	return out, nil
}

// transitionInput is a batch of transitions as transitionQuery takes
// them: one array per column, the nth element of each from the nth
// transition.
type transitionInput struct {
	n                               []int32
	id, fromStatuses                []string
	attempt                         []int32
	robot, toStatus                 []string
	nextAttempt, setRobot           []bool
	robotID, message, reason, actor []string
	setResult                       []bool
	result                          []string
	at                              []time.Time
}

// transitionQuery is transitionStatement's statement; its parameters are
// the arrays of transitionInput in order. jobEventsCTE writes the events
// of the jobs it finishes.
var transitionQuery = `WITH input AS (SELECT * FROM unnest($1::int[], $2::text[], $3::text[], $4::int[], $5::text[], $6::text[], $7::bool[], $8::bool[], $9::text[], $10::text[], $11::text[], $12::text[], $13::bool[], $14::text[], $15::timestamptz[])
		AS input (n, id, from_statuses, attempt, robot, to_status, next_attempt, set_robot, robot_id, message, reason, actor, set_result, result, at)),
old AS (SELECT j.id, j.status, j.attempt, j.robot_id FROM jobs AS j JOIN input AS i ON i.id = j.id ORDER BY j.id FOR UPDATE OF j),
upd AS (UPDATE jobs AS j SET
		status = i.to_status,
		status_message = i.message,
		updated_at = i.at,
		attempt = CASE WHEN i.next_attempt THEN j.attempt + 1 ELSE j.attempt END,
		progress = CASE WHEN i.to_status = 'succeeded' THEN 100 WHEN i.next_attempt OR i.to_status IN ('pending', 'assigned') THEN 0 ELSE j.progress END,
		current_step = CASE WHEN i.next_attempt OR i.to_status IN ('pending', 'assigned') THEN '' ELSE j.current_step END,
		robot_id = CASE WHEN i.set_robot THEN i.robot_id ELSE j.robot_id END,
		result = CASE WHEN i.set_result THEN i.result ELSE j.result END,
		started_at = CASE WHEN i.to_status = 'running' THEN COALESCE(j.started_at, i.at) ELSE j.started_at END,
		finished_at = CASE WHEN i.to_status IN ('succeeded', 'failed', 'cancelled') THEN i.at ELSE j.finished_at END
	FROM old, input AS i
	WHERE j.id = old.id AND i.id = old.id
		AND old.status = ANY (string_to_array(i.from_statuses, ','))
		AND (i.attempt = 0 OR old.attempt = i.attempt)
		AND (i.robot = '' OR old.robot_id = i.robot)
	RETURNING j.*, old.status AS from_status, i.n AS input_n, i.reason AS input_reason, i.actor AS input_actor),
event AS (INSERT INTO job_events (job_id, time, from_status, to_status, attempt, robot_id, reason, actor)
	SELECT id, updated_at, from_status, status, attempt, robot_id, input_reason, input_actor FROM upd)` + jobEventsCTE + releaseItemsCTE + `
SELECT * FROM upd`

// releaseItemsCTE extends transitionQuery: the work items still held by
// an attempt that a transition ends become ABANDONED in the same commit,
// each retried under its queue's rule as abandonHeld does. Only jobs that
// were assigned or running can hold items, and work_items_held holds only items in
// progress, so other transitions read nothing.
var releaseItemsCTE = `,
ended AS (SELECT u.id AS job_id, o.attempt, u.updated_at AS at, u.status AS job_status FROM upd AS u JOIN old AS o ON o.id = u.id
	WHERE o.status IN ('assigned', 'running') AND (u.status NOT IN ('assigned', 'running') OR u.attempt <> o.attempt)),
held AS (SELECT w.id, w.breached, e.at, e.job_status FROM work_items AS w JOIN ended AS e ON w.job_id = e.job_id AND w.attempt = e.attempt
	WHERE w.status = 'in_progress' ORDER BY w.id FOR UPDATE OF w),
abandon AS (UPDATE work_items AS w SET status = 'abandoned', end_status = 'abandoned', exception = 'application',
		reason = 'the job''s attempt ended: ' || h.job_status, ended_at = h.at, updated_at = h.at,
		breached = w.breached OR (w.deadline IS NOT NULL AND w.deadline < h.at)
			OR (q.sla_ms > 0 AND w.created_at + q.sla_ms * interval '1 millisecond' < h.at)
	FROM held AS h, work_queues AS q WHERE w.id = h.id AND q.name = w.queue
	RETURNING w.*, (w.breached AND NOT h.breached) AS newly_breached, w.retry < q.max_retries AS retry_left),
copies AS (INSERT INTO work_items (id, queue, reference, unique_reference, priority, data, defer_until, deadline, status,
		end_status, output, progress, exception, reason, retry, retry_of, job_id, attempt, robot_id, breached, created_by,
		created_at, started_at, ended_at, updated_at)
	SELECT casare_uuidv7(), queue, reference, unique_reference, priority, data, NULL, deadline, 'new', '',
		'', '', '', '', retry + 1, id, '', 0, '', breached, created_by, updated_at, NULL, NULL, updated_at
	FROM abandon WHERE retry_left
	RETURNING id, queue),
item_counts AS (INSERT INTO work_queue_counts (queue, status, shard, n, duration_ms)
	SELECT queue, status, floor(random() * 64)::int, SUM(n), SUM(d) FROM (
		SELECT queue, 'in_progress' AS status, -1 AS n, 0::bigint AS d FROM abandon
		UNION ALL SELECT queue, 'abandoned', 1, 0 FROM abandon
		UNION ALL SELECT queue, 'processed', 1, COALESCE((extract(epoch FROM ended_at - started_at) * 1000)::bigint, 0) FROM abandon
		UNION ALL SELECT queue, 'breached', 1, 0 FROM abandon WHERE newly_breached
		UNION ALL SELECT queue, 'new', 1, 0 FROM copies) AS d
	GROUP BY queue, status ORDER BY queue, status
	ON CONFLICT (queue, status, shard) DO UPDATE SET n = work_queue_counts.n + EXCLUDED.n,
		duration_ms = work_queue_counts.duration_ms + EXCLUDED.duration_ms),
item_minutes AS (INSERT INTO work_queue_minutes (queue, minute, shard, n)
	SELECT queue, floor(extract(epoch FROM ended_at) / 60)::bigint, floor(random() * 64)::int, count(*) FROM abandon
	GROUP BY 1, 2 ORDER BY 1, 2
	ON CONFLICT (queue, minute, shard) DO UPDATE SET n = work_queue_minutes.n + EXCLUDED.n)`

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
