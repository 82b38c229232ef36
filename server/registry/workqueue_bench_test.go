package registry

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/casarerpa/casare/server/registry/registrytest"
)

// BenchmarkWorkQueueAdd adds items in batches of 10,000 on PostgreSQL, as
// AddWorkItems gets them from the API.
func BenchmarkWorkQueueAdd(b *testing.B) {
	ctx := context.Background()
	r := openPostgres(b)
	if err := r.CreateWorkQueue(ctx, &WorkQueue{Name: "bench"}, nil); err != nil {
		b.Fatal(err)
	}
	const batch = MaxWorkItemsPerAdd
	n := 0
	for b.Loop() {
		b.StopTimer()
		items := make([]WorkItem, batch)
		for i := range items {
			items[i] = WorkItem{Reference: fmt.Sprintf("ref-%d", n), Data: `{"invoice":"INV-1","amount":12.5}`}
			n++
		}
		b.StartTimer()
		if _, err := r.AddWorkItems(ctx, AddItems{Queue: "bench", Items: items, By: "bench"}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "items/s")
}

// BenchmarkWorkQueueTakeComplete has 50 jobs take and complete items at
// once on PostgreSQL; an op is one item taken and completed.
func BenchmarkWorkQueueTakeComplete(b *testing.B) {
	ctx := context.Background()
	// The pool a server has by default (20), not the tests' 10.
	r, err := Open(ctx, Options{DatabaseURL: registrytest.DatabaseURL(b)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { r.Close() })
	if _, err := r.Migrate(ctx); err != nil {
		b.Fatal(err)
	}
	if err := r.CreateWorkQueue(ctx, &WorkQueue{Name: "bench"}, nil); err != nil {
		b.Fatal(err)
	}
	const takers = 50
	holders := make([]ItemHolder, takers)
	for i := range holders {
		job := newJob("bench")
		job.Status, job.RobotID = JobRunning, fmt.Sprintf("robot-%d", i)
		if _, err := r.db.NewInsert().Model(job).Exec(ctx); err != nil {
			b.Fatal(err)
		}
		holders[i] = ItemHolder{JobID: job.ID, Attempt: 1, RobotID: job.RobotID}
	}
	b.StopTimer()
	for added := 0; added < b.N; added += MaxWorkItemsPerAdd {
		if _, err := r.AddWorkItems(ctx, AddItems{Queue: "bench", Items: make([]WorkItem, min(MaxWorkItemsPerAdd, b.N-added)), By: "bench"}); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	done := 0
	for _, h := range holders {
		wg.Go(func() {
			for {
				item, err := r.TakeWorkItem(ctx, h, "bench")
				if err != nil {
					b.Error(err)
					return
				}
				if item == nil {
					return
				}
				if _, err := r.CompleteWorkItem(ctx, h, item.ID, `{"ok":true}`); err != nil {
					b.Error(err)
					return
				}
				mu.Lock()
				done++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if done != b.N {
		b.Fatalf("processed %d items of %d", done, b.N)
	}
	b.ReportMetric(float64(done)/elapsed.Seconds(), "items/s")
}

// BenchmarkWorkQueueStats reads the figures of a queue holding 1,000,000
// items (most of them NEW, some ended) on PostgreSQL.
func BenchmarkWorkQueueStats(b *testing.B) {
	ctx := context.Background()
	r := openPostgres(b)
	if err := r.CreateWorkQueue(ctx, &WorkQueue{Name: "bench", SLAMillis: 60000}, nil); err != nil {
		b.Fatal(err)
	}
	const total, ended = 1_000_000, 100_000
	// The rows in one statement: adding a million through the API would
	// only make the benchmark slow to set up.
	_, err := r.db.ExecContext(ctx, `INSERT INTO work_items (id, queue, reference, unique_reference, priority, data, status, end_status,
			output, progress, exception, reason, retry, retry_of, job_id, attempt, robot_id, breached, created_by,
			created_at, started_at, ended_at, updated_at)
		SELECT casare_uuidv7(), 'bench', 'ref-' || g, false, 2, '{"n":1}', CASE WHEN g <= ? THEN 'successful' ELSE 'new' END,
			CASE WHEN g <= ? THEN 'successful' ELSE '' END, '', '', '', '', 0, '', '', 0, '', false, 'bench',
			now() - interval '1 hour' + g * interval '1 millisecond', now(), CASE WHEN g <= ? THEN now() END, now()
		FROM generate_series(1, ?) AS g`, ended, ended, ended, total)
	if err != nil {
		b.Fatal(err)
	}
	var c counts
	c.add("bench", string(ItemNew), total-ended, 0)
	c.add("bench", string(ItemSuccessful), ended, 0)
	c.add("bench", counterProcessed, ended, ended*1500)
	if err := c.flush(ctx, r.db, 0); err != nil {
		b.Fatal(err)
	}
	if _, err := r.db.ExecContext(ctx, "ANALYZE work_items"); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		stats, err := r.WorkQueueStats(ctx, "bench")
		if err != nil {
			b.Fatal(err)
		}
		if s := stats["bench"]; s.Counts[ItemNew] != total-ended || s.OldestNew == nil {
			b.Fatalf("stats = %+v", s)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/stats")
}
