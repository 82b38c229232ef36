package registry

import (
	"context"
	"testing"
)

// TestTextColumnsTakeAnyText writes text with a NUL byte and bytes that are
// no UTF-8 into every free-text column a robot's reports reach, on both
// backends: each write succeeds and keeps the text with U+FFFD in their
// place, where a NUL used to fail the statement.
func TestTextColumnsTakeAnyText(t *testing.T) {
	const bad, clean = "a\x00b\xffc", "a\uFFFDb\uFFFDc"
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		rb := &Robot{ID: NewID(), Name: "r1", Labels: "{}", Capabilities: "[]", Version: bad, OS: bad, Hostname: bad, Status: "idle", MaxJobs: 1}
		if err := r.UpsertRobot(ctx, rb); err != nil {
			t.Fatal(err)
		}
		rb.Version = bad
		if err := r.RobotConnected(ctx, rb); err != nil {
			t.Fatal(err)
		}
		got, err := r.GetRobot(ctx, rb.ID)
		if err != nil || got.Version != clean || got.OS != clean || got.Hostname != clean {
			t.Fatalf("robot = %+v, %v; want version, OS and hostname %q", got, err, clean)
		}

		job := newJob("text")
		if _, _, err := r.CreateJob(ctx, job, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := r.SetPendingMessage(ctx, job.ID, 1, "waiting "+bad); err != nil {
			t.Fatal(err)
		}
		if got, _ := r.GetJob(ctx, job.ID); got.StatusMessage != "waiting "+clean {
			t.Fatalf("pending message = %q", got.StatusMessage)
		}
		robot := rb.ID
		if _, err := r.TransitionJob(ctx, Transition{JobID: job.ID, From: []JobStatus{JobPending}, To: JobRunning, RobotID: &robot, Message: bad, Reason: bad}, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := r.SetJobProgress(ctx, ProgressNote{JobID: job.ID, Attempt: 1, RobotID: robot, From: []JobStatus{JobRunning}, Percent: 50, Step: bad}); err != nil {
			t.Fatal(err)
		}
		lines := []JobLog{{JobID: job.ID, Attempt: 1, Line: 1, Level: "info", StepID: bad, Message: bad}, {JobID: job.ID, Attempt: 1, Line: 2, Level: "info", Message: "next"}}
		if err := r.AppendJobLogs(ctx, lines); err != nil {
			t.Fatal(err)
		}
		if _, err := r.TransitionJob(ctx, Transition{JobID: job.ID, From: []JobStatus{JobRunning}, To: JobFailed, Message: "failed: " + bad, Reason: "failed"}, nil); err != nil {
			t.Fatal(err)
		}
		got2, err := r.GetJob(ctx, job.ID)
		if err != nil || got2.Status != JobFailed || got2.StatusMessage != "failed: "+clean || got2.CurrentStep != clean {
			t.Fatalf("job = %+v, %v", got2, err)
		}
		events, _ := r.JobEvents(ctx, job.ID)
		if len(events) != 3 || events[1].Reason != clean {
			t.Fatalf("events = %+v, want the running one's reason %q", events, clean)
		}
		stored, err := r.JobLogs(ctx, job.ID, 0, 10)
		if err != nil || len(stored) != 2 || stored[0].Message != clean || stored[0].StepID != clean || stored[1].Message != "next" {
			t.Fatalf("log = %+v, %v; want both lines, the first as %q", stored, err, clean)
		}
	})
}
