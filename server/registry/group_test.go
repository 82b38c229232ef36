package registry

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
)

// TestTransitionJobsFencesEachMember: a batch whose member speaks for a
// superseded attempt refuses only that member; the others apply, each with
// its job event.
func TestTransitionJobsFencesEachMember(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		robot := "robot-1"
		var ids []string
		for range 3 {
			job := newJob("w")
			job.Attempt = 2
			if _, _, err := r.CreateJob(ctx, job, nil); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, job.ID)
		}
		assign := func(id string, attempt int32) Transition {
			return Transition{
				JobID: id, From: []JobStatus{JobPending}, Attempt: attempt, To: JobAssigned,
				RobotID: &robot, Message: "assigned", Reason: "assigned", Actor: "system",
			}
		}
		results := r.TransitionJobs(ctx, []Transition{assign(ids[0], 2), assign(ids[1], 1), assign(ids[2], 2)})
		for i, res := range results {
			stale := i == 1
			if stale != errors.Is(res.Err, ErrConflict) {
				t.Errorf("member %d: err %v; want a conflict only for the stale member", i, res.Err)
			}
			job, err := r.GetJob(ctx, ids[i])
			if err != nil {
				t.Fatal(err)
			}
			want := JobAssigned
			if stale {
				want = JobPending
			}
			if job.Status != want || (!stale && (res.Job == nil || res.Job.Status != want || res.Job.RobotID != robot)) {
				t.Errorf("member %d: stored %s, answered %+v; want %s", i, job.Status, res.Job, want)
			}
			events, err := r.JobEvents(ctx, ids[i])
			if err != nil {
				t.Fatal(err)
			}
			wantEvents := 2
			if stale {
				wantEvents = 1
			}
			if len(events) != wantEvents {
				t.Fatalf("member %d: %d events, want %d", i, len(events), wantEvents)
			}
			if last := events[len(events)-1]; !stale && (last.FromStatus != JobPending || last.ToStatus != JobAssigned || last.Attempt != 2 || last.RobotID != robot || last.Reason != "assigned") {
				t.Errorf("member %d: event %+v", i, last)
			}
		}

		t.Run("OneJobTwiceAppliesInOrder", func(t *testing.T) {
			results := r.TransitionJobs(ctx, []Transition{
				{JobID: ids[0], From: []JobStatus{JobAssigned}, Attempt: 2, Robot: robot, To: JobRunning, Reason: "accepted"},
				{JobID: ids[0], From: []JobStatus{JobRunning}, Attempt: 2, Robot: robot, To: JobSucceeded, Reason: "completed"},
				{JobID: "missing", From: []JobStatus{JobPending}, To: JobCancelled},
			})
			if results[0].Err != nil || results[1].Err != nil || results[1].Job.Status != JobSucceeded || results[1].Job.Progress != 100 {
				t.Fatalf("accept then complete in one call: %+v", results)
			}
			if !errors.Is(results[2].Err, ErrNotFound) {
				t.Errorf("missing job: %v, want ErrNotFound", results[2].Err)
			}
		})

		t.Run("ProgressOfAStaleAttempt", func(t *testing.T) {
			for _, id := range ids[1:] {
				if _, err := r.TransitionJob(ctx, Transition{JobID: id, From: []JobStatus{JobPending, JobAssigned}, To: JobRunning, RobotID: &robot}, nil); err != nil {
					t.Fatal(err)
				}
			}
			// One batch, as the group makes it from notes that arrive
			// together.
			results := r.progressBatch(ctx, []ProgressNote{
				{JobID: ids[1], Attempt: 2, RobotID: robot, From: []JobStatus{JobRunning}, Percent: 40, Step: "s"},
				{JobID: ids[2], Attempt: 1, RobotID: robot, From: []JobStatus{JobRunning}, Percent: 40, Step: "s"},
			})
			changed := make([]bool, len(results))
			for i, res := range results {
				if res.err != nil {
					t.Fatal(res.err)
				}
				changed[i] = res.changed
			}
			if !changed[0] || changed[1] {
				t.Errorf("changed %v, want only the current attempt's note", changed)
			}
		})
	})
}

// TestTransitionJobConcurrent: transitions of many jobs at once, sharing
// commits, each apply once with their event.
func TestTransitionJobConcurrent(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		const n = 200
		ids := make([]string, n)
		for i := range ids {
			job := newJob("w")
			if _, _, err := r.CreateJob(ctx, job, nil); err != nil {
				t.Fatal(err)
			}
			ids[i] = job.ID
		}
		var wg sync.WaitGroup
		errs := make(chan error, 2*n)
		for _, id := range ids {
			// Two replicas reach for each job: one has it.
			for robot := range 2 {
				wg.Go(func() {
					rid := fmt.Sprintf("robot-%d", robot)
					_, err := r.TransitionJob(ctx, Transition{JobID: id, From: []JobStatus{JobPending}, Attempt: 1, To: JobAssigned, RobotID: &rid, Reason: "assigned"}, nil)
					if err != nil && !errors.Is(err, ErrConflict) {
						errs <- err
					}
				})
			}
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		for _, id := range ids {
			events, err := r.JobEvents(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if len(events) != 2 || events[1].ToStatus != JobAssigned {
				t.Fatalf("job %s: events %+v; want submitted and one assigned", id, events)
			}
		}
	})
}

// TestSetJobProgressConcurrent: notes of many jobs at once, sharing
// commits, each land.
func TestSetJobProgressConcurrent(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		robot := "robot-1"
		const n = 100
		ids := make([]string, n)
		for i := range ids {
			job := newJob("w")
			if _, _, err := r.CreateJob(ctx, job, nil); err != nil {
				t.Fatal(err)
			}
			if _, err := r.TransitionJob(ctx, Transition{JobID: job.ID, From: []JobStatus{JobPending}, To: JobRunning, RobotID: &robot}, nil); err != nil {
				t.Fatal(err)
			}
			ids[i] = job.ID
		}
		var wg sync.WaitGroup
		for i, id := range ids {
			wg.Go(func() {
				ok, err := r.SetJobProgress(ctx, ProgressNote{JobID: id, Attempt: 1, RobotID: robot, From: []JobStatus{JobRunning}, Percent: int32(i % 100), Step: id})
				if err != nil || !ok {
					t.Errorf("progress of %s: %v, %v", id, ok, err)
				}
			})
		}
		wg.Wait()
		for i, id := range ids {
			job, err := r.GetJob(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if job.Progress != int32(i%100) || job.CurrentStep != id {
				t.Errorf("job %s: progress %d at %q", id, job.Progress, job.CurrentStep)
			}
		}
	})
}
