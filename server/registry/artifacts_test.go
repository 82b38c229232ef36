package registry

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// runningJob creates a job running on robot, attempt 1.
func runningJob(t *testing.T, r *Registry, robot string) *Job {
	t.Helper()
	ctx := context.Background()
	job := newJob("w")
	if _, _, err := r.CreateJob(ctx, job, nil); err != nil {
		t.Fatal(err)
	}
	running, err := r.TransitionJob(ctx, Transition{
		JobID: job.ID, From: []JobStatus{JobPending}, To: JobRunning, Attempt: 1, RobotID: &robot, Reason: "accepted",
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return running
}

func TestJobArtifacts(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		job := runningJob(t, r, "robot-1")
		png := append([]byte("\x89PNG\r\n\x1a\n"), bytes.Repeat([]byte{0, 0xff}, 1<<16)...)
		shot := &JobArtifact{JobID: job.ID, Name: "shot.png", Attempt: 1, ContentType: "image/png", Size: int64(len(png)), SHA256: "aa", Data: png}
		if err := r.PutJobArtifact(ctx, shot, "robot-1", 3); err != nil {
			t.Fatal(err)
		}
		empty := &JobArtifact{JobID: job.ID, Name: "empty.txt", Attempt: 1, ContentType: "text/plain", SHA256: "bb"}
		if err := r.PutJobArtifact(ctx, empty, "robot-1", 3); err != nil {
			t.Fatal(err)
		}

		got, err := r.GetJobArtifact(ctx, job.ID, "shot.png")
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(shot, got); diff != "" {
			t.Errorf("GetJobArtifact() differs from what was stored (-stored +got):\n%s", diff)
		}
		if got, err := r.GetJobArtifact(ctx, job.ID, "empty.txt"); err != nil || got.Data == nil || len(got.Data) != 0 {
			t.Errorf("empty artifact read back as %v, %v", got, err)
		}

		list, err := r.ListJobArtifacts(ctx, job.ID)
		if err != nil {
			t.Fatal(err)
		}
		wantList := []JobArtifact{*empty, *shot}
		if diff := cmp.Diff(wantList, list, cmpopts.IgnoreFields(JobArtifact{}, "Data")); diff != "" {
			t.Errorf("ListJobArtifacts() (-want +got):\n%s", diff)
		}
		for _, a := range list {
			if len(a.Data) != 0 {
				t.Errorf("the list carries the bytes of %s", a.Name)
			}
		}

		// Sent again after a reconnect: one artifact, the latest bytes.
		again := *shot
		again.Data, again.Size, again.SHA256, again.CreatedAt = []byte("new"), 3, "cc", time.Time{}
		if err := r.PutJobArtifact(ctx, &again, "robot-1", 3); err != nil {
			t.Fatal(err)
		}
		if got, err := r.GetJobArtifact(ctx, job.ID, "shot.png"); err != nil || string(got.Data) != "new" || got.SHA256 != "cc" {
			t.Fatalf("after a second upload: %+v, %v", got, err)
		}
		if list, _ := r.ListJobArtifacts(ctx, job.ID); len(list) != 2 {
			t.Fatalf("after a second upload %d artifacts, want 2", len(list))
		}

		// The limit counts names: a third fits, a fourth does not, and a
		// name the job has may still be replaced.
		third := &JobArtifact{JobID: job.ID, Name: "c", Attempt: 1, SHA256: "dd", Data: []byte("c")}
		if err := r.PutJobArtifact(ctx, third, "robot-1", 3); err != nil {
			t.Fatal(err)
		}
		fourth := &JobArtifact{JobID: job.ID, Name: "d", Attempt: 1, SHA256: "ee", Data: []byte("d")}
		if err := r.PutJobArtifact(ctx, fourth, "robot-1", 3); !errors.Is(err, ErrTooManyArtifacts) {
			t.Fatalf("a fourth artifact with a limit of 3: %v, want ErrTooManyArtifacts", err)
		}
		if err := r.PutJobArtifact(ctx, third, "robot-1", 3); err != nil {
			t.Fatalf("replacing an artifact at the limit: %v", err)
		}

		if _, err := r.GetJobArtifact(ctx, job.ID, "missing.png"); !errors.Is(err, ErrNotFound) {
			t.Errorf("GetJobArtifact(missing) = %v, want ErrNotFound", err)
		}
		if list, err := r.ListJobArtifacts(ctx, "no-such-job"); err != nil || len(list) != 0 {
			t.Errorf("ListJobArtifacts(no such job) = %v, %v", list, err)
		}
	})
}

func TestJobArtifactFence(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		job := runningJob(t, r, "robot-1")
		put := func(name, robot string, attempt int32) error {
			return r.PutJobArtifact(ctx, &JobArtifact{JobID: job.ID, Name: name, Attempt: attempt, SHA256: "aa", Data: []byte(name)}, robot, 10)
		}
		tests := []struct {
			name    string
			robot   string
			attempt int32
			want    error
		}{
			{"OtherRobot", "robot-2", 1, ErrConflict},
			{"OtherAttempt", "robot-1", 2, ErrConflict},
		}
		for _, tt := range tests {
			if err := put(tt.name, tt.robot, tt.attempt); !errors.Is(err, tt.want) {
				t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
			}
		}
		if err := r.PutJobArtifact(ctx, &JobArtifact{JobID: "no-such-job", Name: "a", Attempt: 1, SHA256: "aa"}, "robot-1", 10); !errors.Is(err, ErrNotFound) {
			t.Errorf("no such job: %v, want ErrNotFound", err)
		}
		// Once the job ended nothing more is stored, even from its robot.
		if _, err := r.TransitionJob(ctx, Transition{JobID: job.ID, From: ActiveStatuses, To: JobSucceeded, Attempt: 1, Robot: "robot-1"}, nil); err != nil {
			t.Fatal(err)
		}
		if err := put("late", "robot-1", 1); !errors.Is(err, ErrConflict) {
			t.Errorf("after the end: %v, want ErrConflict", err)
		}
		list, err := r.ListJobArtifacts(ctx, job.ID)
		if err != nil || len(list) != 0 {
			t.Fatalf("refused artifacts were stored: %v, %v", list, err)
		}
	})
}
