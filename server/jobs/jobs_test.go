package jobs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/casarerpa/casare/server/registry"
	"github.com/casarerpa/casare/server/registry/registrytest"
)

const (
	pending   = registry.JobPending
	assigned  = registry.JobAssigned
	running   = registry.JobRunning
	succeeded = registry.JobSucceeded
	failed    = registry.JobFailed
	cancelled = registry.JobCancelled
)

// want is the state machine of DESIGN.md "Jobs", written out again by
// hand: event → from → to. A pair that is not here is refused.
var want = map[Event]map[registry.JobStatus]registry.JobStatus{
	Submit:   {"": pending},
	Assign:   {pending: assigned},
	Accept:   {assigned: running},
	Progress: {running: running},
	Succeed:  {assigned: succeeded, running: succeeded},
	Fail:     {assigned: failed, running: failed},
	HandBack: {assigned: pending, running: pending},
	Retry:    {assigned: pending, running: pending},
	Expire:   {assigned: pending},
	Cancel:   {pending: cancelled, assigned: cancelled, running: cancelled},
	TimeOut:  {assigned: failed, running: failed},
}

func TestTable(t *testing.T) {
	for _, event := range Events {
		for _, from := range append([]registry.JobStatus{""}, Statuses...) {
			t.Run(fmt.Sprintf("%s/%s", event, from), func(t *testing.T) {
				rule, ok := Next(from, event)
				to, allowed := want[event][from]
				if ok != allowed || rule.To != to {
					t.Errorf("Next(%q, %s) = %q, %v; want %q, %v", from, event, rule.To, ok, to, allowed)
				}
			})
		}
	}
	t.Run("NothingLeavesAnEnd", func(t *testing.T) {
		for _, r := range Table {
			if r.From.Finished() {
				t.Errorf("%s leaves %s, which is an end", r.Event, r.From)
			}
		}
	})
	t.Run("RowsOfAnEventAgree", func(t *testing.T) {
		// A transition applies to every status of From(event) with one
		// statement, so what it does may not depend on the status.
		for _, r := range Table {
			first := ruleOf(r.Event)
			if r.To != first.To || r.Fence != first.Fence || r.NextAttempt != first.NextAttempt || r.OutOfAttempts != first.OutOfAttempts {
				t.Errorf("rows of %s differ: %+v and %+v", r.Event, first, r)
			}
		}
	})
	t.Run("RobotEventsAreFenced", func(t *testing.T) {
		for _, r := range Table {
			switch r.Event {
			case Submit, Cancel:
				if r.Fence != Unfenced {
					t.Errorf("%s is fenced; an operator's change applies to any attempt", r.Event)
				}
			case Assign:
				if r.Fence != FenceAttempt {
					t.Errorf("%s: fence %d, want the attempt", r.Event, r.Fence)
				}
			default:
				if r.Fence != FenceRobot {
					t.Errorf("%s: fence %d, want attempt and robot", r.Event, r.Fence)
				}
			}
		}
	})
}

func TestFrom(t *testing.T) {
	for _, event := range Events {
		var wantFrom []registry.JobStatus
		for from := range want[event] {
			wantFrom = append(wantFrom, from)
		}
		slices.Sort(wantFrom)
		if got := From(event); !slices.Equal(got, wantFrom) {
			t.Errorf("From(%s) = %q, want %q", event, got, wantFrom)
		}
	}
}

// forEachBackend runs test against a fresh SQLite registry and a fresh
// PostgreSQL one.
func forEachBackend(t *testing.T, test func(t *testing.T, r *registry.Registry)) {
	t.Helper()
	open := func(t *testing.T, opts registry.Options) *registry.Registry {
		r, err := registry.Open(context.Background(), opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		if _, err := r.Migrate(context.Background()); err != nil {
			t.Fatal(err)
		}
		return r
	}
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		test(t, open(t, registry.Options{DataDir: t.TempDir()}))
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		test(t, open(t, registry.Options{DatabaseURL: registrytest.DatabaseURL(t), MaxOpenConns: 10}))
	})
}

const robot = "robot-1"

// jobIn makes a job on attempt 2 of 3, held by robot when it is past
// PENDING, in status.
func jobIn(t *testing.T, ctx context.Context, r *registry.Registry, status registry.JobStatus) *registry.Job {
	t.Helper()
	job, _, err := New(r).Submit(ctx, &registry.Job{
		ID: registry.NewID(), WorkflowName: "wf", Workflow: `{"steps":[{"id":"a","uses":"log"}]}`,
		Priority: registry.PriorityNormal, Attempt: 2, MaxAttempts: 3, CreatedBy: "test",
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if status == pending {
		return job
	}
	// Straight to the status: what the table allows is the subject of
	// the test, not of its setup.
	id := robot
	job, err = r.TransitionJob(ctx, registry.Transition{JobID: job.ID, From: []registry.JobStatus{pending}, To: status, RobotID: &id, Reason: "setup"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return job
}

// happen applies event to the job as news about attempt on robotID.
func happen(ctx context.Context, s *Service, event Event, jobID string, attempt int32, robotID string) error {
	var err error
	switch event {
	case Assign:
		_, err = s.Assign(ctx, jobID, attempt, robotID, robotID)
	case Accept:
		_, err = s.Accept(ctx, jobID, attempt, robotID)
	case Progress:
		var changed bool
		changed, err = s.Progress(ctx, jobID, attempt, robotID, 50, "a")
		if err == nil && !changed {
			err = registry.ErrConflict
		}
	case Succeed:
		_, err = s.Finish(ctx, End{JobID: jobID, Attempt: attempt, RobotID: robotID})
	case Fail:
		_, err = s.Finish(ctx, End{JobID: jobID, Attempt: attempt, RobotID: robotID, Failed: true, Error: "boom"})
	case HandBack, Retry, Expire:
		_, err = s.HandBack(ctx, Back{JobID: jobID, Attempt: attempt, RobotID: robotID, How: event, Reason: "back"})
	case Cancel:
		_, err = s.Cancel(ctx, jobID, "no longer wanted", "operator", nil)
	case TimeOut:
		_, err = s.TimeOut(ctx, jobID, attempt, robotID, 0)
	default:
		panic("no way to make " + event + " happen")
	}
	return err
}

// TestTransitions applies every event to a job in every status on both
// backends: the registry's guard must let through exactly what the table
// allows, and the fences must refuse news about another attempt or robot.
func TestTransitions(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *registry.Registry) {
		ctx := context.Background()
		s := New(r)
		for _, event := range Events {
			if event == Submit {
				continue
			}
			for _, from := range Statuses {
				to, allowed := want[event][from]
				t.Run(fmt.Sprintf("%s/%s", event, from), func(t *testing.T) {
					job := jobIn(t, ctx, r, from)
					err := happen(ctx, s, event, job.ID, job.Attempt, robot)
					after, gerr := r.GetJob(ctx, job.ID)
					if gerr != nil {
						t.Fatal(gerr)
					}
					if !allowed {
						if !errors.Is(err, registry.ErrConflict) || after.Status != from {
							t.Fatalf("refused change: err %v, status %s; want a conflict and %s", err, after.Status, from)
						}
						return
					}
					if err != nil || after.Status != to {
						t.Fatalf("err %v, status %s; want %s", err, after.Status, to)
					}
					if rule, _ := Next(from, event); rule.NextAttempt != (after.Attempt == job.Attempt+1) {
						t.Errorf("attempt %d → %d; next attempt %v", job.Attempt, after.Attempt, rule.NextAttempt)
					}
					if event != Progress {
						events, err := r.JobEvents(ctx, job.ID)
						if err != nil {
							t.Fatal(err)
						}
						last := events[len(events)-1]
						if last.FromStatus != from || last.ToStatus != to {
							t.Errorf("last event %s → %s, want %s → %s", last.FromStatus, last.ToStatus, from, to)
						}
					}
				})
				rule, _ := Next(from, event)
				if !allowed || rule.Fence == Unfenced {
					continue
				}
				t.Run(fmt.Sprintf("%s/%s/StaleAttempt", event, from), func(t *testing.T) {
					job := jobIn(t, ctx, r, from)
					err := happen(ctx, s, event, job.ID, job.Attempt-1, robot)
					after, _ := r.GetJob(ctx, job.ID)
					if !errors.Is(err, registry.ErrConflict) || after.Status != from || after.Attempt != job.Attempt {
						t.Fatalf("news of attempt %d: err %v, job %s on attempt %d; want a conflict and no change", job.Attempt-1, err, after.Status, after.Attempt)
					}
				})
				if rule.Fence != FenceRobot {
					continue
				}
				t.Run(fmt.Sprintf("%s/%s/OtherRobot", event, from), func(t *testing.T) {
					job := jobIn(t, ctx, r, from)
					err := happen(ctx, s, event, job.ID, job.Attempt, "robot-2")
					after, _ := r.GetJob(ctx, job.ID)
					if !errors.Is(err, registry.ErrConflict) || after.Status != from {
						t.Fatalf("news from another robot: err %v, job %s; want a conflict and no change", err, after.Status)
					}
				})
			}
		}
		t.Run("OutOfAttempts", func(t *testing.T) {
			for _, event := range []Event{Retry, Expire} {
				job := jobIn(t, ctx, r, assigned)
				// Attempt 3 of 3.
				if _, err := s.HandBack(ctx, Back{JobID: job.ID, Attempt: 2, RobotID: robot, How: Retry, Reason: "lost"}); err != nil {
					t.Fatal(err)
				}
				if _, err := s.Assign(ctx, job.ID, 3, robot, robot); err != nil {
					t.Fatal(err)
				}
				after, err := s.HandBack(ctx, Back{JobID: job.ID, Attempt: 3, RobotID: robot, How: event, Reason: "lost"})
				if err != nil || after.Status != failed || after.Attempt != 3 {
					t.Fatalf("%s on the last attempt: %v, %+v; want FAILED on attempt 3", event, err, after)
				}
				if want := "lost; gave up after 3 of 3 attempts"; after.StatusMessage != want {
					t.Errorf("message %q, want %q", after.StatusMessage, want)
				}
			}
		})
		t.Run("ErrFence", func(t *testing.T) {
			job := jobIn(t, ctx, r, assigned)
			if _, err := s.Accept(ctx, job.ID, 0, robot); !errors.Is(err, ErrFence) {
				t.Errorf("accept without an attempt: %v, want ErrFence", err)
			}
			if _, err := s.Accept(ctx, job.ID, job.Attempt, ""); !errors.Is(err, ErrFence) {
				t.Errorf("accept without a robot: %v, want ErrFence", err)
			}
		})
	})
}
