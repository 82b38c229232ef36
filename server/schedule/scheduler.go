package schedule

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"connectrpc.com/connect/v2"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/server/registry"
)

// Overlap and misfire policies as stored.
const (
	OverlapAllow          = "allow"
	OverlapSkip           = "skip"
	OverlapQueueOne       = "queue_one"
	OverlapCancelPrevious = "cancel_previous"

	MisfireSkip    = "skip"
	MisfireRunOnce = "run_once"
	MisfireRunAll  = "run_all"

	// DefaultMisfireLimit is how many missed fires run_all makes up for
	// when the schedule sets no limit.
	DefaultMisfireLimit = 10
)

// Outcomes of a fire, the values of casare_schedule_fires_total's label.
const (
	OutcomeCreated        = "created"
	OutcomeSkippedOverlap = "skipped_overlap"
	OutcomeMissed         = "missed"
	OutcomeFailed         = "failed"
)

// Jobs makes and cancels jobs: api.Services, the one path by which jobs
// come to be.
type Jobs interface {
	Submit(ctx context.Context, req *casarev1.SubmitJobRequest, createdBy string) (*registry.Job, bool, error)
	Cancel(ctx context.Context, id, reason, actor string, audit *registry.AuditEvent) (*registry.Job, error)
}

// Options configures a Scheduler.
type Options struct {
	Registry *registry.Registry
	Jobs     Jobs
	Logger   *slog.Logger
	// Tick is how often a replica that does not lead tries to, and the
	// longest a leader sleeps between looks at the due schedules; 0 means
	// 1s. A leader wakes earlier for a fire that comes sooner.
	Tick time.Duration
	// MisfireGrace is how late a fire may be and still count as on time;
	// older ones are missed and follow the schedule's misfire policy. 0
	// means 1 minute.
	MisfireGrace time.Duration
	// BatchSize is how many due schedules are read at once; 0 means 1000.
	BatchSize int
	// Workers is how many schedules of a batch fire at once; 0 means 64.
	Workers int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// schedulerLock is the class of the scheduler leader's advisory lock.
const schedulerLock = 0x63617372 // "casr"

// Scheduler fires the due schedules while this replica leads. Its state is
// its goroutine's: Run owns the lead and the metrics are safe to read
// from anywhere.
type Scheduler struct {
	reg      *registry.Registry
	jobs     Jobs
	logger   *slog.Logger
	tick     time.Duration
	grace    time.Duration
	batch    int
	workers  int
	now      func() time.Time
	leader   *registry.Leader
	fires    *prometheus.CounterVec
	lateness prometheus.Histogram
	leading  prometheus.Gauge
}

// New returns a scheduler; Run runs it.
func New(opts Options) *Scheduler {
	if opts.Tick <= 0 {
		opts.Tick = time.Second
	}
	if opts.MisfireGrace <= 0 {
		opts.MisfireGrace = time.Minute
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = 1000
	}
	if opts.Workers <= 0 {
		opts.Workers = 64
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Scheduler{
		reg: opts.Registry, jobs: opts.Jobs, logger: opts.Logger,
		tick: opts.Tick, grace: opts.MisfireGrace, batch: opts.BatchSize, workers: opts.Workers, now: opts.Now,
		leader: opts.Registry.NewLeader(schedulerLock, "scheduler", opts.Logger),
		fires: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "casare_schedule_fires_total",
			Help: "Scheduled fires by outcome: created (a job was made), skipped_overlap (the previous job was still running), missed (the scheduler was down at the time), failed (the job could not be made).",
		}, []string{"outcome"}),
		lateness: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "casare_schedule_lateness_seconds",
			Help:    "How long after its scheduled instant a fire made its job.",
			Buckets: []float64{.01, .05, .1, .25, .5, 1, 2, 5, 10, 30, 60},
		}),
		leading: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "casare_scheduler_leader",
			Help: "1 when this replica runs the scheduler, else 0.",
		}),
	}
	for _, o := range []string{OutcomeCreated, OutcomeSkippedOverlap, OutcomeMissed, OutcomeFailed} {
		s.fires.WithLabelValues(o)
	}
	return s
}

// Collectors returns the scheduler's metrics, for /metrics.
func (s *Scheduler) Collectors() []prometheus.Collector {
	return []prometheus.Collector{s.fires, s.lateness, s.leading}
}

// Run fires due schedules while this replica leads, and tries to lead
// every tick while it does not, until ctx ends. It gives the lead up
// before it returns; once it has returned, it writes nothing more.
func (s *Scheduler) Run(ctx context.Context) {
	defer func() {
		s.leader.Release()
		s.leading.Set(0)
	}()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		wait := s.tick
		if s.leader.Lead(ctx) {
			s.leading.Set(1)
			s.fireDue(ctx)
			if d, ok := s.untilNextDue(ctx); ok && d < wait {
				wait = d
			}
		} else {
			s.leading.Set(0)
		}
		timer.Reset(wait)
	}
}

// untilNextDue returns how long until the earliest fire of any schedule.
// A schedule still due after fireDue failed for a reason that may pass;
// it is tried again a tick later rather than at once.
func (s *Scheduler) untilNextDue(ctx context.Context) (time.Duration, bool) {
	next, err := s.reg.NextDueTime(ctx)
	if err != nil || next == nil {
		return 0, false
	}
	d := next.Sub(s.now())
	if d <= 0 {
		return 0, false
	}
	return d, true
}

// maxBatches bounds the batches of one pass, so a pass ends and the lead
// is checked again even with schedules that keep failing.
const maxBatches = 100

// fireDue fires every schedule due now, in batches, then the fires held
// back for a previous job that has ended.
func (s *Scheduler) fireDue(ctx context.Context) {
	now := s.now()
	for range maxBatches {
		due, err := s.reg.DueSchedules(ctx, now, s.batch)
		if err != nil {
			if ctx.Err() == nil {
				s.logger.Warn("scheduler: read due schedules", "err", err)
			}
			return
		}
		if len(due) == 0 {
			break
		}
		stored := s.each(ctx, due, func(sch *registry.Schedule, p *pass) (*registry.ScheduleFired, bool) {
			return s.fireSchedule(ctx, sch, p, now)
		})
		// A full batch of which nothing could be stored would come back
		// as it was; the next pass tries it again.
		if len(due) < s.batch || stored == 0 {
			break
		}
	}
	queued, err := s.reg.QueuedSchedules(ctx, s.batch)
	if err != nil {
		if ctx.Err() == nil {
			s.logger.Warn("scheduler: read schedules holding a fire", "err", err)
		}
		return
	}
	s.each(ctx, queued, func(sch *registry.Schedule, p *pass) (*registry.ScheduleFired, bool) {
		return s.fireQueued(ctx, sch, p)
	})
}

// each runs f on every schedule of list with the calendars they use, on
// the scheduler's workers, then stores what they came to in one write,
// and returns how many it stored. A schedule whose f stores nothing stays
// as it was, due.
func (s *Scheduler) each(ctx context.Context, list []*registry.Schedule, f func(*registry.Schedule, *pass) (*registry.ScheduleFired, bool)) int {
	if len(list) == 0 {
		return 0
	}
	var names []string
	p := &pass{versions: map[string]int32{}}
	for _, sch := range list {
		names = append(names, sch.Calendars...)
		if sch.WorkflowVersion == 0 {
			p.versions[sch.WorkflowName] = 0
		}
	}
	var err error
	if p.calendars, err = s.reg.GetCalendars(ctx, names); err != nil {
		if ctx.Err() == nil {
			s.logger.Warn("scheduler: read calendars", "err", err)
		}
		return 0
	}
	// The latest version of each workflow is read once for the pass, not
	// once a job; a workflow gone is left to Submit to report.
	for name := range p.versions {
		if v, err := s.reg.GetWorkflow(ctx, name, 0); err == nil {
			p.versions[name] = v.Version
		}
	}
	work := make(chan *registry.Schedule)
	results := make(chan registry.ScheduleFired, len(list))
	var wg sync.WaitGroup
	for range min(s.workers, len(list)) {
		wg.Go(func() {
			for sch := range work {
				if fired, ok := f(sch, p); ok {
					results <- *fired
				}
			}
		})
	}
	for _, sch := range list {
		work <- sch
	}
	close(work)
	wg.Wait()
	close(results)
	fired := make([]registry.ScheduleFired, 0, len(list))
	for r := range results {
		fired = append(fired, r)
	}
	stored, err := s.reg.RecordSchedulesFired(ctx, fired)
	if err != nil && ctx.Err() == nil {
		s.logger.Warn("scheduler: record fires; they fire again and their keys keep them to one job each", "schedules", len(fired), "err", err)
	}
	return stored
}

// pass is what the schedules of one batch share: the calendars they use
// and the latest version of each workflow they run at its latest.
type pass struct {
	calendars map[string]*registry.Calendar
	versions  map[string]int32
}

// SpecOf returns the timing of a stored schedule, with the calendars it
// uses taken from cals.
func SpecOf(sch *registry.Schedule, cals map[string]*registry.Calendar, from time.Time) (*Spec, error) {
	opts := SpecOptions{Cron: sch.Cron, TimeZone: sch.TimeZone, Start: sch.StartTime, End: sch.EndTime}
	for _, name := range sch.Calendars {
		rc, ok := cals[name]
		if !ok {
			return nil, fieldError("calendars", "no calendar named %q", name)
		}
		c, err := CalendarFromRegistry(rc)
		if err != nil {
			return nil, err
		}
		opts.Calendars = append(opts.Calendars, c)
	}
	return NewSpec(opts, from)
}

// IdempotencyKey is the key of the job a schedule makes for an instant:
// whichever replica fires it, however often, the instant has one job.
func IdempotencyKey(scheduleID string, at time.Time) string {
	return "schedule/" + scheduleID + "/" + at.UTC().Format(time.RFC3339Nano)
}

// JobRequest is the submit a schedule makes, with the idempotency key
// given ("" for none).
func JobRequest(sch *registry.Schedule, key string) (*casarev1.SubmitJobRequest, error) {
	req := &casarev1.SubmitJobRequest{
		Source:          &casarev1.SubmitJobRequest_WorkflowName{WorkflowName: sch.WorkflowName},
		WorkflowVersion: sch.WorkflowVersion,
		Priority:        casarev1.JobPriority(sch.Priority),
		MaxAttempts:     sch.MaxAttempts,
		IdempotencyKey:  key,
	}
	if sch.Inputs != "" && sch.Inputs != "{}" {
		req.Inputs = &structpb.Struct{}
		if err := protojson.Unmarshal([]byte(sch.Inputs), req.Inputs); err != nil {
			return nil, fmt.Errorf("schedule %s: stored inputs: %w", sch.Name, err)
		}
	}
	if sch.Requires != "" && sch.Requires != "{}" {
		req.Requires = &casarev1.Requirements{}
		if err := protojson.Unmarshal([]byte(sch.Requires), req.Requires); err != nil {
			return nil, fmt.Errorf("schedule %s: stored requirements: %w", sch.Name, err)
		}
	}
	return req, nil
}

// fireState is what the fires of one schedule in one pass leave behind.
type fireState struct {
	lastJobID string
	lastFire  *time.Time
	queued    *time.Time
	changed   bool // a job was made
}

// maxDue bounds the instants counted after a long outage; past it the
// schedule goes on from now.
const maxDue = 10_000

// fireSchedule makes the jobs of one due schedule, by its misfire and
// overlap policies, and stores its next fire. A failure that may pass
// (the database or Redis unreachable) stores nothing: the next pass
// fires the same instants, and their keys keep them to one job each.
func (s *Scheduler) fireSchedule(ctx context.Context, sch *registry.Schedule, p *pass, now time.Time) (*registry.ScheduleFired, bool) {
	spec, err := SpecOf(sch, p.calendars, now)
	if err != nil {
		// Stored schedules were checked; a zone gone from the time zone
		// database or a calendar changed under it stops the schedule
		// until it is updated.
		s.logger.Error("scheduler: schedule can no longer fire; update it", "schedule", sch.Name, "err", err)
		s.fires.WithLabelValues(OutcomeFailed).Inc()
		return fired(sch, nil, fireState{}), true
	}
	var due []time.Time
	at, more := *sch.NextFireTime, true
	for more && !at.After(now) && len(due) < maxDue {
		due = append(due, at)
		at, more = spec.Next(at)
	}
	if more && !at.After(now) {
		at, more = spec.Next(now)
	}
	var next *time.Time
	if more {
		next = &at
	}
	var onTime, missed []time.Time
	for _, d := range due {
		if now.Sub(d) > s.grace {
			missed = append(missed, d)
		} else {
			onTime = append(onTime, d)
		}
	}
	fire := onTime
	if len(missed) > 0 {
		switch sch.MisfirePolicy {
		case MisfireRunOnce:
			if len(onTime) == 0 {
				fire = missed[len(missed)-1:]
				missed = missed[:len(missed)-1]
			}
		case MisfireRunAll:
			limit := int(sch.MisfireLimit)
			if limit <= 0 {
				limit = DefaultMisfireLimit
			}
			keep := max(0, len(missed)-limit)
			fire = append(missed[keep:len(missed):len(missed)], onTime...)
			missed = missed[:keep]
		}
	}
	state := fireState{lastJobID: sch.LastJobID, lastFire: sch.LastFireTime, queued: sch.QueuedFireTime}
	for _, at := range fire {
		if err := s.fireWithOverlap(ctx, sch, p, at, &state); err != nil {
			return nil, false
		}
	}
	s.recordMissed(sch, missed)
	f := fired(sch, next, state)
	f.Missed = missed
	return f, true
}

// recordMissed counts and logs the fires missed while no scheduler ran;
// subscribers hear of them through the schedule.missed event that is
// stored with the schedule's next fire.
func (s *Scheduler) recordMissed(sch *registry.Schedule, missed []time.Time) {
	if len(missed) == 0 {
		return
	}
	s.fires.WithLabelValues(OutcomeMissed).Add(float64(len(missed)))
	s.logger.Warn("scheduler: fires missed while no scheduler ran", "schedule", sch.Name, "missed", len(missed),
		"first", missed[0].UTC().Format(time.RFC3339), "last", missed[len(missed)-1].UTC().Format(time.RFC3339), "policy", sch.MisfirePolicy)
}

// fireWithOverlap fires one instant unless the previous job is still
// pending or running, in which case the overlap policy decides. An error
// means the pass should stop for this schedule and leave it due.
func (s *Scheduler) fireWithOverlap(ctx context.Context, sch *registry.Schedule, p *pass, at time.Time, state *fireState) error {
	key := IdempotencyKey(sch.ID, at)
	if sch.OverlapPolicy != OverlapAllow && state.lastJobID != "" {
		last, err := s.reg.GetJob(ctx, state.lastJobID)
		switch {
		case errors.Is(err, registry.ErrNotFound):
			// Pruned or never committed: nothing runs.
		case err != nil:
			if ctx.Err() == nil {
				s.logger.Warn("scheduler: read the previous job", "schedule", sch.Name, "job", state.lastJobID, "err", err)
			}
			return err
		case last.IdempotencyKey != nil && *last.IdempotencyKey == key:
			// This instant fired already, in a pass that stored nothing.
			return nil
		case !last.Status.Finished():
			switch sch.OverlapPolicy {
			case OverlapQueueOne:
				if state.queued == nil {
					state.queued = &at
					return nil
				}
				s.skipped(sch, at, last)
				return nil
			case OverlapCancelPrevious:
				reason := fmt.Sprintf("cancelled by schedule %s: its next fire (%s) came while the job ran", sch.Name, at.UTC().Format(time.RFC3339))
				if _, err := s.jobs.Cancel(ctx, last.ID, reason, "schedule/"+sch.Name, nil); err != nil && !errors.Is(err, registry.ErrConflict) {
					s.logger.Warn("scheduler: cancel the previous job", "schedule", sch.Name, "job", last.ID, "err", err)
					if transient(err) {
						return err
					}
				}
			default:
				s.skipped(sch, at, last)
				return nil
			}
		}
	}
	return s.fire(ctx, sch, p, at, state)
}

func (s *Scheduler) skipped(sch *registry.Schedule, at time.Time, running *registry.Job) {
	s.fires.WithLabelValues(OutcomeSkippedOverlap).Inc()
	s.logger.Info("scheduler: fire skipped, the previous job has not ended", "schedule", sch.Name,
		"at", at.UTC().Format(time.RFC3339), "job", running.ID, "status", running.Status)
}

// fire makes the job of one instant.
func (s *Scheduler) fire(ctx context.Context, sch *registry.Schedule, p *pass, at time.Time, state *fireState) error {
	req, err := JobRequest(sch, IdempotencyKey(sch.ID, at))
	if err == nil {
		if req.WorkflowVersion == 0 {
			req.WorkflowVersion = p.versions[sch.WorkflowName]
		}
		var job *registry.Job
		var existing bool
		job, existing, err = s.jobs.Submit(ctx, req, "schedule/"+sch.Name)
		if err == nil {
			if !existing {
				s.fires.WithLabelValues(OutcomeCreated).Inc()
				s.lateness.Observe(s.now().Sub(at).Seconds())
			}
			state.lastJobID, state.lastFire, state.changed = job.ID, &at, true
			return nil
		}
	}
	if transient(err) {
		if ctx.Err() == nil {
			s.logger.Warn("scheduler: fire failed; trying again", "schedule", sch.Name, "at", at.UTC().Format(time.RFC3339), "err", err)
		}
		return err
	}
	s.fires.WithLabelValues(OutcomeFailed).Inc()
	s.logger.Warn("scheduler: fire made no job", "schedule", sch.Name, "at", at.UTC().Format(time.RFC3339), "err", err)
	return nil
}

// transient reports whether an error may pass by itself.
func transient(err error) bool {
	if registry.Unavailable(err) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	switch connect.CodeOf(err) {
	case connect.CodeUnavailable, connect.CodeCanceled, connect.CodeDeadlineExceeded, connect.CodeResourceExhausted:
		return true
	}
	return false
}

// fireQueued makes the job of the fire a schedule held back (queue_one)
// once the job before it has ended.
func (s *Scheduler) fireQueued(ctx context.Context, sch *registry.Schedule, p *pass) (*registry.ScheduleFired, bool) {
	if sch.LastJobID != "" {
		last, err := s.reg.GetJob(ctx, sch.LastJobID)
		if err != nil && !errors.Is(err, registry.ErrNotFound) {
			return nil, false
		}
		if err == nil && !last.Status.Finished() {
			return nil, false
		}
	}
	state := fireState{lastJobID: sch.LastJobID, lastFire: sch.LastFireTime}
	if err := s.fire(ctx, sch, p, *sch.QueuedFireTime, &state); err != nil {
		return nil, false
	}
	return fired(sch, sch.NextFireTime, state), true
}

// fired is what a pass over a schedule stores: its next fire, the fire it
// holds back, and the job it made last when it made one. Stored against
// the version read, so a schedule changed meanwhile (updated, paused,
// deleted) keeps what the change wrote.
func fired(sch *registry.Schedule, next *time.Time, state fireState) *registry.ScheduleFired {
	f := &registry.ScheduleFired{ID: sch.ID, UpdatedAt: sch.UpdatedAt, NextFireTime: next, QueuedFireTime: state.queued}
	if state.changed {
		f.LastFireTime, f.LastJobID = state.lastFire, state.lastJobID
	}
	return f
}
