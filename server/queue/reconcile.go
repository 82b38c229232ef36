package queue

import (
	"context"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
)

// PendingLister pages through the jobs the database says are pending, in
// id order after afterID.
type PendingLister func(ctx context.Context, afterID string, limit int) ([]Task, error)

// Held reports whether this replica holds the attempt itself (its
// dispatcher has it waiting for a robot, or running), so that Redis need
// not carry it. nil holds nothing.
type Held func(t Task) bool

// reconcilePage is how many pending jobs the reconciler reads at once.
const reconcilePage = 500

// Reconcile walks every pending job and queues each one that neither this
// replica nor Redis holds, returning how many it queued. This is what makes
// a Redis flush or restart lose no job. Enqueueing is idempotent, so asking
// Redis to add the task is also the cheapest way to ask whether it holds it.
//
// A job this replica holds stays out of Redis: its task was taken when it
// came here, and queueing it again on every pass would only have it taken
// again, and a backlog of jobs no robot can run would cost the embedded
// Redis, whose every command walks all its keys, more with each job.
func (q *Queue) Reconcile(ctx context.Context, list PendingLister, held Held) (int, error) {
	return q.reconcile(ctx, list, held, func(Task, bool) {})
}

// reconcile is Reconcile telling seen of every pending job it lists, and
// whether it queued it.
func (q *Queue) reconcile(ctx context.Context, list PendingLister, held Held, seen func(t Task, queued bool)) (int, error) {
	// asynq registers a queue name in Redis only on a client's first
	// enqueue to it; a fresh client per pass registers them again after a
	// flush, or inspection and dispatch would not see the restored tasks.
	client := asynq.NewClientFromRedisClient(q.rdb)
	n := 0
	after := ""
	for {
		tasks, err := list(ctx, after, reconcilePage)
		if err != nil {
			return n, fmt.Errorf("reconcile: list pending jobs: %w", err)
		}
		for _, t := range tasks {
			if held != nil && held(t) {
				seen(t, false)
				continue
			}
			added, err := enqueue(ctx, client, t)
			if err != nil {
				return n, fmt.Errorf("reconcile: %w", err)
			}
			if added {
				n++
			}
			seen(t, added)
		}
		if len(tasks) < reconcilePage {
			return n, nil
		}
		after = tasks[len(tasks)-1].JobID
	}
}

// RunReconciler reconciles at once and then every interval until ctx is
// done. It says at info level only the attempts it queued for the first
// time: a job that waits on another replica is queued on many passes until
// a replica that does not hold it takes it, and one line per pass for it
// would say nothing new.
func (q *Queue) RunReconciler(ctx context.Context, list PendingLister, held Held, interval time.Duration) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	// The attempts queued once, while they stay pending: bounded by the
	// pending jobs.
	last := map[string]int32{}
	for {
		now := map[string]int32{}
		fresh, again, pending := 0, 0, 0
		_, err := q.reconcile(ctx, list, held, func(t Task, queued bool) {
			pending++
			before, ok := last[t.JobID]
			ok = ok && before == t.Attempt
			switch {
			case queued && ok:
				again++
			case queued:
				fresh++
			}
			if queued || ok {
				now[t.JobID] = t.Attempt
			}
		})
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			q.logger.Warn("reconcile the queue with the database", "err", err)
		}
		if fresh > 0 {
			q.logger.Info("queued pending jobs that Redis did not hold", "jobs", fresh)
		}
		if err == nil {
			q.logger.Debug("reconciled the queue with the database", "pending", pending, "queued", fresh+again, "queued_again", again)
			last = now
		} else {
			// A pass cut short saw only part of the jobs: what it did not
			// reach is still as the pass before left it.
			for id, a := range now {
				last[id] = a
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}
