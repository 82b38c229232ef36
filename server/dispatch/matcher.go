package dispatch

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/casarerpa/casare/server/registry"
)

// matcher pairs waiting jobs with free robot slots. Once started, its
// state is touched only by its own goroutine; every other goroutine
// reaches it through its mailbox: post for a change nobody waits for, do
// where the caller needs an answer. Nothing that blocks runs on it: no database call, no send to
// a robot. What a match sets off (jobs.Assign, job_assign) runs on
// goroutines of the dispatcher's own (spawn).
//
// The robot table and the assignments live here too, not only the free
// slots and the waiting jobs: a slot is free exactly when its robot's
// assignments leave room, and a job waits here exactly when no robot here
// holds it, so with the two apart every reserve and release would have to
// agree across goroutines. With one owner each check and what follows
// from it are one step. The log marks and progress notes of running
// attempts stay out (logs.go, noteProgress): robots' streams write them
// thousands of times a second and scheduling never reads them.
type matcher struct {
	mailbox chan func()
	wake    chan struct{} // a schedule is asked for from outside
	quit    chan struct{} // closed by Stop
	done    chan struct{} // closed once the goroutine returned
	stop    sync.Once
	// Until Start, callers run their closures themselves, one at a time
	// under early, so that what a dispatcher is told about robots and
	// jobs before Run is kept.
	early     sync.Mutex
	running   atomic.Bool
	startOnce sync.Once

	// Everything below belongs to the matcher's goroutine.

	// due says a schedule runs once the mailbox is empty: changes that
	// arrive together cost one walk of the waiting jobs.
	due    bool
	robots map[string]*robot
	free   freeRobots // robots with a free slot that take work
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
	assignedOrder []string
	assignedNext  int
	statusChanged map[*robot]struct{} // robots whose busy changed since last told
	renote        bool                // robots changed: waiting jobs' messages may be stale
	// avoiders lists, by robot, the parked jobs that keep off it, so that
	// forgive finds them without a walk of every waiting job.
	avoiders map[string][]*pendingJob
}

// mailboxSize lets the robots' streams and the dispatcher's goroutines
// post without waiting for the matcher while it walks the waiting jobs.
const mailboxSize = 4096

func newMatcher() *matcher {
	return &matcher{
		mailbox:       make(chan func(), mailboxSize),
		wake:          make(chan struct{}, 1),
		quit:          make(chan struct{}),
		done:          make(chan struct{}),
		robots:        map[string]*robot{},
		free:          newFreeRobots(),
		known:         map[string]*pendingJob{},
		active:        map[string]*assignment{},
		assigned:      map[string]int32{},
		assignedOrder: make([]string, rememberAssigned),
		statusChanged: map[*robot]struct{}{},
		avoiders:      map[string][]*pendingJob{},
	}
}

// Start runs the matcher's goroutine, which calls schedule whenever the
// state changed in a way that may let a job start.
func (m *matcher) Start(schedule func()) {
	m.startOnce.Do(func() {
		m.early.Lock()
		m.running.Store(true)
		m.early.Unlock()
		// What came before may let jobs start.
		m.due = true
		go m.run(schedule)
		m.poke()
	})
}

// Stop ends the matcher's goroutine and waits for it. Closures posted and
// not yet run are dropped, and do reports false from then on: what the
// matcher holds is rebuilt by the next start from the database and the
// robots that connect.
func (m *matcher) Stop() {
	m.stop.Do(func() {
		close(m.quit)
		m.startOnce.Do(func() {
			// Never started: no goroutine to wait for, and callers from
			// now on are told it stopped, as after a start.
			m.early.Lock()
			m.running.Store(true)
			m.early.Unlock()
			close(m.done)
		})
	})
	<-m.done
}

func (m *matcher) run(schedule func()) {
	defer close(m.done)
	for {
		select {
		case <-m.quit:
			return
		case f := <-m.mailbox:
			f()
		case <-m.wake:
			m.due = true
		}
		// What came in together is taken in before the walk.
	drain:
		for range mailboxSize {
			select {
			case f := <-m.mailbox:
				f()
			default:
				break drain
			}
		}
		if m.due {
			m.due = false
			schedule()
		}
	}
}

// do runs f on the matcher's goroutine and waits for it. It reports false,
// and f does not run, once the matcher has stopped.
func (m *matcher) do(f func()) bool {
	if m.before(f) {
		return true
	}
	ran := make(chan struct{})
	select {
	case m.mailbox <- func() { f(); close(ran) }:
	case <-m.done:
		return false
	}
	select {
	case <-ran:
		return true
	case <-m.done:
		// The goroutine ran f before it returned, or never will.
		select {
		case <-ran:
			return true
		default:
			return false
		}
	}
}

// post runs f on the matcher's goroutine after what was posted before it,
// without waiting; dropped once the matcher has stopped. Before Start,
// do and post run f at once.
func (m *matcher) post(f func()) {
	if m.before(f) {
		return
	}
	select {
	case m.mailbox <- f:
	case <-m.done:
	}
}

// before runs f on the caller's goroutine and reports true while the
// matcher has not started.
func (m *matcher) before(f func()) bool {
	if m.running.Load() {
		return false
	}
	m.early.Lock()
	defer m.early.Unlock()
	if m.running.Load() {
		return false
	}
	f()
	return true
}

// poke asks for a schedule from outside the matcher's goroutine.
func (m *matcher) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// rememberAssigned bounds matcher.assigned: enough for the tasks of a few
// seconds of full load, a few MiB at most.
const rememberAssigned = 1 << 16

// noteAssigned remembers that this replica assigned the job's attempt.
// On the matcher's goroutine.
func (m *matcher) noteAssigned(jobID string, attempt int32) {
	if old := m.assignedOrder[m.assignedNext]; old != "" {
		delete(m.assigned, old)
	}
	m.assignedOrder[m.assignedNext] = jobID
	m.assignedNext = (m.assignedNext + 1) % rememberAssigned
	m.assigned[jobID] = attempt
}

// park files a job to wait for a robot, unless it waits or runs here
// already. On the matcher's goroutine.
func (m *matcher) park(j *pendingJob) {
	if _, ok := m.known[j.id]; ok {
		return
	}
	if a := m.active[j.id]; a != nil && a.attempt >= j.attempt {
		return
	}
	p := min(max(j.priority, 0), registry.PriorityCritical)
	m.parked[p] = append(m.parked[p], j)
	m.known[j.id] = j
	for _, id := range j.avoid {
		m.avoiders[id] = append(m.avoiders[id], j)
	}
	m.due = true
}

// forgive lets the waiting jobs that keep off a robot go to it again. A
// robot turns a job down for reasons that pass (no free slot, still
// stopping an earlier attempt of it); once it connects again or reports
// the end of a job, whatever stood in the way may have passed, and a job
// only that robot can run would otherwise wait for its next connection.
// On the matcher's goroutine.
func (m *matcher) forgive(robotID string) {
	list := m.avoiders[robotID]
	if len(list) == 0 {
		return
	}
	delete(m.avoiders, robotID)
	for _, j := range list {
		j.avoid = slices.DeleteFunc(j.avoid, func(id string) bool { return id == robotID })
	}
	// The jobs walked past may fit now.
	m.rescan = true
	m.due = true
}

// holds reports whether the job's attempt, or a later one, waits or runs
// here. On the matcher's goroutine.
func (m *matcher) holds(jobID string, attempt int32) bool {
	if j := m.known[jobID]; j != nil && j.attempt >= attempt {
		return true
	}
	a := m.active[jobID]
	return a != nil && a.attempt >= attempt
}

// schedule hands waiting jobs to free robots: the highest priority first,
// and within one priority in the order they came. A job no free robot can
// take waits without holding up jobs with other requirements behind it.
// On the matcher's goroutine: what a match sets off runs on goroutines of
// the dispatcher's own.
func (d *Dispatcher) schedule(ctx context.Context) {
	m := d.match
	renote := m.renote
	m.renote = false
	whole := renote || m.rescan || m.goneParked > len(m.known)
	m.rescan = false
	if whole {
		m.goneParked = 0
	}
	d.sendUnnoted()
	blocked := map[string]bool{}
	for p := len(m.parked) - 1; p >= 0; p-- {
		list := m.parked[p]
		from := 0
		if !whole {
			from = m.walked[p]
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
				r = m.pick(j)
			}
			if r == nil {
				if len(j.avoid) == 0 {
					blocked[j.key] = true
				}
				kept = append(kept, j)
				if !j.announced {
					j.announced = true
					// Publishing never waits: a notice the publisher has
					// no room for is dropped.
					d.opts.Queue.PublishJobWaiting(j.id)
				}
				if !j.noted && !j.inUnnoted {
					select {
					case d.notes <- j:
						j.noted = true
					default:
						j.inUnnoted = true
						m.unnoted = append(m.unnoted, j)
					}
				}
				continue
			}
			delete(m.known, j.id)
			a := m.reserve(r, j)
			d.spawn(func() { d.assign(ctx, j, a, r) })
		}
		clear(list[len(kept):])
		m.parked[p] = kept
		m.walked[p] = len(kept)
	}
}

// sendUnnoted hands the notes channel the waiting jobs it had no room for,
// as far as it has room now. On the matcher's goroutine.
func (d *Dispatcher) sendUnnoted() {
	m := d.match
	n := 0
send:
	for _, j := range m.unnoted {
		if !j.gone && !j.noted && m.known[j.id] == j {
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
	clear(m.unnoted[:n])
	m.unnoted = m.unnoted[n:]
	if len(m.unnoted) == 0 {
		m.unnoted = nil
	}
}

// pick returns the free robot that can take j and was given work least
// recently, so work spreads over the fleet; nil when there is none.
func (m *matcher) pick(j *pendingJob) *robot {
	for _, r := range m.free.list {
		if j.req.Fits(r.capabilities, r.labels) && !slices.Contains(j.avoid, r.id) {
			return r
		}
	}
	return nil
}

// reserve takes a slot of r for j. On the matcher's goroutine.
func (m *matcher) reserve(r *robot, j *pendingJob) *assignment {
	a := &assignment{jobID: j.id, attempt: j.attempt, robotID: r.id, robot: r, since: time.Now(), pending: j}
	r.jobs[j.id] = a
	m.active[j.id] = a
	// Out of the free robots while its place in their order changes. Back
	// in, it is no room newly free: the jobs already walked need no rescan
	// for it.
	wasFree, rescan := m.free.has(r), m.rescan
	m.free.remove(r)
	r.lastBusy = a.since
	m.refreshFree(r)
	if wasFree {
		m.rescan = rescan
	}
	return a
}

// refreshFree files r as free or not and notes when it became busy or
// idle. On the matcher's goroutine.
func (m *matcher) refreshFree(r *robot) {
	hasRoom := len(r.jobs) < r.maxJobs
	if r.connected && !r.draining && hasRoom {
		if !m.free.has(r) {
			// Jobs that fit no robot free until now may fit this one.
			m.rescan = true
		}
		m.free.add(r)
	} else {
		m.free.remove(r)
	}
	if busy := r.connected && !hasRoom; busy != r.busy && !r.draining && r.connected {
		r.busy = busy
		m.statusChanged[r] = struct{}{}
	}
}

// unhold takes a's slot back. It is safe to call more than once. On the
// matcher's goroutine.
func (m *matcher) unhold(a *assignment) {
	if m.active[a.jobID] == a {
		delete(m.active, a.jobID)
	}
	r := a.robot
	if r.jobs[a.jobID] == a {
		delete(r.jobs, a.jobID)
	}
	a.acceptWait.Stop()
	a.deadline.Stop()
	if m.robots[r.id] == r {
		m.refreshFree(r)
	}
	m.due = true
}

// holding returns the assignment of the job to the robot on that attempt.
// On the matcher's goroutine.
func (m *matcher) holding(robotID, jobID string, attempt int32) *assignment {
	a := m.active[jobID]
	if a == nil || a.robot.id != robotID || a.attempt != attempt {
		return nil
	}
	return a
}
