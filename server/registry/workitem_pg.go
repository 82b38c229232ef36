package registry

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/uptrace/bun"
)

// takeQuery takes the next item for a job's attempt on PostgreSQL in one
// statement (one round trip, one commit): the fence on the job, the pick
// that skips the rows other takers hold, the update, its event and the
// counters (its history is the row's started_at and job). The rules are TakeWorkItem's; it returns no row when the
// fence refuses, the queue is empty or unknown, and the caller then asks
// TakeWorkItem's transaction which.
const takeQuery = `WITH job AS (SELECT id FROM jobs WHERE id = $1::text AND status IN ('assigned', 'running') AND attempt = $2::int AND robot_id = $3::text FOR SHARE),
pick AS (SELECT w.id FROM work_items AS w
	WHERE w.queue = $4::text AND w.status = 'new' AND (w.defer_until IS NULL OR w.defer_until <= $5::timestamptz) AND EXISTS (SELECT 1 FROM job)
	ORDER BY w.priority DESC, w.deadline, w.created_at, w.id LIMIT 1 FOR UPDATE OF w SKIP LOCKED),
upd AS (UPDATE work_items AS w SET status = 'in_progress', job_id = $1::text, attempt = $2::int, robot_id = $3::text,
		started_at = $5::timestamptz, updated_at = $5::timestamptz, progress = ''
	FROM pick WHERE w.id = pick.id RETURNING w.*),
cnt AS (INSERT INTO work_queue_counts AS c (queue, status, shard, n, duration_ms)
	SELECT u.queue, d.status, $6::int, d.n, 0 FROM upd AS u, (VALUES ('in_progress', 1), ('new', -1)) AS d (status, n) ORDER BY 2
	ON CONFLICT (queue, status, shard) DO UPDATE SET n = c.n + EXCLUDED.n)
SELECT * FROM upd`

// completeQuery completes an item its job's attempt holds on PostgreSQL in
// one statement, by CompleteWorkItem's rules; no row when they refuse.
const completeQuery = `WITH job AS (SELECT id FROM jobs WHERE id = $1::text AND status IN ('assigned', 'running') AND attempt = $2::int AND robot_id = $3::text FOR SHARE),
old AS (SELECT w.id, w.breached FROM work_items AS w
	WHERE w.id = $4::text AND w.status = 'in_progress' AND w.job_id = $1::text AND w.attempt = $2::int AND EXISTS (SELECT 1 FROM job)
	FOR UPDATE OF w),
upd AS (UPDATE work_items AS w SET status = 'successful', end_status = 'successful', output = $5::text, ended_at = $6::timestamptz, updated_at = $6::timestamptz,
		breached = w.breached OR (w.deadline IS NOT NULL AND w.deadline < $6::timestamptz)
			OR (q.sla_ms > 0 AND w.created_at + q.sla_ms * interval '1 millisecond' < $6::timestamptz)
	FROM old, work_queues AS q WHERE w.id = old.id AND q.name = w.queue
	RETURNING w.*, (w.breached AND NOT old.breached) AS newly_breached),
cnt AS (INSERT INTO work_queue_counts AS c (queue, status, shard, n, duration_ms)
	SELECT u.queue, d.status, $7::int, d.n, d.ms FROM upd AS u,
		LATERAL (VALUES ('breached', CASE WHEN u.newly_breached THEN 1 ELSE 0 END, 0::bigint),
			('in_progress', -1, 0::bigint),
			('processed', 1, COALESCE((extract(epoch FROM u.ended_at - u.started_at) * 1000)::bigint, 0)),
			('successful', 1, 0::bigint)) AS d (status, n, ms)
	WHERE d.n <> 0 ORDER BY 2
	ON CONFLICT (queue, status, shard) DO UPDATE SET n = c.n + EXCLUDED.n, duration_ms = c.duration_ms + EXCLUDED.duration_ms),
mins AS (INSERT INTO work_queue_minutes AS m (queue, minute, shard, n) SELECT queue, $8::bigint, $7::int, 1 FROM upd
	ON CONFLICT (queue, minute, shard) DO UPDATE SET n = m.n + 1)
SELECT * FROM upd`

// takeStatement runs takeQuery; nil when it took nothing.
func (r *Registry) takeStatement(ctx context.Context, h ItemHolder, queue string) (*WorkItem, error) {
	at := now()
	rows, err := r.db.DB.QueryContext(ctx, takeQuery, pgx.QueryExecModeCacheStatement,
		h.JobID, h.Attempt, h.RobotID, queue, at, r.shardOf(h.JobID))
	if err != nil {
		return nil, err
	}
	var items []WorkItem
	if err := r.db.ScanRows(ctx, rows, &items); err != nil {
		return nil, err
	}
	if len(items) == 0 {
		return nil, nil
	}
	return &items[0], nil
}

// completeStatement runs completeQuery; nil when its rules refused.
func (r *Registry) completeStatement(ctx context.Context, h ItemHolder, id, output string) (*WorkItem, error) {
	at := now()
	rows, err := r.db.DB.QueryContext(ctx, completeQuery, pgx.QueryExecModeCacheStatement,
		h.JobID, h.Attempt, h.RobotID, id, output, at, r.shardOf(h.JobID), at.Unix()/60)
	if err != nil {
		return nil, err
	}
	var items []struct {
		WorkItem      `bun:",extend"`
		NewlyBreached bool `bun:"newly_breached"`
	}
	if err := r.db.ScanRows(ctx, rows, &items); err != nil {
		return nil, err
	}
	if len(items) == 0 {
		return nil, nil
	}
	return &items[0].WorkItem, nil
}

// insertItemsQuery adds a batch of items on PostgreSQL with one statement
// whose values travel as arrays: the text stays the same whatever the
// batch, so it is parsed once per connection, and the values are not
// written into SQL text to be parsed again.
const insertItemsQuery = `INSERT INTO work_items (id, queue, reference, unique_reference, priority, data, defer_until, deadline,
		status, end_status, output, progress, exception, reason, retry, retry_of, job_id, attempt, robot_id, breached,
		created_by, created_at, updated_at)
	SELECT i.id, $1::text, i.reference, $2::bool, i.priority, i.data, i.defer_until, i.deadline,
		'new', '', '', '', '', '', 0, '', '', 0, '', false, $3::text, $4::timestamptz, $4::timestamptz
	FROM unnest($5::text[], $6::text[], $7::smallint[], $8::text[], $9::timestamptz[], $10::timestamptz[])
		AS i (id, reference, priority, data, defer_until, deadline)`

// insertItems writes items (of one queue, made ready by AddWorkItems) in tx.
func insertItems(ctx context.Context, tx bun.Tx, items []WorkItem) error {
	n := len(items)
	ids, refs, data := make([]string, n), make([]string, n), make([]string, n)
	prio := make([]int16, n)
	deferUntil, deadline := make([]pgtype.Timestamptz, n), make([]pgtype.Timestamptz, n)
	for i := range items {
		it := &items[i]
		ids[i], refs[i], data[i], prio[i] = it.ID, it.Reference, it.Data, int16(it.Priority)
		if it.DeferUntil != nil {
			deferUntil[i] = pgtype.Timestamptz{Time: *it.DeferUntil, Valid: true}
		}
		if it.Deadline != nil {
			deadline[i] = pgtype.Timestamptz{Time: *it.Deadline, Valid: true}
		}
	}
	first := &items[0]
	_, err := tx.Tx.ExecContext(ctx, insertItemsQuery, pgx.QueryExecModeCacheStatement,
		first.Queue, first.UniqueReference, first.CreatedBy, first.CreatedAt, ids, refs, prio, data, deferUntil, deadline)
	return err
}
