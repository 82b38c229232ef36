package queue

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/casarerpa/casare/server/queue/queuetest"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// Real-Redis tests each take a DB index of their own from this pool,
// flushed before and after and given back when the test ends; the
// end-to-end tests use 9 and 11 to 15.
var freeDBs = func() chan int {
	ch := make(chan int, 8)
	for db := 1; db <= 8; db++ {
		ch <- db
	}
	return ch
}()

func testDB(t testing.TB) int {
	db := <-freeDBs
	t.Cleanup(func() { freeDBs <- db })
	return db
}

// forEachBackend runs test on the embedded Redis and on the real one.
func forEachBackend(t *testing.T, test func(t *testing.T, q *Queue)) {
	t.Helper()
	t.Run("embedded", func(t *testing.T) {
		q, err := Open(context.Background(), Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { q.Close() })
		test(t, q)
	})
	t.Run("redis", func(t *testing.T) {
		test(t, openRedis(t))
	})
}

func openRedis(t testing.TB) *Queue {
	t.Helper()
	url := queuetest.RedisURL(t, testDB(t))
	q, err := Open(context.Background(), Options{RedisURL: url, Environment: "test"})
	if err != nil {
		t.Fatal(err)
	}
	flush(t, q)
	t.Cleanup(func() { flush(t, q); q.Close() })
	return q
}

func flush(t testing.TB, q *Queue) {
	t.Helper()
	if err := q.rdb.FlushDB(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
}

func TestNames(t *testing.T) {
	if got := TaskID("0190", 2); got != "job:0190:2" {
		t.Errorf("TaskID = %q", got)
	}
	for p, want := range map[Priority]string{PriorityLow: "low", PriorityNormal: "normal", PriorityHigh: "high", PriorityCritical: "critical", 0: "normal", 9: "normal"} {
		if got := QueueName(p); got != want {
			t.Errorf("QueueName(%d) = %q, want %q", p, got, want)
		}
	}
	if q := Queues(); q["critical"] <= q["high"] || q["high"] <= q["normal"] || q["normal"] <= q["low"] {
		t.Errorf("Queues() = %v: higher priorities must weigh more", q)
	}
}

func TestEnqueueRemoveDepth(t *testing.T) {
	forEachBackend(t, func(t *testing.T, q *Queue) {
		ctx := context.Background()
		a := Task{JobID: "a", Attempt: 1, Priority: PriorityHigh}
		b := Task{JobID: "b", Attempt: 1, Priority: PriorityLow}
		for _, task := range []Task{a, a, b} {
			if err := q.Enqueue(ctx, task); err != nil {
				t.Fatal(err)
			}
		}
		depth, err := q.Depth(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := map[Priority]int{PriorityLow: 1, PriorityNormal: 0, PriorityHigh: 1, PriorityCritical: 0}
		if fmt.Sprint(depth) != fmt.Sprint(want) {
			t.Fatalf("Depth() = %v, want %v (enqueueing twice must not duplicate)", depth, want)
		}
		if held, err := q.Held(ctx, a); err != nil || !held {
			t.Fatalf("Held(a) = %v, %v", held, err)
		}
		if held, _ := q.Held(ctx, Task{JobID: "a", Attempt: 2, Priority: PriorityHigh}); held {
			t.Fatal("attempt 2 of a is held, but only attempt 1 was queued")
		}
		if err := q.Remove(ctx, a); err != nil {
			t.Fatal(err)
		}
		if held, _ := q.Held(ctx, a); held {
			t.Fatal("a is still held after Remove")
		}
		if err := q.Remove(ctx, a); err != nil {
			t.Fatalf("removing a task no longer there: %v", err)
		}
		if err := q.Remove(ctx, Task{JobID: "never", Attempt: 1, Priority: PriorityCritical}); err != nil {
			t.Fatalf("removing from a queue never used: %v", err)
		}
	})
}

func pendingList(tasks []Task) PendingLister {
	return func(_ context.Context, after string, limit int) ([]Task, error) {
		var out []Task
		for _, t := range tasks {
			if t.JobID > after && len(out) < limit {
				out = append(out, t)
			}
		}
		return out, nil
	}
}

func manyTasks(n int) []Task {
	tasks := make([]Task, n)
	for i := range tasks {
		tasks[i] = Task{JobID: fmt.Sprintf("job-%05d", i), Attempt: 1, Priority: Priority(i%4 + 1)}
	}
	return tasks
}

func TestReconcileRestoresWhatAFlushLost(t *testing.T) {
	forEachBackend(t, func(t *testing.T, q *Queue) {
		ctx := context.Background()
		tasks := manyTasks(1200) // more than two pages
		for _, task := range tasks[:200] {
			if err := q.Enqueue(ctx, task); err != nil {
				t.Fatal(err)
			}
		}
		restored, err := q.Reconcile(ctx, pendingList(tasks))
		if err != nil || restored != 1000 {
			t.Fatalf("Reconcile() = %d, %v; want the 1000 not queued", restored, err)
		}
		flush(t, q)
		restored, err = q.Reconcile(ctx, pendingList(tasks))
		if err != nil || restored != 1200 {
			t.Fatalf("Reconcile() after a flush = %d, %v; want 1200", restored, err)
		}
		if restored, err = q.Reconcile(ctx, pendingList(tasks)); err != nil || restored != 0 {
			t.Fatalf("Reconcile() again = %d, %v; want 0", restored, err)
		}
		depth, err := q.Depth(ctx)
		if err != nil || depth[PriorityLow]+depth[PriorityNormal]+depth[PriorityHigh]+depth[PriorityCritical] != 1200 {
			t.Fatalf("Depth() after reconciling = %v, %v; want 1200 in all", depth, err)
		}
	})
}

func TestRunReconcilerAfterAFlush(t *testing.T) {
	forEachBackend(t, func(t *testing.T, q *Queue) {
		ctx, cancel := context.WithCancel(context.Background())
		tasks := manyTasks(50)
		done := make(chan struct{})
		go func() { q.RunReconciler(ctx, pendingList(tasks), 20*time.Millisecond); close(done) }()
		t.Cleanup(func() { cancel(); <-done })
		waitHeld := func() {
			t.Helper()
			deadline := time.Now().Add(10 * time.Second)
			for {
				held, err := q.Held(context.Background(), tasks[49])
				if err == nil && held {
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("the reconciler did not queue the pending jobs: %v %v", held, err)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
		waitHeld()
		flush(t, q)
		waitHeld()
	})
}

func TestCollector(t *testing.T) {
	forEachBackend(t, func(t *testing.T, q *Queue) {
		ctx := context.Background()
		for _, task := range manyTasks(6) {
			if err := q.Enqueue(ctx, task); err != nil {
				t.Fatal(err)
			}
		}
		want := fmt.Sprintf(`
# HELP casare_queue_depth Jobs waiting in the dispatch queue, by priority.
# TYPE casare_queue_depth gauge
casare_queue_depth{environment=%[1]q,priority="critical"} 1
casare_queue_depth{environment=%[1]q,priority="high"} 1
casare_queue_depth{environment=%[1]q,priority="low"} 2
casare_queue_depth{environment=%[1]q,priority="normal"} 2
`, q.environment)
		if err := testutil.CollectAndCompare(q.Collector(nil), strings.NewReader(want)); err != nil {
			t.Fatal(err)
		}
	})
}

func BenchmarkEnqueue(b *testing.B) {
	q := openRedis(b)
	ctx := context.Background()
	b.ResetTimer()
	for i := range b.N {
		if err := q.Enqueue(ctx, Task{JobID: fmt.Sprint(i), Attempt: 1, Priority: PriorityNormal}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReconcile measures a pass over 1,000 pending jobs that Redis
// already holds: the steady-state cost of the reconciler.
func BenchmarkReconcile(b *testing.B) {
	q := openRedis(b)
	ctx := context.Background()
	tasks := manyTasks(1000)
	if _, err := q.Reconcile(ctx, pendingList(tasks)); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		if _, err := q.Reconcile(ctx, pendingList(tasks)); err != nil {
			b.Fatal(err)
		}
	}
}
