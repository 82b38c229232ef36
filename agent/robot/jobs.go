package robot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/quic-go/quic-go"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/casarerpa/casare/agent/engine"
	"github.com/casarerpa/casare/agent/step"
	agentv1 "github.com/casarerpa/casare/rpc/casare/agent/v1"
	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

// link is the robot's current connection: frames on the control stream
// come from many goroutines (jobs, heartbeats), so writes take mu.
type link struct {
	conn   *quic.Conn
	mu     sync.Mutex
	stream *quic.Stream
}

func (l *link) send(msg *agentv1.AgentMessage) error {
	msg = fit(msg)
	l.mu.Lock()
	defer l.mu.Unlock()
	return agentv1.WriteFrame(l.stream, msg)
}

// errNotConnected is returned by send while the robot has no connection.
var errNotConnected = errors.New("not connected to the control plane")

// Why a job's context was cancelled.
var (
	errHandBack = errors.New("the robot is draining and hands the job back")
)

// stopped is the cause of a cancel the control plane asked for.
type stopped struct{ reason string }

func (s stopped) Error() string { return "stopped: " + s.reason }

// job is a job this robot runs, from job_assign until the control plane
// has its end.
type job struct {
	id      string
	attempt int32
	cancel  context.CancelCauseFunc

	mu    sync.Mutex
	lines []*agentv1.LogEntry
	more  chan struct{} // a line was added or the job ended
	final *agentv1.AgentMessage
	acked chan struct{} // closed when the control plane has the end
}

// ackWait is how long the robot waits for the control plane to confirm a
// job's end before it sends the end again on the same connection.
const ackWait = 10 * time.Second

func (j *job) running() *agentv1.RunningJob {
	return &agentv1.RunningJob{JobId: j.id, Attempt: j.attempt}
}

// Log and Progress make a job the engine's Reporter.
func (j *job) Log(level, stepID, message string) {
	j.mu.Lock()
	j.lines = append(j.lines, fitLine(&agentv1.LogEntry{
		Line: int64(len(j.lines) + 1), Time: timestamppb.Now(), Level: level, StepId: stepID, Message: message,
	}))
	j.mu.Unlock()
	j.poke()
}

func (j *job) poke() {
	select {
	case j.more <- struct{}{}:
	default:
	}
}

// reporter sends progress over the control stream; logs go to the job's
// log stream.
type reporter struct {
	*job
	r *runner
}

func (p reporter) Progress(stepID string, percent int32, message string) {
	// Progress is a hint: one lost while disconnected is made good by the
	// next.
	_ = p.r.send(&agentv1.AgentMessage{Msg: &agentv1.AgentMessage_JobProgress{JobProgress: &agentv1.JobProgress{
		JobId: p.id, Attempt: p.attempt, StepId: stepID, Percent: percent, Message: message,
	}}})
}

// send writes a frame on the current connection.
func (r *runner) send(msg *agentv1.AgentMessage) error {
	r.mu.Lock()
	l := r.link
	r.mu.Unlock()
	if l == nil {
		return errNotConnected
	}
	return l.send(msg)
}

// setLink records the current connection (nil: none) and wakes whatever
// waits for one: log shippers, unreported ends.
func (r *runner) setLink(l *link) {
	r.mu.Lock()
	r.link = l
	close(r.linkChanged)
	r.linkChanged = make(chan struct{})
	r.mu.Unlock()
}

// runningJobs lists the jobs the control plane must not give away: those
// running and those whose end it has not had yet.
func (r *runner) runningJobs() []*agentv1.RunningJob {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*agentv1.RunningJob, 0, len(r.jobs))
	for _, j := range r.jobs {
		out = append(out, j.running())
	}
	return out
}

// busySlots counts the jobs still running. A job whose end is sent and
// waits for the control plane's ack holds no slot: the control plane frees
// the slot when it reads the end and may assign the next job before its
// ack arrives. The caller holds r.mu.
func (r *runner) busySlots() int {
	n := 0
	for _, j := range r.jobs {
		j.mu.Lock()
		if j.final == nil {
			n++
		}
		j.mu.Unlock()
	}
	return n
}

// startJob takes a job_assign: it accepts and runs the job, or turns it
// down when the robot is draining or full.
func (r *runner) startJob(assign *agentv1.JobAssign) {
	reject := func(reason string) {
		r.log.Info("job turned down", "job", assign.GetJobId(), "reason", reason)
		_ = r.send(&agentv1.AgentMessage{Msg: &agentv1.AgentMessage_JobReject{JobReject: &agentv1.JobReject{
			JobId: assign.GetJobId(), Attempt: assign.GetAttempt(), Reason: reason,
		}}})
	}
	r.mu.Lock()
	switch {
	case r.draining:
		r.mu.Unlock()
		reject("draining")
		return
	case r.jobs[assign.GetJobId()] != nil:
		old := r.jobs[assign.GetJobId()]
		r.mu.Unlock()
		if old.attempt < assign.GetAttempt() {
			// The control plane gave up the earlier attempt (it lost
			// word of this robot for a while): it is fenced there, so
			// stop it now rather than at the next heartbeat, and take
			// the new one once its end is acknowledged.
			r.log.Info("stopping an attempt the control plane gave up", "job", old.id, "attempt", old.attempt, "new_attempt", assign.GetAttempt())
			old.cancel(stopped{fmt.Sprintf("the control plane gave the job to attempt %d", assign.GetAttempt())})
			reject(fmt.Sprintf("still stopping attempt %d of this job", old.attempt))
			return
		}
		reject("already running this job")
		return
	}
	if n := r.busySlots(); n >= int(max(r.opts.MaxJobs, 1)) {
		r.mu.Unlock()
		reject(fmt.Sprintf("no free slot (%d jobs running)", n))
		return
	}
	ctx, cancel := context.WithCancelCause(r.jobsCtx)
	if d := assign.GetDeadline(); d != nil {
		var stopDeadline context.CancelFunc
		ctx, stopDeadline = context.WithDeadlineCause(ctx, d.AsTime(), stopped{"timed out: the job's deadline passed"})
		cancelCause := cancel
		cancel = func(err error) { cancelCause(err); stopDeadline() }
	}
	j := &job{id: assign.GetJobId(), attempt: assign.GetAttempt(), cancel: cancel, more: make(chan struct{}, 1), acked: make(chan struct{})}
	r.jobs[j.id] = j
	r.mu.Unlock()

	if err := r.send(&agentv1.AgentMessage{Msg: &agentv1.AgentMessage_JobAccept{JobAccept: &agentv1.JobAccept{
		JobId: j.id, Attempt: j.attempt,
	}}}); err != nil {
		r.log.Warn("could not accept a job; it will go to another robot", "job", j.id, "err", err)
		r.mu.Lock()
		delete(r.jobs, j.id)
		r.mu.Unlock()
		cancel(err)
		return
	}
	r.log.Info("job started", "job", j.id, "attempt", j.attempt)
	r.wg.Go(func() { r.ship(r.life, j) })
	r.wg.Go(func() { r.execute(ctx, j, assign) })
}

// execute runs the workflow and reports its end.
func (r *runner) execute(ctx context.Context, j *job, assign *agentv1.JobAssign) {
	outputs, err := r.runWorkflow(ctx, j, assign)
	final := &agentv1.AgentMessage{}
	j.mu.Lock()
	lines := int64(len(j.lines))
	j.mu.Unlock()
	var stop stopped
	var cut leaseCut
	switch cause := context.Cause(ctx); {
	case err == nil:
		final.Msg = &agentv1.AgentMessage_JobComplete{JobComplete: &agentv1.JobComplete{
			JobId: j.id, Attempt: j.attempt, Outputs: outputs, LogLines: lines,
		}}
		r.log.Info("job succeeded", "job", j.id)
	case errors.Is(cause, errHandBack):
		final.Msg = &agentv1.AgentMessage_JobReject{JobReject: &agentv1.JobReject{
			JobId: j.id, Attempt: j.attempt, Reason: "the robot drained before the job finished",
		}}
		r.log.Info("job handed back", "job", j.id)
	case errors.As(cause, &cut):
		// A hand-back: the control plane gives the job another attempt,
		// unless it already has (then this end is ignored).
		final.Msg = &agentv1.AgentMessage_JobReject{JobReject: &agentv1.JobReject{
			JobId: j.id, Attempt: j.attempt, Reason: "the robot stopped it: " + cut.Error(),
		}}
		r.log.Info("job stopped", "job", j.id, "attempt", j.attempt, "reason", cut.Error())
	case errors.As(cause, &stop):
		final.Msg = &agentv1.AgentMessage_JobFail{JobFail: &agentv1.JobFail{
			JobId: j.id, Attempt: j.attempt, Error: "stopped: " + stop.reason, LogLines: lines, Stopped: true,
		}}
		r.log.Info("job stopped", "job", j.id, "reason", stop.reason)
	default:
		var ee *engine.Error
		business := errors.As(err, &ee) && ee.Business
		final.Msg = &agentv1.AgentMessage_JobFail{JobFail: &agentv1.JobFail{
			JobId: j.id, Attempt: j.attempt, Error: err.Error(), Business: business, LogLines: lines,
		}}
		r.log.Info("job failed", "job", j.id, "err", err)
	}
	if fitted := fit(final); fitted != final {
		if f := fitted.GetJobFail(); f != nil && final.GetJobComplete() != nil {
			r.log.Warn("job failed: its report is too large", "job", j.id, "err", f.GetError())
		}
		final = fitted
	}
	j.cancel(nil)
	j.mu.Lock()
	j.final = final
	j.mu.Unlock()
	j.poke()
}

func (r *runner) runWorkflow(ctx context.Context, j *job, assign *agentv1.JobAssign) (*structpb.Struct, error) {
	wf := &casarev1.Workflow{}
	if err := protojson.Unmarshal(assign.GetWorkflow(), wf); err != nil {
		return nil, &engine.Error{Message: "the robot cannot read the workflow: " + err.Error(), Business: true}
	}
	inputs := assign.GetInputs().AsMap()
	dir, err := os.MkdirTemp("", "casare-job-"+j.id+"-")
	if err != nil {
		return nil, &engine.Error{Message: "the robot cannot make the job's directory: " + err.Error()}
	}
	defer os.RemoveAll(dir)
	rep := reporter{j, r}
	env := &step.Env{JobID: j.id, Attempt: j.attempt, WorkDir: dir, Roots: r.opts.Abilities.FileRoots, Log: func(level, message string) { rep.Log(level, "", message) }, SaveArtifact: r.artifactSaver(ctx, j),
		WorkItems: &workItemClient{jobID: j.id, attempt: j.attempt, conns: r.currentConn, slots: r.workSlots, log: r.log}}
	defer env.Close()
	outputs, err := r.opts.Engine.RunWithAssets(ctx, wf, inputs, jobAssets(assign.GetAssets()), env, rep)
	if err != nil {
		return nil, err
	}
	out, err := structpb.NewStruct(outputs)
	if err != nil {
		return nil, &engine.Error{Message: "the workflow's outputs cannot be sent: " + err.Error()}
	}
	return out, nil
}

// ship sends the job's log lines on a log stream of their own and, once
// the job ended and every line is out, its end on the control stream.
// After a reconnect it opens a new stream and sends the lines again from
// the first: the control plane keeps each line once. It stops when ctx is
// done, the robot's connection over for good, whatever is left unsent.
func (r *runner) ship(ctx context.Context, j *job) {
	var stream *quic.SendStream
	var on *link
	sent := 0
	defer func() {
		if stream != nil {
			stream.CancelWrite(0)
		}
	}()
	for ctx.Err() == nil {
		r.mu.Lock()
		l, changed := r.link, r.linkChanged
		r.mu.Unlock()
		if l != on {
			if stream != nil {
				stream.CancelWrite(0)
			}
			stream, on, sent = nil, l, 0
		}
		j.mu.Lock()
		pending := j.lines[sent:]
		final := j.final
		j.mu.Unlock()
		if l != nil && len(pending) > 0 {
			if stream == nil {
				s, err := l.conn.OpenUniStream()
				if err == nil {
					err = agentv1.WriteFrame(s, &agentv1.UniStreamHeader{Kind: &agentv1.UniStreamHeader_Log{Log: &agentv1.LogStreamHeader{JobId: j.id, Attempt: j.attempt}}})
				}
				if err != nil {
					r.log.Debug("open a log stream", "job", j.id, "err", err)
					waitFor(ctx, changed, j.more, time.Second)
					continue
				}
				stream = s
			}
			failed := false
			for _, e := range pending {
				if err := agentv1.WriteFrame(stream, validEntry(e)); err != nil {
					failed = true
					break
				}
				sent++
			}
			if failed {
				stream.CancelWrite(0)
				stream = nil
				sent = 0
				waitFor(ctx, changed, j.more, time.Second)
				continue
			}
			continue
		}
		if final != nil && l != nil {
			j.mu.Lock()
			done := sent == len(j.lines)
			j.mu.Unlock()
			if done {
				if stream != nil {
					stream.Close()
					stream = nil
				}
				// The job stays listed as running until the control plane
				// confirms its end: an end lost with the connection is
				// sent again after the reconnect instead of the job being
				// given to another robot.
				if err := l.send(validEnd(final)); err == nil {
					select {
					case <-j.acked:
						r.mu.Lock()
						delete(r.jobs, j.id)
						r.mu.Unlock()
						r.jobEnded()
						return
					case <-changed:
					case <-time.After(ackWait):
					case <-ctx.Done():
					}
					continue
				}
			}
		}
		waitFor(ctx, changed, j.more, 0)
	}
}

// validEntry and validEnd make text fit for a protobuf string, which must
// be UTF-8: a line or an error with other bytes (a program's output in
// another encoding) would fail to encode on every try and hold up the job's
// end for good. Invalid sequences become U+FFFD; the rest is kept.
func validEntry(e *agentv1.LogEntry) *agentv1.LogEntry {
	if utf8.ValidString(e.GetMessage()) && utf8.ValidString(e.GetStepId()) && utf8.ValidString(e.GetLevel()) {
		return e
	}
	c := proto.CloneOf(e)
	c.Message, c.StepId, c.Level = validUTF8(c.Message), validUTF8(c.StepId), validUTF8(c.Level)
	return c
}

func validEnd(m *agentv1.AgentMessage) *agentv1.AgentMessage {
	switch f := m.GetMsg().(type) {
	case *agentv1.AgentMessage_JobFail:
		if !utf8.ValidString(f.JobFail.GetError()) {
			c := proto.CloneOf(f.JobFail)
			c.Error = validUTF8(c.Error)
			return &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_JobFail{JobFail: c}}
		}
	case *agentv1.AgentMessage_JobReject:
		if !utf8.ValidString(f.JobReject.GetReason()) {
			c := proto.CloneOf(f.JobReject)
			c.Reason = validUTF8(c.Reason)
			return &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_JobReject{JobReject: c}}
		}
	}
	return m
}

func validUTF8(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }

// waitFor blocks until either channel fires or ctx is done, or the
// timeout when one is given.
func waitFor(ctx context.Context, a <-chan struct{}, b <-chan struct{}, timeout time.Duration) {
	var expired <-chan time.Time
	if timeout > 0 {
		expired = time.After(timeout)
	}
	select {
	case <-a:
	case <-b:
	case <-expired:
	case <-ctx.Done():
	}
}

// cancelJob stops a job the control plane no longer wants run here.
func (r *runner) cancelJob(c *agentv1.JobCancel) {
	r.mu.Lock()
	j := r.jobs[c.GetJobId()]
	r.mu.Unlock()
	if j == nil || j.attempt != c.GetAttempt() {
		return
	}
	reason := c.GetReason()
	if reason == "" {
		reason = "cancelled"
	}
	r.log.Info("stopping a job", "job", j.id, "reason", reason)
	j.cancel(stopped{reason})
}

// jobAcked takes the control plane's word that it has a job's end.
func (r *runner) jobAcked(ack *agentv1.JobAck) {
	r.mu.Lock()
	j := r.jobs[ack.GetJobId()]
	r.mu.Unlock()
	if j == nil || j.attempt != ack.GetAttempt() {
		return
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	select {
	case <-j.acked:
	default:
		close(j.acked)
	}
}

// jobEnded wakes a drain waiting for the robot to run nothing.
func (r *runner) jobEnded() {
	select {
	case r.idle <- struct{}{}:
	default:
	}
}

// askDrain passes the control plane's request to drain to the goroutine
// that drains; one already draining ignores it.
func (r *runner) askDrain(reason string) {
	select {
	case r.drainAsked <- reason:
	default:
	}
}

// drainWhenAsked drains the robot once Run's ctx is done (SIGTERM) or the
// control plane asks, then ends the robot; it returns without draining
// when life ends first (the robot refused).
func (r *runner) drainWhenAsked(ctx, life context.Context) {
	var reason string
	select {
	case <-ctx.Done():
		reason = "the robot is stopping"
	case reason = <-r.drainAsked:
	case <-life.Done():
		return
	}
	r.drain(life, reason)
}

// drain stops taking work, lets running jobs finish until the drain
// timeout, hands back the rest, says so, and then ends the robot. It gives
// up when life ends first.
func (r *runner) drain(life context.Context, reason string) {
	r.mu.Lock()
	r.draining = true
	n := len(r.jobs)
	r.mu.Unlock()
	r.log.Info("draining: taking no new work", "reason", reason, "running", n, "timeout", r.opts.DrainTimeout)
	_ = r.send(&agentv1.AgentMessage{Msg: &agentv1.AgentMessage_Draining{Draining: &agentv1.Draining{Reason: reason}}})
	timeout := time.After(r.opts.DrainTimeout)
	handedBack := false
	var giveUp <-chan time.Time
	for {
		r.mu.Lock()
		left := make([]*job, 0, len(r.jobs))
		for _, j := range r.jobs {
			left = append(left, j)
		}
		r.mu.Unlock()
		if len(left) == 0 {
			break
		}
		select {
		case <-life.Done():
			return
		case <-r.idle:
		case <-time.After(time.Second):
		case <-timeout:
			timeout = nil
			handedBack = true
			r.log.Warn("drain timeout: handing running jobs back", "jobs", len(left))
			for _, j := range left {
				j.cancel(errHandBack)
			}
			// Ends that cannot be delivered (no connection) are given up
			// on: the control plane sends those jobs elsewhere when the
			// robot does not come back.
			giveUp = time.After(drainGiveUp)
		case <-giveUp:
			r.log.Warn("leaving with job ends not delivered", "jobs", len(left))
			r.finishDrain(handedBack)
			return
		}
	}
	r.finishDrain(handedBack)
}

// drainGiveUp is how long a drained robot waits, after handing its jobs
// back, for their ends to reach the control plane.
const drainGiveUp = 10 * time.Second

func (r *runner) finishDrain(handedBack bool) {
	_ = r.send(&agentv1.AgentMessage{Msg: &agentv1.AgentMessage_Drained{Drained: &agentv1.Drained{}}})
	r.log.Info("drained", "handed_back", handedBack)
	r.stop()
}

// jobAssets turns the assets job_assign carried into what the engine
// takes; they stay in memory for the job's run and no longer.
func jobAssets(assigned []*agentv1.AssignedAsset) engine.Assets {
	if len(assigned) == 0 {
		return engine.Assets{}
	}
	a := engine.Assets{Values: map[string]any{}, Credentials: map[string]map[string]string{}}
	for _, as := range assigned {
		switch as.GetType() {
		case "credential":
			a.Credentials[as.GetName()] = map[string]string{"username": as.GetUsername(), "password": as.GetPassword()}
			a.Secrets = append(a.Secrets, as.GetPassword())
		case "secret":
			v := as.GetValue().GetStringValue()
			a.Values[as.GetName()] = v
			a.Secrets = append(a.Secrets, v)
		default:
			a.Values[as.GetName()] = as.GetValue().AsInterface()
		}
	}
	return a
}
