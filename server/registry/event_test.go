package registry

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/uptrace/bun"
)

func newSubscription(t *testing.T, r *Registry, name, workflow string, types ...string) *Subscription {
	t.Helper()
	s := &Subscription{ID: NewID(), Name: name, URL: "http://127.0.0.1:1/hook", EventTypes: JoinEventTypes(types),
		WorkflowName: workflow, Secret: "whsec_dGVzdA==", Enabled: true, CreatedBy: "tester"}
	if err := r.CreateSubscription(context.Background(), s, nil); err != nil {
		t.Fatal(err)
	}
	return s
}

// finish runs job to the status through the batched transitions.
func finish(t *testing.T, r *Registry, id string, to JobStatus) {
	t.Helper()
	ctx := context.Background()
	for _, tr := range []Transition{
		{JobID: id, From: []JobStatus{JobPending}, To: JobAssigned, RobotID: new("r1")},
		{JobID: id, From: []JobStatus{JobAssigned}, To: JobRunning},
		{JobID: id, From: []JobStatus{JobRunning}, To: to},
	} {
		if res := r.TransitionJobs(ctx, []Transition{tr}); res[0].Err != nil {
			t.Fatal(res[0].Err)
		}
	}
}

func countRows(t *testing.T, r *Registry, model any, where string, args ...any) int {
	t.Helper()
	n, err := r.DB().NewSelect().Model(model).Where(where, args...).Count(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return int(n)
}

func TestJobEndWritesOneEvent(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		submit := func(workflow string) string {
			job := newJob(workflow)
			if _, _, err := r.CreateJob(ctx, job, nil); err != nil {
				t.Fatal(err)
			}
			return job.ID
		}
		t.Run("NoSubscriptionWritesNothing", func(t *testing.T) {
			id := submit("quiet")
			finish(t, r, id, JobSucceeded)
			if n := countRows(t, r, (*Event)(nil), "resource_id = ?", id); n != 0 {
				t.Fatalf("%d events with no subscription; want 0", n)
			}
		})
		all := newSubscription(t, r, "all", "", EventJobSucceeded, EventJobFailed, EventJobCancelled)
		filtered := newSubscription(t, r, "invoices", "invoice-sync", EventJobFailed)
		t.Run("Batched", func(t *testing.T) {
			ids := []string{submit("a"), submit("a"), submit("invoice-sync")}
			var batch []Transition
			for _, id := range ids {
				batch = append(batch, Transition{JobID: id, From: []JobStatus{JobPending}, To: JobFailed, Reason: "test"})
			}
			// Two of one job in one call: the second is refused.
			batch = append(batch, Transition{JobID: ids[0], From: []JobStatus{JobPending}, To: JobCancelled})
			res := r.TransitionJobs(ctx, batch)
			if res[3].Err == nil {
				t.Fatal("second transition of a job applied")
			}
			for _, id := range ids {
				if n := countRows(t, r, (*Event)(nil), "resource_id = ? AND type = ?", id, EventJobFailed); n != 1 {
					t.Errorf("job %s: %d job.failed events; want 1", id, n)
				}
			}
			if n := countRows(t, r, (*Delivery)(nil), "subscription_id = ?", filtered.ID); n != 1 {
				t.Errorf("the filtered subscription has %d deliveries; want 1 (invoice-sync's)", n)
			}
			if n := countRows(t, r, (*Delivery)(nil), "subscription_id = ?", all.ID); n != 3 {
				t.Errorf("the subscription to all has %d deliveries; want 3", n)
			}
		})
		t.Run("SucceededOnceThroughEveryStep", func(t *testing.T) {
			id := submit("b")
			finish(t, r, id, JobSucceeded)
			if n := countRows(t, r, (*Event)(nil), "resource_id = ?", id); n != 1 {
				t.Fatalf("%d events for one job's life; want 1 (its end)", n)
			}
		})
		t.Run("WithAudit", func(t *testing.T) {
			id := submit("c")
			_, err := r.TransitionJob(ctx, Transition{JobID: id, From: []JobStatus{JobPending}, To: JobCancelled},
				&AuditEvent{Actor: "tester", Action: "cancel", Target: "job/" + id, Outcome: "ok"})
			if err != nil {
				t.Fatal(err)
			}
			if n := countRows(t, r, (*Event)(nil), "resource_id = ? AND type = ?", id, EventJobCancelled); n != 1 {
				t.Fatalf("%d job.cancelled events; want 1", n)
			}
		})
		t.Run("FailedTransactionLeavesNone", func(t *testing.T) {
			boom := errors.New("boom")
			err := r.DB().RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
				if err := AppendEvents(ctx, tx, Event{Type: EventJobFailed, ResourceKind: ResourceJob, ResourceID: "rolled-back"}); err != nil {
					return err
				}
				return boom
			})
			if !errors.Is(err, boom) {
				t.Fatal(err)
			}
			if n := countRows(t, r, (*Event)(nil), "resource_id = ?", "rolled-back"); n != 0 {
				t.Fatalf("%d events after a rollback; want 0", n)
			}
		})
	})
}

func TestClaimKeepsAResourceInOrder(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		sub := newSubscription(t, r, "ordered", "", EventRobotOffline)
		for range 3 {
			err := r.DB().RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
				return AppendEvents(ctx, tx,
					Event{Type: EventRobotOffline, ResourceKind: ResourceRobot, ResourceID: "robot-a"},
					Event{Type: EventRobotOffline, ResourceKind: ResourceRobot, ResourceID: "robot-b"})
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		now := time.Now().Add(time.Second)
		var order []int64
		for {
			claims, err := r.ClaimDeliveries(ctx, sub.ID, "w1", now, time.Minute, 10)
			if err != nil {
				t.Fatal(err)
			}
			if len(claims) == 0 {
				break
			}
			if len(claims) != 2 {
				t.Fatalf("claimed %d; want the head of each robot's events, 2", len(claims))
			}
			for i := range claims {
				order = append(order, claims[i].Event.Seq)
				if _, err := r.FinishDelivery(ctx, Outcome{Claim: &claims[i], Owner: "w1", Delivered: true, StatusCode: 204}); err != nil {
					t.Fatal(err)
				}
			}
		}
		if len(order) != 6 {
			t.Fatalf("delivered %d; want 6", len(order))
		}
		for i := 2; i < len(order); i++ {
			if order[i] <= order[i-2] {
				t.Fatalf("deliveries out of order: %v", order)
			}
		}
	})
}

func TestFinishDeliveryFencesAndDisables(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		sub := newSubscription(t, r, "flaky", "", EventRobotOffline)
		watcher := newSubscription(t, r, "watcher", "", EventSubscriptionDisabled)
		for i := range 3 {
			err := r.DB().RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
				return AppendEvents(ctx, tx, Event{Type: EventRobotOffline, ResourceKind: ResourceRobot, ResourceID: fmt.Sprint("robot-", i)})
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		now := time.Now().Add(time.Second)
		claims, err := r.ClaimDeliveries(ctx, sub.ID, "w1", now, time.Minute, 10)
		if err != nil || len(claims) != 3 {
			t.Fatalf("ClaimDeliveries() = %d, %v; want 3", len(claims), err)
		}
		if _, err := r.FinishDelivery(ctx, Outcome{Claim: &claims[0], Owner: "someone-else", StatusCode: 500}); !errors.Is(err, ErrConflict) {
			t.Fatalf("finish by a worker without the lease: %v; want ErrConflict", err)
		}
		for i := range 2 {
			disabled, err := r.FinishDelivery(ctx, Outcome{Claim: &claims[i], Owner: "w1", StatusCode: 500, Error: "HTTP 500",
				RetryAt: now.Add(time.Hour), MaxFailures: 2})
			if err != nil {
				t.Fatal(err)
			}
			if (disabled != nil) != (i == 1) {
				t.Fatalf("failure %d: disabled = %v", i+1, disabled)
			}
		}
		got, err := r.GetSubscription(ctx, "flaky")
		if err != nil || got.Enabled || got.DisabledReason == "" {
			t.Fatalf("after 2 failures: %+v, %v; want disabled with a reason", got, err)
		}
		if n := countRows(t, r, (*Delivery)(nil), "subscription_id = ? AND event_seq IN (SELECT seq FROM events WHERE type = ?)", watcher.ID, EventSubscriptionDisabled); n != 1 {
			t.Fatalf("the watcher has %d subscription.disabled deliveries; want 1", n)
		}
		if n := countRows(t, r, (*AuditEvent)(nil), "target = ?", "subscription/"+sub.ID); n != 1 {
			t.Fatalf("%d audit events for the disabling; want 1", n)
		}
		if ids, err := r.DueSubscriptions(ctx, now.Add(2*time.Hour)); err != nil || len(ids) != 1 || ids[0] != watcher.ID {
			t.Fatalf("DueSubscriptions() = %v, %v; want only the watcher: a disabled subscription gets nothing", ids, err)
		}
		attempts, _, err := r.ListDeliveryAttempts(ctx, sub.ID, Page{})
		if err != nil || len(attempts) != 2 || attempts[0].EventID == "" || attempts[0].StatusCode != 500 {
			t.Fatalf("ListDeliveryAttempts() = %+v, %v; want 2 with the event and status", attempts, err)
		}
		// Enabling again forgets the failures and sends what waited.
		if _, err := r.UpdateSubscription(ctx, "flaky", SubscriptionChange{Enabled: new(true)}, func(*Subscription) *AuditEvent { return nil }); err != nil {
			t.Fatal(err)
		}
		if n, err := r.CountPendingDeliveries(ctx); err != nil || n != 4 {
			t.Fatalf("CountPendingDeliveries() = %d, %v; want 3 of flaky and 1 of the watcher", n, err)
		}
		if _, err := r.RedeliverEvent(ctx, "no-such-event", "", nil); !errors.Is(err, ErrNotFound) {
			t.Fatalf("RedeliverEvent(unknown) = %v; want ErrNotFound", err)
		}
	})
}

func TestTwoWorkersNeverClaimOneDelivery(t *testing.T) {
	r := openPostgres(t)
	ctx := context.Background()
	sub := newSubscription(t, r, "shared", "", EventRobotOffline)
	const events = 300
	err := r.DB().RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var batch []Event
		for i := range events {
			batch = append(batch, Event{Type: EventRobotOffline, ResourceKind: ResourceRobot, ResourceID: fmt.Sprint("robot-", i)})
		}
		return AppendEvents(ctx, tx, batch...)
	})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Add(time.Second)
	var mu sync.Mutex
	seen := map[int64]string{}
	var wg sync.WaitGroup
	for w := range 4 {
		owner := fmt.Sprint("w", w)
		wg.Go(func() {
			for {
				claims, err := r.ClaimDeliveries(ctx, sub.ID, owner, now, time.Minute, 7)
				if err != nil {
					t.Error(err)
					return
				}
				if len(claims) == 0 {
					return
				}
				mu.Lock()
				for _, c := range claims {
					if other, ok := seen[c.Delivery.ID]; ok {
						t.Errorf("delivery %d claimed by %s and %s", c.Delivery.ID, other, owner)
					}
					seen[c.Delivery.ID] = owner
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(seen) != events {
		t.Fatalf("claimed %d deliveries; want %d", len(seen), events)
	}
}

func TestRobotLostIsAnEvent(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		sub := newSubscription(t, r, "fleet", "", EventRobotOffline)
		since := now().Add(-time.Minute)
		for _, id := range []string{"lost", "handed-over"} {
			rb := &Robot{ID: id, Name: id, Labels: "{}", Capabilities: "[]", Status: RobotIdle, MaxJobs: 1, ConnectedSince: &since}
			if err := r.UpsertRobot(ctx, rb); err != nil {
				t.Fatal(err)
			}
		}
		err := r.RobotsOffline(ctx, map[string]RobotSession{
			"lost":        {ConnectedSince: since, LastSeen: now(), Lost: true},
			"handed-over": {ConnectedSince: since, LastSeen: now()},
		})
		if err != nil {
			t.Fatal(err)
		}
		if n := countRows(t, r, (*Delivery)(nil), "subscription_id = ? AND resource_id = ?", sub.ID, "lost"); n != 1 {
			t.Errorf("lost robot: %d deliveries; want 1", n)
		}
		if n := countRows(t, r, (*Event)(nil), "resource_id = ?", "handed-over"); n != 0 {
			t.Errorf("robot handed over at a shutdown: %d events; want 0", n)
		}
		// A second report of the same session changes nothing and says nothing.
		if err := r.RobotsOffline(ctx, map[string]RobotSession{"lost": {ConnectedSince: since, LastSeen: now(), Lost: true}}); err != nil {
			t.Fatal(err)
		}
		if n := countRows(t, r, (*Event)(nil), "resource_id = ?", "lost"); n != 1 {
			t.Errorf("lost robot reported twice: %d events; want 1", n)
		}
	})
}

func TestJobWaitingOncePerJob(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		job := newJob("slow-queue")
		job.CreatedAt = time.Now().Add(-time.Hour)
		if _, _, err := r.CreateJob(ctx, job, nil); err != nil {
			t.Fatal(err)
		}
		cutoff := time.Now().Add(-10 * time.Minute)
		if n, err := r.AppendWaitingJobEvents(ctx, cutoff, 100); err != nil || n != 0 {
			t.Fatalf("with no subscription: AppendWaitingJobEvents() = %d, %v; want 0", n, err)
		}
		newSubscription(t, r, "waiting", "", EventJobWaiting)
		// Two replicas look at once, and again later.
		var wg sync.WaitGroup
		for range 2 {
			wg.Go(func() {
				if _, err := r.AppendWaitingJobEvents(ctx, cutoff, 100); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if _, err := r.AppendWaitingJobEvents(ctx, cutoff, 100); err != nil {
			t.Fatal(err)
		}
		if n := countRows(t, r, (*Event)(nil), "resource_id = ? AND type = ?", job.ID, EventJobWaiting); n != 1 {
			t.Fatalf("%d job.waiting events; want 1", n)
		}
		fresh := newJob("slow-queue")
		if _, _, err := r.CreateJob(ctx, fresh, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := r.AppendWaitingJobEvents(ctx, cutoff, 100); err != nil {
			t.Fatal(err)
		}
		if n := countRows(t, r, (*Event)(nil), "resource_id = ?", fresh.ID); n != 0 {
			t.Fatalf("a job pending for less than the threshold has %d events; want 0", n)
		}
	})
}

func TestPruneEventsKeepsWhatWaits(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		sub := newSubscription(t, r, "prune", "", EventRobotOffline)
		old := time.Now().Add(-30 * 24 * time.Hour)
		err := r.DB().RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			return AppendEvents(ctx, tx,
				Event{Type: EventRobotOffline, ResourceKind: ResourceRobot, ResourceID: "delivered", Time: old},
				Event{Type: EventRobotOffline, ResourceKind: ResourceRobot, ResourceID: "waiting", Time: old},
				Event{Type: EventRobotOffline, ResourceKind: ResourceRobot, ResourceID: "recent"})
		})
		if err != nil {
			t.Fatal(err)
		}
		claims, err := r.ClaimDeliveries(ctx, sub.ID, "w", time.Now().Add(time.Second), time.Minute, 10)
		if err != nil || len(claims) != 3 {
			t.Fatalf("ClaimDeliveries() = %d, %v", len(claims), err)
		}
		var outcomes []Outcome
		for i := range claims {
			o := Outcome{Claim: &claims[i], Owner: "w", Delivered: true, StatusCode: 200}
			if claims[i].Event.ResourceID == "waiting" {
				o = Outcome{Claim: &claims[i], Owner: "w", StatusCode: 503, Error: "HTTP 503", RetryAt: time.Now().Add(time.Hour)}
			}
			outcomes = append(outcomes, o)
		}
		if _, _, err := r.FinishDeliveries(ctx, outcomes); err != nil {
			t.Fatal(err)
		}
		n, err := r.PruneEvents(ctx, time.Now().Add(-7*24*time.Hour), 100)
		if err != nil || n != 1 {
			t.Fatalf("PruneEvents() = %d, %v; want 1, the old delivered one", n, err)
		}
		if n := countRows(t, r, (*DeliveryAttempt)(nil), "subscription_id = ?", sub.ID); n != 2 {
			t.Fatalf("%d tries left; want 2, the pruned event's went with it", n)
		}
		if n := countRows(t, r, (*Event)(nil), "resource_id IN (?)", bun.In([]string{"waiting", "recent"})); n != 2 {
			t.Fatalf("%d of the waiting and recent events left; want 2", n)
		}
	})
}

func TestUpdateSubscriptionSaysWhoDisabled(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		sub := newSubscription(t, r, "manual", "", EventJobFailed)
		got, err := r.UpdateSubscription(ctx, "manual", SubscriptionChange{Enabled: new(false)}, func(s *Subscription) *AuditEvent {
			return &AuditEvent{Actor: "ann", Action: "disable", Target: "subscription/" + s.ID, Outcome: "ok"}
		})
		if err != nil || got.Enabled || got.DisabledReason != "disabled by ann" {
			t.Fatalf("UpdateSubscription(disable) = %+v, %v; want disabled by ann", got, err)
		}
		if n := countRows(t, r, (*AuditEvent)(nil), "target = ?", "subscription/"+sub.ID); n != 1 {
			t.Fatalf("%d audit events; want 1", n)
		}
		if _, err := r.UpdateSubscription(ctx, "nobody", SubscriptionChange{Enabled: new(true)}, func(*Subscription) *AuditEvent { return nil }); !errors.Is(err, ErrNotFound) {
			t.Fatalf("UpdateSubscription(unknown) = %v; want ErrNotFound", err)
		}
		if _, err := r.DeleteSubscription(ctx, "manual", func(*Subscription) *AuditEvent { return nil }); err != nil {
			t.Fatal(err)
		}
		if _, err := r.GetSubscription(ctx, sub.ID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("GetSubscription after delete = %v; want ErrNotFound", err)
		}
	})
}

func TestJobWaitingCountsFromTheLastReturnToPending(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		newSubscription(t, r, "waiting", "", EventJobWaiting)
		job := newJob("retried")
		job.CreatedAt = time.Now().Add(-time.Hour)
		if _, _, err := r.CreateJob(ctx, job, nil); err != nil {
			t.Fatal(err)
		}
		// Sent back for another robot a moment ago: it has waited since.
		for _, tr := range []Transition{
			{JobID: job.ID, From: []JobStatus{JobPending}, To: JobAssigned, RobotID: new("r1")},
			{JobID: job.ID, From: []JobStatus{JobAssigned}, To: JobPending, Reason: "rejected"},
		} {
			if _, err := r.TransitionJob(ctx, tr, nil); err != nil {
				t.Fatal(err)
			}
		}
		if n, err := r.AppendWaitingJobEvents(ctx, time.Now().Add(-10*time.Minute), 100); err != nil || n != 0 {
			t.Fatalf("AppendWaitingJobEvents() = %d, %v; want 0: it became pending again just now", n, err)
		}
		if n, err := r.AppendWaitingJobEvents(ctx, time.Now().Add(time.Minute), 100); err != nil || n != 1 {
			t.Fatalf("AppendWaitingJobEvents(later) = %d, %v; want 1", n, err)
		}
	})
}
