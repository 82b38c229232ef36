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
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

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
}

// Dispatcher matches pending jobs with robots connected to this replica.
type Dispatcher struct {
	opts Options
	log  *slog.Logger
	wake chan struct{}
	// done is closed when Run's context ends: retries of the dispatcher's
	// own give up then.
	done     chan struct{}
	doneOnce sync.Once

	mu     sync.Mutex
	robots map[string]*robot
	free   map[*robot]struct{} // robots with a free slot that take work
	parked [registry.PriorityCritical + 1][]*pendingJob
	// walked is how many of the first parked jobs of each priority were
	// looked at since the free robots last grew: none of them fits a robot
	// free now, so a schedule looks only at the jobs after them until
	// rescan. A backlog of jobs no robot can run then costs nothing per
	// job submitted.
	walked [registry.PriorityCritical + 1]int
	rescan bool
	// goneParked counts the cancelled jobs still in parked, which only a
	// whole walk drops.
	goneParked int
	unnoted    []*pendingJob          // waiting jobs the notes channel had no room for
	known      map[string]*pendingJob // parked jobs by id
	active     map[string]*assignment // jobs on this replica's robots, by id
	// assigned remembers the attempts this replica gave to a robot, so the
	// queue task of a job the submit path already dispatched costs no read
	// of the job. Bounded: the oldest are forgotten first.
	assigned      map[string]int32
	progress      map[attemptKey]*progressNote
	statusChanged map[*robot]struct{} // robots whose busy changed since last told
	assignedOrder []string
	assignedNext  int
	renote        bool                    // robots changed: waiting jobs' messages may be stale
	notes         chan *pendingJob        // waiting jobs whose status message needs saying
	logs          map[attemptKey]*logMark // log lines stored per attempt

	cacheMu      sync.Mutex
	cachedRobots []registry.Robot
	cachedAt     time.Time

	// ownMu guards stopped; owned counts the dispatcher's own goroutines
	// that run (see owned.go).
	ownMu   sync.Mutex
	stopped bool
	owned   sync.WaitGroup
	timers  *deadlines

	jobsTotal   *prometheus.CounterVec
	waitSeconds prometheus.Observer
	collectors  []prometheus.Collector
}

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

// assignment is a job held by one of this replica's robots.
type assignment struct {
	jobID      string
	attempt    int32
	robot      *robot
	accepted   bool
	acceptedAt time.Time
	stopping   bool // the robot was told to stop it
	since      time.Time
	pending    *pendingJob // how it waited, for a hand back
	acceptWait *deadline
	deadline   *deadline
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
		opts:          opts,
		log:           opts.Logger,
		wake:          make(chan struct{}, 1),
		done:          make(chan struct{}),
		robots:        map[string]*robot{},
		free:          map[*robot]struct{}{},
		known:         map[string]*pendingJob{},
		active:        map[string]*assignment{},
		assigned:      map[string]int32{},
		assignedOrder: make([]string, rememberAssigned),
		progress:      map[attemptKey]*progressNote{},
		statusChanged: map[*robot]struct{}{},
		notes:         make(chan *pendingJob, 4096),
		logs:          map[attemptKey]*logMark{},
		timers:        newDeadlines(),
	}
	d.newMetrics()
	return d
}

// Run schedules until ctx is done. stops carries the ids of jobs told to
// stop (cancelled) by any replica, waiting those of jobs another replica
// could not place. Run returns once nothing of the dispatcher's own (its
// loops, timers and the goroutines it started) can write any more.
func (d *Dispatcher) Run(ctx context.Context, stops, waiting <-chan string) {
	var wg sync.WaitGroup
	wg.Go(func() { d.sayWaiting(ctx) })
	wg.Go(func() { d.followStops(ctx, stops) })
	wg.Go(func() { d.followWaiting(ctx, waiting) })
	wg.Go(func() { d.tellStatuses(ctx) })
	wg.Go(func() { d.sweepOrphans(ctx) })
	wg.Go(func() { d.timers.run(ctx, d.spawn) })
	for {
		select {
		case <-ctx.Done():
			d.doneOnce.Do(func() { close(d.done) })
			wg.Wait()
			d.stopOwned()
			return
		case <-d.wake:
			d.schedule(ctx)
		}
	}
}

func (d *Dispatcher) poke() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
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
	d.mu.Lock()
	_, parked := d.known[t.JobID]
	a := d.active[t.JobID]
	attempt, wasAssigned := d.assigned[t.JobID]
	d.mu.Unlock()
	if parked || (a != nil && a.attempt >= t.Attempt) || (wasAssigned && attempt >= t.Attempt) {
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
	d.mu.Lock()
	defer d.mu.Unlock()
	if j := d.known[t.JobID]; j != nil && j.attempt >= t.Attempt {
		return true
	}
	a := d.active[t.JobID]
	return a != nil && a.attempt >= t.Attempt
}

// rememberAssigned bounds Dispatcher.assigned: enough for the tasks of a
// few seconds of full load, a few MiB at most.
const rememberAssigned = 1 << 16

// noteAssigned remembers that this replica assigned the job's attempt.
func (d *Dispatcher) noteAssigned(jobID string, attempt int32) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if old := d.assignedOrder[d.assignedNext]; old != "" {
		delete(d.assigned, old)
	}
	d.assignedOrder[d.assignedNext] = jobID
	d.assignedNext = (d.assignedNext + 1) % rememberAssigned
	d.assigned[jobID] = attempt
}

func (d *Dispatcher) park(j *pendingJob) {
	d.mu.Lock()
	if _, ok := d.known[j.id]; ok {
		d.mu.Unlock()
		return
	}
	if a := d.active[j.id]; a != nil && a.attempt >= j.attempt {
		d.mu.Unlock()
		return
	}
	p := min(max(j.priority, 0), registry.PriorityCritical)
	d.parked[p] = append(d.parked[p], j)
	d.known[j.id] = j
	d.mu.Unlock()
	d.poke()
}

// schedule hands waiting jobs to free robots: the highest priority first,
// and within one priority in the order they came. A job no free robot can
// take waits without holding up jobs with other requirements behind it.
func (d *Dispatcher) schedule(ctx context.Context) {
	type start struct {
		job *pendingJob
		a   *assignment
	}
	var starts []start
	var announce []string
	d.mu.Lock()
	renote := d.renote
	d.renote = false
	whole := renote || d.rescan || d.goneParked > len(d.known)
	d.rescan = false
	if whole {
		d.goneParked = 0
	}
	d.sendUnnoted()
	blocked := map[string]bool{}
	for p := len(d.parked) - 1; p >= 0; p-- {
		list := d.parked[p]
		from := 0
		if !whole {
			from = d.walked[p]
		}
		kept := list[:from]
		for _, j := range list[from:] {
			if j.gone {
				continue
			}
			if renote {
				j.noted = false
			}
			var r *robot
			if !blocked[j.key] || len(j.avoid) > 0 {
				r = d.pick(j)
			}
			if r == nil {
				if len(j.avoid) == 0 {
					blocked[j.key] = true
				}
				kept = append(kept, j)
				if !j.announced {
					j.announced = true
					announce = append(announce, j.id)
				}
				if !j.noted && !j.inUnnoted {
					select {
					case d.notes <- j:
						j.noted = true
					default:
						j.inUnnoted = true
						d.unnoted = append(d.unnoted, j)
					}
				}
				continue
			}
			delete(d.known, j.id)
			starts = append(starts, start{j, d.reserve(r, j)})
		}
		clear(list[len(kept):])
		d.parked[p] = kept
		d.walked[p] = len(kept)
	}
	d.mu.Unlock()
	for _, s := range starts {
		d.spawn(func() { d.assign(ctx, s.job, s.a) })
	}
	for _, id := range announce {
		d.opts.Queue.PublishJobWaiting(id)
	}
}

// sendUnnoted hands the notes channel the waiting jobs it had no room for,
// as far as it has room now. d.mu is held.
func (d *Dispatcher) sendUnnoted() {
	n := 0
send:
	for _, j := range d.unnoted {
		if !j.gone && !j.noted && d.known[j.id] == j {
			select {
			case d.notes <- j:
				j.noted = true
			default:
				break send
			}
		}
		j.inUnnoted = false
		n++
	}
	clear(d.unnoted[:n])
	d.unnoted = d.unnoted[n:]
	if len(d.unnoted) == 0 {
		d.unnoted = nil
	}
}

// followWaiting takes in the jobs other replicas could not place, so that
// a robot here that fits takes them the moment it is free. Should two
// replicas reach for one job, the fenced transition to ASSIGNED lets one
// have it and the other lets go.
func (d *Dispatcher) followWaiting(ctx context.Context, waiting <-chan string) {
	eachNotice(ctx, waiting, func(id string) {
		d.mu.Lock()
		_, parked := d.known[id]
		_, active := d.active[id]
		d.mu.Unlock()
		if parked || active {
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

// pick returns the free robot that can take j and was given work least
// recently, so work spreads over the fleet; nil when there is none.
func (d *Dispatcher) pick(j *pendingJob) *robot {
	var best *robot
	for r := range d.free {
		if !j.req.fits(r.capabilities, r.labels) || slices.Contains(j.avoid, r.id) {
			continue
		}
		if best == nil || r.lastBusy.Before(best.lastBusy) || (r.lastBusy.Equal(best.lastBusy) && r.id < best.id) {
			best = r
		}
	}
	return best
}

// reserve takes a slot of r for j. d.mu is held.
func (d *Dispatcher) reserve(r *robot, j *pendingJob) *assignment {
	a := &assignment{jobID: j.id, attempt: j.attempt, robot: r, since: time.Now(), pending: j}
	r.jobs[j.id] = a
	d.active[j.id] = a
	r.lastBusy = a.since
	d.refreshFree(r)
	return a
}

// refreshFree files r as free or not and says when it became busy or idle.
// d.mu is held.
func (d *Dispatcher) refreshFree(r *robot) {
	hasRoom := len(r.jobs) < r.maxJobs
	if r.connected && !r.draining && hasRoom {
		if _, ok := d.free[r]; !ok {
			// Jobs that fit no robot free until now may fit this one.
			d.rescan = true
		}
		d.free[r] = struct{}{}
	} else {
		delete(d.free, r)
	}
	if busy := r.connected && !hasRoom; busy != r.busy && !r.draining && r.connected {
		r.busy = busy
		d.statusChanged[r] = struct{}{}
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
		d.mu.Lock()
		for r := range d.statusChanged {
			if d.robots[r.id] == r && r.connected && !r.draining && r.busy != r.told {
				r.told = r.busy
				if r.busy {
					busy = append(busy, r.id)
				} else {
					idle = append(idle, r.id)
				}
			}
		}
		clear(d.statusChanged)
		d.mu.Unlock()
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
	d.mu.Lock()
	if d.active[a.jobID] == a {
		delete(d.active, a.jobID)
	}
	r := a.robot
	if r.jobs[a.jobID] == a {
		delete(r.jobs, a.jobID)
	}
	stopTimer(a.acceptWait)
	stopTimer(a.deadline)
	if d.robots[r.id] == r {
		d.refreshFree(r)
	}
	delete(d.logs, attemptKey{a.jobID, a.attempt})
	if n := d.progress[attemptKey{a.jobID, a.attempt}]; n != nil {
		stopTimer(n.timer)
		delete(d.progress, attemptKey{a.jobID, a.attempt})
	}
	d.mu.Unlock()
	d.poke()
}

func stopTimer(t *deadline) {
	t.Stop()
}

// lookup returns the assignment of the job to the robot on that attempt.
func (d *Dispatcher) lookup(robotID, jobID string, attempt int32) *assignment {
	d.mu.Lock()
	defer d.mu.Unlock()
	a := d.active[jobID]
	if a == nil || a.robot.id != robotID || a.attempt != attempt {
		return nil
	}
	return a
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
			d.poke()
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
