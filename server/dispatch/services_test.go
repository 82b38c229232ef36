package dispatch

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	agentv1 "github.com/casarerpa/casare/rpc/casare/agent/v1"
	"github.com/casarerpa/casare/server/gateway"
	"github.com/casarerpa/casare/server/jobs"
	"github.com/casarerpa/casare/server/queue"
	"github.com/casarerpa/casare/server/registry"
)

// The tests of this file run the dispatcher and the real jobs service on
// the fakes of fakes_test.go: what robots are sent and what becomes of the
// job in the store, with no database, Redis or network. Durations are
// tens of milliseconds; every wait is for a condition, with a generous
// limit.

// waitLimit bounds every wait for a condition: far longer than anything
// takes on a busy machine, so reaching it means the condition never came.
const waitLimit = 10 * time.Second

// unit is a running dispatcher on fakes.
type unit struct {
	store *memStore
	queue *recordingQueue
	jobs  *jobs.Service
	d     *Dispatcher
	// stops carries the ids of jobs cancelled anywhere, as the queue's
	// notices do.
	stops chan string
}

// startUnit runs a dispatcher on a fresh memStore and recordingQueue with
// the real jobs service, configured as the test says, until the test ends.
// Every test of this file starts its dispatcher here.
func startUnit(t *testing.T, configure ...func(*Options)) *unit {
	t.Helper()
	store := newMemStore()
	u := &unit{store: store, queue: &recordingQueue{}, jobs: jobs.New(store), stops: make(chan string)}
	opts := Options{
		Store: store, Jobs: u.jobs, Queue: u.queue,
		Logger: slog.New(slog.NewTextHandler(t.Output(), nil)),
	}
	for _, c := range configure {
		c(&opts)
	}
	u.d = New(opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		u.d.Run(ctx, u.stops, make(chan string))
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return u
}

// eventually waits until cond holds, failing the test with what it waited
// for once waitLimit has passed.
func eventually(t *testing.T, cond func() bool, what func() string) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", waitLimit, what())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// robot returns a robot of one slot with no capabilities or labels, not
// yet connected.
func (u *unit) robot(id string) *fakeRobot {
	return &fakeRobot{id: id, name: id, maxJobs: 1, d: u.d}
}

// connect registers the robot's row, as the gateway does when a robot says
// hello, and brings it up here saying it runs the jobs of running.
func (u *unit) connect(t *testing.T, r *fakeRobot, running ...*agentv1.RunningJob) {
	t.Helper()
	caps, err := json.Marshal(append([]string{}, r.capabilities...))
	if err != nil {
		t.Fatal(err)
	}
	labels, err := json.Marshal(r.labels)
	if err != nil {
		t.Fatal(err)
	}
	status := registry.RobotIdle
	if r.draining {
		status = registry.RobotDraining
	}
	session := storeNow()
	u.store.putRobot(registry.Robot{
		ID: r.id, Name: r.name, Capabilities: string(caps), Labels: string(labels), Status: status,
		MaxJobs: r.maxJobs, ConnectedSince: &session, LastSeen: &session,
	})
	u.d.RobotUp(context.Background(), gateway.Robot{
		ID: r.id, Name: r.name, Capabilities: r.capabilities, Labels: r.labels, MaxJobs: r.maxJobs,
		Draining: r.draining, Running: running, Send: r.send, ConnectedSince: session,
	})
}

// submit stores a pending job of one log step through the jobs service,
// as the submit path does, without offering it to the dispatcher.
func (u *unit) submit(t *testing.T, configure ...func(*registry.Job)) *registry.Job {
	t.Helper()
	job := &registry.Job{
		ID: registry.NewID(), WorkflowName: "wf", Workflow: `{"steps":[{"id":"a","uses":"log"}]}`,
		Priority: registry.PriorityNormal, MaxAttempts: 3, CreatedBy: "test", Inputs: "{}", Requires: "{}",
	}
	for _, c := range configure {
		c(job)
	}
	saved, _, err := u.jobs.Submit(context.Background(), job, nil)
	if err != nil {
		t.Fatal(err)
	}
	return saved
}

// offer submits a job and offers it to the dispatcher, as the submit path
// does.
func (u *unit) offer(t *testing.T, configure ...func(*registry.Job)) *registry.Job {
	t.Helper()
	job := u.submit(t, configure...)
	u.d.Offer(job)
	return job
}

func withID(id string) func(*registry.Job) { return func(j *registry.Job) { j.ID = id } }

func withPriority(p registry.Priority) func(*registry.Job) {
	return func(j *registry.Job) { j.Priority = p }
}

func withRequires(requires string) func(*registry.Job) {
	return func(j *registry.Job) { j.Requires = requires }
}

func (u *unit) job(t *testing.T, id string) *registry.Job {
	t.Helper()
	job, err := u.store.GetJob(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return job
}

// waitJob waits until the job in the store satisfies cond, described by
// what, and returns it.
func (u *unit) waitJob(t *testing.T, id, what string, cond func(*registry.Job) bool) *registry.Job {
	t.Helper()
	var job *registry.Job
	eventually(t, func() bool {
		job = u.job(t, id)
		return cond(job)
	}, func() string {
		return fmt.Sprintf("job %s to be %s; it is %s", id, what, describeJob(job))
	})
	return job
}

// waitStatus waits until the job is in status on attempt held by robotID.
func (u *unit) waitStatus(t *testing.T, id string, status registry.JobStatus, attempt int32, robotID string) *registry.Job {
	t.Helper()
	return u.waitJob(t, id, fmt.Sprintf("%s on attempt %d on robot %q", status, attempt, robotID), func(j *registry.Job) bool {
		return j.Status == status && j.Attempt == attempt && j.RobotID == robotID
	})
}

// waitWaiting waits until the job is PENDING on attempt with a status
// message saying what it waits for: said only once a schedule found no
// robot to take it.
func (u *unit) waitWaiting(t *testing.T, id string, attempt int32) *registry.Job {
	t.Helper()
	return u.waitJob(t, id, fmt.Sprintf("PENDING on attempt %d, waiting for a robot", attempt), func(j *registry.Job) bool {
		return j.Status == registry.JobPending && j.Attempt == attempt && strings.HasPrefix(j.StatusMessage, "waiting for")
	})
}

func describeJob(j *registry.Job) string {
	if j == nil {
		return "not read"
	}
	return fmt.Sprintf("%s on attempt %d on robot %q (%q)", j.Status, j.Attempt, j.RobotID, j.StatusMessage)
}

// waitAssigned waits until the robot was sent job_assign for the job's
// attempt.
func waitAssigned(t *testing.T, r *fakeRobot, jobID string, attempt int32) {
	t.Helper()
	want := sentAttempt{jobID, attempt}
	eventually(t, func() bool { return slices.Contains(r.assigned(), want) }, func() string {
		return fmt.Sprintf("%s to be sent job_assign %v; it was sent %v", r.id, want, r.assigned())
	})
}

// waitCancelled waits for the robot to be told to stop the attempt.
func waitCancelled(t *testing.T, r *fakeRobot, want sentAttempt) {
	t.Helper()
	eventually(t, func() bool { return slices.Contains(r.cancelled(), want) }, func() string {
		return fmt.Sprintf("%s to be told to stop %v; it was sent %v", r.id, want, r.cancelled())
	})
}

// running brings a job to RUNNING on the robot through the dispatcher:
// offered, assigned, accepted.
func (u *unit) running(t *testing.T, r *fakeRobot, configure ...func(*registry.Job)) *registry.Job {
	t.Helper()
	job := u.offer(t, configure...)
	waitAssigned(t, r, job.ID, 1)
	r.accept(job.ID, 1)
	return u.waitStatus(t, job.ID, registry.JobRunning, 1, r.id)
}

// unchanged fails the test when after differs from before in what any
// transition or message of a robot would change.
func (u *unit) unchanged(t *testing.T, before *registry.Job) {
	t.Helper()
	after := u.job(t, before.ID)
	if after.Status != before.Status || after.Attempt != before.Attempt || after.RobotID != before.RobotID ||
		after.StatusMessage != before.StatusMessage || !after.UpdatedAt.Equal(before.UpdatedAt) ||
		after.Progress != before.Progress || after.Result != before.Result {
		t.Errorf("job changed: was %s, is %s", describeJob(before), describeJob(after))
	}
}

// wentBack returns the transition that sent the job back to PENDING on
// attempt, failing the test when there is none.
func (u *unit) wentBack(t *testing.T, jobID string, attempt int32) registry.JobEvent {
	t.Helper()
	events := u.store.jobEvents(jobID)
	for _, e := range events {
		if e.FromStatus != "" && e.ToStatus == registry.JobPending && e.Attempt == attempt {
			return e
		}
	}
	t.Fatalf("job %s never went back to PENDING on attempt %d: %+v", jobID, attempt, events)
	return registry.JobEvent{}
}

func wantSent(t *testing.T, what string, got []sentAttempt, want ...sentAttempt) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s: %v, want %v", what, got, want)
	}
}

func wantQueued(t *testing.T, u *unit, jobID string, want ...int32) {
	t.Helper()
	// A job handed back is PENDING in the store a moment before its task
	// is queued: wait for the queue rather than read it once.
	deadline := time.Now().Add(waitLimit)
	for got := u.queue.attempts(jobID); !slices.Equal(got, want); got = u.queue.attempts(jobID) {
		if time.Now().After(deadline) {
			t.Errorf("attempts of job %s queued: %v, want %v", jobID, got, want)
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestUnitStrictPriority: with one free slot, the jobs waiting go out the
// highest priority first and, within one priority, in the order they came.
func TestUnitStrictPriority(t *testing.T) {
	t.Parallel()
	u := startUnit(t)
	names := []struct {
		id       string
		priority registry.Priority
	}{
		{"low-1", registry.PriorityLow}, {"normal-1", registry.PriorityNormal},
		{"high-1", registry.PriorityHigh}, {"critical-1", registry.PriorityCritical},
		{"low-2", registry.PriorityLow}, {"normal-2", registry.PriorityNormal},
		{"high-2", registry.PriorityHigh}, {"critical-2", registry.PriorityCritical},
	}
	for _, n := range names {
		u.offer(t, withID(n.id), withPriority(n.priority))
	}
	r := u.robot("robot-1")
	u.connect(t, r)
	order := []string{"critical-1", "critical-2", "high-1", "high-2", "normal-1", "normal-2", "low-1", "low-2"}
	for i, id := range order {
		eventually(t, func() bool { return len(r.assigned()) > i }, func() string {
			return fmt.Sprintf("assignment %d (%s); the robot was sent %v", i+1, id, r.assigned())
		})
		if got := r.assigned()[i]; got != (sentAttempt{id, 1}) {
			t.Fatalf("assignment %d is %v, want %s on attempt 1 (all so far %v)", i+1, got, id, r.assigned())
		}
		r.accept(id, 1)
		if n := len(r.assigned()); n != i+1 {
			t.Fatalf("the robot of one slot holds %d jobs: %v", n-i, r.assigned()[i:])
		}
		r.complete(id, 1)
		u.waitStatus(t, id, registry.JobSucceeded, 1, r.id)
	}
	var want []sentAttempt
	for _, id := range order {
		want = append(want, sentAttempt{id, 1})
	}
	wantSent(t, "acks", r.acked(), want...)
}

// TestUnitNoHeadOfLineBlocking: a job no free robot can run waits, and
// the jobs behind it that a free robot can run go out; a robot that fits
// takes the waiting job when it comes.
func TestUnitNoHeadOfLineBlocking(t *testing.T) {
	t.Parallel()
	u := startUnit(t)
	plain := u.robot("robot-plain")
	plain.labels = map[string]string{"region": "us"}
	u.connect(t, plain)
	browser := u.offer(t, withRequires(`{"capabilities":["browser"]}`))
	eu := u.offer(t, withRequires(`{"labels":{"region":"eu"}}`))
	same := u.offer(t)
	lower := u.offer(t, withPriority(registry.PriorityLow))

	for _, job := range []*registry.Job{same, lower} {
		waitAssigned(t, plain, job.ID, 1)
		plain.accept(job.ID, 1)
		plain.complete(job.ID, 1)
		u.waitStatus(t, job.ID, registry.JobSucceeded, 1, plain.id)
	}
	wantSent(t, "plain robot's assignments", plain.assigned(), sentAttempt{same.ID, 1}, sentAttempt{lower.ID, 1})
	for _, job := range []*registry.Job{browser, eu} {
		if j := u.job(t, job.ID); j.Status != registry.JobPending || j.Attempt != 1 {
			t.Errorf("job no robot here can run: %s, want PENDING on attempt 1", describeJob(j))
		}
	}
	// What it waits for is said in its status message.
	u.waitJob(t, browser.ID, "saying it needs a browser", func(j *registry.Job) bool {
		return strings.Contains(j.StatusMessage, "capability browser")
	})

	fit := u.robot("robot-eu-browser")
	fit.capabilities = []string{"browser"}
	fit.labels = map[string]string{"region": "eu"}
	fit.maxJobs = 2
	u.connect(t, fit)
	waitAssigned(t, fit, browser.ID, 1)
	waitAssigned(t, fit, eu.ID, 1)
	u.waitStatus(t, browser.ID, registry.JobAssigned, 1, fit.id)
	u.waitStatus(t, eu.ID, registry.JobAssigned, 1, fit.id)
}

// TestUnitFencing: news from a robot that does not hold the job, or about
// an attempt the job left, changes nothing.
func TestUnitFencing(t *testing.T) {
	t.Parallel()
	t.Run("AcceptFromAnotherRobot", func(t *testing.T) {
		t.Parallel()
		u := startUnit(t)
		owner, other := u.robot("robot-owner"), u.robot("robot-other")
		u.connect(t, owner)
		job := u.offer(t)
		waitAssigned(t, owner, job.ID, 1)
		u.connect(t, other)
		before := u.waitStatus(t, job.ID, registry.JobAssigned, 1, owner.id)

		other.accept(job.ID, 1)
		u.unchanged(t, before)
		wantSent(t, "stops to the other robot", other.cancelled(), sentAttempt{job.ID, 1})
		wantSent(t, "stops to the owner", owner.cancelled())

		owner.accept(job.ID, 1)
		u.waitStatus(t, job.ID, registry.JobRunning, 1, owner.id)
	})
	t.Run("CompleteFromAnotherRobot", func(t *testing.T) {
		t.Parallel()
		u := startUnit(t)
		owner, other := u.robot("robot-owner"), u.robot("robot-other")
		u.connect(t, owner)
		before := u.running(t, owner)
		u.connect(t, other)

		other.complete(before.ID, 1)
		u.unchanged(t, before)
		// The other robot may forget it: nothing it says about it counts.
		wantSent(t, "acks to the other robot", other.acked(), sentAttempt{before.ID, 1})
		wantSent(t, "acks to the owner", owner.acked())

		owner.complete(before.ID, 1)
		u.waitStatus(t, before.ID, registry.JobSucceeded, 1, owner.id)
	})
	t.Run("FailOfASupersededAttempt", func(t *testing.T) {
		t.Parallel()
		u := startUnit(t, func(o *Options) { o.GracePeriod = time.Minute })
		r := u.robot("robot-1")
		u.connect(t, r)
		job := u.running(t, r)
		// Back without the job: it goes out again on attempt 2, to the
		// same robot, the one free.
		u.d.RobotDown(r.id, false, "connection closed")
		u.connect(t, r)
		waitAssigned(t, r, job.ID, 2)
		r.accept(job.ID, 2)
		before := u.waitStatus(t, job.ID, registry.JobRunning, 2, r.id)

		r.fail(job.ID, 1, "the first try broke", false)
		u.unchanged(t, before)
		wantSent(t, "acks", r.acked(), sentAttempt{job.ID, 1})
		wantSent(t, "stops", r.cancelled())

		r.complete(job.ID, 2)
		u.waitStatus(t, job.ID, registry.JobSucceeded, 2, r.id)
	})
	t.Run("LateAcceptAfterTheAcceptTimeout", func(t *testing.T) {
		t.Parallel()
		u := startUnit(t, func(o *Options) { o.AcceptTimeout = 30 * time.Millisecond })
		slow := u.robot("robot-slow")
		u.connect(t, slow)
		job := u.offer(t)
		waitAssigned(t, slow, job.ID, 1)
		u.waitWaiting(t, job.ID, 2)
		quick := u.robot("robot-quick")
		quick.autoAccept = true
		u.connect(t, quick)
		before := u.waitStatus(t, job.ID, registry.JobRunning, 2, quick.id)

		slow.accept(job.ID, 1)
		u.unchanged(t, before)
		wantSent(t, "stops to the late robot", slow.cancelled(), sentAttempt{job.ID, 1})
		wantSent(t, "stops to the robot that runs it", quick.cancelled())
	})
	t.Run("HeartbeatListingAnotherRobotsJob", func(t *testing.T) {
		t.Parallel()
		u := startUnit(t)
		owner, other := u.robot("robot-owner"), u.robot("robot-other")
		u.connect(t, owner)
		before := u.running(t, owner)
		u.connect(t, other)

		other.heartbeat(runningJob(before.ID, 1))
		want := sentAttempt{before.ID, 1}
		eventually(t, func() bool { return slices.Contains(other.cancelled(), want) }, func() string {
			return fmt.Sprintf("the other robot to be told to stop %v; it was sent %v", want, other.cancelled())
		})
		u.unchanged(t, before)
		wantSent(t, "stops to the owner", owner.cancelled())
	})
	t.Run("ProgressFromAnotherRobot", func(t *testing.T) {
		t.Parallel()
		u := startUnit(t)
		owner, other := u.robot("robot-owner"), u.robot("robot-other")
		u.connect(t, owner)
		before := u.running(t, owner)
		u.connect(t, other)

		other.progress(before.ID, 1, 90, "forged")
		u.unchanged(t, before)

		owner.progress(before.ID, 1, 40, "a")
		u.waitJob(t, before.ID, "at 40% in step a", func(j *registry.Job) bool {
			return j.Progress == 40 && j.CurrentStep == "a"
		})
	})
}

// TestUnitAcceptTimeout: a robot that does not accept a job in time loses
// it; the job goes out again on the next attempt, to another robot.
func TestUnitAcceptTimeout(t *testing.T) {
	t.Parallel()
	const wait = 30 * time.Millisecond
	u := startUnit(t, func(o *Options) { o.AcceptTimeout = wait })
	slow := u.robot("robot-slow")
	u.connect(t, slow)
	job := u.offer(t)
	waitAssigned(t, slow, job.ID, 1)
	// Back on the next attempt, the job waits though the robot is free:
	// it is not sent again to the robot that let it wait.
	u.waitWaiting(t, job.ID, 2)
	wantQueued(t, u, job.ID, 2)
	// Connected only now: a robot never given work would be picked before
	// slow anyway, which would hide whether slow is passed over.
	quick := u.robot("robot-quick")
	quick.autoAccept = true
	u.connect(t, quick)

	u.waitStatus(t, job.ID, registry.JobRunning, 2, quick.id)
	wantSent(t, "assignments to the robot that did not accept", slow.assigned(), sentAttempt{job.ID, 1})
	wantSent(t, "assignments to the other robot", quick.assigned(), sentAttempt{job.ID, 2})
	if e := u.wentBack(t, job.ID, 2); e.FromStatus != registry.JobAssigned || !strings.Contains(e.Reason, "did not accept it within "+wait.String()) {
		t.Errorf("the job went back from %s: %q, want from ASSIGNED saying the robot did not accept it in time", e.FromStatus, e.Reason)
	}
}

// TestUnitAcceptTimeoutOnTheLastAttempt: a job not accepted in time on its
// last attempt fails, saying why, and is not queued again.
func TestUnitAcceptTimeoutOnTheLastAttempt(t *testing.T) {
	t.Parallel()
	u := startUnit(t, func(o *Options) { o.AcceptTimeout = 30 * time.Millisecond })
	r := u.robot("robot-1")
	u.connect(t, r)
	job := u.offer(t, func(j *registry.Job) { j.MaxAttempts = 1 })
	failed := u.waitStatus(t, job.ID, registry.JobFailed, 1, r.id)
	if !strings.Contains(failed.StatusMessage, "gave up after 1 of 1 attempts") {
		t.Errorf("status message %q, want it to say the job gave up", failed.StatusMessage)
	}
	wantQueued(t, u, job.ID)
}

// TestUnitGracePeriodKeepsTheJobsARobotComesBackWith: a robot whose
// connection closed and that comes back within the grace period keeps the
// jobs it says it still runs, on the same attempt; a job it no longer has
// ran there in part at most, and goes out again on the next attempt.
func TestUnitGracePeriodKeepsTheJobsARobotComesBackWith(t *testing.T) {
	t.Parallel()
	u := startUnit(t, func(o *Options) { o.GracePeriod = time.Hour })
	r := u.robot("robot-1")
	r.maxJobs = 2
	u.connect(t, r)
	kept := u.running(t, r)
	dropped := u.running(t, r)

	u.d.RobotDown(r.id, false, "connection closed")
	for _, job := range []*registry.Job{kept, dropped} {
		if j := u.job(t, job.ID); j.Status != registry.JobRunning || j.Attempt != 1 {
			t.Fatalf("within the grace period a job is %s, want RUNNING on attempt 1", describeJob(j))
		}
	}
	u.connect(t, r, runningJob(kept.ID, 1))
	waitAssigned(t, r, dropped.ID, 2)
	wantQueued(t, u, dropped.ID, 2)
	if e := u.wentBack(t, dropped.ID, 2); !strings.Contains(e.Reason, "came back without the job") {
		t.Errorf("reason %q, want it to say the robot came back without it", e.Reason)
	}

	if j := u.job(t, kept.ID); j.Status != registry.JobRunning || j.Attempt != 1 || j.RobotID != r.id {
		t.Fatalf("the job the robot came back with is %s, want RUNNING on attempt 1 on it", describeJob(j))
	}
	r.complete(kept.ID, 1)
	u.waitStatus(t, kept.ID, registry.JobSucceeded, 1, r.id)
	wantSent(t, "acks", r.acked(), sentAttempt{kept.ID, 1})
	wantQueued(t, u, kept.ID)
	wantSent(t, "stops", r.cancelled())
}

// TestUnitGracePeriodEndsWithTheJobBackInTheQueue: a robot that does not
// come back within the grace period loses its job, which is queued on the
// next attempt once the grace period is over.
func TestUnitGracePeriodEndsWithTheJobBackInTheQueue(t *testing.T) {
	t.Parallel()
	const grace = 40 * time.Millisecond
	u := startUnit(t, func(o *Options) { o.GracePeriod = grace })
	r := u.robot("robot-1")
	u.connect(t, r)
	job := u.running(t, r)

	down := time.Now()
	u.d.RobotDown(r.id, false, "connection closed")
	u.waitStatus(t, job.ID, registry.JobPending, 2, r.id)
	// Seen pending only after it went back, so this holds however late
	// the poll saw it: it never went back before the grace period ended.
	if waited := time.Since(down); waited < grace {
		t.Errorf("the job went back %s after its robot left, before the grace period of %s ended", waited, grace)
	}
	wantQueued(t, u, job.ID, 2)
	if e := u.wentBack(t, job.ID, 2); !strings.Contains(e.Reason, "did not come back within "+grace.String()) {
		t.Errorf("reason %q, want it to say the robot did not come back", e.Reason)
	}

	other := u.robot("robot-2")
	u.connect(t, other)
	waitAssigned(t, other, job.ID, 2)
}

// TestUnitLostRobotLosesItsJobsAtOnce: a robot lost (missed heartbeats)
// has no grace period: its jobs go back at once.
func TestUnitLostRobotLosesItsJobsAtOnce(t *testing.T) {
	t.Parallel()
	// Far longer than the test waits: the job can only be back through
	// the loss, not through the grace period ending.
	u := startUnit(t, func(o *Options) { o.GracePeriod = time.Hour })
	r := u.robot("robot-1")
	r.maxJobs = 2
	u.connect(t, r)
	first := u.running(t, r)
	second := u.running(t, r)

	u.d.RobotDown(r.id, true, "3 heartbeats missed")
	for _, job := range []*registry.Job{first, second} {
		u.waitStatus(t, job.ID, registry.JobPending, 2, r.id)
		wantQueued(t, u, job.ID, 2)
		if e := u.wentBack(t, job.ID, 2); !strings.Contains(e.Reason, "3 heartbeats missed") {
			t.Errorf("reason %q, want the loss", e.Reason)
		}
	}
}

// TestUnitLostRobotRegisteredElsewhere: a robot lost here that has since
// registered with another replica took its jobs along: they are not sent
// back, which would start them again while it runs them.
func TestUnitLostRobotRegisteredElsewhere(t *testing.T) {
	t.Parallel()
	u := startUnit(t)
	r := u.robot("robot-1")
	u.connect(t, r)
	job := u.running(t, r)
	task := queue.Task{JobID: job.ID, Attempt: 1, Priority: job.Priority}

	elsewhere := storeNow().Add(time.Second)
	u.store.putRobot(registry.Robot{ID: r.id, Name: r.name, Status: registry.RobotBusy, MaxJobs: 1, ConnectedSince: &elsewhere, LastSeen: &elsewhere})
	u.d.RobotDown(r.id, true, "3 heartbeats missed")
	eventually(t, func() bool { return !u.d.Holds(task) }, func() string {
		return "the lost robot's job to be let go here"
	})
	if j := u.job(t, job.ID); j.Status != registry.JobRunning || j.Attempt != 1 || j.RobotID != r.id {
		t.Errorf("job of a robot registered elsewhere: %s, want RUNNING on attempt 1 on it", describeJob(j))
	}
	wantQueued(t, u, job.ID)
}

// TestUnitUnreachableRobot: a job that cannot be sent to its robot goes
// to another on the same attempt: it never ran.
func TestUnitUnreachableRobot(t *testing.T) {
	t.Parallel()
	u := startUnit(t)
	broken := u.robot("robot-1-broken")
	broken.unreachable = true
	u.connect(t, broken)
	job := u.offer(t)
	u.waitWaiting(t, job.ID, 1)
	wantQueued(t, u, job.ID, 1)
	if e := u.wentBack(t, job.ID, 1); !strings.Contains(e.Reason, "could not be reached") {
		t.Errorf("reason %q, want it to say the robot could not be reached", e.Reason)
	}

	other := u.robot("robot-2")
	u.connect(t, other)
	waitAssigned(t, other, job.ID, 1)
	u.waitStatus(t, job.ID, registry.JobAssigned, 1, other.id)
}

// TestUnitDrainingRobot: a robot told to drain gets no new job, though it
// has a free slot; the job it runs still completes and is acknowledged.
func TestUnitDrainingRobot(t *testing.T) {
	t.Parallel()
	u := startUnit(t)
	r := u.robot("robot-1-draining")
	r.maxJobs = 2
	u.connect(t, r)
	runs := u.running(t, r)
	// other was given work after r: were r free, r would be picked first.
	other := u.robot("robot-2")
	u.connect(t, other)
	warm := u.running(t, other)

	u.d.RobotDraining(r.id)
	next := u.offer(t)
	u.waitWaiting(t, next.ID, 1)
	r.complete(runs.ID, 1)
	u.waitStatus(t, runs.ID, registry.JobSucceeded, 1, r.id)
	wantSent(t, "acks to the draining robot", r.acked(), sentAttempt{runs.ID, 1})

	other.complete(warm.ID, 1)
	waitAssigned(t, other, next.ID, 1)
	u.waitStatus(t, next.ID, registry.JobAssigned, 1, other.id)
	wantSent(t, "assignments to the draining robot", r.assigned(), sentAttempt{runs.ID, 1})
}

// TestUnitRobotDrainingFromItsHello: a robot that says hello draining gets
// no job.
func TestUnitRobotDrainingFromItsHello(t *testing.T) {
	t.Parallel()
	u := startUnit(t)
	// Named to sort first: of two robots never given work, the dispatcher
	// picks the first by id.
	r := u.robot("robot-1-draining")
	r.draining = true
	u.connect(t, r)
	job := u.offer(t)
	u.waitWaiting(t, job.ID, 1)

	other := u.robot("robot-2")
	u.connect(t, other)
	waitAssigned(t, other, job.ID, 1)
	u.waitStatus(t, job.ID, registry.JobAssigned, 1, other.id)
	wantSent(t, "assignments to the draining robot", r.assigned())
}

// TestUnitOrphanSweep: the jobs the registry reports orphaned go back to
// the queue, unless their robot is connected here.
func TestUnitOrphanSweep(t *testing.T) {
	t.Parallel()
	u := startUnit(t, func(o *Options) { o.OrphanAfter = 20 * time.Millisecond })
	ctx := context.Background()
	// The store lists orphans in id order: the sweep passes the job of the
	// robot here before it sends the other back.
	here := u.submit(t, withID("job-1-here"))
	gone := u.submit(t, withID("job-2-gone"))
	hereRobot := u.robot("robot-here")
	// Both held as a replica that died left them: running, on robots no
	// heartbeat has refreshed since.
	for _, hold := range []struct{ jobID, robotID string }{{here.ID, hereRobot.id}, {gone.ID, "robot-gone"}} {
		if _, err := u.jobs.Assign(ctx, hold.jobID, 1, hold.robotID, hold.robotID); err != nil {
			t.Fatal(err)
		}
		if _, err := u.jobs.Accept(ctx, hold.jobID, 1, hold.robotID); err != nil {
			t.Fatal(err)
		}
	}
	lastSeen := storeNow().Add(-time.Hour)
	u.store.putRobot(registry.Robot{ID: "robot-gone", Name: "robot-gone", Status: registry.RobotBusy, MaxJobs: 1, LastSeen: &lastSeen})
	u.connect(t, hereRobot, runningJob(here.ID, 1))

	u.waitStatus(t, gone.ID, registry.JobPending, 2, "robot-gone")
	wantQueued(t, u, gone.ID, 2)
	if e := u.wentBack(t, gone.ID, 2); !strings.Contains(e.Reason, "robot lost") {
		t.Errorf("reason %q, want it to say the robot was lost", e.Reason)
	}
	if j := u.job(t, here.ID); j.Status != registry.JobRunning || j.Attempt != 1 || j.RobotID != hereRobot.id {
		t.Errorf("job of the robot here: %s, want RUNNING on attempt 1 on it", describeJob(j))
	}
	wantQueued(t, u, here.ID)
	wantSent(t, "stops to the robot here", hereRobot.cancelled())
}

// TestUnitRejectedJobGoesToAnotherRobot: a job a robot turns down goes
// back on the same attempt, to another robot.
func TestUnitRejectedJobGoesToAnotherRobot(t *testing.T) {
	t.Parallel()
	u := startUnit(t)
	first := u.robot("robot-1")
	u.connect(t, first)
	job := u.offer(t)
	waitAssigned(t, first, job.ID, 1)

	first.reject(job.ID, 1, "no free slot")
	wantSent(t, "acks to the robot that turned it down", first.acked(), sentAttempt{job.ID, 1})
	// It waits though the robot that turned it down is free.
	u.waitWaiting(t, job.ID, 1)
	wantQueued(t, u, job.ID, 1)

	second := u.robot("robot-2")
	u.connect(t, second)
	waitAssigned(t, second, job.ID, 1)
	u.waitStatus(t, job.ID, registry.JobAssigned, 1, second.id)
	wantSent(t, "assignments to the robot that turned it down", first.assigned(), sentAttempt{job.ID, 1})
}

// TestUnitHeartbeatWithoutTheJob: a job its robot accepted more than a
// heartbeat ago and no longer lists ended there without a word: it goes
// back on the next attempt. A job its robot lists stays.
func TestUnitHeartbeatWithoutTheJob(t *testing.T) {
	t.Parallel()
	const interval = 100 * time.Millisecond
	u := startUnit(t, func(o *Options) { o.HeartbeatInterval = interval })
	// steady's job is accepted first, so when quiet's counts as ended,
	// steady's is older still and only being listed keeps it.
	steady := u.robot("robot-steady")
	u.connect(t, steady)
	listed := u.running(t, steady)
	quiet := u.robot("robot-quiet")
	u.connect(t, quiet)
	dropped := u.running(t, quiet)
	accepted := time.Now()

	eventually(t, func() bool {
		steady.heartbeat(runningJob(listed.ID, 1))
		quiet.heartbeat()
		return u.job(t, dropped.ID).Attempt == 2
	}, func() string {
		return fmt.Sprintf("the unlisted job to go back on attempt 2; it is %s", describeJob(u.job(t, dropped.ID)))
	})
	// A heartbeat the robot sent before it took the job in does not list
	// it: only one a heartbeat later says the job is gone. Seen back only
	// after it went back, so this holds however late the poll saw it.
	if waited := time.Since(accepted); waited < interval {
		t.Errorf("the job went back %s after it was accepted, within a heartbeat interval of %s", waited, interval)
	}
	wantQueued(t, u, dropped.ID, 2)
	if e := u.wentBack(t, dropped.ID, 2); !strings.Contains(e.Reason, "no longer runs it") {
		t.Errorf("reason %q, want it to say the robot no longer runs it", e.Reason)
	}
	if j := u.job(t, listed.ID); j.Status != registry.JobRunning || j.Attempt != 1 {
		t.Errorf("listed job: %s, want RUNNING on attempt 1", describeJob(j))
	}
	wantQueued(t, u, listed.ID)
}

// TestUnitJobTimeout: a job that runs longer than its timeout fails, and
// its robot is told to stop it; the robot's confirmation is acknowledged
// and changes nothing.
func TestUnitJobTimeout(t *testing.T) {
	t.Parallel()
	u := startUnit(t)
	r := u.robot("robot-1")
	u.connect(t, r)
	job := u.offer(t, func(j *registry.Job) { j.TimeoutMillis = 30 })
	waitAssigned(t, r, job.ID, 1)
	if a := r.lastAssign(); a.GetDeadline() == nil {
		t.Error("job_assign of a job with a timeout has no deadline")
	}
	r.accept(job.ID, 1)

	failed := u.waitStatus(t, job.ID, registry.JobFailed, 1, r.id)
	if failed.StatusMessage != "timed out after 30ms" {
		t.Errorf("status message %q, want it to say it timed out", failed.StatusMessage)
	}
	want := sentAttempt{job.ID, 1}
	waitCancelled(t, r, want)

	r.fail(job.ID, 1, "stopped: timed out", true)
	wantSent(t, "acks", r.acked(), want)
	u.unchanged(t, failed)
}

// TestUnitCompletion: a job's end is recorded with its outputs and
// acknowledged; the same end sent again is acknowledged and changes
// nothing.
func TestUnitCompletion(t *testing.T) {
	t.Parallel()
	u := startUnit(t)
	r := u.robot("robot-1")
	u.connect(t, r)
	job := u.running(t, r)
	outputs, err := structpb.NewStruct(map[string]any{"count": 3})
	if err != nil {
		t.Fatal(err)
	}

	r.completeWith(job.ID, 1, outputs)
	done := u.waitStatus(t, job.ID, registry.JobSucceeded, 1, r.id)
	result, err := done.DecodeResult()
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(result, outputs) {
		t.Errorf("result %v, want %v", result, outputs)
	}
	if done.Progress != 100 || done.FinishedAt == nil {
		t.Errorf("succeeded job at %d%%, finished at %v; want 100%% and a time", done.Progress, done.FinishedAt)
	}
	wantSent(t, "acks", r.acked(), sentAttempt{job.ID, 1})

	events := len(u.store.jobEvents(job.ID))
	r.complete(job.ID, 1)
	wantSent(t, "acks", r.acked(), sentAttempt{job.ID, 1}, sentAttempt{job.ID, 1})
	u.unchanged(t, done)
	if n := len(u.store.jobEvents(job.ID)); n != events {
		t.Errorf("the end sent again made %d transitions", n-events)
	}
}

// TestUnitEndDuringAnOutage: an end the store cannot take is not
// acknowledged, so the robot sends it again; once the store is back, the
// end sent again is recorded and acknowledged.
func TestUnitEndDuringAnOutage(t *testing.T) {
	t.Parallel()
	u := startUnit(t)
	r := u.robot("robot-1")
	u.connect(t, r)
	job := u.running(t, r)

	u.store.down.Store(true)
	r.complete(job.ID, 1)
	u.store.down.Store(false)
	wantSent(t, "acks while the store was down", r.acked())
	if j := u.job(t, job.ID); j.Status != registry.JobRunning {
		t.Fatalf("job %s, want RUNNING until its end is recorded", describeJob(j))
	}

	r.complete(job.ID, 1)
	u.waitStatus(t, job.ID, registry.JobSucceeded, 1, r.id)
	wantSent(t, "acks", r.acked(), sentAttempt{job.ID, 1})
}

// TestUnitCancelledJobIsStopped: a job cancelled anywhere is stopped on
// the robot here that runs it, and the robot's confirmation is
// acknowledged without changing the job.
func TestUnitCancelledJobIsStopped(t *testing.T) {
	t.Parallel()
	u := startUnit(t)
	r := u.robot("robot-1")
	u.connect(t, r)
	job := u.running(t, r)

	cancelled, err := u.jobs.Cancel(context.Background(), job.ID, "cancelled by an operator", "operator", nil)
	if err != nil {
		t.Fatal(err)
	}
	u.stops <- job.ID
	want := sentAttempt{job.ID, 1}
	waitCancelled(t, r, want)

	r.fail(job.ID, 1, "stopped", true)
	wantSent(t, "acks", r.acked(), want)
	u.unchanged(t, cancelled)
}

// TestUnitQueueTasks: a dispatch task offers the attempt it names while
// the job is on it, once; Holds says which attempts are here.
func TestUnitQueueTasks(t *testing.T) {
	t.Parallel()
	u := startUnit(t)
	ctx := context.Background()
	job := u.submit(t)
	task := queue.Task{JobID: job.ID, Attempt: 1, Priority: job.Priority}

	if err := u.d.HandleTask(ctx, queue.Task{JobID: job.ID, Attempt: 2}); err != nil {
		t.Fatal(err)
	}
	if u.d.Holds(task) {
		t.Error("a task of an attempt the job is not on was taken")
	}
	if err := u.d.HandleTask(ctx, task); err != nil {
		t.Fatal(err)
	}
	if !u.d.Holds(task) {
		t.Error("a job waiting here for a robot is not held")
	}
	if u.d.Holds(queue.Task{JobID: job.ID, Attempt: 2}) {
		t.Error("a later attempt than the one waiting is held")
	}

	r := u.robot("robot-1")
	u.connect(t, r)
	waitAssigned(t, r, job.ID, 1)
	if err := u.d.HandleTask(ctx, task); err != nil {
		t.Fatal(err)
	}
	if !u.d.Holds(task) {
		t.Error("a job on a robot here is not held")
	}
	r.accept(job.ID, 1)
	r.complete(job.ID, 1)
	u.waitStatus(t, job.ID, registry.JobSucceeded, 1, r.id)
	if u.d.Holds(task) {
		t.Error("a job that ended is held")
	}
	wantSent(t, "assignments", r.assigned(), sentAttempt{job.ID, 1})

	if err := u.d.HandleTask(ctx, queue.Task{JobID: "no-such-job", Attempt: 1}); err != nil {
		t.Errorf("task of a job that does not exist: %v, want it dropped", err)
	}
	later := u.submit(t)
	u.store.down.Store(true)
	err := u.d.HandleTask(ctx, queue.Task{JobID: later.ID, Attempt: 1})
	u.store.down.Store(false)
	if !registry.Unavailable(err) {
		t.Errorf("task while the store is down: %v, want the store's error for asynq to retry", err)
	}
}

// A robot that comes back while the registry cannot say what it holds
// keeps running what it reports: stopped, a job that runs well would fail
// for a moment's outage.
func TestUnitReconnectDuringAnOutageKeepsTheJobRunning(t *testing.T) {
	t.Parallel()
	u := startUnit(t, func(o *Options) { o.GracePeriod = time.Hour })
	r := u.robot("robot-1")
	u.connect(t, r)
	job := u.running(t, r)
	u.d.RobotDown(r.id, false, "connection closed")
	u.store.down.Store(true)
	u.connect(t, r, runningJob(job.ID, 1))
	u.store.down.Store(false)
	wantSent(t, "stops", r.cancelled())
	r.complete(job.ID, 1)
	u.waitStatus(t, job.ID, registry.JobSucceeded, 1, r.id)
	wantSent(t, "acks", r.acked(), sentAttempt{job.ID, 1})
}

// A cancel notice comes once: taken while the registry cannot confirm the
// job was cancelled, it is checked again until it can, and the robot is
// told to stop the job.
func TestUnitCancelDuringAnOutageStillStopsTheJob(t *testing.T) {
	t.Parallel()
	u := startUnit(t)
	r := u.robot("robot-1")
	u.connect(t, r)
	job := u.running(t, r)
	if _, err := u.jobs.Cancel(context.Background(), job.ID, "cancelled by an operator", "operator", nil); err != nil {
		t.Fatal(err)
	}
	u.store.down.Store(true)
	u.stops <- job.ID
	u.stops <- "another-job" // taken only once the first notice was handled, during the outage
	u.store.down.Store(false)
	want := sentAttempt{job.ID, 1}
	eventually(t, func() bool { r.heartbeat(runningJob(job.ID, 1)); return slices.Contains(r.cancelled(), want) },
		func() string { return fmt.Sprintf("stop %v; sent %v", want, r.cancelled()) })
}

// A robot turns a job down for reasons that pass (here: still stopping an
// earlier attempt of it). Once it reports an end, the job it turned down
// goes to it again, rather than waiting for its next connection when it
// is the only robot that can run it.
func TestUnitJobTurnedDownWhileStoppingAnEarlierAttemptComesBack(t *testing.T) {
	t.Parallel()
	u := startUnit(t)
	r := u.robot("robot-1")
	u.connect(t, r)
	job := u.running(t, r)
	u.d.RobotDown(r.id, true, "3 heartbeats missed")
	u.waitStatus(t, job.ID, registry.JobPending, 2, r.id)
	u.connect(t, r, runningJob(job.ID, 1))
	waitAssigned(t, r, job.ID, 2)
	r.reject(job.ID, 2, "still stopping attempt 1 of this job")
	r.fail(job.ID, 1, "stopped: the control plane gave the job to attempt 2", true)
	eventually(t, func() bool { r.heartbeat(); return len(r.assigned()) == 3 },
		func() string { return "attempt 2 sent again: " + describeJob(u.job(t, job.ID)) })
}
