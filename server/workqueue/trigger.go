package workqueue

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/server/registry"
)

// Jobs makes jobs: api.Services, the one path by which jobs come to be.
type Jobs interface {
	Submit(ctx context.Context, req *casarev1.SubmitJobRequest, createdBy string) (*registry.Job, bool, error)
}

// SubmitFunc is a Jobs of one function.
type SubmitFunc func(ctx context.Context, req *casarev1.SubmitJobRequest, createdBy string) (*registry.Job, bool, error)

// Submit calls f.
func (f SubmitFunc) Submit(ctx context.Context, req *casarev1.SubmitJobRequest, createdBy string) (*registry.Job, bool, error) {
	return f(ctx, req, createdBy)
}

// TriggerOptions configures Triggers.
type TriggerOptions struct {
	Registry *registry.Registry
	Jobs     Jobs
	Logger   *slog.Logger
	// Interval is how often the queues are looked at without a wake (items
	// added through another replica); 0 means 1s.
	Interval time.Duration
}

// triggersLock is the class of the queue triggers' advisory lock: one
// replica at a time starts their jobs, so two never start jobs for one
// queue's items.
const triggersLock = 0x63617371 // "casq"

// Triggers starts jobs of the queues' triggers while their queues hold
// NEW items: one job per items_per_job items once min_items wait, at most
// max_jobs of a trigger's jobs pending or running at once. Items added
// through this replica wake it at once; the periodic look covers the
// others. Only the replica that leads starts jobs.
type Triggers struct {
	reg      *registry.Registry
	jobs     Jobs
	logger   *slog.Logger
	interval time.Duration
	wake     chan struct{}
	leader   *registry.Leader
	started  *prometheus.CounterVec

	cancel context.CancelFunc
	done   sync.WaitGroup
}

// NewTriggers returns the queue triggers, not yet started.
func NewTriggers(opts TriggerOptions) *Triggers {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Interval <= 0 {
		opts.Interval = time.Second
	}
	return &Triggers{
		reg: opts.Registry, jobs: opts.Jobs, logger: opts.Logger, interval: opts.Interval,
		wake:   make(chan struct{}, 1),
		leader: opts.Registry.NewLeader(triggersLock, "queue triggers", opts.Logger),
		started: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "casare_workqueue_trigger_jobs_total",
			Help: "Jobs queue triggers started, by queue and outcome (created, failed).",
		}, []string{"queue", "outcome"}),
	}
}

// Collectors returns what to register.
func (t *Triggers) Collectors() []prometheus.Collector { return []prometheus.Collector{t.started} }

// Wake makes the triggers look at the queues now: items were added to
// queue ("" for any).
func (t *Triggers) Wake(string) {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// Start runs the triggers until Stop.
func (t *Triggers) Start(ctx context.Context) {
	ctx, t.cancel = context.WithCancel(ctx)
	t.done.Go(func() { t.run(ctx) })
}

// Stop stops the triggers and gives the lead up; once it returns, no job
// is started.
func (t *Triggers) Stop() {
	if t.cancel != nil {
		t.cancel()
	}
	t.done.Wait()
}

func (t *Triggers) run(ctx context.Context) {
	defer t.leader.Release()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-t.wake:
		}
		if t.leader.Lead(ctx) {
			if err := t.pass(ctx); err != nil && ctx.Err() == nil {
				t.logger.Warn("queue triggers", "err", err)
			}
		}
		timer.Reset(t.interval)
	}
}

// pass starts the jobs each triggered queue is short of.
func (t *Triggers) pass(ctx context.Context) error {
	queues, err := t.reg.TriggeredWorkQueues(ctx)
	if err != nil || len(queues) == 0 {
		return err
	}
	names := make([]string, len(queues))
	for i := range queues {
		names[i] = queues[i].Name
	}
	stats, err := t.reg.WorkQueueStats(ctx, names...)
	if err != nil {
		return err
	}
	for i := range queues {
		q := &queues[i]
		minItems, perJob, maxJobs := int64(max(q.TriggerMinItems, 1)), int64(max(q.TriggerItemsPerJob, 1)), int64(max(q.TriggerMaxJobs, 1))
		if stats[q.Name].Counts[registry.ItemNew] < minItems {
			continue
		}
		// The counters count deferred items as NEW: a job started for
		// them would find nothing to take, and the next pass would start
		// another. Counted up to what could start every job it may.
		waiting, err := t.reg.TakeableWorkItems(ctx, q.Name, max(minItems, perJob*maxJobs))
		if err != nil {
			return err
		}
		if waiting < minItems {
			continue
		}
		active, err := t.reg.CountActiveJobs(ctx, CreatedBy(q.Name))
		if err != nil {
			return err
		}
		want := min((waiting+perJob-1)/perJob, maxJobs)
		for n := int64(active); n < want; n++ {
			if err := t.start(ctx, q); err != nil {
				t.started.WithLabelValues(q.Name, "failed").Inc()
				t.logger.Warn("queue trigger: start a job", "queue", q.Name, "workflow", q.TriggerWorkflowName, "err", err)
				break
			}
			t.started.WithLabelValues(q.Name, "created").Inc()
		}
	}
	return nil
}

// CreatedBy is what the jobs of a queue's trigger are created by.
func CreatedBy(queue string) string { return "workqueue/" + queue }

func (t *Triggers) start(ctx context.Context, q *registry.WorkQueue) error {
	req := &casarev1.SubmitJobRequest{
		Source:          &casarev1.SubmitJobRequest_WorkflowName{WorkflowName: q.TriggerWorkflowName},
		WorkflowVersion: q.TriggerWorkflowVersion,
		Priority:        casarev1.JobPriority(q.TriggerPriority),
	}
	if q.TriggerRequires != "" && q.TriggerRequires != "{}" {
		req.Requires = &casarev1.Requirements{}
		if err := protojson.Unmarshal([]byte(q.TriggerRequires), req.Requires); err != nil {
			return fmt.Errorf("decode requirements: %w", err)
		}
	}
	stored, err := t.reg.GetWorkflow(ctx, q.TriggerWorkflowName, q.TriggerWorkflowVersion)
	if err != nil {
		return err
	}
	wf, err := stored.DecodeDefinition()
	if err != nil {
		return err
	}
	// The queue's name goes as the input queue, where the workflow takes
	// it (or takes any input).
	if _, declared := wf.GetInputs()["queue"]; declared || len(wf.GetInputs()) == 0 {
		req.Inputs = &structpb.Struct{Fields: map[string]*structpb.Value{"queue": structpb.NewStringValue(q.Name)}}
	}
	_, _, err = t.jobs.Submit(ctx, req, CreatedBy(q.Name))
	return err
}
