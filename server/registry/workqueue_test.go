package registry

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// queueBundle is a registry with a queue and helpers to run jobs that
// take its items.
type queueBundle struct {
	t     *testing.T
	r     *Registry
	ctx   context.Context
	queue string
}

func setupQueue(t *testing.T, r *Registry, q WorkQueue) *queueBundle {
	t.Helper()
	if q.Name == "" {
		q.Name = "invoices"
	}
	q.UpdatedBy = "tester"
	if err := r.CreateWorkQueue(context.Background(), &q, nil); err != nil {
		t.Fatal(err)
	}
	return &queueBundle{t: t, r: r, ctx: context.Background(), queue: q.Name}
}

// runningJob stores a job RUNNING on attempt 1 on robot and returns its
// holder.
func (b *queueBundle) runningJob(robot string) ItemHolder {
	b.t.Helper()
	return b.jobIn(JobRunning, robot)
}

// jobIn stores a job in status on attempt 1 on robot and returns its
// holder.
func (b *queueBundle) jobIn(status JobStatus, robot string) ItemHolder {
	b.t.Helper()
	job := newJob("worker")
	job.Status, job.RobotID = status, robot
	if _, err := b.r.db.NewInsert().Model(job).Exec(b.ctx); err != nil {
		b.t.Fatal(err)
	}
	return ItemHolder{JobID: job.ID, Attempt: 1, RobotID: robot}
}

func (b *queueBundle) add(items ...WorkItem) []string {
	b.t.Helper()
	ids, err := b.r.AddWorkItems(b.ctx, AddItems{Queue: b.queue, Items: items, By: "tester"})
	if err != nil {
		b.t.Fatal(err)
	}
	return ids
}

func (b *queueBundle) take(h ItemHolder) *WorkItem {
	b.t.Helper()
	item, err := b.r.TakeWorkItem(b.ctx, h, b.queue)
	if err != nil {
		b.t.Fatal(err)
	}
	return item
}

func (b *queueBundle) counts() map[WorkItemStatus]int64 {
	b.t.Helper()
	stats, err := b.r.WorkQueueStats(b.ctx, b.queue)
	if err != nil {
		b.t.Fatal(err)
	}
	return stats[b.queue].Counts
}

// wantCounts checks the maintained counters against a count of the rows.
func (b *queueBundle) wantCounts(want map[WorkItemStatus]int64) {
	b.t.Helper()
	got := b.counts()
	var rows []struct {
		Status WorkItemStatus `bun:"status"`
		N      int64          `bun:"n"`
	}
	if err := b.r.db.NewSelect().Model((*WorkItem)(nil)).ColumnExpr("status, COUNT(*) AS n").
		Where("queue = ?", b.queue).Group("status").Scan(b.ctx, &rows); err != nil {
		b.t.Fatal(err)
	}
	counted := map[WorkItemStatus]int64{}
	for _, row := range rows {
		counted[row.Status] = row.N
	}
	for _, s := range WorkItemStatuses {
		if got[s] != counted[s] {
			b.t.Errorf("counter %s = %d, but %d rows", s, got[s], counted[s])
		}
		if want != nil && got[s] != want[s] {
			b.t.Errorf("counter %s = %d, want %d", s, got[s], want[s])
		}
	}
}

func TestWorkQueueTakeOrder(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		b := setupQueue(t, r, WorkQueue{})
		soon, later := time.Now().Add(time.Hour), time.Now().Add(2*time.Hour)
		future := time.Now().Add(time.Hour)
		ids := b.add(
			WorkItem{Reference: "low", Priority: PriorityLow},
			WorkItem{Reference: "normal-old"},
			WorkItem{Reference: "normal-no-deadline"},
			WorkItem{Reference: "normal-later", Deadline: &later},
			WorkItem{Reference: "normal-soon", Deadline: &soon},
			WorkItem{Reference: "high-deferred", Priority: PriorityHigh, DeferUntil: &future},
			WorkItem{Reference: "high", Priority: PriorityHigh},
		)
		if len(ids) != 7 {
			t.Fatalf("AddWorkItems gave %d ids", len(ids))
		}
		h := b.runningJob("robot-1")
		var got []string
		for {
			item := b.take(h)
			if item == nil {
				break
			}
			if item.Status != ItemInProgress || item.JobID != h.JobID || item.Attempt != 1 || item.RobotID != "robot-1" || item.StartedAt == nil {
				t.Errorf("taken item = %+v", item)
			}
			got = append(got, item.Reference)
		}
		want := "high normal-soon normal-later normal-old normal-no-deadline low"
		if strings.Join(got, " ") != want {
			t.Errorf("take order = %v, want %s (the deferred item not at all)", got, want)
		}
		b.wantCounts(map[WorkItemStatus]int64{ItemNew: 1, ItemInProgress: 6})
		if _, err := r.TakeWorkItem(b.ctx, h, "nothing"); !errors.Is(err, ErrNotFound) {
			t.Errorf("take from an unknown queue = %v, want ErrNotFound", err)
		}
	})
}

func TestWorkItemFencing(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		b := setupQueue(t, r, WorkQueue{})
		b.add(WorkItem{Reference: "a"}, WorkItem{Reference: "b"})
		h := b.runningJob("robot-1")
		other := b.runningJob("robot-2")
		item := b.take(h)

		for name, call := range map[string]func() error{
			"another job completes": func() error { _, err := r.CompleteWorkItem(b.ctx, other, item.ID, ""); return err },
			"stale attempt": func() error {
				_, err := r.CompleteWorkItem(b.ctx, ItemHolder{h.JobID, 2, "robot-1"}, item.ID, "")
				return err
			},
			"wrong robot": func() error {
				_, err := r.CompleteWorkItem(b.ctx, ItemHolder{h.JobID, 1, "robot-2"}, item.ID, "")
				return err
			},
			"another job fails":    func() error { _, _, err := r.FailWorkItem(b.ctx, other, item.ID, ExceptionBusiness, "x"); return err },
			"another job progress": func() error { return r.WorkItemProgress(b.ctx, other, item.ID, "50%") },
			"unknown job takes": func() error {
				_, err := r.TakeWorkItem(b.ctx, ItemHolder{"nope", 1, "robot-1"}, b.queue)
				return err
			},
		} {
			if err := call(); !errors.Is(err, ErrConflict) {
				t.Errorf("%s = %v, want ErrConflict", name, err)
			}
		}
		if _, err := r.CompleteWorkItem(b.ctx, h, item.ID, `[1]`); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("complete with an array output = %v, want ErrInvalidArgument", err)
		}
		if err := r.WorkItemProgress(b.ctx, h, item.ID, "half way"); err != nil {
			t.Fatal(err)
		}
		done, err := r.CompleteWorkItem(b.ctx, h, item.ID, `{"total":3}`)
		if err != nil || done.Status != ItemSuccessful || done.Output != `{"total":3}` || done.Progress != "half way" {
			t.Fatalf("CompleteWorkItem = %+v, %v", done, err)
		}
		if _, err := r.CompleteWorkItem(b.ctx, h, item.ID, ""); !errors.Is(err, ErrConflict) {
			t.Errorf("completing twice = %v, want ErrConflict", err)
		}
		if _, err := r.CompleteWorkItem(b.ctx, h, "missing", ""); !errors.Is(err, ErrNotFound) {
			t.Errorf("completing a missing item = %v, want ErrNotFound", err)
		}
		got, history, err := r.GetWorkItem(b.ctx, item.ID)
		if err != nil || got.Status != ItemSuccessful || len(history) != 4 {
			t.Fatalf("GetWorkItem = %+v, %d events (%+v), %v; want added, taken, progress, completed", got, len(history), history, err)
		}
		b.wantCounts(map[WorkItemStatus]int64{ItemNew: 1, ItemSuccessful: 1})
	})
}

func TestWorkItemRetryRules(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		b := setupQueue(t, r, WorkQueue{MaxRetries: 1, UniqueReferences: true})
		b.add(WorkItem{Reference: "biz"}, WorkItem{Reference: "app"})
		h := b.runningJob("robot-1")

		first := b.take(h)
		failed, retry, err := r.FailWorkItem(b.ctx, h, first.ID, ExceptionBusiness, "no invoice number")
		if err != nil || failed.Status != ItemFailed || retry != nil || failed.Exception != ExceptionBusiness {
			t.Fatalf("business failure = %+v, %+v, %v; want FAILED and no retry", failed, retry, err)
		}
		second := b.take(h)
		retried, retry, err := r.FailWorkItem(b.ctx, h, second.ID, ExceptionApplication, "portal timed out")
		if err != nil || retried.Status != ItemRetried || retry == nil {
			t.Fatalf("application failure = %+v, %+v, %v; want RETRIED with a copy", retried, retry, err)
		}
		if retry.Status != ItemNew || retry.Retry != 1 || retry.RetryOf != second.ID || retry.Reference != "app" {
			t.Errorf("retry copy = %+v", retry)
		}
		third := b.take(h)
		if third == nil || third.ID != retry.ID {
			t.Fatalf("next take = %+v, want the retry", third)
		}
		last, again, err := r.FailWorkItem(b.ctx, h, third.ID, ExceptionApplication, "portal timed out")
		if err != nil || last.Status != ItemFailed || again != nil {
			t.Fatalf("application failure without retries left = %+v, %+v, %v; want FAILED", last, again, err)
		}
		if _, _, err := r.FailWorkItem(b.ctx, h, third.ID, "other", ""); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("unknown exception = %v, want ErrInvalidArgument", err)
		}
		_, history, err := r.GetWorkItem(b.ctx, third.ID)
		if err != nil || len(history) != 6 {
			t.Errorf("history of the retry = %d events, %v; want its original's and its own (6)", len(history), err)
		}
		// An operator retries the failed item: the old one is RETRIED, a
		// copy NEW; retrying it again is refused.
		ids, err := r.RetryWorkItems(b.ctx, []string{third.ID}, "tester", nil)
		if err != nil || len(ids) != 1 || ids[0] == "" {
			t.Fatalf("RetryWorkItems = %v, %v", ids, err)
		}
		if _, err := r.RetryWorkItems(b.ctx, []string{third.ID}, "tester", nil); !errors.Is(err, ErrConflict) {
			t.Errorf("retrying twice = %v, want ErrConflict", err)
		}
		if _, err := r.RetryWorkItems(b.ctx, []string{first.ID, "missing"}, "tester", nil); !errors.Is(err, ErrNotFound) {
			t.Errorf("retry with a missing id = %v, want ErrNotFound", err)
		}
		b.wantCounts(map[WorkItemStatus]int64{ItemNew: 1, ItemFailed: 1, ItemRetried: 2})
		stats, err := r.WorkQueueStats(b.ctx, b.queue)
		if err != nil || stats[b.queue].ItemsPerMinute <= 0 || stats[b.queue].OldestNew == nil {
			t.Errorf("stats = %+v, %v", stats[b.queue], err)
		}
	})
}

// TestWorkItemsAbandonedWhenJobEnds ends a job holding an item in every
// way a job's attempt ends, through the batched transitions (one statement
// on PostgreSQL) and the audited one (a transaction).
func TestWorkItemsAbandonedWhenJobEnds(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		b := setupQueue(t, r, WorkQueue{MaxRetries: 1, UniqueReferences: true, SLAMillis: 1})
		ends := []struct {
			name        string
			to          JobStatus
			nextAttempt bool
		}{
			{"Succeeded", JobSucceeded, false},
			{"Failed", JobFailed, false},
			{"Cancelled", JobCancelled, false},
			{"RobotLost", JobPending, true},
		}
		for _, audited := range []bool{false, true} {
			for _, end := range ends {
				ref := fmt.Sprintf("%s-%v", end.name, audited)
				b.add(WorkItem{Reference: ref})
				h := b.runningJob("robot-1")
				item := b.take(h)
				if item == nil || item.Reference != ref {
					t.Fatalf("took %+v, want %s", item, ref)
				}
				tr := Transition{JobID: h.JobID, From: []JobStatus{JobRunning}, Attempt: 1, To: end.to, NextAttempt: end.nextAttempt, Message: "ended"}
				var err error
				if audited {
					_, err = r.TransitionJob(b.ctx, tr, &AuditEvent{Actor: "tester", Action: "end", Target: "job/" + h.JobID, Outcome: "ok"})
				} else {
					err = r.TransitionJobs(b.ctx, []Transition{tr})[0].Err
				}
				if err != nil {
					t.Fatal(err)
				}
				got, history, err := r.GetWorkItem(b.ctx, item.ID)
				if err != nil || got.Status != ItemAbandoned || got.EndedAt == nil || !got.Breached {
					t.Fatalf("%s (audited %v): item = %+v, %v; want ABANDONED at once, past its SLA", end.name, audited, got, err)
				}
				if len(history) != 4 || history[3].Status != ItemNew || !strings.Contains(history[3].Message, "retry 1") {
					t.Errorf("%s: history = %+v; want added, taken, abandoned, retry", end.name, history)
				}
				retry := b.take(b.runningJob("robot-2"))
				if retry == nil || retry.Reference != ref || retry.Retry != 1 || retry.RetryOf != item.ID {
					t.Fatalf("%s: the retry = %+v", end.name, retry)
				}
			}
		}
		b.wantCounts(map[WorkItemStatus]int64{ItemInProgress: 8, ItemAbandoned: 8})
		stats, _ := r.WorkQueueStats(b.ctx, b.queue)
		if stats[b.queue].SLABreaches != 8 {
			t.Errorf("SLA breaches = %d, want 8", stats[b.queue].SLABreaches)
		}
		// A job without items ends as before.
		h := b.runningJob("robot-3")
		if err := r.TransitionJobs(b.ctx, []Transition{{JobID: h.JobID, From: []JobStatus{JobRunning}, To: JobSucceeded}})[0].Err; err != nil {
			t.Fatal(err)
		}
	})
}

// TestWorkItemsOfAnAssignedJob: a robot starts a job as it accepts it, so
// its first call can come before the accept is recorded: a job assigned
// to the robot may take items, its accept keeps them, and a send back
// before the accept (a reject, an accept timeout) abandons them.
func TestWorkItemsOfAnAssignedJob(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		b := setupQueue(t, r, WorkQueue{MaxRetries: 1})
		b.add(WorkItem{Reference: "kept"}, WorkItem{Reference: "sent-back"})
		kept := b.jobIn(JobAssigned, "robot-1")
		if item := b.take(kept); item == nil || item.Reference != "kept" {
			t.Fatalf("an assigned job took %+v, want the item kept", item)
		}
		if err := r.TransitionJobs(b.ctx, []Transition{{JobID: kept.JobID, From: []JobStatus{JobAssigned}, Attempt: 1, To: JobRunning}})[0].Err; err != nil {
			t.Fatal(err)
		}
		if n, err := r.SweepHeldWorkItems(b.ctx, 100); err != nil || n != 0 {
			t.Fatalf("the sweeper let go of %d items, %v; the running job holds its item", n, err)
		}
		back := b.jobIn(JobAssigned, "robot-2")
		item := b.take(back)
		if item == nil || item.Reference != "sent-back" {
			t.Fatalf("took %+v, want the item sent-back", item)
		}
		if err := r.TransitionJobs(b.ctx, []Transition{{JobID: back.JobID, From: []JobStatus{JobAssigned}, Attempt: 1, To: JobPending, NextAttempt: true}})[0].Err; err != nil {
			t.Fatal(err)
		}
		if got, _, err := r.GetWorkItem(b.ctx, item.ID); err != nil || got.Status != ItemAbandoned {
			t.Fatalf("after its job went back before its accept the item is %+v, %v; want ABANDONED", got, err)
		}
		b.wantCounts(map[WorkItemStatus]int64{ItemInProgress: 1, ItemAbandoned: 1, ItemNew: 1})
	})
}

func TestWorkItemSweeper(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		b := setupQueue(t, r, WorkQueue{MaxRetries: 0})
		b.add(WorkItem{Reference: "a"})
		h := b.runningJob("robot-1")
		item := b.take(h)
		// The job ends behind the registry's back, as a take racing the
		// transition would leave it.
		if _, err := r.db.NewUpdate().Model((*Job)(nil)).Set("status = ?", JobFailed).Where("id = ?", h.JobID).Exec(b.ctx); err != nil {
			t.Fatal(err)
		}
		n, err := r.SweepHeldWorkItems(b.ctx, 100)
		if err != nil || n != 1 {
			t.Fatalf("SweepHeldWorkItems = %d, %v; want 1", n, err)
		}
		got, _, _ := r.GetWorkItem(b.ctx, item.ID)
		if got.Status != ItemAbandoned {
			t.Errorf("swept item is %s", got.Status)
		}
		b.wantCounts(map[WorkItemStatus]int64{ItemAbandoned: 1})
	})
}

func TestWorkItemUniqueReferences(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		b := setupQueue(t, r, WorkQueue{UniqueReferences: true})
		b.add(WorkItem{Reference: "INV-1"}, WorkItem{Reference: "INV-2"})
		_, err := r.AddWorkItems(b.ctx, AddItems{Queue: b.queue, By: "tester", Items: []WorkItem{
			{Reference: "INV-3"}, {Reference: "INV-1"}, {Reference: "INV-3"}, {Reference: "INV-4"}, {Reference: "INV-2"},
		}})
		var conflict *ReferenceConflict
		if !errors.As(err, &conflict) || !errors.Is(err, ErrAlreadyExists) {
			t.Fatalf("batch with taken references = %v, want a ReferenceConflict", err)
		}
		msg := err.Error()
		for _, want := range []string{`items[1] reference "INV-1" already exists`, `items[2] reference "INV-3" repeats items[0]`, `items[4] reference "INV-2" already exists`} {
			if !strings.Contains(msg, want) {
				t.Errorf("error %q does not say %q", msg, want)
			}
		}
		if strings.Contains(msg, "INV-4") {
			t.Errorf("error %q names a row that was fine", msg)
		}
		b.wantCounts(map[WorkItemStatus]int64{ItemNew: 2})
		if _, err := r.AddWorkItems(b.ctx, AddItems{Queue: b.queue, Items: []WorkItem{{}}}); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("an empty reference in a unique queue = %v, want ErrInvalidArgument", err)
		}

		// Concurrent adds of one reference: exactly one wins.
		const n = 10
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() {
				_, errs[i] = r.AddWorkItems(b.ctx, AddItems{Queue: b.queue, By: "tester", Items: []WorkItem{{Reference: "RACE"}}})
			})
		}
		wg.Wait()
		won := 0
		for _, err := range errs {
			switch {
			case err == nil:
				won++
			case errors.Is(err, ErrAlreadyExists), Unavailable(err):
			default:
				t.Errorf("concurrent add = %v", err)
			}
		}
		if won != 1 {
			t.Errorf("%d concurrent adds of one reference succeeded, want 1", won)
		}
		b.wantCounts(map[WorkItemStatus]int64{ItemNew: 3})
	})
}

func TestWorkItemLimits(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		b := setupQueue(t, r, WorkQueue{})
		for name, items := range map[string][]WorkItem{
			"DataNotObject": {{Data: `[1,2]`}},
			"DataTooBig":    {{}, {Data: `{"x":"` + strings.Repeat("a", MaxWorkItemData) + `"}`}},
			"ReferenceLong": {{Reference: strings.Repeat("r", MaxWorkItemReference+1)}},
			"TooMany":       make([]WorkItem, MaxWorkItemsPerAdd+1),
			"None":          nil,
		} {
			_, err := r.AddWorkItems(b.ctx, AddItems{Queue: b.queue, Items: items})
			if !errors.Is(err, ErrInvalidArgument) {
				t.Errorf("%s: %v, want ErrInvalidArgument", name, err)
			}
		}
		if _, err := r.AddWorkItems(b.ctx, AddItems{Queue: "nothing", Items: []WorkItem{{}}}); !errors.Is(err, ErrNotFound) {
			t.Errorf("add to an unknown queue = %v, want ErrNotFound", err)
		}
		b.wantCounts(map[WorkItemStatus]int64{})
		ids := b.add(make([]WorkItem, MaxWorkItemsPerAdd)...)
		if len(ids) != MaxWorkItemsPerAdd {
			t.Fatalf("added %d", len(ids))
		}
		b.wantCounts(map[WorkItemStatus]int64{ItemNew: MaxWorkItemsPerAdd})
	})
}

func TestWorkItemsAdmin(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		b := setupQueue(t, r, WorkQueue{})
		ids := b.add(WorkItem{Reference: "a"}, WorkItem{Reference: "b"}, WorkItem{Reference: "c"})
		later := time.Now().Add(time.Hour)
		if n, err := r.DeferWorkItems(b.ctx, ids[:2], &later, "tester", nil); err != nil || n != 2 {
			t.Fatalf("DeferWorkItems = %d, %v", n, err)
		}
		h := b.runningJob("robot-1")
		if item := b.take(h); item == nil || item.Reference != "c" {
			t.Fatalf("took %+v, want c (the others deferred)", item)
		}
		if _, err := r.DeleteWorkItems(b.ctx, ids, "tester", nil); !errors.Is(err, ErrConflict) {
			t.Errorf("deleting an item in progress = %v, want ErrConflict", err)
		}
		if n, err := r.DeleteWorkItems(b.ctx, ids[:1], "tester", nil); err != nil || n != 1 {
			t.Fatalf("DeleteWorkItems = %d, %v", n, err)
		}
		b.wantCounts(map[WorkItemStatus]int64{ItemNew: 1, ItemInProgress: 1, ItemDeleted: 1})
		all, next, err := r.ListWorkItems(b.ctx, WorkItemFilter{Queue: b.queue}, Page{Size: 1})
		if err != nil || len(all) != 1 || next == "" || all[0].Reference != "c" {
			t.Fatalf("ListWorkItems page 1 = %+v, %q, %v", all, next, err)
		}
		rest, next, err := r.ListWorkItems(b.ctx, WorkItemFilter{Queue: b.queue}, Page{Size: 5, Token: next})
		if err != nil || len(rest) != 1 || next != "" || rest[0].Reference != "b" {
			t.Fatalf("ListWorkItems page 2 = %+v, %q, %v (DELETED left out)", rest, next, err)
		}
		got, _, err := r.ListWorkItems(b.ctx, WorkItemFilter{Queue: b.queue, Statuses: []WorkItemStatus{ItemDeleted}}, Page{})
		if err != nil || len(got) != 1 || got[0].ID != ids[0] {
			t.Errorf("ListWorkItems(deleted) = %+v, %v", got, err)
		}
		got, _, err = r.ListWorkItems(b.ctx, WorkItemFilter{Queue: b.queue, Reference: "b", CreatedAfter: time.Now().Add(-time.Hour)}, Page{})
		if err != nil || len(got) != 1 {
			t.Errorf("ListWorkItems(reference b) = %+v, %v", got, err)
		}
		// unique_references cannot change while the queue holds items.
		q, _ := r.GetWorkQueue(b.ctx, b.queue)
		q.UniqueReferences = true
		if err := r.UpdateWorkQueue(b.ctx, q, nil); !errors.Is(err, ErrConflict) {
			t.Errorf("UpdateWorkQueue(unique) = %v, want ErrConflict", err)
		}
		if err := r.DeleteWorkQueue(b.ctx, b.queue, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := r.GetWorkQueue(b.ctx, b.queue); !errors.Is(err, ErrNotFound) {
			t.Errorf("GetWorkQueue after delete = %v", err)
		}
	})
}

// TestWorkQueueConcurrentTakers has 50 jobs take and complete items at
// once: no item is given twice, every item is processed once.
func TestWorkQueueConcurrentTakers(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) { concurrentTakers(t, r) })
}

func concurrentTakers(t *testing.T, r *Registry) {
	b := setupQueue(t, r, WorkQueue{})
	const items, takers = 2000, 50
	b.add(make([]WorkItem, items)...)
	holders := make([]ItemHolder, takers)
	for i := range holders {
		holders[i] = b.runningJob(fmt.Sprintf("robot-%d", i))
	}
	var mu sync.Mutex
	seen := map[string]string{}
	var wg sync.WaitGroup
	errs := make(chan error, takers)
	for _, h := range holders {
		wg.Go(func() {
			for {
				item, err := r.TakeWorkItem(b.ctx, h, b.queue)
				if err != nil {
					errs <- err
					return
				}
				if item == nil {
					return
				}
				mu.Lock()
				if other, dup := seen[item.ID]; dup {
					mu.Unlock()
					errs <- fmt.Errorf("item %s given to %s and %s", item.ID, other, h.JobID)
					return
				}
				seen[item.ID] = h.JobID
				mu.Unlock()
				if _, err := r.CompleteWorkItem(b.ctx, h, item.ID, `{}`); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if len(seen) != items {
		t.Errorf("%d items processed, want %d", len(seen), items)
	}
	b.wantCounts(map[WorkItemStatus]int64{ItemSuccessful: items})
}

// TestReleaseStragglers: an item the transition's statement could not see
// (taken while it waited on the job's row) is let go right after it.
func TestReleaseStragglers(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		b := setupQueue(t, r, WorkQueue{MaxRetries: 1})
		b.add(WorkItem{Reference: "a"})
		h := b.runningJob("robot-1")
		item := b.take(h)
		// Still running: nothing to release.
		r.releaseStragglers(b.ctx, []heldAttempt{{JobID: h.JobID, Attempt: 1}})
		if got, _, _ := r.GetWorkItem(b.ctx, item.ID); got.Status != ItemInProgress {
			t.Fatalf("item of a running job is %s", got.Status)
		}
		if _, err := r.db.NewUpdate().Model((*Job)(nil)).Set("status = ?", JobCancelled).Where("id = ?", h.JobID).Exec(b.ctx); err != nil {
			t.Fatal(err)
		}
		r.releaseStragglers(b.ctx, []heldAttempt{{JobID: h.JobID, Attempt: 1}})
		got, _, _ := r.GetWorkItem(b.ctx, item.ID)
		if got.Status != ItemAbandoned || !strings.Contains(got.Reason, "cancelled") {
			t.Errorf("straggler = %s (%s), want ABANDONED because the job was cancelled", got.Status, got.Reason)
		}
		b.wantCounts(map[WorkItemStatus]int64{ItemAbandoned: 1, ItemNew: 1})
	})
}

// TestTakeWalksTheTakeIndex: after a large add to a fresh queue, taking an
// item reads the take index in order rather than sorting the queue's NEW
// items, which made every take cost more with each item waiting.
func TestTakeWalksTheTakeIndex(t *testing.T) {
	t.Parallel()
	r := openPostgres(t)
	b := setupQueue(t, r, WorkQueue{})
	for range 3 {
		b.add(make([]WorkItem, MaxWorkItemsPerAdd)...)
	}
	b.take(b.runningJob("robot-1"))
	rows, err := r.db.QueryContext(b.ctx, `EXPLAIN SELECT w.id FROM work_items AS w
		WHERE w.queue = ? AND w.status = 'new' AND (w.defer_until IS NULL OR w.defer_until <= now())
		ORDER BY w.priority DESC, w.deadline, w.created_at, w.id LIMIT 1 FOR UPDATE OF w SKIP LOCKED`, b.queue)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan strings.Builder
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			t.Fatal(err)
		}
		plan.WriteString(line + "\n")
	}
	if !strings.Contains(plan.String(), "work_items_take") || strings.Contains(plan.String(), "Sort") {
		t.Fatalf("taking an item of a queue of 30,000 is planned as:\n%s\nwant an index scan of work_items_take with no sort", plan.String())
	}
}
