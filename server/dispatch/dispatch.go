// Package dispatch runs jobs on robots: it takes pending jobs from the
// dispatch queue, picks a robot for each, hands it over, follows it to its
// end, and sends it back to the queue when its robot is lost. The database
// holds every job's state and attempt; what this package keeps in memory
// (which robot has which free slots, which jobs wait) is rebuilt from the
// robots that connect and the queue.
package dispatch

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/structpb"

	agentv1 "github.com/casarerpa/casare/rpc/casare/agent/v1"
	"github.com/casarerpa/casare/server/gateway"
	"github.com/casarerpa/casare/server/jobs"
	"github.com/casarerpa/casare/server/queue"
	"github.com/casarerpa/casare/server/registry"
)

// Store is what the dispatcher needs from the registry.
type Store interface {
	GetJob(ctx context.Context, id string) (*registry.Job, error)
	ActiveJobs(ctx context.Context, robotID string) ([]registry.Job, error)
	OrphanedJobs(ctx context.Context, staleBefore time.Time, limit int) ([]registry.Job, error)
	AppendJobLogs(ctx context.Context, lines []registry.JobLog) error
	CountJobLogs(ctx context.Context, jobID string, attempt int32) (int64, error)
	PutJobArtifact(ctx context.Context, a *registry.JobArtifact, robotID string, maxPerJob int) error
	ListAllRobots(ctx context.Context) ([]registry.Robot, error)
	GetRobot(ctx context.Context, idOrName string) (*registry.Robot, error)
	SetRobotsStatus(ctx context.Context, ids []string, status registry.RobotStatus) error
}

// Jobs is what changes jobs: the dispatcher says what happened, and the
// jobs service decides what that does to the job (see server/jobs).
type Jobs interface {
	Assign(ctx context.Context, jobID string, attempt int32, robotID, robotName string) (*registry.Job, error)
	Accept(ctx context.Context, jobID string, attempt int32, robotID string) (*registry.Job, error)
	Progress(ctx context.Context, jobID string, attempt int32, robotID string, percent int32, step string) (bool, error)
	Finish(ctx context.Context, e jobs.End) (*registry.Job, error)
	HandBack(ctx context.Context, b jobs.Back) (*registry.Job, error)
	TimeOut(ctx context.Context, jobID string, attempt int32, robotID string, timeout time.Duration) (*registry.Job, error)
	SayWaiting(ctx context.Context, jobID string, attempt int32, message string) (bool, error)
}

var _ Jobs = (*jobs.Service)(nil)

// Queue is what the dispatcher needs from the dispatch queue.
type Queue interface {
	Enqueue(ctx context.Context, t queue.Task) error
	PublishJobChange(ctx context.Context, jobID string)
	PublishJobLogs(jobID string)
	PublishJobWaiting(jobID string)
}

// Options configures New.
type Options struct {
	Store  Store
	Jobs   Jobs
	Queue  Queue
	Logger *slog.Logger
	// AcceptTimeout is how long a robot has to accept a job before it goes
	// to another; zero means 10s.
	AcceptTimeout time.Duration
	// GracePeriod is how long a robot whose connection closed keeps its
	// jobs, waiting for it to come back.
	GracePeriod time.Duration
	// OrphanAfter is how long after its robot was last seen anywhere a
	// job held by a robot no replica serves goes back to the queue.
	OrphanAfter time.Duration
	// HeartbeatInterval is how often robots list the jobs they run; a job
	// accepted longer ago than that and missing from the list has ended on
	// the robot without a word.
	HeartbeatInterval time.Duration
	// RobotChanged is told when a robot's status (idle, busy) changes.
	RobotChanged func(robotID string)
	Environment  string
	// Secrets, when set, gives job_assign what the job's row does not
	// hold in plain text.
	Secrets Secrets
}

// Secrets gives job_assign the job's secret inputs, opened, and the
// assets its workflow reads, resolved for the robot it goes to. They
// travel only inside job_assign, over the robot's mutual-TLS tunnel.
type Secrets interface {
	ForAssign(ctx context.Context, job *registry.Job, robot AssignTarget) (inputs map[string]*structpb.Value, assets []*agentv1.AssignedAsset, err error)
}

// AssignTarget is the robot a job is assigned to.
type AssignTarget struct {
	ID, Name string
	Labels   map[string]string
}

// Dispatcher matches pending jobs with robots connected to this replica.
// It is made of services that each own their part (see Run): the matcher
// (robots' slots, waiting jobs, assignments), the rescuer (every deadline,
// the orphan sweep) and the completer (job ends), and the goroutines of
// its own that talk to the registry and the robots.
type Dispatcher struct {
	opts Options
	log  *slog.Logger

	match    *matcher
	rescue   *rescuer
	complete *completer

	notes chan *pendingJob // waiting jobs whose status message needs saying

	logsMu sync.Mutex
	logs   map[attemptKey]*logMark // log lines stored per attempt

	progressMu sync.Mutex
	progress   map[attemptKey]*progressNote

	cacheMu      sync.Mutex
	cachedRobots []registry.Robot
	cachedAt     time.Time

	// ownMu guards stopped; owned counts the dispatcher's own goroutines
	// that run (see owned.go).
	ownMu   sync.Mutex
	stopped bool
	owned   sync.WaitGroup

	jobsTotal   *prometheus.CounterVec
	waitSeconds prometheus.Observer
	collectors  []prometheus.Collector
}

// robot is a robot connected here. Like an assignment's, its fields that
// change belong to the matcher's goroutine; id, name, send and session
// are set once and read anywhere.
type robot struct {
	id, name     string
	capabilities map[string]bool
	labels       map[string]string
	maxJobs      int
	draining     bool
	connected    bool
	busy         bool // every slot taken
	told         bool // the busy the registry has
	send         func(*agentv1.ServerMessage) error
	jobs         map[string]*assignment
	lastBusy     time.Time // when it was last given a job
	grace        *deadline
	// session is when its connection here was registered: the registry's
	// connected_since while the robot is registered here.
	session time.Time
}

// pendingJob is a job waiting here for a robot.
type pendingJob struct {
	id           string
	attempt      int32
	priority     registry.Priority
	req          Requirements
	key          string
	pendingSince time.Time
	avoid        []string // robots that turned it down
	gone         bool     // no longer pending: drop it
	noted        bool     // its waiting message was said
	inUnnoted    bool     // in Dispatcher.unnoted
	announced    bool     // every replica was told it waits
}

// assignment is a job held by one of this replica's robots. jobID,
// attempt, robotID, since and pending are set once; the rest belongs to
// the matcher's goroutine.
type assignment struct {
	jobID      string
	attempt    int32
	robotID    string
	robot      *robot // the robot's current connection
	accepted   bool
	acceptedAt time.Time
	stopping   bool // the robot was told to stop it
	since      time.Time
	pending    *pendingJob // how it waited, for a hand back
	acceptWait *deadline
	deadline   *deadline
	// ending counts the robot's reports of its end that the completer has
	// still to record.
	ending int
	// forgotten is why its robot was forgotten while its end was being
	// recorded: the job goes back for it should the end not be recorded.
	forgotten string
}

type attemptKey struct {
	jobID   string
	attempt int32
}

// logMark is how many lines of an attempt are stored; ch closes when it
// grows.
type logMark struct {
	lines int64
	ch    chan struct{}
}

var _ gateway.Jobs = (*Dispatcher)(nil)

// New returns a dispatcher; Run makes it work.
func New(opts Options) *Dispatcher {
	if opts.AcceptTimeout <= 0 {
		opts.AcceptTimeout = 10 * time.Second
	}
	if opts.RobotChanged == nil {
		opts.RobotChanged = func(string) {}
	}
	d := &Dispatcher{
		opts:     opts,
		log:      opts.Logger,
		match:    newMatcher(),
		notes:    make(chan *pendingJob, 4096),
		logs:     map[attemptKey]*logMark{},
		progress: map[attemptKey]*progressNote{},
	}
	d.rescue = newRescuer(d)
	d.complete = newCompleter(d)
	d.newMetrics()
	return d
}

// Run schedules until ctx is done. stops carries the ids of jobs told to
// stop (cancelled) by any replica, waiting those of jobs another replica
// could not place. Run returns once nothing of the dispatcher's own (its
// loops, services, timers and the goroutines it started) can write any
// more.
//
// Services start receivers first and stop senders first, each waited for
// before the next stops:
//
//  1. Intake: the notice loops (followStops, followWaiting) and the loops
//     that read the matcher (sayWaiting, tellStatuses) stop first, so no
//     new work or question reaches the matcher from them. The asynq worker
//     (RunWorker) is intake too: its caller stops it before ctx ends
//     (server.Server.Run does).
//  2. The matcher: no job is matched and no slot reserved from then on;
//     callers still asking are told nothing is held here.
//  3. The rescuer: no deadline fires and no orphan sweep starts. After
//     the matcher, which arms deadlines as it hands out work.
//  4. The completer: no end is taken in; those being recorded finish and
//     those queued are dropped (see completer.Stop). The robots' streams
//     that feed it have closed by then (server.Server.Run stops the
//     gateway first); an end the dispatcher's own goroutines still hand
//     it is dropped as safely.
//  5. The dispatcher's own goroutines (assignments, hand-backs, log
//     waits, the deadlines that fell due): none starts any more, and Run
//     waits for those running. They find the services above stopped, so
//     nothing they set off outlives them.
func (d *Dispatcher) Run(ctx context.Context, stops, waiting <-chan string) {
	base := context.WithoutCancel(ctx)
	d.complete.Start(base)
	d.rescue.Start(base)
	d.match.Start(func() { d.schedule(ctx) })
	var loops sync.WaitGroup
	loops.Go(func() { d.followStops(ctx, stops) })
	loops.Go(func() { d.followWaiting(ctx, waiting) })
	loops.Go(func() { d.sayWaiting(ctx) })
	loops.Go(func() { d.tellStatuses(ctx) })
	<-ctx.Done()
	loops.Wait()
	d.match.Stop()
	d.rescue.Stop()
	d.complete.Stop()
	d.stopOwned()
}

// Offer takes a pending job to dispatch: from the submit path, with the
// job in hand, or from the queue. A job already here is not taken twice.
func (d *Dispatcher) Offer(job *registry.Job) {
	if job.Status != registry.JobPending {
		return
	}
	req, err := JobRequirements(job)
	if err != nil {
		d.log.Error("a pending job cannot be dispatched", "job", job.ID, "err", err)
		return
	}
	d.park(&pendingJob{
		id: job.ID, attempt: job.Attempt, priority: job.Priority,
		req: req, key: req.key(), pendingSince: job.UpdatedAt,
	})
}

// HandleTask is the asynq handler for dispatch tasks. The task only says
// which attempt to dispatch; the database says whether it still should.
func (d *Dispatcher) HandleTask(ctx context.Context, t queue.Task) error {
	var here bool
	d.match.do(func() {
		m := d.match
		_, parked := m.known[t.JobID]
		a := m.active[t.JobID]
		attempt, wasAssigned := m.assigned[t.JobID]
		here = parked || (a != nil && a.attempt >= t.Attempt) || (wasAssigned && attempt >= t.Attempt)
	})
	if here {
		return nil
	}
	job, err := d.opts.Store.GetJob(ctx, t.JobID)
	if errors.Is(err, registry.ErrNotFound) {
		return nil
	}
	if err != nil {
		// Returning the error makes asynq retry it; the reconciler is the
		// net below that.
		return err
	}
	if job.Attempt == t.Attempt {
		d.Offer(job)
	}
	return nil
}

// Holds reports whether the attempt waits here for a robot or runs on one
// of this replica's robots: the reconciler leaves such a job out of Redis.
// A later attempt than the one held is not held.
func (d *Dispatcher) Holds(t queue.Task) bool {
	var held bool
	d.match.do(func() { held = d.match.holds(t.JobID, t.Attempt) })
	return held
}

// noteAssigned remembers that this replica assigned the job's attempt.
func (d *Dispatcher) noteAssigned(jobID string, attempt int32) {
	d.match.post(func() { d.match.noteAssigned(jobID, attempt) })
}

// park files j to wait for a robot. Posted, not waited for: a question the
// same goroutine asks next (Holds, say) is still answered after it, since
// the mailbox keeps each sender's order.
func (d *Dispatcher) park(j *pendingJob) {
	d.match.post(func() { d.match.park(j) })
}

// followWaiting takes in the jobs other replicas could not place, so that
// a robot here that fits takes them the moment it is free. Should two
// replicas reach for one job, the fenced transition to ASSIGNED lets one
// have it and the other lets go.
func (d *Dispatcher) followWaiting(ctx context.Context, waiting <-chan string) {
	eachNotice(ctx, waiting, func(id string) {
		here := true
		d.match.do(func() {
			_, parked := d.match.known[id]
			_, active := d.match.active[id]
			here = parked || active
		})
		if here {
			return // our own notice, or a job already here
		}
		job, err := d.opts.Store.GetJob(ctx, id)
		if err != nil || job.Status != registry.JobPending {
			return
		}
		req, err := JobRequirements(job)
		if err != nil {
			d.log.Error("a pending job cannot be dispatched", "job", job.ID, "err", err)
			return
		}
		d.park(&pendingJob{
			id: job.ID, attempt: job.Attempt, priority: job.Priority,
			req: req, key: req.key(), pendingSince: job.UpdatedAt, announced: true,
		})
	})
}

// eachNotice calls handle with each job id of a notice fan-out until ctx
// is done.
func eachNotice(ctx context.Context, ids <-chan string, handle func(id string)) {
	for {
		select {
		case <-ctx.Done():
			return
		case id := <-ids:
			handle(id)
		}
	}
}

// statusEvery is how often the registry (and everyone watching robots)
// hears which robots went busy or idle. Under load a robot goes busy and
// idle again within milliseconds for every job: the registry hears the
// status it settled on, in one statement for all robots, not two writes
// per job.
const statusEvery = 200 * time.Millisecond

// tellStatuses records the robots' settled busy and idle until ctx is done.
func (d *Dispatcher) tellStatuses(ctx context.Context) {
	ticker := time.NewTicker(statusEvery)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		var busy, idle []string
		d.match.do(func() {
			m := d.match
			for r := range m.statusChanged {
				if m.robots[r.id] == r && r.connected && !r.draining && r.busy != r.told {
					r.told = r.busy
					if r.busy {
						busy = append(busy, r.id)
					} else {
						idle = append(idle, r.id)
					}
				}
			}
			clear(m.statusChanged)
		})
		for status, ids := range map[registry.RobotStatus][]string{registry.RobotBusy: busy, registry.RobotIdle: idle} {
			if err := d.opts.Store.SetRobotsStatus(ctx, ids, status); err != nil {
				d.log.Warn("record robot status", "robots", len(ids), "status", status, "err", err)
				continue
			}
			for _, id := range ids {
				d.opts.RobotChanged(id)
			}
		}
	}
}

// release frees the slot a held. It is safe to call more than once.
func (d *Dispatcher) release(a *assignment) {
	d.match.post(func() { d.match.unhold(a) })
	d.dropNotes(a)
}

// dropNotes forgets the log mark and progress note of a's attempt.
func (d *Dispatcher) dropNotes(a *assignment) {
	key := attemptKey{a.jobID, a.attempt}
	d.logsMu.Lock()
	delete(d.logs, key)
	d.logsMu.Unlock()
	d.progressMu.Lock()
	if n := d.progress[key]; n != nil {
		n.timer.Stop()
		delete(d.progress, key)
	}
	d.progressMu.Unlock()
}

// lookup returns the assignment of the job to the robot on that attempt.
func (d *Dispatcher) lookup(robotID, jobID string, attempt int32) *assignment {
	var a *assignment
	d.match.do(func() { a = d.match.holding(robotID, jobID, attempt) })
	return a
}

// holder returns the robot connection that holds a; nil once the matcher
// has stopped.
func (d *Dispatcher) holder(a *assignment) *robot {
	var r *robot
	d.match.do(func() { r = a.robot })
	return r
}

// connectedRobot returns the robot here by that id while it is connected.
func (d *Dispatcher) connectedRobot(robotID string) *robot {
	var r *robot
	d.match.do(func() {
		if c := d.match.robots[robotID]; c != nil && c.connected {
			r = c
		}
	})
	return r
}

func (d *Dispatcher) publish(ctx context.Context, jobID string) {
	d.opts.Queue.PublishJobChange(ctx, jobID)
}

// isConflict reports an error that says the job moved on: nothing to do.
func isConflict(err error) bool {
	return errors.Is(err, registry.ErrConflict) || errors.Is(err, registry.ErrNotFound)
}

// robotsSnapshot returns the registered robots, read at most every two
// seconds: the waiting messages need them, not to the millisecond.
func (d *Dispatcher) robotsSnapshot(ctx context.Context) ([]registry.Robot, error) {
	d.cacheMu.Lock()
	defer d.cacheMu.Unlock()
	if time.Since(d.cachedAt) < 2*time.Second {
		return d.cachedRobots, nil
	}
	robots, err := d.opts.Store.ListAllRobots(ctx)
	if err != nil {
		return nil, err
	}
	d.cachedRobots, d.cachedAt = robots, time.Now()
	return robots, nil
}

// sayWaiting writes in each waiting job's status message what it waits
// for, so `jobs get` answers "why is it not running" without a question.
func (d *Dispatcher) sayWaiting(ctx context.Context) {
	for {
		var j *pendingJob
		select {
		case <-ctx.Done():
			return
		case j = <-d.notes:
		}
		robots, err := d.robotsSnapshot(ctx)
		if err != nil {
			d.log.Warn("list robots", "err", err)
			continue
		}
		capable := j.req.capable(robots)
		var message string
		switch {
		case len(robots) == 0:
			message = noRobotEnrolled
		case capable == 0:
			message = j.req.noRobotCanRun()
		case capable == 1:
			message = "waiting for the one robot that can run it to be free"
		default:
			message = "waiting for one of the robots that can run it to be free"
		}
		changed, err := d.opts.Jobs.SayWaiting(ctx, j.id, j.attempt, message)
		if len(d.notes) == 0 {
			// Jobs the channel had no room for wait for a schedule.
			d.match.poke()
		}
		if err != nil {
			d.log.Warn("say why a job waits", "job", j.id, "err", err)
			continue
		}
		if changed {
			d.publish(ctx, j.id)
		}
	}
}
