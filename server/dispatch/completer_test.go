package dispatch

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	agentv1 "github.com/casarerpa/casare/rpc/casare/agent/v1"
	"github.com/casarerpa/casare/server/gateway"
	"github.com/casarerpa/casare/server/jobs"
	"github.com/casarerpa/casare/server/queue"
	"github.com/casarerpa/casare/server/registry"
)

// heldFinish holds each Finish until let go, and can fail it as an outage
// would.
type heldFinish struct {
	Jobs
	entered   chan struct{}
	letGo     chan struct{}
	fail      atomic.Bool
	handBacks atomic.Int64
}

func (h *heldFinish) Finish(ctx context.Context, e jobs.End) (*registry.Job, error) {
	h.entered <- struct{}{}
	<-h.letGo
	if h.fail.Load() {
		return nil, errors.New("the database is unavailable")
	}
	return h.Jobs.Finish(ctx, e)
}

func (h *heldFinish) HandBack(ctx context.Context, b jobs.Back) (*registry.Job, error) {
	h.handBacks.Add(1)
	return h.Jobs.HandBack(ctx, b)
}

// runningOnALostRobot starts a job on a robot, has the robot report its end
// and loses the robot while the end is being recorded.
func runningOnALostRobot(t *testing.T, fail bool) (*bundle, *heldFinish, *registry.Job) {
	t.Helper()
	held := &heldFinish{entered: make(chan struct{}, 1), letGo: make(chan struct{})}
	held.fail.Store(fail)
	b := setup(t, func(o *Options) {
		held.Jobs = o.Jobs
		o.Jobs = held
	})
	ctx := context.Background()
	job := b.submit(t, "{}")
	var robot sent
	b.d.RobotUp(ctx, gateway.Robot{ID: "robot-1", Name: "r1", MaxJobs: 1, Send: robot.send})
	b.d.Offer(job)
	waitFor(t, b.reg, job.ID, func(j *registry.Job) bool { return j.Status == registry.JobAssigned })
	b.d.Handle(ctx, "robot-1", &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_JobAccept{JobAccept: &agentv1.JobAccept{JobId: job.ID, Attempt: 1}}})
	waitFor(t, b.reg, job.ID, func(j *registry.Job) bool { return j.Status == registry.JobRunning })
	// The robot's stream waits while its end is recorded; the robot is
	// lost meanwhile, as the gateway would say on another goroutine.
	handled := make(chan struct{})
	go func() {
		defer close(handled)
		b.d.Handle(ctx, "robot-1", &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_JobComplete{JobComplete: &agentv1.JobComplete{JobId: job.ID, Attempt: 1}}})
	}()
	select {
	case <-held.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the end never reached the completer")
	}
	b.d.RobotDown("robot-1", true, "missed heartbeats")
	close(held.letGo)
	select {
	case <-handled:
	case <-time.After(10 * time.Second):
		t.Fatal("the end was never recorded")
	}
	return b, held, job
}

// TestAnEndBeingRecordedOutlivesItsRobot: a robot lost while the end it
// reported is being recorded does not send its job back: the job ends as
// the robot said, on its attempt.
func TestAnEndBeingRecordedOutlivesItsRobot(t *testing.T) {
	b, held, job := runningOnALostRobot(t, false)
	done := waitFor(t, b.reg, job.ID, func(j *registry.Job) bool { return j.Status.Finished() })
	if done.Status != registry.JobSucceeded || done.Attempt != 1 {
		t.Errorf("job %s on attempt %d, want SUCCEEDED on attempt 1", done.Status, done.Attempt)
	}
	if n := held.handBacks.Load(); n != 0 {
		t.Errorf("%d hand-backs of a job whose end was being recorded, want none", n)
	}
}

// TestAnEndNotRecordedSendsBackTheJobOfALostRobot: should the database not
// take that end, the job of the robot lost meanwhile goes back to the
// queue, as it would have had the robot been lost first.
func TestAnEndNotRecordedSendsBackTheJobOfALostRobot(t *testing.T) {
	b, held, job := runningOnALostRobot(t, true)
	back := waitFor(t, b.reg, job.ID, func(j *registry.Job) bool { return j.Status == registry.JobPending })
	if back.Attempt != 2 {
		t.Errorf("job back on attempt %d, want 2", back.Attempt)
	}
	if n := held.handBacks.Load(); n != 1 {
		t.Errorf("%d hand-backs, want 1", n)
	}
}

// TestToldBeforeRun: robots and jobs the dispatcher hears of before Run
// are kept, and Run dispatches them.
func TestToldBeforeRun(t *testing.T) {
	b := setup(t) // for the registry; its dispatcher stays unused
	ctx := context.Background()
	d := New(Options{Store: b.reg, Jobs: jobs.New(b.reg), Queue: fakeQueue{}, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	job := b.submit(t, "{}")
	var robot sent
	d.RobotUp(ctx, gateway.Robot{ID: "robot-1", Name: "r1", MaxJobs: 1, Send: robot.send})
	d.Offer(job)
	task := queue.Task{JobID: job.ID, Attempt: job.Attempt}
	if !d.Holds(task) {
		t.Error("a job offered before Run is not held")
	}
	runCtx, cancel := context.WithCancel(ctx)
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		d.Run(runCtx, make(chan string), make(chan string))
	}()
	t.Cleanup(func() { cancel(); <-ran })
	waitFor(t, b.reg, job.ID, func(j *registry.Job) bool { return j.Status == registry.JobAssigned })
	deadline := time.Now().Add(10 * time.Second)
	for robot.assigns() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the robot was never sent the job")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-ran
	if d.Holds(task) {
		t.Error("a stopped dispatcher says it holds a job")
	}
}
