package dispatch

import (
	"context"
	"log/slog"
	"strings"
	"sync"
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
	reg *registry.Registry
	d   *Dispatcher
}

func setup(t *testing.T) *bundle {
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
	d := New(Options{Store: reg, Jobs: jobs.New(reg), Queue: fakeQueue{}, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.Run(runCtx, make(chan string), make(chan string))
	}()
	t.Cleanup(func() { stop(); <-done })
	return &bundle{reg: reg, d: d}
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
	job, _, err := jobs.New(b.reg).Submit(ctx, &registry.Job{
		ID: registry.NewID(), WorkflowName: "wf", Workflow: `{"steps":[{"id":"a","uses":"log"}]}`,
		Priority: registry.PriorityNormal, MaxAttempts: 3, CreatedBy: "test",
		Inputs: `{"url": `,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
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
