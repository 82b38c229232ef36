package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect/v2"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/casarerpa/casare/agent/workflow"
	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/server/auth"
	"github.com/casarerpa/casare/server/registry"
	"github.com/casarerpa/casare/server/stdwebhook"
	"github.com/casarerpa/casare/server/trigger"
)

// DefaultSecretGrace is how long a rotated trigger secret stays valid when
// the request does not say: a day, for senders configured by hand.
const DefaultSecretGrace = 24 * time.Hour

// CreateTrigger checks the trigger against its stored workflow (the
// workflow exists, every mapped input is declared, every required one
// without a default is mapped, every expression compiles and gives the
// input's type) and stores it with a new secret, returned only here.
func (s *webhookService) CreateTrigger(ctx context.Context, req *casarev1.CreateTriggerRequest) (*casarev1.CreateTriggerResponse, error) {
	in := req.GetTrigger()
	auth.SetAuditTarget(ctx, "trigger/"+in.GetName())
	if err := s.checkTrigger(ctx, in); err != nil {
		return nil, err
	}
	t, err := triggerFromProto(in)
	if err != nil {
		return nil, toConnect(err)
	}
	t.ID, t.CreatedBy, t.CreatedAt = registry.NewID(), actor(ctx), time.Now()
	secret := stdwebhook.NewSecret()
	t.Secret = secret
	if t.Auth == registry.TriggerAuthBearer {
		// A bearer token is compared, never used as a key, so only its
		// hash is kept, like an API token's.
		t.Secret = hashSecret(secret)
	}
	err = s.reg.CreateTrigger(ctx, t, auth.AuditEvent(ctx, "trigger/"+t.ID, map[string]any{
		"name": t.Name, "workflow": t.WorkflowName, "auth": t.Auth,
	}))
	if errors.Is(err, registry.ErrAlreadyExists) {
		return nil, connect.Errorf(connect.CodeAlreadyExists, "trigger.name: a trigger named %q exists; delete it first or pick another name", t.Name)
	}
	if err != nil {
		return nil, toConnect(err)
	}
	return &casarev1.CreateTriggerResponse{Trigger: triggerToProto(t), Secret: secret}, nil
}

// UpdateTrigger replaces a trigger's workflow, mapping, job options and
// rate, checked as CreateTrigger checks them. Its id, URL, auth and secret
// stay: senders need not change anything.
func (s *webhookService) UpdateTrigger(ctx context.Context, req *casarev1.UpdateTriggerRequest) (*casarev1.UpdateTriggerResponse, error) {
	in := req.GetTrigger()
	auth.SetAuditTarget(ctx, "trigger/"+in.GetName())
	if err := s.checkTrigger(ctx, in); err != nil {
		return nil, err
	}
	t, err := triggerFromProto(in)
	if err != nil {
		return nil, toConnect(err)
	}
	current, err := s.reg.GetTrigger(ctx, in.GetName())
	if errors.Is(err, registry.ErrNotFound) {
		return nil, connect.Errorf(connect.CodeNotFound, "trigger.name: no trigger named %q", in.GetName())
	}
	if err != nil {
		return nil, toConnect(err)
	}
	if in.GetAuth() != casarev1.TriggerAuth_TRIGGER_AUTH_UNSPECIFIED && t.Auth != current.Auth {
		return nil, invalid("trigger.auth", "a trigger keeps the auth it was created with (%s), as its secret is of that kind; create another trigger", current.Auth)
	}
	saved, err := s.reg.UpdateTrigger(ctx, t, auth.AuditEvent(ctx, "trigger/"+current.ID, map[string]any{
		"workflow": t.WorkflowName, "inputs": in.GetInputs(),
	}))
	if errors.Is(err, registry.ErrNotFound) {
		return nil, connect.Errorf(connect.CodeNotFound, "trigger.name: no trigger named %q", in.GetName())
	}
	if err != nil {
		return nil, toConnect(err)
	}
	return &casarev1.UpdateTriggerResponse{Trigger: triggerToProto(saved)}, nil
}

// triggerFromProto is the row for what a request says of a trigger; the
// id, secret and creation are the caller's to set.
func triggerFromProto(in *casarev1.Trigger) (*registry.Trigger, error) {
	t := &registry.Trigger{
		Name:            in.GetName(),
		WorkflowName:    in.GetWorkflowName(),
		WorkflowVersion: in.GetWorkflowVersion(),
		Priority:        registry.Priority(in.GetPriority()),
		MaxAttempts:     in.GetMaxAttempts(),
		Auth:            registry.TriggerAuthStandardWebhooks,
		RatePerSecond:   in.GetRatePerSecond(),
		Burst:           in.GetBurst(),
		Inputs:          "{}",
	}
	if t.Priority == 0 {
		t.Priority = registry.PriorityNormal
	}
	if in.GetAuth() == casarev1.TriggerAuth_TRIGGER_AUTH_BEARER {
		t.Auth = registry.TriggerAuthBearer
	}
	if len(in.GetInputs()) > 0 {
		inputs, err := json.Marshal(in.GetInputs())
		if err != nil {
			return nil, fmt.Errorf("encode inputs: %w", err)
		}
		t.Inputs = string(inputs)
	}
	requires, err := marshalJSON(in.GetRequires())
	if err != nil {
		return nil, fmt.Errorf("encode requirements: %w", err)
	}
	t.Requires = requires
	return t, nil
}

// checkTrigger checks what protovalidate cannot: the workflow and the
// mapping against its inputs.
func (s *webhookService) checkTrigger(ctx context.Context, in *casarev1.Trigger) error {
	stored, err := s.reg.GetWorkflow(ctx, in.GetWorkflowName(), in.GetWorkflowVersion())
	if errors.Is(err, registry.ErrNotFound) {
		if in.GetWorkflowVersion() != 0 {
			return connect.Errorf(connect.CodeNotFound, "trigger.workflow_version: workflow %q has no version %d", in.GetWorkflowName(), in.GetWorkflowVersion())
		}
		return connect.Errorf(connect.CodeNotFound, "trigger.workflow_name: no stored workflow named %q (push it with casarectl workflows push)", in.GetWorkflowName())
	}
	if err != nil {
		return toConnect(err)
	}
	wf, err := stored.DecodeDefinition()
	if err != nil {
		return toConnect(err)
	}
	var problems []string
	if _, err := trigger.Compile(in.GetInputs(), wf.GetInputs()); err != nil {
		var cerr *trigger.CompileError
		if !errors.As(err, &cerr) {
			return toConnect(err)
		}
		for _, p := range cerr.Problems {
			problems = append(problems, "trigger."+p)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(wf.GetInputs())) {
		spec := wf.GetInputs()[name]
		if _, mapped := in.GetInputs()[name]; !mapped && spec.GetRequired() && spec.GetDefault() == nil {
			problems = append(problems, fmt.Sprintf("trigger.inputs.%s: required by workflow %s and not mapped", name, stored.Name))
		}
	}
	if _, err := mergeRequirements(workflow.Requirements(wf, stepCatalogue), in.GetRequires()); err != nil {
		var cerr *connect.Error
		if errors.As(err, &cerr) {
			problems = append(problems, "trigger."+cerr.Message())
		}
	}
	if len(problems) > 0 {
		return connect.NewError(connect.CodeInvalidArgument, strings.Join(problems, "; "))
	}
	return nil
}

func hashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

func (s *webhookService) GetTrigger(ctx context.Context, req *casarev1.GetTriggerRequest) (*casarev1.GetTriggerResponse, error) {
	t, err := s.reg.GetTrigger(ctx, req.GetName())
	if errors.Is(err, registry.ErrNotFound) {
		return nil, connect.Errorf(connect.CodeNotFound, "name: no trigger with name or id %q", req.GetName())
	}
	if err != nil {
		return nil, toConnect(err)
	}
	return &casarev1.GetTriggerResponse{Trigger: triggerToProto(t)}, nil
}

func (s *webhookService) ListTriggers(ctx context.Context, req *casarev1.ListTriggersRequest) (*casarev1.ListTriggersResponse, error) {
	list, next, err := s.reg.ListTriggers(ctx, registry.TriggerFilter{WorkflowName: req.GetWorkflowName()},
		registry.Page{Size: int(req.GetPageSize()), Token: req.GetPageToken()})
	if err != nil {
		return nil, toConnect(err)
	}
	res := &casarev1.ListTriggersResponse{Triggers: make([]*casarev1.Trigger, len(list)), NextPageToken: next}
	for i := range list {
		res.Triggers[i] = triggerToProto(&list[i])
	}
	return res, nil
}

// DeleteTrigger deletes a trigger; its URL answers 404 at once on every
// replica, as each request reads the trigger.
func (s *webhookService) DeleteTrigger(ctx context.Context, req *casarev1.DeleteTriggerRequest) (*casarev1.DeleteTriggerResponse, error) {
	auth.SetAuditTarget(ctx, "trigger/"+req.GetName())
	t, err := s.reg.DeleteTrigger(ctx, req.GetName(), auth.AuditEvent(ctx, "trigger/"+req.GetName(), nil))
	if errors.Is(err, registry.ErrNotFound) {
		return nil, connect.Errorf(connect.CodeNotFound, "name: no trigger with name or id %q", req.GetName())
	}
	if err != nil {
		return nil, toConnect(err)
	}
	return &casarev1.DeleteTriggerResponse{Trigger: triggerToProto(t)}, nil
}

// RotateTriggerSecret gives the trigger a new secret, returned only here;
// the old one stays valid for the grace period so senders can switch over.
func (s *webhookService) RotateTriggerSecret(ctx context.Context, req *casarev1.RotateTriggerSecretRequest) (*casarev1.RotateTriggerSecretResponse, error) {
	auth.SetAuditTarget(ctx, "trigger/"+req.GetName())
	grace := DefaultSecretGrace
	if req.GetGrace() != nil {
		grace = req.GetGrace().AsDuration()
	}
	current, err := s.reg.GetTrigger(ctx, req.GetName())
	if errors.Is(err, registry.ErrNotFound) {
		return nil, connect.Errorf(connect.CodeNotFound, "name: no trigger with name or id %q", req.GetName())
	}
	if err != nil {
		return nil, toConnect(err)
	}
	secret := stdwebhook.NewSecret()
	stored := secret
	if current.Auth == registry.TriggerAuthBearer {
		stored = hashSecret(secret)
	}
	t, err := s.reg.RotateTriggerSecret(ctx, current.ID, stored, time.Now().Add(grace),
		auth.AuditEvent(ctx, "trigger/"+current.ID, map[string]any{"grace": grace.String()}))
	if errors.Is(err, registry.ErrNotFound) {
		return nil, connect.Errorf(connect.CodeNotFound, "name: no trigger with name or id %q", req.GetName())
	}
	if err != nil {
		return nil, toConnect(err)
	}
	return &casarev1.RotateTriggerSecretResponse{Trigger: triggerToProto(t), Secret: secret}, nil
}

// triggerToProto describes a trigger without its secrets.
func triggerToProto(t *registry.Trigger) *casarev1.Trigger {
	out := &casarev1.Trigger{
		Id:              t.ID,
		Name:            t.Name,
		WorkflowName:    t.WorkflowName,
		WorkflowVersion: t.WorkflowVersion,
		Priority:        casarev1.JobPriority(t.Priority),
		MaxAttempts:     t.MaxAttempts,
		Auth:            casarev1.TriggerAuth_TRIGGER_AUTH_STANDARD_WEBHOOKS,
		RatePerSecond:   t.RatePerSecond,
		Burst:           t.Burst,
		UrlPath:         "/hooks/" + t.ID,
		CreatedAt:       timestamp(t.CreatedAt),
		CreatedBy:       t.CreatedBy,
		UpdatedAt:       timestamp(t.UpdatedAt),
	}
	if t.Auth == registry.TriggerAuthBearer {
		out.Auth = casarev1.TriggerAuth_TRIGGER_AUTH_BEARER
	}
	if t.PreviousSecretExpiresAt != nil && t.PreviousSecretExpiresAt.After(time.Now()) {
		out.PreviousSecretExpiresAt = timestamppb.New(*t.PreviousSecretExpiresAt)
	}
	_ = json.Unmarshal([]byte(t.Inputs), &out.Inputs)
	if t.Requires != "" {
		req := new(casarev1.Requirements)
		if protojson.Unmarshal([]byte(t.Requires), req) == nil {
			out.Requires = req
		}
	}
	return out
}
