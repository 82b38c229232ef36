package dispatch

import (
	"context"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v5"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	agentv1 "github.com/casarerpa/casare/rpc/casare/agent/v1"
	"github.com/casarerpa/casare/server/gateway"
	"github.com/casarerpa/casare/server/jobs"
	"github.com/casarerpa/casare/server/queue"
	"github.com/casarerpa/casare/server/registry"
)

// assign records the job as assigned and sends it to r, which has
// AcceptTimeout to accept it.
func (d *Dispatcher) assign(ctx context.Context, j *pendingJob, a *assignment, r *robot) {
	job, err := d.opts.Jobs.Assign(ctx, j.id, j.attempt, r.id, r.name)
	if isConflict(err) {
		// Cancelled, or another replica assigned it first.
		d.release(a)
		return
	}
	if err != nil {
		d.log.Warn("assign a job", "job", j.id, "robot", r.id, "err", err)
		d.release(a)
		d.after(time.Second, func() { d.park(j) })
		return
	}
	d.noteAssigned(job.ID, job.Attempt)
	d.publish(ctx, job.ID)
	inputs, err := job.DecodeInputs()
	if err != nil {
		// Sent without them, the job would run on inputs it was not
		// given; it fails instead, saying why.
		d.log.Error("a job's stored inputs cannot be read; failing it", "job", job.ID, "err", err)
		d.complete.take(jobEnd{
			end:    jobs.End{JobID: a.jobID, Attempt: a.attempt, RobotID: r.id, Failed: true, Error: err.Error()},
			unsent: a,
		})
		return
	}
	var assets []*agentv1.AssignedAsset
	if d.opts.Secrets != nil {
		var secret map[string]*structpb.Value
		secret, assets, err = d.opts.Secrets.ForAssign(ctx, job, AssignTarget{ID: r.id, Name: r.name, Labels: r.labels})
		if registry.Unavailable(err) {
			// The database will be back: the job waits for it in the
			// queue rather than fail for it.
			d.log.Warn("a job's assets cannot be read now; it goes back to the queue", "job", job.ID, "robot", r.id, "err", err)
			d.handBack(ctx, a, "its assets could not be read: the database is unavailable", jobs.HandBack, false)
			return
		}
		if err != nil {
			// Without its secrets or assets the job cannot run as
			// written, on this robot or another: it fails, saying why.
			d.log.Warn("a job's secrets or assets cannot be given to its robot; failing it", "job", job.ID, "robot", r.id, "err", err)
			d.complete.take(jobEnd{
				end:    jobs.End{JobID: a.jobID, Attempt: a.attempt, RobotID: r.id, Failed: true, Error: err.Error()},
				unsent: a,
			})
			return
		}
		for k, v := range secret {
			if inputs.Fields == nil {
				inputs.Fields = map[string]*structpb.Value{}
			}
			inputs.Fields[k] = v
		}
	}
	msg := &agentv1.JobAssign{JobId: job.ID, Attempt: job.Attempt, Workflow: []byte(job.Workflow), Inputs: inputs, Assets: assets}
	if job.TimeoutMillis > 0 {
		msg.Deadline = timestamppb.New(time.Now().Add(time.Duration(job.TimeoutMillis) * time.Millisecond))
	}
	// Posted before the send: the robot's accept, which comes after it,
	// finds the wait armed and stops it.
	d.match.post(func() {
		// A robot starts a job as it accepts it, so one whose accept is
		// late may be running it: the job goes out again on the next
		// attempt, which fences the late accept and anything that robot
		// reports.
		a.acceptWait = d.after(d.opts.AcceptTimeout, func() {
			// Only while the job waits for its accept: a replica that was
			// frozen wakes with this overdue, and the robot may have moved
			// to another replica that recorded it running since.
			d.handBack(context.WithoutCancel(ctx), a, fmt.Sprintf("robot %s did not accept it within %s", r.name, d.opts.AcceptTimeout), jobs.Expire, true)
		})
	})
	if err := r.send(&agentv1.ServerMessage{Msg: &agentv1.ServerMessage_JobAssign{JobAssign: msg}}); err != nil {
		d.handBack(ctx, a, "robot "+r.name+" could not be reached", jobs.HandBack, true)
	}
}

// recordUnsent ends a job assigned here that cannot be sent to its robot.
// On the completer.
func (d *Dispatcher) recordUnsent(ctx context.Context, a *assignment, e jobs.End) {
	d.release(a)
	_, err := d.opts.Jobs.Finish(ctx, e)
	if err != nil {
		if !isConflict(err) {
			d.log.Warn("fail a job", "job", a.jobID, "err", err)
		}
		return
	}
	d.publish(ctx, a.jobID)
}

// handBack ends the robot's hold on a job and puts the job back in the
// queue the way how says (see jobs.Back). avoid keeps the job off that
// robot.
func (d *Dispatcher) handBack(ctx context.Context, a *assignment, reason string, how jobs.Event, avoid bool) {
	d.release(a)
	var avoided []string
	if a.pending != nil {
		avoided = a.pending.avoid
	}
	if avoid {
		avoided = append(avoided, a.robotID)
	}
	d.requeue(ctx, jobs.Back{JobID: a.jobID, Attempt: a.attempt, RobotID: a.robotID, How: how, Reason: reason}, avoided)
	d.countEnd(a.robotID, "returned")
}

// requeue ends a robot's hold on a job as b says and, when the job went
// back to PENDING, queues it for dispatch.
func (d *Dispatcher) requeue(ctx context.Context, b jobs.Back, avoid []string) {
	jobID, reason := b.JobID, b.Reason
	job, err := d.opts.Jobs.HandBack(ctx, b)
	if isConflict(err) {
		return
	}
	if err != nil {
		// The robot's hold is already released here, and a robot that
		// stays connected is no orphan for the sweep to find: given up
		// now, the job would stay the robot's in the database for good.
		// So it is tried again, by the rescuer, until the database takes
		// it or the dispatcher stops.
		d.log.Warn("send a job back to the queue; trying again until the database takes it", "job", jobID, "err", err)
		ctx := context.WithoutCancel(ctx)
		retry := backoff.NewExponentialBackOff()
		retry.InitialInterval, retry.MaxInterval = 500*time.Millisecond, 5*time.Second
		var try func()
		try = func() {
			job, err := d.opts.Jobs.HandBack(ctx, b)
			if isConflict(err) {
				return
			}
			if err == nil {
				d.requeued(ctx, job, reason, avoid)
				return
			}
			d.log.Debug("send a job back to the queue", "job", jobID, "err", err)
			d.after(retry.NextBackOff(), try)
		}
		d.after(retry.NextBackOff(), try)
		return
	}
	d.requeued(ctx, job, reason, avoid)
}

// requeued publishes a job a robot's hold on ended and, when it went back
// to PENDING, queues and parks it for dispatch.
func (d *Dispatcher) requeued(ctx context.Context, job *registry.Job, reason string, avoid []string) {
	jobID := job.ID
	d.log.Info("job sent back", "job", jobID, "attempt", job.Attempt, "status", job.Status, "reason", reason)
	d.publish(ctx, jobID)
	if job.Status != registry.JobPending {
		return
	}
	// The task makes the job survive this replica; parking it here
	// dispatches it now.
	if err := d.opts.Queue.Enqueue(ctx, queue.Task{JobID: job.ID, Attempt: job.Attempt, Priority: job.Priority}); err != nil {
		d.log.Warn("queue a job sent back", "job", jobID, "err", err)
	}
	req, err := JobRequirements(job)
	if err != nil {
		d.log.Error("a pending job cannot be dispatched", "job", job.ID, "err", err)
		return
	}
	d.park(&pendingJob{
		id: job.ID, attempt: job.Attempt, priority: job.Priority, req: req, key: req.key(),
		pendingSince: job.UpdatedAt, avoid: avoid,
	})
}

// RobotUp makes a welcomed robot available and settles what it holds: the
// jobs it still runs are kept on their attempt, the ones the database
// gave it that it no longer has go back to the queue, and the ones it runs
// that are no longer its are stopped.
func (d *Dispatcher) RobotUp(ctx context.Context, info gateway.Robot) {
	// Capabilities and labels come from the robot's hello and end up in
	// job status messages ("label region=eu (has us)"), so they are made
	// storable here.
	caps := make(map[string]bool, len(info.Capabilities))
	for _, c := range info.Capabilities {
		caps[registry.CleanText(c)] = true
	}
	labels := make(map[string]string, len(info.Labels))
	for k, v := range info.Labels {
		labels[registry.CleanText(k)] = registry.CleanText(v)
	}
	r := &robot{
		id: info.ID, name: info.Name, capabilities: caps, labels: labels,
		maxJobs: int(max(info.MaxJobs, 1)), draining: info.Draining, connected: true,
		send: info.Send, jobs: map[string]*assignment{}, session: info.ConnectedSince,
	}
	if !d.match.do(func() {
		m := d.match
		if old := m.robots[info.ID]; old != nil {
			old.grace.Stop()
			m.free.remove(old)
			r.lastBusy = old.lastBusy
			for id, a := range old.jobs {
				a.robot = r
				r.jobs[id] = a
			}
		}
		m.robots[info.ID] = r
		m.renote = true
		// A robot that turned a job down (full, draining) may take it on
		// a new connection.
		m.forgive(info.ID)
	}) {
		return // stopped
	}

	reported := map[string]int32{}
	for _, rj := range info.Running {
		reported[rj.GetJobId()] = rj.GetAttempt()
	}
	held, err := d.opts.Store.ActiveJobs(ctx, info.ID)
	if err != nil {
		// Without the registry's word nothing the robot reports can be
		// called not its: stopped now, a job that runs well would fail
		// for a moment's outage. The robot takes work meanwhile, on the
		// slots the jobs it is known to hold here leave, and what it holds
		// is settled once the registry answers.
		d.log.Warn("read the jobs a robot holds; settling them once the database answers", "robot", info.ID, "err", err)
		upAt := time.Now()
		d.match.post(func() {
			d.match.refreshFree(r)
			d.match.due = true
		})
		d.settleLater(context.WithoutCancel(ctx), r, reported, upAt)
		return
	}
	d.settle(ctx, r, reported, held, time.Time{})
}

// settle keeps the jobs a robot that registered reports and the registry
// says are its, sends back those the registry gives it that it no longer
// has, and stops those it runs that are not its. With upAt set, the robot
// has taken work here since upAt: the jobs given to it from then on are
// left alone.
func (d *Dispatcher) settle(ctx context.Context, r *robot, reported map[string]int32, held []registry.Job, upAt time.Time) {
	heldIDs := map[string]bool{}
	for i := range held {
		job := &held[i]
		heldIDs[job.ID] = true
		if attempt, ok := reported[job.ID]; ok && attempt == job.Attempt {
			d.adopt(ctx, r, job)
			continue
		}
		var a *assignment
		d.match.do(func() { a = r.jobs[job.ID] })
		if a != nil && !upAt.IsZero() && !a.since.Before(upAt) {
			continue // given to it since
		}
		if a == nil {
			a = &assignment{jobID: job.ID, attempt: job.Attempt, robotID: r.id, robot: r}
		}
		d.spawn(func() {
			d.handBack(context.WithoutCancel(ctx), a, "robot "+r.name+" came back without the job", jobs.Retry, false)
		})
	}
	for jobID, attempt := range reported {
		if heldIDs[jobID] {
			continue
		}
		d.log.Info("robot runs a job that is no longer its; stopping it", "robot", r.id, "job", jobID, "attempt", attempt)
		d.stop(r, jobID, attempt, "the job is no longer this robot's")
	}
	d.match.post(func() {
		m := d.match
		for id, a := range r.jobs {
			if !heldIDs[id] && (upAt.IsZero() || a.since.Before(upAt)) {
				delete(r.jobs, id)
				if m.active[id] == a {
					delete(m.active, id)
				}
			}
		}
		m.refreshFree(r)
		m.due = true
	})
}

// settleLater settles what a robot holds once the registry can say, as
// long as the robot stays connected on that session (a newer connection
// settles for itself). The tries wait on the rescuer, so they end with
// the dispatcher.
func (d *Dispatcher) settleLater(ctx context.Context, r *robot, reported map[string]int32, upAt time.Time) {
	retry := storageRetry()
	var try func()
	try = func() {
		current := false
		if !d.match.do(func() { current = d.match.robots[r.id] == r && r.connected }) || !current {
			return
		}
		held, err := d.opts.Store.ActiveJobs(ctx, r.id)
		if err != nil {
			d.log.Debug("read the jobs a robot holds", "robot", r.id, "err", err)
			d.after(retry.NextBackOff(), try)
			return
		}
		d.settle(ctx, r, reported, held, upAt)
	}
	d.after(retry.NextBackOff(), try)
}

// adopt keeps a job the robot reports running: after a reconnect, or after
// a restart of the control plane that forgot it.
func (d *Dispatcher) adopt(ctx context.Context, r *robot, job *registry.Job) {
	var a *assignment
	if !d.match.do(func() {
		a = r.jobs[job.ID]
		if a == nil {
			a = &assignment{jobID: job.ID, attempt: job.Attempt, robotID: r.id, robot: r, since: time.Now()}
			r.jobs[job.ID] = a
			d.match.active[job.ID] = a
		}
		a.acceptWait.Stop()
		if !a.accepted {
			a.accepted, a.acceptedAt = true, time.Now()
		}
	}) {
		return // stopped
	}
	if job.Status == registry.JobAssigned {
		// It accepted while the connection was down.
		d.accepted(ctx, r.id, &agentv1.JobAccept{JobId: job.ID, Attempt: job.Attempt})
		return
	}
	d.armDeadline(ctx, a, job)
}

// RobotDown takes a robot out of dispatch. A lost robot's jobs go back to
// the queue at once; a robot whose connection closed has the grace period
// to come back with them.
func (d *Dispatcher) RobotDown(robotID string, lost bool, reason string) {
	var r *robot
	graced, held := false, 0
	d.match.do(func() {
		m := d.match
		r = m.robots[robotID]
		if r == nil {
			return
		}
		r.connected = false
		m.free.remove(r)
		m.renote = true
		m.due = true
		if !lost && len(r.jobs) > 0 && d.opts.GracePeriod > 0 {
			graced, held = true, len(r.jobs)
			r.grace = d.after(d.opts.GracePeriod, func() {
				d.forget(r, fmt.Sprintf("robot %s did not come back within %s", r.name, d.opts.GracePeriod))
			})
		}
	})
	if r == nil {
		return
	}
	if graced {
		d.log.Info("robot gone; its jobs wait for it", "robot", robotID, "jobs", held, "grace", d.opts.GracePeriod)
		return
	}
	d.forget(r, fmt.Sprintf("robot %s lost: %s", r.name, reason))
}

// forget drops a robot that is gone and sends its jobs back.
func (d *Dispatcher) forget(r *robot, reason string) {
	var held []*assignment
	d.match.do(func() {
		m := d.match
		if m.robots[r.id] != r || r.connected {
			return
		}
		delete(m.robots, r.id)
		// Should it come back, it may take what it turned down.
		m.forgive(r.id)
		for _, a := range r.jobs {
			if a.ending > 0 {
				// Its end is on its way to the completer, which frees
				// the slot: handed back now, a job that ran to its end
				// would run again.
				a.forgotten = reason
				continue
			}
			held = append(held, a)
		}
	})
	if len(held) == 0 {
		return
	}
	if d.registeredElsewhere(r) {
		// This replica was frozen or cut off from the robot, which went
		// to another meanwhile and took its jobs along: they are that
		// replica's now, and sending them back would start them again
		// while the robot still runs them.
		d.log.Info("robot registered with another replica; leaving its jobs to it", "robot", r.id, "jobs", len(held))
		for _, a := range held {
			d.release(a)
		}
		return
	}
	for _, a := range held {
		d.spawn(func() { d.handBack(context.Background(), a, reason, jobs.Retry, false) })
	}
}

// registryWait bounds the registry read a lost robot's jobs wait for.
const registryWait = 5 * time.Second

// registeredElsewhere says whether the registry holds a newer session of
// the robot than the one it had here. When the registry cannot say, the
// jobs go back as before: the transition that does so fails as well then,
// and the orphan sweep decides later, once the robot's last-seen time says.
func (d *Dispatcher) registeredElsewhere(r *robot) bool {
	if r.session.IsZero() {
		return false
	}
	// Bounded: a hung database must not hold up the robot's loss here.
	ctx, cancel := context.WithTimeout(context.Background(), registryWait)
	defer cancel()
	row, err := d.opts.Store.GetRobot(ctx, r.id)
	if err != nil {
		return false
	}
	return row.ConnectedSince != nil && !row.ConnectedSince.Equal(r.session)
}

// RobotDraining stops giving the robot work.
func (d *Dispatcher) RobotDraining(robotID string) {
	d.match.post(func() {
		m := d.match
		if r := m.robots[robotID]; r != nil {
			r.draining = true
			m.free.remove(r)
			m.renote = true
			m.due = true
		}
	})
}

// Handle takes a job message from a robot.
func (d *Dispatcher) Handle(ctx context.Context, robotID string, msg *agentv1.AgentMessage) {
	switch m := msg.GetMsg().(type) {
	case *agentv1.AgentMessage_Heartbeat:
		d.heartbeat(ctx, robotID, m.Heartbeat.GetRunningJobs())
	case *agentv1.AgentMessage_JobAccept:
		d.accepted(ctx, robotID, m.JobAccept)
	case *agentv1.AgentMessage_JobReject:
		d.rejected(ctx, robotID, m.JobReject)
	case *agentv1.AgentMessage_JobProgress:
		d.noteProgress(robotID, m.JobProgress)
	case *agentv1.AgentMessage_JobComplete:
		c := m.JobComplete
		d.finished(ctx, c.GetLogLines(), jobs.End{
			JobID: c.GetJobId(), Attempt: c.GetAttempt(), RobotID: robotID, Outputs: c.GetOutputs(),
		})
	case *agentv1.AgentMessage_JobFail:
		f := m.JobFail
		d.finished(ctx, f.GetLogLines(), jobs.End{
			JobID: f.GetJobId(), Attempt: f.GetAttempt(), RobotID: robotID,
			Failed: true, Error: f.GetError(), Stopped: f.GetStopped(),
		})
	}
}

// progressEvery is how often a job's progress is written at most. Robots
// report every step, which for a fast workflow is thousands a second; the
// registry and watchers need it at the pace a person reads it.
const progressEvery = 500 * time.Millisecond

// progressNote holds the latest progress of an attempt between writes.
type progressNote struct {
	robotID string
	percent int32
	step    string
	dirty   bool
	timer   *deadline
}

// noteProgress writes a job's progress at once when none was written in
// the last progressEvery, and otherwise keeps it for the write at the end
// of that time.
func (d *Dispatcher) noteProgress(robotID string, p *agentv1.JobProgress) {
	key := attemptKey{p.GetJobId(), p.GetAttempt()}
	percent := min(max(p.GetPercent(), 0), 100)
	step := p.GetStepId()
	d.progressMu.Lock()
	if n := d.progress[key]; n != nil {
		n.robotID, n.percent, n.step, n.dirty = robotID, percent, step, true
		d.progressMu.Unlock()
		return
	}
	d.progress[key] = &progressNote{robotID: robotID, timer: d.after(progressEvery, func() { d.flushProgress(key) })}
	d.progressMu.Unlock()
	d.writeProgress(key, robotID, percent, step)
}

func (d *Dispatcher) flushProgress(key attemptKey) {
	d.progressMu.Lock()
	n := d.progress[key]
	if n == nil || !n.dirty {
		delete(d.progress, key)
		d.progressMu.Unlock()
		return
	}
	n.dirty = false
	robotID, percent, step := n.robotID, n.percent, n.step
	n.timer = d.after(progressEvery, func() { d.flushProgress(key) })
	d.progressMu.Unlock()
	d.writeProgress(key, robotID, percent, step)
}

func (d *Dispatcher) writeProgress(key attemptKey, robotID string, percent int32, step string) {
	ctx := context.Background()
	changed, err := d.opts.Jobs.Progress(ctx, key.jobID, key.attempt, robotID, percent, step)
	if err != nil {
		d.log.Warn("record job progress", "job", key.jobID, "err", err)
	} else if changed {
		d.publish(ctx, key.jobID)
	}
}

func (d *Dispatcher) accepted(ctx context.Context, robotID string, m *agentv1.JobAccept) {
	a := d.lookup(robotID, m.GetJobId(), m.GetAttempt())
	job, err := d.opts.Jobs.Accept(ctx, m.GetJobId(), m.GetAttempt(), robotID)
	if isConflict(err) {
		if job != nil && job.Status == registry.JobRunning && job.Attempt == m.GetAttempt() && job.RobotID == robotID {
			return // said twice
		}
		d.log.Info("ignored an accept for a job that moved on; stopping it on the robot", "robot", robotID, "job", m.GetJobId(), "attempt", m.GetAttempt())
		var r *robot
		d.match.do(func() { r = d.match.robots[robotID] })
		if r != nil {
			d.stop(r, m.GetJobId(), m.GetAttempt(), "the job moved on")
		}
		return
	}
	if err != nil {
		d.log.Warn("record a job accepted", "job", m.GetJobId(), "err", err)
		return
	}
	d.publish(ctx, job.ID)
	if a == nil {
		return
	}
	waited := time.Since(job.CreatedAt)
	if a.pending != nil && !a.pending.pendingSince.IsZero() {
		waited = time.Since(a.pending.pendingSince)
	}
	d.match.post(func() {
		a.acceptWait.Stop()
		a.accepted, a.acceptedAt = true, time.Now()
	})
	d.waitSeconds.Observe(waited.Seconds())
	d.armDeadline(ctx, a, job)
}

// armDeadline fails the job when its timeout runs out, counted from when
// it started running, and tells the robot to stop it.
func (d *Dispatcher) armDeadline(ctx context.Context, a *assignment, job *registry.Job) {
	if job.TimeoutMillis <= 0 {
		return
	}
	timeout := time.Duration(job.TimeoutMillis) * time.Millisecond
	started := time.Now()
	if job.StartedAt != nil {
		started = *job.StartedAt
	}
	d.match.post(func() {
		a.deadline.Stop()
		a.deadline = d.after(time.Until(started.Add(timeout)), func() { d.timedOut(ctx, a, timeout) })
	})
}

// timedOut fails a job whose timeout ran out and tells its robot to stop
// it. A deadline's work, on a goroutine of the dispatcher's own.
func (d *Dispatcher) timedOut(ctx context.Context, a *assignment, timeout time.Duration) {
	ctx = context.WithoutCancel(ctx)
	job, err := d.opts.Jobs.TimeOut(ctx, a.jobID, a.attempt, a.robotID, timeout)
	if err != nil {
		if !isConflict(err) {
			d.log.Warn("fail a job that timed out", "job", a.jobID, "err", err)
		}
		return
	}
	d.publish(ctx, a.jobID)
	d.countEnd(a.robotID, "failed")
	if r := d.holder(a); r != nil {
		d.stop(r, a.jobID, a.attempt, job.StatusMessage)
	}
}

func (d *Dispatcher) rejected(ctx context.Context, robotID string, m *agentv1.JobReject) {
	defer d.ack(robotID, m.GetJobId(), m.GetAttempt())
	a := d.lookup(robotID, m.GetJobId(), m.GetAttempt())
	if a == nil {
		d.log.Info("ignored a reject of a job this robot does not hold", "robot", robotID, "job", m.GetJobId(), "attempt", m.GetAttempt())
		return
	}
	var ran bool
	var name string
	d.match.do(func() { ran, name = a.accepted, a.robot.name })
	reason := m.GetReason()
	if ran {
		d.handBack(ctx, a, fmt.Sprintf("robot %s handed it back: %s", name, reason), jobs.Retry, true)
		return
	}
	d.handBack(ctx, a, fmt.Sprintf("robot %s turned it down: %s", name, reason), jobs.HandBack, true)
}

// ack tells a robot the control plane has the end of its job, so it may
// forget it.
func (d *Dispatcher) ack(robotID, jobID string, attempt int32) {
	d.ackTo(d.connectedRobot(robotID), jobID, attempt)
}

// ackTo acks to r, when it is connected (not nil).
func (d *Dispatcher) ackTo(r *robot, jobID string, attempt int32) {
	if r == nil {
		return
	}
	if err := r.send(&agentv1.ServerMessage{Msg: &agentv1.ServerMessage_JobAck{JobAck: &agentv1.JobAck{JobId: jobID, Attempt: attempt}}}); err != nil {
		d.log.Debug("confirm a job's end to its robot", "robot", r.id, "job", jobID, "err", err)
	}
}

// heartbeat settles what a robot says it runs against what this replica
// gave it. A job it accepted over a heartbeat ago and no longer lists has
// ended there without a word (the robot restarted within the grace
// period, say): it goes back to the queue. A job it lists that is not
// its any more is stopped.
func (d *Dispatcher) heartbeat(ctx context.Context, robotID string, running []*agentv1.RunningJob) {
	reported := make(map[string]int32, len(running))
	for _, rj := range running {
		reported[rj.GetJobId()] = rj.GetAttempt()
	}
	cutoff := time.Now().Add(-max(d.opts.HeartbeatInterval, time.Second))
	var r *robot
	var gone []*assignment
	var unknown []*agentv1.RunningJob
	d.match.do(func() {
		r = d.match.robots[robotID]
		if r == nil || !r.connected {
			r = nil
			return
		}
		for id, a := range r.jobs {
			if attempt, ok := reported[id]; ok && attempt == a.attempt {
				continue
			}
			if a.accepted && !a.stopping && a.ending == 0 && a.acceptedAt.Before(cutoff) {
				gone = append(gone, a)
			}
		}
		for _, rj := range running {
			if a := r.jobs[rj.GetJobId()]; a == nil || a.attempt != rj.GetAttempt() {
				unknown = append(unknown, rj)
			}
		}
	})
	if r == nil {
		return
	}
	ctx = context.WithoutCancel(ctx)
	for _, a := range gone {
		d.spawn(func() { d.handBack(ctx, a, "robot "+r.name+" no longer runs it", jobs.Retry, false) })
	}
	if len(unknown) == 0 {
		return
	}
	// Rare (an end in flight, or a job this replica never knew): asking the
	// database is worth it then, not on every heartbeat.
	d.spawn(func() {
		for _, rj := range unknown {
			job, err := d.opts.Store.GetJob(ctx, rj.GetJobId())
			if err != nil && !isConflict(err) {
				continue
			}
			if err == nil && !job.Status.Finished() && job.RobotID == robotID && job.Attempt == rj.GetAttempt() {
				continue
			}
			d.log.Info("robot runs a job that is no longer its; stopping it", "robot", robotID, "job", rj.GetJobId(), "attempt", rj.GetAttempt())
			d.stop(r, rj.GetJobId(), rj.GetAttempt(), "the job is no longer this robot's")
		}
	})
}

// logWait is how long a job's end waits for its log lines to be stored
// before it is left for the robot to send again.
const logWait = 2 * time.Second

// finished records a job's end as its robot reports it, once its log
// lines are stored, and then acknowledges it. Until both are done the
// robot keeps the job and sends its end again, and its lines too after a
// reconnect; so an end or a line the database could not take is not lost.
// A report about a superseded attempt changes nothing.
func (d *Dispatcher) finished(ctx context.Context, logLines int64, e jobs.End) {
	key := attemptKey{e.JobID, e.Attempt}
	if !d.logsMarked(key, logLines) {
		// The wait must not hold up the control stream it came on: the
		// robot's accepts and heartbeats follow on it.
		d.spawn(func() {
			if d.logsStored(ctx, key, logLines, logWait) {
				d.endReported(e)
			}
		})
		return
	}
	d.endReported(e)
}

// endReported hands a job's end whose log is stored to the completer and
// waits for it to be recorded. Its hold is marked ending first, so that
// neither a heartbeat nor the loss of the robot, which may come on other
// goroutines meanwhile, sends back a job whose end is being recorded.
func (d *Dispatcher) endReported(e jobs.End) {
	// Posted: whatever reaches the matcher after this call (the robot's
	// loss, the completer's visit) comes after it in the mailbox.
	d.match.post(func() {
		if a := d.match.holding(e.RobotID, e.JobID, e.Attempt); a != nil {
			a.ending++
		}
	})
	d.complete.take(jobEnd{end: e})
}

// recordEnd records a job's end whose log is stored and acknowledges it.
// On the completer.
func (d *Dispatcher) recordEnd(ctx context.Context, e jobs.End) {
	robotID, jobID, attempt := e.RobotID, e.JobID, e.Attempt
	job, err := d.opts.Jobs.Finish(ctx, e)
	if err != nil && !isConflict(err) {
		// No ack: the robot sends the end again.
		d.log.Warn("record a job's end", "job", jobID, "err", err)
		d.endNotRecorded(e)
		return
	}
	// One visit to the matcher frees the slot and finds whom to ack: under
	// load every job ends here.
	var held *assignment
	var r *robot
	d.match.do(func() {
		if held = d.match.holding(robotID, jobID, attempt); held != nil {
			d.match.unhold(held)
		}
		d.match.forgive(robotID)
		if c := d.match.robots[robotID]; c != nil && c.connected {
			r = c
		}
	})
	if held != nil {
		d.dropNotes(held)
	}
	if err != nil {
		if !e.Stopped {
			d.log.Info("ignored the end of a superseded attempt", "robot", robotID, "job", jobID, "attempt", attempt, "err", err)
		}
		d.ackTo(r, jobID, attempt)
		return
	}
	d.ackTo(r, jobID, attempt)
	d.publish(ctx, jobID)
	d.countEnd(robotID, string(job.Status))
}

// endNotRecorded takes back the ending mark of an end the database did
// not take: the robot sends it again, and meanwhile the hold is what it
// was. A robot forgotten meanwhile has its job sent back as forget would
// have.
func (d *Dispatcher) endNotRecorded(e jobs.End) {
	var back *assignment
	var reason string
	d.match.do(func() {
		a := d.match.holding(e.RobotID, e.JobID, e.Attempt)
		if a == nil || a.ending == 0 {
			return
		}
		a.ending--
		if a.ending == 0 && a.forgotten != "" {
			back, reason = a, a.forgotten
		}
	})
	if back != nil {
		d.spawn(func() { d.handBack(context.Background(), back, reason, jobs.Retry, false) })
	}
}

// stop tells a robot to stop a job; the robot confirms with job_fail.
func (d *Dispatcher) stop(r *robot, jobID string, attempt int32, reason string) {
	connected := false
	d.match.do(func() {
		if a := r.jobs[jobID]; a != nil {
			a.stopping = true
			a.acceptWait.Stop()
			a.deadline.Stop()
		}
		connected = r.connected
	})
	if !connected {
		return
	}
	msg := &agentv1.ServerMessage{Msg: &agentv1.ServerMessage_JobCancel{JobCancel: &agentv1.JobCancel{JobId: jobID, Attempt: attempt, Reason: reason}}}
	if err := r.send(msg); err != nil {
		d.log.Warn("tell a robot to stop a job", "robot", r.id, "job", jobID, "err", err)
	}
}

// followStops tells robots here to stop the jobs cancelled anywhere.
func (d *Dispatcher) followStops(ctx context.Context, stops <-chan string) {
	eachNotice(ctx, stops, func(id string) {
		var a *assignment
		d.match.do(func() {
			m := d.match
			if j := m.known[id]; j != nil {
				j.gone = true
				delete(m.known, id)
				m.goneParked++
			}
			a = m.active[id]
		})
		if a == nil {
			return
		}
		d.stopIfFinished(context.WithoutCancel(ctx), a, storageRetry())
	})
}

// stopIfFinished tells a's robot to stop the job once the registry says it
// has finished (cancelled). The notice comes once: while the registry
// cannot say, it is asked again, on the rescuer, as long as a is held
// here; given up, the robot would run a cancelled job to its end.
func (d *Dispatcher) stopIfFinished(ctx context.Context, a *assignment, retry backoff.BackOff) {
	job, err := d.opts.Store.GetJob(ctx, a.jobID)
	if err != nil && !isConflict(err) {
		d.log.Debug("read a cancelled job", "job", a.jobID, "err", err)
		d.after(retry.NextBackOff(), func() {
			held := false
			if d.match.do(func() { held = d.match.active[a.jobID] == a }) && held {
				d.stopIfFinished(ctx, a, retry)
			}
		})
		return
	}
	if err != nil || !job.Status.Finished() {
		return
	}
	if r := d.holder(a); r != nil {
		d.stop(r, a.jobID, a.attempt, job.StatusMessage)
	}
}
