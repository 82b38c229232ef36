package e2e

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect/v2"
	"connectrpc.com/connect/v2/connecthttp"
	"github.com/quic-go/quic-go"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	agentv1 "github.com/casarerpa/casare/rpc/casare/agent/v1"
	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/rpc/casare/v1/casarev1connect"
	"github.com/casarerpa/casare/server/queue/queuetest"
	"github.com/casarerpa/casare/server/registry/registrytest"
)

// jobServerFlags make robot loss quick to see: three missed heartbeats
// are 1.5s. The accept timeout stays at its default: on a loaded machine
// an accept can take seconds, and a late one moves the job to attempt 2.
var jobServerFlags = []string{"--heartbeat-interval", "500ms", "--robot-grace-period", "5s", "--accept-timeout", "10s"}

// TestJobsOnRobots runs jobs on real agents, on the embedded default and on
// PostgreSQL and Redis: a batch spread over three robots, a job no robot
// can take, a robot killed mid-job, one paused, a cancel, a drain.
func TestJobsOnRobots(t *testing.T) {
	t.Parallel()
	t.Run("embedded", func(t *testing.T) {
		t.Parallel()
		jobsOnRobots(t, startServer(t, t.TempDir(), jobServerFlags...))
	})
	t.Run("postgres+redis", func(t *testing.T) {
		t.Parallel()
		jobsOnRobots(t, startServer(t, t.TempDir(), append(slices.Clone(jobServerFlags),
			"--database-url", registrytest.DatabaseURL(t), "--redis-url", queuetest.RedisURL(t, 9))...))
	})
}

type fleet struct {
	t      *testing.T
	s      *serverProc
	jobs   casarev1connect.JobServiceClient
	dirs   map[string]string // robot name -> its directory
	agents map[string]*agentProc
	ids    map[string]string // robot id -> name
}

func newFleet(t *testing.T, s *serverProc) *fleet {
	return &fleet{
		t: t, s: s,
		jobs:   casarev1connect.NewJobServiceClient(connect.NewClient(connecthttp.NewTransport(http1, s.url()), bearer(s.adminToken()))),
		dirs:   map[string]string{},
		agents: map[string]*agentProc{},
		ids:    map[string]string{},
	}
}

// enrol enrols a robot and starts its agent.
func (f *fleet) enrol(name string, args ...string) {
	f.t.Helper()
	dir := filepath.Join(f.t.TempDir(), name)
	if out, err := agentCmd("enroll", "--token", enrollmentToken(f.t, f.s, name), "--dir", dir); err != nil {
		f.t.Fatalf("enroll %s: %v\n%s", name, err, out)
	}
	f.dirs[name] = dir
	f.ids[robotID(f.t, dir)] = name
	f.agents[name] = startAgent(f.t, dir, args...)
}

func (f *fleet) submit(wf *casarev1.Workflow, edit ...func(*casarev1.SubmitJobRequest)) *casarev1.Job {
	f.t.Helper()
	req := &casarev1.SubmitJobRequest{Source: &casarev1.SubmitJobRequest_Workflow{Workflow: wf}}
	for _, e := range edit {
		e(req)
	}
	res, err := f.jobs.SubmitJob(context.Background(), req)
	if err != nil {
		f.t.Fatalf("submit: %v", err)
	}
	return res.GetJob()
}

func (f *fleet) get(id string) (*casarev1.Job, []*casarev1.JobEvent) {
	f.t.Helper()
	res, err := f.jobs.GetJob(context.Background(), &casarev1.GetJobRequest{Id: id})
	if err != nil {
		f.t.Fatalf("get job %s: %v", id, err)
	}
	return res.GetJob(), res.GetEvents()
}

// wait polls the job until it has the status, and returns it.
func (f *fleet) wait(id string, status casarev1.JobStatus, within time.Duration) *casarev1.Job {
	f.t.Helper()
	deadline := time.Now().Add(within)
	for {
		job, events := f.get(id)
		if job.GetStatus() == status {
			return job
		}
		if time.Now().After(deadline) || (finished(job.GetStatus()) && finished(status)) {
			f.t.Fatalf("job %s is %s (%s), want %s within %s; events:\n%s\nserver log:\n%s", id, job.GetStatus(), job.GetStatusMessage(),
				status, within, eventsText(events), f.s.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func finished(s casarev1.JobStatus) bool {
	return s == casarev1.JobStatus_JOB_STATUS_SUCCEEDED || s == casarev1.JobStatus_JOB_STATUS_FAILED || s == casarev1.JobStatus_JOB_STATUS_CANCELLED
}

func eventsText(events []*casarev1.JobEvent) string {
	var b strings.Builder
	for _, e := range events {
		fmt.Fprintf(&b, "  %s -> %s attempt %d robot %s: %s\n", e.GetFromStatus(), e.GetToStatus(), e.GetAttempt(), e.GetRobotId(), e.GetReason())
	}
	return b.String()
}

// transitions lists the events as "FROM>TO@attempt".
func transitions(events []*casarev1.JobEvent) []string {
	var out []string
	for _, e := range events {
		out = append(out, fmt.Sprintf("%s>%s@%d", short(e.GetFromStatus()), short(e.GetToStatus()), e.GetAttempt()))
	}
	return out
}

func short(s casarev1.JobStatus) string {
	if s == casarev1.JobStatus_JOB_STATUS_UNSPECIFIED {
		return ""
	}
	return strings.TrimPrefix(s.String(), "JOB_STATUS_")
}

func workflow(name string, steps ...*casarev1.Step) *casarev1.Workflow {
	return &casarev1.Workflow{Name: name, Steps: steps}
}

func step(id, uses string, with map[string]any) *casarev1.Step {
	w, err := structpb.NewStruct(with)
	if err != nil {
		panic(err)
	}
	return &casarev1.Step{Id: id, Uses: uses, With: w}
}

// sleeper logs, waits d, logs again.
func sleeper(d string) *casarev1.Workflow {
	return workflow("sleeper",
		step("start", "log", map[string]any{"message": "starting"}),
		step("wait", "delay", map[string]any{"duration": d}),
		step("end", "log", map[string]any{"message": "done"}))
}

func jobsOnRobots(t *testing.T, s *serverProc) {
	f := newFleet(t, s)
	for _, name := range []string{"r1", "r2", "r3"} {
		f.enrol(name, "--max-jobs", "2", "--drain-timeout", "30s")
	}
	waitStatuses(t, s, map[string]string{"r1": "IDLE", "r2": "IDLE", "r3": "IDLE"}, 15*time.Second)

	// A job that needs a label no robot has waits, says why, and holds
	// nothing up behind it.
	stuck := f.submit(sleeper("1ms"), func(r *casarev1.SubmitJobRequest) {
		r.Requires = &casarev1.Requirements{Labels: map[string]string{"region": "mars"}}
		r.Priority = casarev1.JobPriority_JOB_PRIORITY_CRITICAL
	})

	// 200 jobs run to their end, spread over the three robots, each with
	// the events of one clean run.
	batch := workflow("batch",
		step("hello", "log", map[string]any{"message": "hello ${{ inputs.n }}"}),
		step("pause", "delay", map[string]any{"duration": "5ms"}),
		step("keep", "set", map[string]any{"n": "${{ inputs.n }}"}))
	batch.Outputs = map[string]string{"n": "${{ vars.n }}"}
	ids := make([]string, 200)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Go(func() {
			in, _ := structpb.NewStruct(map[string]any{"n": float64(i)})
			res, err := f.jobs.SubmitJob(context.Background(), &casarev1.SubmitJobRequest{
				Source: &casarev1.SubmitJobRequest_Workflow{Workflow: batch}, Inputs: in,
			})
			if err != nil {
				t.Errorf("submit %d: %v", i, err)
				return
			}
			ids[i] = res.GetJob().GetId()
		})
	}
	wg.Wait()
	if t.Failed() {
		t.Fatalf("server log:\n%s", s.log.String())
	}
	perRobot := map[string]int{}
	for i, id := range ids {
		job := f.wait(id, casarev1.JobStatus_JOB_STATUS_SUCCEEDED, 60*time.Second)
		_, events := f.get(id)
		want := []string{">PENDING@1", "PENDING>ASSIGNED@1", "ASSIGNED>RUNNING@1", "RUNNING>SUCCEEDED@1"}
		if got := transitions(events); !slices.Equal(got, want) {
			t.Fatalf("job %d events %v, want %v", i, got, want)
		}
		if got := job.GetResult().GetFields()["n"].GetNumberValue(); got != float64(i) {
			t.Errorf("job %d result n = %v", i, got)
		}
		if job.GetProgress() != 100 {
			t.Errorf("job %d progress %d, want 100", i, job.GetProgress())
		}
		perRobot[f.ids[job.GetRobotId()]]++
	}
	if len(perRobot) != 3 {
		t.Errorf("the batch ran on %v, want all three robots", perRobot)
	}
	job, _ := f.get(stuck.GetId())
	if job.GetStatus() != casarev1.JobStatus_JOB_STATUS_PENDING || !strings.Contains(job.GetStatusMessage(), "no registered robot can run this job") {
		t.Errorf("the job needing region=mars: %s %q", job.GetStatus(), job.GetStatusMessage())
	}
	explained := string(ctl(t, s, "jobs", "explain", stuck.GetId()))
	for _, want := range []string{"no registered robot can run this job: it needs label region=mars", "r1", "r2", "r3", "label region=mars (not set)"} {
		if !strings.Contains(explained, want) {
			t.Errorf("jobs explain lacks %q:\n%s", want, explained)
		}
	}

	// Logs are stored and printed in order.
	logs := string(ctl(t, s, "jobs", "logs", ids[7]))
	if !strings.Contains(logs, "hello: hello 7") {
		t.Errorf("jobs logs:\n%s", logs)
	}

	// A robot killed in the middle of a 10s job: the job runs again, on
	// another robot, as attempt 2, and attempt 1 stays in its events.
	long := f.submit(sleeper("10s"))
	job = f.wait(long.GetId(), casarev1.JobStatus_JOB_STATUS_RUNNING, 10*time.Second)
	// Its progress shows the step it waits in.
	for deadline := time.Now().Add(5 * time.Second); job.GetCurrentStep() != "wait" || job.GetProgress() == 0; job, _ = f.get(long.GetId()) {
		if time.Now().After(deadline) {
			t.Fatalf("a running job shows step %q at %d%%, want step wait", job.GetCurrentStep(), job.GetProgress())
		}
		time.Sleep(50 * time.Millisecond)
	}
	victim := f.ids[job.GetRobotId()]
	f.agents[victim].cmd.Process.Signal(syscall.SIGKILL)
	job = f.wait(long.GetId(), casarev1.JobStatus_JOB_STATUS_SUCCEEDED, 30*time.Second)
	_, events := f.get(long.GetId())
	if job.GetAttempt() != 2 || f.ids[job.GetRobotId()] == victim {
		t.Errorf("after killing %s: attempt %d on %s; events:\n%s", victim, job.GetAttempt(), f.ids[job.GetRobotId()], eventsText(events))
	}
	if got := transitions(events); !slices.Contains(got, "RUNNING>PENDING@2") || !slices.Contains(got, "ASSIGNED>RUNNING@1") {
		t.Errorf("events after a robot loss: %v", got)
	}
	if !strings.Contains(eventsText(events), "robot "+victim+" lost") {
		t.Errorf("the events do not say the robot was lost:\n%s", eventsText(events))
	}
	f.agents[victim] = startAgent(t, f.dirs[victim], "--max-jobs", "2", "--drain-timeout", "30s")
	waitStatuses(t, s, map[string]string{victim: "IDLE"}, 15*time.Second)

	// A robot paused for less than three heartbeats keeps its job, which
	// finishes on the same attempt.
	paused := f.submit(sleeper("2s"))
	job = f.wait(paused.GetId(), casarev1.JobStatus_JOB_STATUS_RUNNING, 10*time.Second)
	sleepy := f.agents[f.ids[job.GetRobotId()]]
	sleepy.cmd.Process.Signal(syscall.SIGSTOP)
	time.Sleep(900 * time.Millisecond)
	sleepy.cmd.Process.Signal(syscall.SIGCONT)
	job = f.wait(paused.GetId(), casarev1.JobStatus_JOB_STATUS_SUCCEEDED, 20*time.Second)
	if job.GetAttempt() != 1 {
		_, events := f.get(paused.GetId())
		t.Errorf("a paused robot's job ran %d times:\n%s", job.GetAttempt(), eventsText(events))
	}

	// Cancelling a running job stops it on its robot, which confirms.
	doomed := f.submit(sleeper("60s"))
	job = f.wait(doomed.GetId(), casarev1.JobStatus_JOB_STATUS_RUNNING, 10*time.Second)
	runner := f.agents[f.ids[job.GetRobotId()]]
	ctl(t, s, "jobs", "cancel", doomed.GetId(), "--reason", "not needed")
	f.wait(doomed.GetId(), casarev1.JobStatus_JOB_STATUS_CANCELLED, 5*time.Second)
	waitLog(t, runner.log, `msg="job stopped" `, 1)
	waitLog(t, runner.log, "not needed", 1)

	// A job over its timeout fails, and its robot stops it.
	late := f.submit(sleeper("60s"), func(r *casarev1.SubmitJobRequest) { r.Timeout = durationpb.New(time.Second) })
	job = f.wait(late.GetId(), casarev1.JobStatus_JOB_STATUS_FAILED, 15*time.Second)
	if !strings.Contains(job.GetStatusMessage(), "timed out") {
		t.Errorf("a job past its timeout: %q", job.GetStatusMessage())
	}

	// A failing workflow fails the job with its message; --wait says so
	// with exit code 1 and --follow prints the log as it comes.
	cmd := exec.Command(filepath.Join(bin, "casarectl"), "jobs", "submit", "-f", "-", "--follow")
	cmd.Env = append(filterEnv(os.Environ(), "CASARE_"), "CASARE_SERVER="+s.url(), "CASARE_TOKEN="+s.adminToken())
	cmd.Stdin = strings.NewReader("name: broken\nsteps:\n  - id: say\n    uses: log\n    with: {message: about to fail}\n  - id: boom\n    uses: fail\n    with: {message: the invoice is missing}\n")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(string(out), "say: about to fail") || !strings.Contains(string(out), "the invoice is missing") {
		t.Errorf("submit --follow of a failing workflow: %v\n%s", err, out)
	}

	// Draining a robot with work: it takes no new job, finishes the one it
	// runs, and exits 0.
	draining := f.submit(sleeper("2s"))
	job = f.wait(draining.GetId(), casarev1.JobStatus_JOB_STATUS_RUNNING, 10*time.Second)
	name := f.ids[job.GetRobotId()]
	ctl(t, s, "robots", "drain", name)
	waitExit(t, f.agents[name], 20*time.Second)
	job = f.wait(draining.GetId(), casarev1.JobStatus_JOB_STATUS_SUCCEEDED, 5*time.Second)
	if job.GetAttempt() != 1 {
		t.Errorf("a drained robot's job ran %d times", job.GetAttempt())
	}
	// The others still take work.
	after := f.submit(sleeper("1ms"))
	job = f.wait(after.GetId(), casarev1.JobStatus_JOB_STATUS_SUCCEEDED, 10*time.Second)
	if f.ids[job.GetRobotId()] == name {
		t.Errorf("a drained robot got a job")
	}
	if job, _ := f.get(stuck.GetId()); job.GetStatus() != casarev1.JobStatus_JOB_STATUS_PENDING {
		t.Errorf("the job no robot can run is %s", job.GetStatus())
	}
	if v := metricValue(t, s, "casare_robot_jobs_total", `robot_id="`+robotID(t, f.dirs["r1"])+`",status="succeeded"`); v < 1 {
		t.Errorf("casare_robot_jobs_total{r1,succeeded} = %v", v)
	}
}

// TestStaleReportsIgnored speaks the robot protocol itself: a completion
// for an attempt that was superseded changes nothing, and the current
// attempt's completion ends the job.
func TestStaleReportsIgnored(t *testing.T) {
	t.Parallel()
	s := startServer(t, t.TempDir(), "--heartbeat-interval", "500ms", "--robot-grace-period", "500ms")
	f := newFleet(t, s)
	dir := filepath.Join(t.TempDir(), "fake")
	if out, err := agentCmd("enroll", "--token", enrollmentToken(t, s, "fake", "--labels", "kind=fake"), "--dir", dir); err != nil {
		t.Fatalf("enroll: %v\n%s", err, out)
	}
	id := robotID(t, dir)
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "robot.crt"), filepath.Join(dir, "robot.key"))
	if err != nil {
		t.Fatal(err)
	}
	addr := quicListening.FindStringSubmatch(s.log.String())[1]

	job := f.submit(sleeper("1s"), func(r *casarev1.SubmitJobRequest) {
		r.Requires = &casarev1.Requirements{Labels: map[string]string{"kind": "fake"}}
	})
	first := dialRobot(t, addr, cert, id)
	assign := first.next(t).GetJobAssign()
	if assign.GetJobId() != job.GetId() || assign.GetAttempt() != 1 {
		t.Fatalf("assigned %v", assign)
	}
	first.send(t, &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_JobAccept{JobAccept: &agentv1.JobAccept{JobId: job.GetId(), Attempt: 1}}})
	f.wait(job.GetId(), casarev1.JobStatus_JOB_STATUS_RUNNING, 5*time.Second)
	// The robot goes away past the grace period: the job is given out
	// again, as attempt 2, to the robot when it comes back.
	first.conn.CloseWithError(0, "gone")
	f.wait(job.GetId(), casarev1.JobStatus_JOB_STATUS_PENDING, 10*time.Second)
	second := dialRobot(t, addr, cert, id)
	assign = second.next(t).GetJobAssign()
	if assign.GetAttempt() != 2 {
		t.Fatalf("assigned %v, want attempt 2", assign)
	}
	second.send(t, &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_JobAccept{JobAccept: &agentv1.JobAccept{JobId: job.GetId(), Attempt: 2}}})
	second.runs(&agentv1.RunningJob{JobId: job.GetId(), Attempt: 2})
	f.wait(job.GetId(), casarev1.JobStatus_JOB_STATUS_RUNNING, 5*time.Second)

	// Attempt 1's completion arrives late: ignored.
	second.send(t, &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_JobComplete{JobComplete: &agentv1.JobComplete{JobId: job.GetId(), Attempt: 1}}})
	waitLog(t, s.log, "ignored the end of a superseded attempt", 1)
	if got, _ := f.get(job.GetId()); got.GetStatus() != casarev1.JobStatus_JOB_STATUS_RUNNING || got.GetAttempt() != 2 {
		t.Fatalf("after a stale completion the job is %s on attempt %d", got.GetStatus(), got.GetAttempt())
	}
	outputs, _ := structpb.NewStruct(map[string]any{"ok": true})
	second.send(t, &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_JobComplete{JobComplete: &agentv1.JobComplete{JobId: job.GetId(), Attempt: 2, Outputs: outputs}}})
	done := f.wait(job.GetId(), casarev1.JobStatus_JOB_STATUS_SUCCEEDED, 5*time.Second)
	if !done.GetResult().GetFields()["ok"].GetBoolValue() {
		t.Errorf("result %v", done.GetResult())
	}
	// The robot hears that the control plane has the end, so it may
	// forget the job; until then it would list it and send the end again.
	if ack := second.nextAck(t); ack.GetJobId() != job.GetId() {
		t.Fatalf("acknowledged %v", ack)
	}
	// A second completion of the same attempt does not end it twice.
	second.send(t, &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_JobComplete{JobComplete: &agentv1.JobComplete{JobId: job.GetId(), Attempt: 2}}})
	waitLog(t, s.log, "ignored the end of a superseded attempt", 2)
	_, events := f.get(job.GetId())
	if n := strings.Count(strings.Join(transitions(events), " "), ">SUCCEEDED"); n != 1 {
		t.Errorf("the job ended %d times:\n%s", n, eventsText(events))
	}
	second.runs()

	// A job the robot accepted and then stops listing in its heartbeats
	// ended there without a word: it goes back to the queue, next attempt.
	quiet := f.submit(sleeper("1s"), func(r *casarev1.SubmitJobRequest) {
		r.Requires = &casarev1.Requirements{Labels: map[string]string{"kind": "fake"}}
	})
	for {
		if a := second.next(t).GetJobAssign(); a != nil {
			if a.GetJobId() != quiet.GetId() {
				t.Fatalf("assigned %v", a)
			}
			break
		}
	}
	second.send(t, &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_JobAccept{JobAccept: &agentv1.JobAccept{JobId: quiet.GetId(), Attempt: 1}}})
	for deadline := time.Now().Add(10 * time.Second); ; {
		got, events := f.get(quiet.GetId())
		if time.Now().After(deadline) {
			t.Fatalf("the job the robot stopped listing is still %s on attempt %d:\n%s", got.GetStatus(), got.GetAttempt(), eventsText(events))
		}
		if got.GetAttempt() == 2 {
			if !strings.Contains(eventsText(events), "no longer runs it") {
				t.Fatalf("attempt 2 without the reason:\n%s", eventsText(events))
			}
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// rawRobot is a robot connection driven by a test. It sends heartbeats
// on its own.
type rawRobot struct {
	conn    *quic.Conn
	mu      sync.Mutex
	stream  *quic.Stream
	frames  *agentv1.FrameReader
	running []*agentv1.RunningJob // listed in heartbeats
}

// runs sets the jobs the robot lists in its heartbeats.
func (r *rawRobot) runs(jobs ...*agentv1.RunningJob) {
	r.mu.Lock()
	r.running = jobs
	r.mu.Unlock()
}

// nextAck skips to the next job_ack.
func (r *rawRobot) nextAck(t *testing.T) *agentv1.JobAck {
	t.Helper()
	for {
		if ack := r.next(t).GetJobAck(); ack != nil {
			return ack
		}
	}
}

// dialRobot connects as the robot id, with the running jobs listed in its
// hello and in every heartbeat.
func dialRobot(t *testing.T, addr string, cert tls.Certificate, id string, running ...*agentv1.RunningJob) *rawRobot {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := quic.DialAddr(ctx, addr, &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{cert}, NextProtos: []string{agentv1.ALPN}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.CloseWithError(0, "") })
	stream, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r := &rawRobot{conn: conn, stream: stream, frames: agentv1.NewFrameReader(stream), running: running}
	r.send(t, &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_Hello{Hello: &agentv1.Hello{RobotId: id, MaxJobs: 1, RunningJobs: running}}})
	if r.next(t).GetWelcome() == nil {
		t.Fatal("no welcome")
	}
	go func() {
		for {
			select {
			case <-conn.Context().Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
			r.mu.Lock()
			err := agentv1.WriteFrame(stream, &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_Heartbeat{Heartbeat: &agentv1.Heartbeat{RunningJobs: r.running}}})
			r.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return r
}

func (r *rawRobot) send(t *testing.T, msg *agentv1.AgentMessage) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := agentv1.WriteFrame(r.stream, msg); err != nil {
		t.Fatal(err)
	}
}

// next returns the next message that is not a heartbeat answer.
func (r *rawRobot) next(t *testing.T) *agentv1.ServerMessage {
	t.Helper()
	r.stream.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		msg := &agentv1.ServerMessage{}
		if err := r.frames.Read(msg); err != nil {
			t.Fatalf("read from the control plane: %v", err)
		}
		if msg.GetHeartbeatAck() == nil {
			return msg
		}
	}
}
