package registry

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/uptrace/bun"
)

// jobInserter commits submitted jobs to PostgreSQL in batches. A submit is
// durable only once committed, and a commit costs a round trip and a WAL
// flush whatever its size, so submits that arrive while a commit is in
// flight share the next one. Nothing waits for a batch to fill: at low load
// every batch holds one job and costs what a single insert would.
type jobInserter struct {
	db      *bun.DB
	queue   chan *jobInsert
	stop    chan struct{}
	workers sync.WaitGroup
}

type jobInsert struct {
	job   *Job
	audit *AuditEvent
	done  chan insertResult
}

// insertResult is the outcome of one submit of a batch: existing when a
// job already had its idempotency key and nothing was written for it.
type insertResult struct {
	existing bool
	err      error
}

const (
	// inserterWorkers is how many batches may be in flight at once.
	inserterWorkers = 4
	// maxBatch bounds one statement.
	maxBatch = 256
)

func newJobInserter(db *bun.DB) *jobInserter {
	ins := &jobInserter{db: db, queue: make(chan *jobInsert, maxBatch*inserterWorkers), stop: make(chan struct{})}
	for range inserterWorkers {
		ins.workers.Go(ins.run)
	}
	return ins
}

// insert commits the job, its first event and its audit event, returning
// once they are durable. A job whose idempotency key another job has is
// not written, and existing is true.
func (ins *jobInserter) insert(ctx context.Context, job *Job, audit *AuditEvent) (existing bool, err error) {
	req := &jobInsert{job: job, audit: audit, done: make(chan insertResult, 1)}
	select {
	case ins.queue <- req:
	case <-ctx.Done():
		return false, ctx.Err()
	case <-ins.stop:
		return false, errors.New("registry closed")
	}
	select {
	case res := <-req.done:
		return res.existing, res.err
	case <-ctx.Done():
		// The batch may still commit; the job then exists, as it would
		// had the connection dropped after a commit.
		return false, ctx.Err()
	}
}

func (ins *jobInserter) close() {
	close(ins.stop)
	ins.workers.Wait()
}

func (ins *jobInserter) run() {
	for {
		var first *jobInsert
		select {
		case first = <-ins.queue:
		case <-ins.stop:
			return
		}
		batch := []*jobInsert{first}
	fill:
		for len(batch) < maxBatch {
			select {
			case req := <-ins.queue:
				batch = append(batch, req)
			default:
				break fill
			}
		}
		ins.commit(batch)
	}
}

// commit writes a batch in one statement. If the statement fails, each
// submit is tried on its own, so one bad row cannot fail the others.
func (ins *jobInserter) commit(batch []*jobInsert) {
	ctx := context.Background()
	inserted, err := ins.exec(ctx, batch)
	if err == nil || len(batch) == 1 {
		for _, req := range batch {
			req.done <- insertResult{existing: err == nil && !inserted[req.job.ID], err: err}
		}
		return
	}
	for _, req := range batch {
		inserted, err := ins.exec(ctx, []*jobInsert{req})
		req.done <- insertResult{existing: err == nil && !inserted[req.job.ID], err: err}
	}
}

// exec inserts the jobs, their first events and their audit events with one
// PostgreSQL statement: the statements in WITH run exactly once, all or
// none. The values go as one array a column, so the statement's text is
// the same for every batch: each connection prepares it once, where values
// written into the text by bun would make every batch a new statement to
// parse and plan, and a long string to build here. It returns the ids of
// the jobs written: a job whose idempotency key another has (committed
// before, or earlier in the batch) is not, nor are its events.
func (ins *jobInserter) exec(ctx context.Context, batch []*jobInsert) (map[string]bool, error) {
	var jobs jobColumns
	var events eventColumns
	var audits auditColumns
	var auditJobs []string
	for _, req := range batch {
		jobs.add(req.job)
		events.add(firstEvent(req.job))
		if req.audit != nil {
			req.audit.Time = normalize(req.audit.Time)
			audits.add(req.audit)
			auditJobs = append(auditJobs, req.job.ID)
		}
	}
	args := append([]any{pgx.QueryExecModeCacheStatement}, jobs.args()...)
	args = append(args, events.args()...)
	args = append(args, audits.args()...)
	args = append(args, auditJobs)
	rows, err := ins.db.DB.QueryContext(ctx, insertJobsQuery, args...)
	if err != nil {
		return nil, fmt.Errorf("create job: %w", err)
	}
	defer rows.Close()
	inserted := make(map[string]bool, len(batch))
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("create job: %w", err)
		}
		inserted[id] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("create job: %w", err)
	}
	return inserted, nil
}

// insertJobsQuery is exec's statement; its parameters are the arrays of
// jobColumns, eventColumns and auditColumns, in order, then the job of
// each audit event.
const insertJobsQuery = `WITH job AS (INSERT INTO jobs (` + jobColumnNames + `)
	SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::text[], $6::text[], $7::int[], $8::int[], $9::int[], $10::text[], $11::text[], $12::text[], $13::text[],
		$14::bigint[], $15::text[], $16::text[], $17::timestamptz[], $18::timestamptz[], $19::timestamptz[], $20::timestamptz[], $21::int[], $22::text[], $23::text[])
	ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
	RETURNING id),
event AS (INSERT INTO job_events (job_id, time, from_status, to_status, attempt, robot_id, reason, actor)
	SELECT e.* FROM unnest($24::text[], $25::timestamptz[], $26::text[], $27::text[], $28::int[], $29::text[], $30::text[], $31::text[])
		AS e(job_id, time, from_status, to_status, attempt, robot_id, reason, actor)
	WHERE e.job_id IN (SELECT id FROM job)),
audit AS (INSERT INTO audit_events (time, actor, actor_token_id, action, target, outcome, details, peer)
	SELECT a.time, a.actor, a.actor_token_id, a.action, a.target, a.outcome, a.details, a.peer
	FROM unnest($32::timestamptz[], $33::text[], $34::text[], $35::text[], $36::text[], $37::text[], $38::text[], $39::text[], $40::text[])
		AS a(time, actor, actor_token_id, action, target, outcome, details, peer, job_id)
	WHERE a.job_id IN (SELECT id FROM job))
SELECT id FROM job`

// jobColumnNames are the columns of jobs in the order of jobColumns.args.
const jobColumnNames = "id, workflow_name, workflow_version, workflow, status, status_message, priority, attempt, max_attempts, robot_id, " +
	"inputs, requires, result, timeout_ms, idempotency_key, created_by, created_at, updated_at, started_at, finished_at, progress, current_step, secret_inputs"

// jobColumns holds a batch of jobs as one array a column.
type jobColumns struct {
	id, workflowName                  []string
	workflowVersion                   []int32
	workflow, status, statusMessage   []string
	priority, attempt, maxAttempts    []int32
	robotID, inputs, requires, result []string
	timeoutMillis                     []int64
	idempotencyKey                    []*string
	createdBy                         []string
	createdAt, updatedAt              []time.Time
	startedAt, finishedAt             []*time.Time
	progress                          []int32
	currentStep                       []string
	secretInputs                      []string
}

func (c *jobColumns) add(j *Job) {
	c.id, c.workflowName = append(c.id, j.ID), append(c.workflowName, j.WorkflowName)
	c.workflowVersion = append(c.workflowVersion, j.WorkflowVersion)
	c.workflow, c.status, c.statusMessage = append(c.workflow, j.Workflow), append(c.status, string(j.Status)), append(c.statusMessage, j.StatusMessage)
	c.priority, c.attempt, c.maxAttempts = append(c.priority, int32(j.Priority)), append(c.attempt, j.Attempt), append(c.maxAttempts, j.MaxAttempts)
	c.robotID, c.inputs, c.requires, c.result = append(c.robotID, j.RobotID), append(c.inputs, j.Inputs), append(c.requires, j.Requires), append(c.result, j.Result)
	c.timeoutMillis = append(c.timeoutMillis, j.TimeoutMillis)
	c.idempotencyKey = append(c.idempotencyKey, j.IdempotencyKey)
	c.createdBy = append(c.createdBy, j.CreatedBy)
	c.createdAt, c.updatedAt = append(c.createdAt, j.CreatedAt), append(c.updatedAt, j.UpdatedAt)
	c.startedAt, c.finishedAt = append(c.startedAt, j.StartedAt), append(c.finishedAt, j.FinishedAt)
	c.progress, c.currentStep = append(c.progress, j.Progress), append(c.currentStep, j.CurrentStep)
	c.secretInputs = append(c.secretInputs, j.SecretInputs)
}

func (c *jobColumns) args() []any {
	return []any{c.id, c.workflowName, c.workflowVersion, c.workflow, c.status, c.statusMessage, c.priority, c.attempt, c.maxAttempts,
		c.robotID, c.inputs, c.requires, c.result, c.timeoutMillis, c.idempotencyKey, c.createdBy, c.createdAt, c.updatedAt,
		c.startedAt, c.finishedAt, c.progress, c.currentStep, c.secretInputs}
}

// eventColumns holds a batch of job events, but for their ids, which the
// database gives.
type eventColumns struct {
	jobID                  []string
	time                   []time.Time
	fromStatus, toStatus   []string
	attempt                []int32
	robotID, reason, actor []string
}

func (c *eventColumns) add(e *JobEvent) {
	c.jobID, c.time = append(c.jobID, e.JobID), append(c.time, e.Time)
	c.fromStatus, c.toStatus = append(c.fromStatus, string(e.FromStatus)), append(c.toStatus, string(e.ToStatus))
	c.attempt = append(c.attempt, e.Attempt)
	c.robotID, c.reason, c.actor = append(c.robotID, e.RobotID), append(c.reason, e.Reason), append(c.actor, e.Actor)
}

func (c *eventColumns) args() []any {
	return []any{c.jobID, c.time, c.fromStatus, c.toStatus, c.attempt, c.robotID, c.reason, c.actor}
}

// auditColumns holds a batch of audit events, but for their ids.
type auditColumns struct {
	time                                                        []time.Time
	actor, actorTokenID, action, target, outcome, details, peer []string
}

func (c *auditColumns) add(e *AuditEvent) {
	c.time, c.actor, c.actorTokenID = append(c.time, e.Time), append(c.actor, e.Actor), append(c.actorTokenID, e.ActorTokenID)
	c.action, c.target, c.outcome = append(c.action, e.Action), append(c.target, e.Target), append(c.outcome, e.Outcome)
	c.details, c.peer = append(c.details, e.Details), append(c.peer, e.Peer)
}

func (c *auditColumns) args() []any {
	return []any{c.time, c.actor, c.actorTokenID, c.action, c.target, c.outcome, c.details, c.peer}
}
