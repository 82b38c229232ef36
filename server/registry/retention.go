package registry

import (
	"context"
	"fmt"
	"time"

	"github.com/uptrace/bun"
)

// Retention says how long finished jobs and what they left behind are
// kept, by the time the job finished. Zero keeps them for good.
type Retention struct {
	// Jobs removes finished jobs with their events, log lines and
	// artifacts.
	Jobs time.Duration
	// Logs removes the log lines of finished jobs, keeping the jobs.
	Logs time.Duration
	// Artifacts removes the artifacts of finished jobs, keeping the jobs.
	Artifacts time.Duration
}

// Any says whether anything is ever pruned.
func (r Retention) Any() bool { return r.Jobs > 0 || r.Logs > 0 || r.Artifacts > 0 }

// Pruned counts the rows one pass removed, by table.
type Pruned struct {
	Jobs, JobEvents, JobLogs, JobArtifacts int64
}

// Total is every row removed.
func (p Pruned) Total() int64 { return p.Jobs + p.JobEvents + p.JobLogs + p.JobArtifacts }

func (p *Pruned) add(q Pruned) {
	p.Jobs += q.Jobs
	p.JobEvents += q.JobEvents
	p.JobLogs += q.JobLogs
	p.JobArtifacts += q.JobArtifacts
}

// pruneBatches are the batch sizes of a prune: each batch is its own
// short transaction, so a prune of millions of rows never holds a lock
// that writers of new jobs would wait on for long.
type pruneBatches struct {
	jobs, logs, artifacts int64
}

// Artifacts carry their data and come fewer to a batch.
var defaultPruneBatches = pruneBatches{jobs: 500, logs: 5000, artifacts: 50}

// pruneLockClass is the first key of the PostgreSQL advisory lock that
// lets one replica at a time prune; the second is the schema's hash, so
// control planes that share a database in schemas of their own each
// prune their own.
const pruneLockClass int32 = 0x63617365 // "case"

// pruneLockKey is the lock's second key, in SQL.
const pruneLockKey = "hashtext(current_schema())"

// Prune removes what the retention says has been kept long enough,
// batch by batch, until nothing more is due or ctx ends; what it removed
// before then stays removed and is counted. On PostgreSQL only one
// replica prunes at a time: ran is false when another holds the lock.
func (r *Registry) Prune(ctx context.Context, keep Retention, now time.Time) (pruned Pruned, ran bool, err error) {
	if !keep.Any() {
		return Pruned{}, true, nil
	}
	if r.dialect == "postgres" {
		conn, err := r.db.Conn(ctx)
		if err != nil {
			return Pruned{}, false, fmt.Errorf("prune: %w", err)
		}
		defer conn.Close()
		var locked bool
		if err := conn.QueryRowContext(ctx, "SELECT pg_try_advisory_lock(?, "+pruneLockKey+")", pruneLockClass).Scan(&locked); err != nil {
			return Pruned{}, false, fmt.Errorf("prune: take the retention lock: %w", err)
		}
		if !locked {
			return Pruned{}, false, nil
		}
		// Unlocked on a context of its own: the pass's may have ended, and
		// a connection that went back to the pool still holding the lock
		// would keep every replica from pruning.
		defer conn.ExecContext(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock(?, "+pruneLockKey+")", pruneLockClass) //nolint:errcheck // the session's end frees it too
	}
	steps := []struct {
		age  time.Duration
		step func(context.Context, time.Time) (Pruned, error)
	}{
		// Jobs first: what goes with them needs no pass of its own.
		{keep.Jobs, r.pruneJobs},
		{keep.Logs, r.pruneLogs},
		{keep.Artifacts, r.pruneArtifacts},
	}
	for _, s := range steps {
		if s.age <= 0 {
			continue
		}
		cutoff := normalize(now.Add(-s.age))
		for {
			n, err := s.step(ctx, cutoff)
			pruned.add(n)
			if err != nil {
				return pruned, true, fmt.Errorf("prune: %w", err)
			}
			if n.Total() == 0 {
				break
			}
		}
	}
	return pruned, true, nil
}

// finishedBefore selects the finished jobs that ended before cutoff.
func finishedBefore(q *bun.SelectQuery, cutoff time.Time) *bun.SelectQuery {
	return q.Where("status IN (?)", bun.In(FinishedStatuses)).
		Where("finished_at < ?", cutoff)
}

// pruneJobs removes one batch of jobs that finished before cutoff: their
// log lines first, in batches of their own, then the jobs with their
// events and artifacts in one transaction.
func (r *Registry) pruneJobs(ctx context.Context, cutoff time.Time) (Pruned, error) {
	var ids []string
	err := finishedBefore(r.db.NewSelect().Table("jobs").Column("id"), cutoff).
		OrderExpr("finished_at").Limit(r.pruneBatches.jobs).Scan(ctx, &ids)
	if err != nil || len(ids) == 0 {
		return Pruned{}, err
	}
	var pruned Pruned
	for {
		n, err := r.deleteLogs(ctx, r.db.NewSelect().Table("job_logs").Column("id").Where("job_id IN (?)", bun.In(ids)))
		pruned.JobLogs += n
		if err != nil {
			return pruned, err
		}
		if n < r.pruneBatches.logs {
			break
		}
	}
	err = r.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		for _, t := range []struct {
			table string
			count *int64
		}{{"job_events", &pruned.JobEvents}, {"job_artifacts", &pruned.JobArtifacts}} {
			res, err := tx.NewDelete().Table(t.table).Where("job_id IN (?)", bun.In(ids)).Exec(ctx)
			if err != nil {
				return fmt.Errorf("%s: %w", t.table, err)
			}
			*t.count, _ = res.RowsAffected()
		}
		// The finished filter again: a job cannot leave a final status, but
		// the statement says what it removes on its own.
		res, err := tx.NewDelete().Table("jobs").Where("id IN (?)", bun.In(ids)).
			Where("status IN (?)", bun.In(FinishedStatuses)).Exec(ctx)
		if err != nil {
			return fmt.Errorf("jobs: %w", err)
		}
		pruned.Jobs, _ = res.RowsAffected()
		return nil
	})
	return pruned, err
}

// pruneLogs removes one batch of log lines of jobs that finished before
// cutoff.
func (r *Registry) pruneLogs(ctx context.Context, cutoff time.Time) (Pruned, error) {
	n, err := r.deleteLogs(ctx, r.db.NewSelect().Table("job_logs").Column("id").
		Where("job_id IN (?)", finishedBefore(r.db.NewSelect().Table("jobs").Column("id"), cutoff)))
	return Pruned{JobLogs: n}, err
}

// deleteLogs removes up to a batch of the log lines ids selects.
func (r *Registry) deleteLogs(ctx context.Context, ids *bun.SelectQuery) (int64, error) {
	res, err := r.db.NewDelete().Table("job_logs").Where("id IN (?)", ids.Limit(r.pruneBatches.logs)).Exec(ctx)
	if err != nil {
		return 0, fmt.Errorf("job_logs: %w", err)
	}
	n, _ := res.RowsAffected()
	return n, nil
}

// pruneArtifacts removes one batch of artifacts of jobs that finished
// before cutoff.
func (r *Registry) pruneArtifacts(ctx context.Context, cutoff time.Time) (Pruned, error) {
	batch := r.db.NewSelect().Table("job_artifacts").Column("job_id", "name").
		Where("job_id IN (?)", finishedBefore(r.db.NewSelect().Table("jobs").Column("id"), cutoff)).
		Limit(r.pruneBatches.artifacts)
	res, err := r.db.NewDelete().Table("job_artifacts").Where("(job_id, name) IN (?)", batch).Exec(ctx)
	if err != nil {
		return Pruned{}, fmt.Errorf("job_artifacts: %w", err)
	}
	n, _ := res.RowsAffected()
	return Pruned{JobArtifacts: n}, nil
}
