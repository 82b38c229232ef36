package registry

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// takeRequest is one job's ask for the next item of a queue, for a batch.
type takeRequest struct {
	holder ItemHolder
	queue  string
}

// itemResult is the outcome of a take or a completion in a batch: the
// item, or nil when the batch gave none (the caller then asks on its own,
// which says why).
type itemResult struct {
	item *WorkItem
	err  error
}

// takeBatchQuery takes, in one statement, an item for each of a batch of
// jobs asking the same queue on PostgreSQL: the fence on every job, the
// pick of as many NEW items as jobs passed it (skipping the rows other
// takers hold), the updates and the counters. Jobs are locked in id order,
// as transitions lock them. It returns a row per item taken, with the
// number of the request it went to.
const takeBatchQuery = `WITH req AS (SELECT * FROM unnest($1::int[], $2::text[], $3::int[], $4::text[]) AS r (n, job_id, attempt, robot_id)),
job AS (SELECT r.n, r.job_id, r.attempt, r.robot_id FROM req AS r JOIN jobs AS j ON j.id = r.job_id
	AND j.status IN ('assigned', 'running') AND j.attempt = r.attempt AND j.robot_id = r.robot_id
	ORDER BY j.id FOR SHARE OF j),
ready AS (SELECT n, job_id, attempt, robot_id, row_number() OVER (ORDER BY n) AS k FROM job),
pick AS (SELECT p.id, row_number() OVER (ORDER BY p.priority DESC, p.deadline, p.created_at, p.id) AS k FROM (
	SELECT w.id, w.priority, w.deadline, w.created_at FROM work_items AS w
	WHERE w.queue = $5::text AND w.status = 'new' AND (w.defer_until IS NULL OR w.defer_until <= $6::timestamptz)
	ORDER BY w.priority DESC, w.deadline, w.created_at, w.id LIMIT (SELECT count(*) FROM job) FOR UPDATE OF w SKIP LOCKED) AS p),
upd AS (UPDATE work_items AS w SET status = 'in_progress', job_id = ready.job_id, attempt = ready.attempt, robot_id = ready.robot_id,
		started_at = $6::timestamptz, updated_at = $6::timestamptz, progress = ''
	FROM pick JOIN ready ON ready.k = pick.k WHERE w.id = pick.id RETURNING w.*, ready.n AS request),
cnt AS (INSERT INTO work_queue_counts AS c (queue, status, shard, n, duration_ms)
	SELECT $5::text, d.status, $7::int, d.n * t.taken, 0 FROM (SELECT count(*) AS taken FROM upd) AS t,
		(VALUES ('in_progress', 1), ('new', -1)) AS d (status, n)
	WHERE t.taken > 0 ORDER BY 2
	ON CONFLICT (queue, status, shard) DO UPDATE SET n = c.n + EXCLUDED.n)
SELECT * FROM upd`

// takeBatch runs a batch of takes: one statement for each queue asked.
func (r *Registry) takeBatch(ctx context.Context, reqs []takeRequest) []itemResult {
	out := make([]itemResult, len(reqs))
	byQueue := map[string][]int{}
	for i, req := range reqs {
		byQueue[req.queue] = append(byQueue[req.queue], i)
	}
	for queue, idx := range byQueue {
		n := len(idx)
		num, jobs, attempts, robots := make([]int32, n), make([]string, n), make([]int32, n), make([]string, n)
		for k, i := range idx {
			h := reqs[i].holder
			num[k], jobs[k], attempts[k], robots[k] = int32(i), h.JobID, h.Attempt, h.RobotID
		}
		at := now()
		rows, err := r.db.DB.QueryContext(ctx, takeBatchQuery, pgx.QueryExecModeCacheStatement,
			num, jobs, attempts, robots, queue, at, r.shardOf(jobs[0]))
		var items []struct {
			WorkItem `bun:",extend"`
			Request  int32 `bun:"request"`
		}
		if err == nil {
			err = r.db.ScanRows(ctx, rows, &items)
		}
		if err != nil {
			for _, i := range idx {
				out[i].err = fmt.Errorf("take the next item of %s: %w", queue, err)
			}
			continue
		}
		for k := range items {
			out[items[k].Request].item = &items[k].WorkItem
		}
	}
	return out
}

// completeRequest is one job's completion of an item it holds.
type completeRequest struct {
	holder ItemHolder
	id     string
	output string
}

// completeBatchQuery completes, in one statement, a batch of items their
// jobs' attempts hold on PostgreSQL, by CompleteWorkItem's rules, with the
// counters summed per queue. A request whose rules refuse it has no row.
const completeBatchQuery = `WITH req AS (SELECT * FROM unnest($1::int[], $2::text[], $3::text[], $4::int[], $5::text[], $6::text[])
		AS r (n, item_id, job_id, attempt, robot_id, output)),
job AS (SELECT r.n FROM req AS r JOIN jobs AS j ON j.id = r.job_id
	AND j.status IN ('assigned', 'running') AND j.attempt = r.attempt AND j.robot_id = r.robot_id
	ORDER BY j.id FOR SHARE OF j),
old AS (SELECT w.id, w.breached, r.n, r.output FROM work_items AS w JOIN req AS r ON w.id = r.item_id
	WHERE w.status = 'in_progress' AND w.job_id = r.job_id AND w.attempt = r.attempt AND r.n IN (SELECT n FROM job)
	ORDER BY w.id FOR UPDATE OF w),
upd AS (UPDATE work_items AS w SET status = 'successful', end_status = 'successful', output = old.output, ended_at = $7::timestamptz, updated_at = $7::timestamptz,
		breached = w.breached OR (w.deadline IS NOT NULL AND w.deadline < $7::timestamptz)
			OR (q.sla_ms > 0 AND w.created_at + q.sla_ms * interval '1 millisecond' < $7::timestamptz)
	FROM old, work_queues AS q WHERE w.id = old.id AND q.name = w.queue
	RETURNING w.*, (w.breached AND NOT old.breached) AS newly_breached, old.n AS request),
cnt AS (INSERT INTO work_queue_counts AS c (queue, status, shard, n, duration_ms)
	SELECT u.queue, d.status, $8::int, SUM(d.n), SUM(d.ms) FROM upd AS u,
		LATERAL (VALUES ('breached', CASE WHEN u.newly_breached THEN 1 ELSE 0 END, 0::bigint),
			('in_progress', -1, 0::bigint),
			('processed', 1, COALESCE((extract(epoch FROM u.ended_at - u.started_at) * 1000)::bigint, 0)),
			('successful', 1, 0::bigint)) AS d (status, n, ms)
	GROUP BY u.queue, d.status HAVING SUM(d.n) <> 0 ORDER BY 1, 2
	ON CONFLICT (queue, status, shard) DO UPDATE SET n = c.n + EXCLUDED.n, duration_ms = c.duration_ms + EXCLUDED.duration_ms),
mins AS (INSERT INTO work_queue_minutes AS m (queue, minute, shard, n) SELECT queue, $9::bigint, $8::int, count(*) FROM upd GROUP BY queue ORDER BY 1
	ON CONFLICT (queue, minute, shard) DO UPDATE SET n = m.n + EXCLUDED.n)
SELECT * FROM upd`

// completeBatch runs a batch of completions in one statement; a request it
// gave no item is answered nil, for the caller to ask why on its own.
func (r *Registry) completeBatch(ctx context.Context, reqs []completeRequest) []itemResult {
	out := make([]itemResult, len(reqs))
	n := len(reqs)
	num, ids, jobs, attempts, robots, outputs := make([]int32, n), make([]string, n), make([]string, n), make([]int32, n), make([]string, n), make([]string, n)
	for i, req := range reqs {
		num[i], ids[i], jobs[i], attempts[i], robots[i], outputs[i] = int32(i), req.id, req.holder.JobID, req.holder.Attempt, req.holder.RobotID, req.output
	}
	at := now()
	rows, err := r.db.DB.QueryContext(ctx, completeBatchQuery, pgx.QueryExecModeCacheStatement,
		num, ids, jobs, attempts, robots, outputs, at, r.shardOf(jobs[0]), at.Unix()/60)
	var items []struct {
		WorkItem      `bun:",extend"`
		NewlyBreached bool  `bun:"newly_breached"`
		Request       int32 `bun:"request"`
	}
	if err == nil {
		err = r.db.ScanRows(ctx, rows, &items)
	}
	if err != nil {
		for i := range out {
			out[i].err = err
		}
		return out
	}
	for k := range items {
		out[items[k].Request].item = &items[k].WorkItem
	}
	return out
}
