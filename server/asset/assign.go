package asset

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/casarerpa/casare/agent/workflow"
	agentv1 "github.com/casarerpa/casare/rpc/casare/agent/v1"
	"github.com/casarerpa/casare/server/dispatch"
	"github.com/casarerpa/casare/server/registry"
)

// Assigner gives job_assign a job's secret inputs and its assets
// (dispatch.Secrets), writing an audit event for each robot's read.
type Assigner struct {
	uses     *usesCache
	resolver *Resolver
	vault    Opener
	audit    func(ctx context.Context, e *registry.AuditEvent) error
	log      *slog.Logger
	outcomes *prometheus.CounterVec
}

// AssignerOptions configures an Assigner.
type AssignerOptions struct {
	Store Store
	Vault Opener
	// Audit writes an audit event (the registry's InsertAudit).
	Audit  func(ctx context.Context, e *registry.AuditEvent) error
	Logger *slog.Logger
}

// NewAssigner returns an Assigner.
func NewAssigner(opts AssignerOptions) *Assigner {
	a := &Assigner{
		uses:     &usesCache{byWorkflow: map[string]names{}},
		resolver: &Resolver{Store: opts.Store, Vault: opts.Vault},
		vault:    opts.Vault,
		audit:    opts.Audit,
		log:      opts.Logger,
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "casare_asset_resolutions_total",
			Help: "Resolutions of the assets of a job assigned to a robot, by outcome: ok, unresolved (an asset gone or without a value for the robot), error.",
		}, []string{"outcome"}),
	}
	// Each outcome is there from the start, at 0, so that a rate over it
	// has a series before the first job that reads an asset.
	for _, o := range []string{"ok", "unresolved", "error"} {
		a.outcomes.WithLabelValues(o)
	}
	return a
}

// Collectors are the Assigner's metrics.
func (a *Assigner) Collectors() []prometheus.Collector { return []prometheus.Collector{a.outcomes} }

var _ dispatch.Secrets = (*Assigner)(nil)

// ForAssign opens the job's secret inputs and resolves the assets its
// workflow reads for the robot. A job that reads assets leaves an audit
// event naming them and the robot (never their values).
func (a *Assigner) ForAssign(ctx context.Context, job *registry.Job, robot dispatch.AssignTarget) (map[string]*structpb.Value, []*agentv1.AssignedAsset, error) {
	inputs, err := OpenSecretInputs(ctx, a.vault, job)
	if err != nil {
		return nil, nil, err
	}
	used, err := a.uses.of(job)
	if err != nil {
		return nil, nil, err
	}
	assets, err := a.resolver.ResolveNames(ctx, used.assets, used.credentials, robot.Labels)
	switch {
	case errors.Is(err, ErrUnresolved):
		a.outcomes.WithLabelValues("unresolved").Inc()
		return nil, nil, err
	case err != nil:
		a.outcomes.WithLabelValues("error").Inc()
		return nil, nil, fmt.Errorf("resolve the job's assets: %w", err)
	}
	if len(assets) == 0 {
		return inputs, nil, nil
	}
	a.outcomes.WithLabelValues("ok").Inc()
	names := make([]string, len(assets))
	for i, as := range assets {
		names[i] = as.GetName()
	}
	slices.Sort(names)
	details, _ := json.Marshal(map[string]any{"job": job.ID, "attempt": job.Attempt, "robot": robot.Name, "assets": names})
	event := &registry.AuditEvent{
		Actor:   "robot/" + robot.Name,
		Action:  "assign",
		Target:  "job/" + job.ID,
		Outcome: "ok",
		Details: string(details),
	}
	if err := a.audit(ctx, event); err != nil {
		// The read is not given without its record.
		return nil, nil, fmt.Errorf("record the robot's read of the job's assets: %w", err)
	}
	return inputs, assets, nil
}

// OpenSecretInputs returns the job's secret inputs, opened; nil when it
// has none.
func OpenSecretInputs(ctx context.Context, v Opener, job *registry.Job) (map[string]*structpb.Value, error) {
	if job.SecretInputs == "" {
		return nil, nil
	}
	plain, err := v.Open(ctx, job.SecretInputs, registry.JobSecretSealContext(job.ID))
	if err != nil {
		return nil, fmt.Errorf("job %s: open its secret inputs: %w", job.ID, err)
	}
	s := &structpb.Struct{}
	if err := s.UnmarshalJSON(plain); err != nil {
		return nil, fmt.Errorf("job %s: secret inputs: %w", job.ID, err)
	}
	return s.GetFields(), nil
}

// names are the assets and credentials a workflow reads.
type names struct{ assets, credentials []string }

// usesCache keeps what each workflow reads by the workflow's text: the
// jobs of one workflow share it, and decoding and parsing it again for
// every assignment would cost more than the rest of the resolution.
type usesCache struct {
	mu         sync.Mutex
	byWorkflow map[string]names
}

// maxCachedWorkflows bounds the cache; past it, it starts over.
const maxCachedWorkflows = 1000

func (c *usesCache) of(job *registry.Job) (names, error) {
	c.mu.Lock()
	n, ok := c.byWorkflow[job.Workflow]
	c.mu.Unlock()
	if ok {
		return n, nil
	}
	wf, err := job.DecodeWorkflow()
	if err != nil {
		return names{}, err
	}
	n.assets, n.credentials = workflow.AssetNames(workflow.AssetUses(wf))
	c.mu.Lock()
	if len(c.byWorkflow) >= maxCachedWorkflows {
		c.byWorkflow = map[string]names{}
	}
	c.byWorkflow[job.Workflow] = n
	c.mu.Unlock()
	return n, nil
}
