package queue

import (
	"github.com/casarerpa/casare/server/registry"

	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/casarerpa/casare/server/logtest"
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
	for p, want := range map[registry.Priority]string{registry.PriorityLow: "low", registry.PriorityNormal: "normal", registry.PriorityHigh: "high", registry.PriorityCritical: "critical", 0: "normal", 9: "normal"} {
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
		a := Task{JobID: "a", Attempt: 1, Priority: registry.PriorityHigh}
		b := Task{JobID: "b", Attempt: 1, Priority: registry.PriorityLow}
		for _, task := range []Task{a, a, b} {
			if err := q.Enqueue(ctx, task); err != nil {
				t.Fatal(err)
			}
		}
		depth, err := q.Depth(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := map[registry.Priority]int{registry.PriorityLow: 1, registry.PriorityNormal: 0, registry.PriorityHigh: 1, registry.PriorityCritical: 0}
		if fmt.Sprint(depth) != fmt.Sprint(want) {
			t.Fatalf("Depth() = %v, want %v (enqueueing twice must not duplicate)", depth, want)
		}
		if held, err := q.Held(ctx, a); err != nil || !held {
			t.Fatalf("Held(a) = %v, %v", held, err)
		}
		if held, _ := q.Held(ctx, Task{JobID: "a", Attempt: 2, Priority: registry.PriorityHigh}); held {
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
		if err := q.Remove(ctx, Task{JobID: "never", Attempt: 1, Priority: registry.PriorityCritical}); err != nil {
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
		tasks[i] = Task{JobID: fmt.Sprintf("job-%05d", i), Attempt: 1, Priority: registry.Priority(i%4 + 1)}
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
		restored, err := q.Reconcile(ctx, pendingList(tasks), nil)
		if err != nil || restored != 1000 {
			t.Fatalf("Reconcile() = %d, %v; want the 1000 not queued", restored, err)
		}
		flush(t, q)
		restored, err = q.Reconcile(ctx, pendingList(tasks), nil)
		if err != nil || restored != 1200 {
			t.Fatalf("Reconcile() after a flush = %d, %v; want 1200", restored, err)
		}
		if restored, err = q.Reconcile(ctx, pendingList(tasks), nil); err != nil || restored != 0 {
			t.Fatalf("Reconcile() again = %d, %v; want 0", restored, err)
		}
		depth, err := q.Depth(ctx)
		if err != nil || depth[registry.PriorityLow]+depth[registry.PriorityNormal]+depth[registry.PriorityHigh]+depth[registry.PriorityCritical] != 1200 {
			t.Fatalf("Depth() after reconciling = %v, %v; want 1200 in all", depth, err)
		}
	})
}

func TestRunReconcilerAfterAFlush(t *testing.T) {
	forEachBackend(t, func(t *testing.T, q *Queue) {
		ctx, cancel := context.WithCancel(context.Background())
		tasks := manyTasks(50)
		done := make(chan struct{})
		go func() { q.RunReconciler(ctx, pendingList(tasks), nil, 20*time.Millisecond); close(done) }()
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
		if err := q.Enqueue(ctx, Task{JobID: fmt.Sprint(i), Attempt: 1, Priority: registry.PriorityNormal}); err != nil {
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
	if _, err := q.Reconcile(ctx, pendingList(tasks), nil); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		if _, err := q.Reconcile(ctx, pendingList(tasks), nil); err != nil {
			b.Fatal(err)
		}
	}
}

// A job that waits on another replica is queued on every pass and taken
// there every time; the reconciler says so once, not once per pass.
func TestRunReconcilerLogsAJobQueuedOnEveryPassOnce(t *testing.T) {
	forEachBackend(t, func(t *testing.T, q *Queue) {
		var out logtest.Buffer
		q.logger = slog.New(slog.NewTextHandler(&out, nil))
		ctx, cancel := context.WithCancel(context.Background())
		var attempt atomic.Int32
		attempt.Store(1)
		task := func() Task {
			return Task{JobID: "waits-elsewhere", Attempt: attempt.Load(), Priority: registry.PriorityNormal}
		}
		list := func(ctx context.Context, after string, limit int) ([]Task, error) {
			return pendingList([]Task{task()})(ctx, after, limit)
		}
		done := make(chan struct{})
		go func() { q.RunReconciler(ctx, list, nil, 10*time.Millisecond); close(done) }()
		t.Cleanup(func() { cancel(); <-done })
		lines := func() int { return strings.Count(out.String(), "queued pending jobs that Redis did not hold") }
		// Take the task each time a pass queued it, as the replica that
		// holds the job does.
		take := func(times int) {
			t.Helper()
			deadline := time.Now().Add(20 * time.Second)
			for taken := 0; taken < times; {
				if time.Now().After(deadline) {
					t.Fatalf("the reconciler queued the job %d times in 20 s, want %d", taken, times)
				}
				if held, err := q.Held(ctx, task()); err != nil || !held {
					time.Sleep(time.Millisecond)
					continue
				}
				if err := q.Remove(ctx, task()); err != nil {
					t.Fatal(err)
				}
				taken++
			}
		}
		take(5)
		if n := lines(); n != 1 {
			t.Fatalf("queued 5 times, said so %d times, want once:\n%s", n, out.String())
		}
		// The job's next attempt is news.
		attempt.Store(2)
		take(3)
		if n := lines(); n != 2 {
			t.Fatalf("queued attempt 2 three times, said so %d times in all, want 2:\n%s", n, out.String())
		}
	})
}

// The embedded Redis expires keys on its own: asynq relies on it.
func TestEmbeddedRedisExpiresKeys(t *testing.T) {
	q, err := Open(context.Background(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	ctx := context.Background()
	if err := q.rdb.Set(ctx, "lease", "x", 1500*time.Millisecond).Err(); err != nil {
		t.Fatal(err)
	}
	if err := q.rdb.Set(ctx, "forever", "x", 0).Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return q.rdb.Exists(ctx, "lease").Val() == 0 })
	if q.rdb.Exists(ctx, "forever").Val() != 1 {
		t.Fatal("a key without a TTL expired")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 20 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The embedded Redis serves one process: a task for a job that process
// holds stays out of it. A real Redis carries every task to every replica.
func TestKeepHeldOut(t *testing.T) {
	held := func(t Task) bool { return t.JobID == "held" }
	heldTask := Task{JobID: "held", Attempt: 1, Priority: registry.PriorityNormal}
	other := Task{JobID: "other", Attempt: 1, Priority: registry.PriorityNormal}
	forEachBackend(t, func(t *testing.T, q *Queue) {
		ctx := context.Background()
		q.KeepHeldOut(held)
		for _, task := range []Task{heldTask, other} {
			if err := q.Enqueue(ctx, task); err != nil {
				t.Fatal(err)
			}
		}
		if ok, err := q.Held(ctx, other); err != nil || !ok {
			t.Fatalf("Held(other) = %v, %v; want it queued", ok, err)
		}
		ok, err := q.Held(ctx, heldTask)
		if err != nil {
			t.Fatal(err)
		}
		if want := !q.Embedded(); ok != want {
			t.Fatalf("a task this process holds: in Redis %v, want %v (embedded %v)", ok, want, q.Embedded())
		}
	})
}
