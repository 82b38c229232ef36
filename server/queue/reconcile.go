package queue

import (
	"context"
	"fmt"
	"github.com/hibiken/asynq"
	"time"
)

// PendingLister pages through the jobs the database says are pending, in
// id order after afterID.
type PendingLister func(ctx context.Context, afterID string, limit int) ([]Task, error)

// reconcilePage is how many pending jobs the reconciler reads at once.
const reconcilePage = 500

// Reconcile walks every pending job and queues each one Redis does not
// hold, returning how many it queued. This is what makes a Redis flush or
// restart lose no job. Enqueueing is idempotent, so asking Redis to add the
// task is also the cheapest way to ask whether it holds it.
func (q *Queue) Reconcile(ctx context.Context, list PendingLister) (int, error) {
	// asynq registers a queue name in Redis only on a client's first
	// enqueue to it; a fresh client per pass registers them again after a
	// flush, or inspection and dispatch would not see the restored tasks.
	client := asynq.NewClientFromRedisClient(q.rdb)
	restored := 0
	after := ""
	for {
		tasks, err := list(ctx, after, reconcilePage)
		if err != nil {
			return restored, fmt.Errorf("reconcile: list pending jobs: %w", err)
		}
		for _, t := range tasks {
			added, err := enqueue(ctx, client, t)
			if err != nil {
				return restored, fmt.Errorf("reconcile: %w", err)
			}
			if added {
				restored++
			}
		}
		if len(tasks) < reconcilePage {
			return restored, nil
		}
		after = tasks[len(tasks)-1].JobID
	}
}

// RunReconciler reconciles at once and then every interval until ctx is
// done.
func (q *Queue) RunReconciler(ctx context.Context, list PendingLister, interval time.Duration) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		restored, err := q.Reconcile(ctx, list)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			q.logger.Warn("reconcile the queue with the database", "err", err)
		case restored > 0:
			q.logger.Info("queued pending jobs that Redis did not hold", "jobs", restored)
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}
