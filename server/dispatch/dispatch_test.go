package dispatch

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	agentv1 "github.com/casarerpa/casare/rpc/casare/agent/v1"
	"github.com/casarerpa/casare/server/gateway"
	"github.com/casarerpa/casare/server/jobs"
	"github.com/casarerpa/casare/server/queue"
	"github.com/casarerpa/casare/server/registry"
)

// fakeQueue is the dispatch queue of one replica with no other: it carries
// nothing anywhere.
type fakeQueue struct{}

func (fakeQueue) Enqueue(context.Context, queue.Task) error { return nil }
func (fakeQueue) PublishJobChange(context.Context, string)  {}
func (fakeQueue) PublishJobLogs(string)                     {}
func (fakeQueue) PublishJobWaiting(string)                  {}

// bundle is a dispatcher on an embedded registry.
type bundle struct {
	reg  *registry.Registry
	d    *Dispatcher
	stop func() // stops Run and waits for it to return
}

func setup(t *testing.T, configure ...func(*Options)) *bundle {
	t.Helper()
	ctx := context.Background()
	reg, err := registry.Open(ctx, registry.Options{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	if _, err := reg.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	opts := Options{Store: reg, Jobs: jobs.New(reg), Queue: fakeQueue{}, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))}
	for _, c := range configure {
		c(&opts)
	}
	d := New(opts)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.Run(runCtx, make(chan string), make(chan string))
	}()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	return &bundle{reg: reg, d: d, stop: stop}
}

// submit stores a pending job of one log step with these stored inputs.
func (b *bundle) submit(t *testing.T, inputs string) *registry.Job {
	t.Helper()
	job, _, err := jobs.New(b.reg).Submit(context.Background(), &registry.Job{
		ID: registry.NewID(), WorkflowName: "wf", Workflow: `{"steps":[{"id":"a","uses":"log"}]}`,
		Priority: registry.PriorityNormal, MaxAttempts: 3, CreatedBy: "test", Inputs: inputs, Requires: "{}",
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return job
}

// sent records what the dispatcher sends a robot.
type sent struct {
	mu   sync.Mutex
	msgs []*agentv1.ServerMessage
}

func (s *sent) send(m *agentv1.ServerMessage) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.msgs = append(s.msgs, m)
	return nil
}

func (s *sent) assigns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, m := range s.msgs {
		if m.GetJobAssign() != nil {
			n++
		}
	}
	return n
}

// waitFor polls the job until done says yes, with a generous deadline.
func waitFor(t *testing.T, reg *registry.Registry, id string, done func(*registry.Job) bool) *registry.Job {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		job, err := reg.GetJob(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if done(job) {
			return job
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s still %s: %q", id, job.Status, job.StatusMessage)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestUnreadableInputsFailTheJob: a job whose stored inputs cannot be read
// is never sent without them; it fails, saying why.
func TestUnreadableInputsFailTheJob(t *testing.T) {
	b := setup(t)
	ctx := context.Background()
	job := b.submit(t, `{"url": `)
	var robot sent
	b.d.RobotUp(ctx, gateway.Robot{ID: "robot-1", Name: "r1", MaxJobs: 1, Send: robot.send})
	b.d.Offer(job)
	failed := waitFor(t, b.reg, job.ID, func(j *registry.Job) bool { return j.Status.Finished() })
	if failed.Status != registry.JobFailed || !strings.Contains(failed.StatusMessage, "inputs") {
		t.Errorf("job %s: %q; want FAILED naming its inputs", failed.Status, failed.StatusMessage)
	}
	if n := robot.assigns(); n != 0 {
		t.Errorf("the robot was sent %d job_assign, want none", n)
	}
}

// countingJobs counts the changes the dispatcher asks for once told to.
type countingJobs struct {
	Jobs
	counting atomic.Bool
	n        atomic.Int64
}

func (c *countingJobs) note() {
	if c.counting.Load() {
		c.n.Add(1)
	}
}

func (c *countingJobs) HandBack(ctx context.Context, b jobs.Back) (*registry.Job, error) {
	c.note()
	return c.Jobs.HandBack(ctx, b)
}

func (c *countingJobs) TimeOut(ctx context.Context, id string, attempt int32, robotID string, timeout time.Duration) (*registry.Job, error) {
	c.note()
	return c.Jobs.TimeOut(ctx, id, attempt, robotID, timeout)
}

// TestNothingWritesAfterRun: once Run returns, the dispatcher's timers
// write nothing: an accept wait that runs out after it, and a grace period,
// leave the job as it was.
func TestNothingWritesAfterRun(t *testing.T) {
	var counted *countingJobs
	const wait = 300 * time.Millisecond
	b := setup(t, func(o *Options) {
		counted = &countingJobs{Jobs: o.Jobs}
		o.Jobs = counted
		o.AcceptTimeout = wait
		o.GracePeriod = wait
	})
	ctx := context.Background()
	job, _, err := jobs.New(b.reg).Submit(ctx, &registry.Job{
		ID: registry.NewID(), WorkflowName: "wf", Workflow: `{"steps":[{"id":"a","uses":"log"}]}`,
		Priority: registry.PriorityNormal, MaxAttempts: 3, CreatedBy: "test",
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A robot that never accepts: its accept wait is armed as the
	// assignment is sent, so once it holds the job the timer is set.
	assigned := make(chan struct{}, 1)
	b.d.RobotUp(ctx, gateway.Robot{ID: "robot-1", Name: "r1", MaxJobs: 1, Send: func(m *agentv1.ServerMessage) error {
		if m.GetJobAssign() != nil {
			select {
			case assigned <- struct{}{}:
			default:
			}
		}
		return nil
	}})
	b.d.Offer(job)
	select {
	case <-assigned:
	case <-time.After(10 * time.Second):
		t.Fatal("the job was never sent to the robot")
	}
	b.d.RobotDown("robot-1", false, "connection closed")
	b.stop()
	counted.counting.Store(true)
	stopped, err := b.reg.GetJob(ctx, job.ID)
	if err != nil {
		t.Fatal(err)
	}
	// Nothing is to happen, so nothing can be waited for: wait well past
	// both timers instead.
	time.Sleep(3 * wait)
	if n := counted.n.Load(); n != 0 {
		t.Errorf("%d changes asked for after Run returned, want none", n)
	}
	after, err := b.reg.GetJob(ctx, job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if after.Status != stopped.Status || after.Attempt != stopped.Attempt || len(after.StatusMessage) != len(stopped.StatusMessage) {
		t.Errorf("job %s on attempt %d after Run returned, was %s on %d", after.Status, after.Attempt, stopped.Status, stopped.Attempt)
	}
}

// outageJobs fails the first hand-backs as a database outage would.
type outageJobs struct {
	Jobs
	failures atomic.Int64 // still to fail
	tries    atomic.Int64
}

func (o *outageJobs) HandBack(ctx context.Context, b jobs.Back) (*registry.Job, error) {
	o.tries.Add(1)
	if o.failures.Add(-1) >= 0 {
		return nil, errors.New("the database is unavailable")
	}
	return o.Jobs.HandBack(ctx, b)
}

// TestHandBackOutlivesAnOutage: a job a robot turns down while the
// database cannot take the hand-back goes back to PENDING once it can,
// though the robot stays connected and is no orphan for the sweep.
func TestHandBackOutlivesAnOutage(t *testing.T) {
	var flaky *outageJobs
	b := setup(t, func(o *Options) {
		flaky = &outageJobs{Jobs: o.Jobs}
		flaky.failures.Store(2)
		o.Jobs = flaky
	})
	ctx := context.Background()
	job := b.submit(t, "{}")
	var robot sent
	b.d.RobotUp(ctx, gateway.Robot{ID: "robot-1", Name: "r1", MaxJobs: 1, Send: robot.send})
	b.d.Offer(job)
	waitFor(t, b.reg, job.ID, func(j *registry.Job) bool { return j.Status == registry.JobAssigned })
	b.d.Handle(ctx, "robot-1", &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_JobReject{JobReject: &agentv1.JobReject{
		JobId: job.ID, Attempt: 1, Reason: "no free slot",
	}}})
	back := waitFor(t, b.reg, job.ID, func(j *registry.Job) bool { return j.Status == registry.JobPending })
	if back.Attempt != 1 {
		t.Errorf("job after the outage on attempt %d; a turned-down job keeps its attempt", back.Attempt)
	}
	if n := flaky.tries.Load(); n < 3 {
		t.Errorf("%d hand-backs tried, want the 2 that failed and one more", n)
	}
}
