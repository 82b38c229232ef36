package server

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"testing"
	"time"

	agentv1 "github.com/casarerpa/casare/rpc/casare/agent/v1"
	"github.com/casarerpa/casare/server/gateway"
	"github.com/casarerpa/casare/server/logtest"
	"github.com/casarerpa/casare/server/registry"
)

// ourCode is what a goroutine of the control plane runs or was started by.
const ourCode = "github.com/casarerpa/casare/server"

// ourGoroutines returns the stacks of the goroutines, other than the
// caller's and those in before, with a frame of the control plane's code or
// started by it, by goroutine id.
func ourGoroutines(before map[string]bool) map[string]string {
	ours := map[string]string{}
	// The first stack is the caller's.
	for i, stack := range bytes.Split(stacks(), []byte("\n\n")) {
		if i == 0 {
			continue
		}
		header, _, _ := strings.Cut(string(stack), "\n")
		id := strings.Fields(header)[1]
		if before[id] {
			continue
		}
		lines := bufio.NewScanner(bytes.NewReader(stack))
		for lines.Scan() {
			line := strings.TrimPrefix(lines.Text(), "created by ")
			if strings.HasPrefix(line, ourCode) {
				ours[id] = string(stack)
				break
			}
		}
	}
	return ours
}

// stacks returns the stacks of every goroutine, the caller's first.
func stacks() []byte {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return buf[:n]
		}
		buf = make([]byte, 2*len(buf))
	}
}

// allGoroutines returns the ids of every goroutine but the caller's.
func allGoroutines() map[string]bool {
	ids := map[string]bool{}
	for i, stack := range bytes.Split(stacks(), []byte("\n\n")) {
		if i > 0 {
			ids[strings.Fields(string(stack))[1]] = true
		}
	}
	return ids
}

// TestNothingRunsAfterClose: once Run has returned and Close too, no
// goroutine of the control plane runs, though it shut down with work in
// flight that keeps deadlines armed: an assignment waiting an hour for its
// accept, a running job with an hour's timeout and a progress write due, a
// job's end waiting for its log lines, and a robot gone with an hour's
// grace period. A goroutine left would be one that can still write.
func TestNothingRunsAfterClose(t *testing.T) {
	before := allGoroutines()
	cfg, err := ConfigFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	cfg.HTTPAddr, cfg.QUICAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.DatabaseURL, cfg.RedisURL = "", ""
	cfg.AcceptTimeout = time.Hour
	cfg.RobotGracePeriod = time.Hour
	var out logtest.Buffer
	ctx := context.Background()
	s, err := New(ctx, cfg, slog.New(slog.NewTextHandler(&out, nil)))
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			s.Close()
		}
	})
	runCtx, cancel := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- s.Run(runCtx) }()
	t.Cleanup(cancel)

	assigned := make(chan string, 16)
	robotUp := func(id string) {
		s.dispatcher.RobotUp(ctx, gateway.Robot{ID: id, Name: id, MaxJobs: 1, ConnectedSince: time.Now(), Send: func(m *agentv1.ServerMessage) error {
			if a := m.GetJobAssign(); a != nil {
				assigned <- id + "/" + a.GetJobId()
			}
			return nil
		}})
	}
	// submit offers a job to the dispatcher and waits until it is sent to
	// the robot, the only one free.
	submit := func(robotID string, timeout time.Duration) *registry.Job {
		t.Helper()
		job, _, err := s.jobs.Submit(ctx, &registry.Job{
			ID: registry.NewID(), WorkflowName: "wf", Workflow: `{"steps":[{"id":"a","uses":"log"}]}`,
			Priority: registry.PriorityNormal, MaxAttempts: 3, CreatedBy: "test", Requires: "{}",
			TimeoutMillis: timeout.Milliseconds(),
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
		s.dispatcher.Offer(job)
		select {
		case got := <-assigned:
			if want := robotID + "/" + job.ID; got != want {
				t.Fatalf("sent %s, want %s", got, want)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("job %s was never sent to %s", job.ID, robotID)
		}
		return job
	}
	accept := func(robotID string, job *registry.Job) {
		t.Helper()
		s.dispatcher.Handle(ctx, robotID, &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_JobAccept{JobAccept: &agentv1.JobAccept{JobId: job.ID, Attempt: job.Attempt}}})
		waitFor(t, "job "+job.ID+" running", func() bool {
			got, err := s.reg.GetJob(ctx, job.ID)
			return err == nil && got.Status == registry.JobRunning
		})
	}

	// An assignment waiting for its accept.
	robotUp("robot-waits")
	submit("robot-waits", 0)
	// A running job with a timeout, its progress written and the next
	// write due, and its end waiting for log lines that never come.
	robotUp("robot-runs")
	running := submit("robot-runs", time.Hour)
	accept("robot-runs", running)
	for percent := range int32(3) {
		s.dispatcher.Handle(ctx, "robot-runs", &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_JobProgress{JobProgress: &agentv1.JobProgress{
			JobId: running.ID, Attempt: running.Attempt, Percent: percent * 10, StepId: "a",
		}}})
	}
	s.dispatcher.Handle(ctx, "robot-runs", &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_JobComplete{JobComplete: &agentv1.JobComplete{
		JobId: running.ID, Attempt: running.Attempt, LogLines: 3,
	}}})
	// A robot gone with its job, within its grace period.
	robotUp("robot-gone")
	gone := submit("robot-gone", 0)
	accept("robot-gone", gone)
	s.dispatcher.RobotDown("robot-gone", false, "connection closed")

	cancel()
	select {
	case err := <-ran:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("Run did not return")
	}
	closed = true
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// A goroutine that signalled it is done may not have returned yet: it
	// is given a moment, while one that waits for a deadline an hour out
	// stays and fails the test.
	var left map[string]string
	deadline := time.Now().Add(10 * time.Second)
	for {
		left = ourGoroutines(before)
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	for id, stack := range left {
		t.Errorf("goroutine %s of the control plane still runs after Close:\n%s", id, stack)
	}
	if t.Failed() {
		fmt.Fprintln(t.Output(), out.String())
	}
}
