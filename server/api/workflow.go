package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"connectrpc.com/connect/v2"
	"google.golang.org/protobuf/proto"

	"github.com/casarerpa/casare/agent/workflow"
	"github.com/casarerpa/casare/agent/workflow/builtin"
	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/rpc/casare/v1/casarev1connect"
	"github.com/casarerpa/casare/server/auth"
	"github.com/casarerpa/casare/server/registry"
)

type workflowService struct{ *Services }

// stepCatalogue is what workflows are checked against: the specs the step
// families declare, as data, since the server runs no step and must not
// link the code that does.
var stepCatalogue = builtin.Steps

// validateWorkflow checks a definition against the step catalogue and
// returns its problems in one invalid-argument error, at most
// workflow.MaxProblems of them with a count of the rest. It stops when
// the client leaves. The request's protovalidate rules, the workflow's
// among them, were checked by the Validate interceptor.
func validateWorkflow(ctx context.Context, wf *casarev1.Workflow) error {
	return workflowError(workflow.ValidateAfterRules(ctx, wf, stepCatalogue))
}

// workflowError turns what workflow validation returned into what the
// client sees, problems named by their field in the request.
func workflowError(err error) error {
	var verr *workflow.ValidationError
	if errors.As(err, &verr) {
		problems := make([]string, len(verr.Problems))
		for i, p := range verr.Problems {
			problems[i] = "workflow." + p
		}
		if verr.More > 0 {
			problems = append(problems, fmt.Sprintf("and %d more", verr.More))
		}
		return connect.NewError(connect.CodeInvalidArgument, strings.Join(problems, "; "))
	}
	if err != nil {
		return toConnect(err)
	}
	return nil
}

var _ casarev1connect.WorkflowServiceHandler = (*workflowService)(nil)

// PutWorkflow stores the definition as a new version unless it equals the
// latest one.
func (s *workflowService) PutWorkflow(ctx context.Context, req *casarev1.PutWorkflowRequest) (*casarev1.PutWorkflowResponse, error) {
	wf := req.GetWorkflow()
	auth.SetAuditTarget(ctx, "workflow/"+wf.GetName())
	if err := validateWorkflow(ctx, wf); err != nil {
		return nil, err
	}
	if err := s.checkAssetUses(ctx, wf); err != nil {
		return nil, err
	}
	if err := s.checkQueueUses(ctx, wf); err != nil {
		return nil, err
	}
	digest, err := workflowDigest(wf)
	if err != nil {
		return nil, toConnect(err)
	}
	definition, err := marshalJSON(wf)
	if err != nil {
		return nil, toConnect(fmt.Errorf("encode workflow: %w", err))
	}
	v := &registry.WorkflowVersion{
		Name:        wf.GetName(),
		Digest:      digest,
		Definition:  definition,
		Description: wf.GetDescription(),
		CreatedBy:   actor(ctx),
	}
	saved, created, err := s.reg.PutWorkflow(ctx, v, auth.AuditEvent(ctx, "workflow/"+wf.GetName(), map[string]any{"digest": digest}))
	if err != nil {
		return nil, toConnect(err)
	}
	return &casarev1.PutWorkflowResponse{Workflow: workflowVersionToProto(saved), Created: created}, nil
}

// workflowDigest hashes the deterministic binary form, so equal definitions
// written differently (JSON or YAML, key order) have one digest.
func workflowDigest(wf *casarev1.Workflow) (string, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(wf)
	if err != nil {
		return "", fmt.Errorf("encode workflow: %w", err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

func (s *workflowService) GetWorkflow(ctx context.Context, req *casarev1.GetWorkflowRequest) (*casarev1.GetWorkflowResponse, error) {
	v, err := s.reg.GetWorkflow(ctx, req.GetName(), req.GetVersion())
	if errors.Is(err, registry.ErrNotFound) {
		if req.GetVersion() != 0 {
			return nil, connect.Errorf(connect.CodeNotFound, "workflow %q has no version %d", req.GetName(), req.GetVersion())
		}
		return nil, connect.Errorf(connect.CodeNotFound, "workflow %q not found", req.GetName())
	}
	if err != nil {
		return nil, toConnect(err)
	}
	return &casarev1.GetWorkflowResponse{Workflow: workflowVersionToProto(v)}, nil
}

func (s *workflowService) ListWorkflows(ctx context.Context, req *casarev1.ListWorkflowsRequest) (*casarev1.ListWorkflowsResponse, error) {
	list, next, err := s.reg.ListWorkflows(ctx, registry.Page{Size: int(req.GetPageSize()), Token: req.GetPageToken()})
	if err != nil {
		return nil, toConnect(err)
	}
	res := &casarev1.ListWorkflowsResponse{NextPageToken: next}
	for _, w := range list {
		res.Workflows = append(res.Workflows, &casarev1.WorkflowSummary{
			Name:          w.Name,
			LatestVersion: w.LatestVersion,
			Description:   w.Description,
			UpdatedAt:     timestamp(w.UpdatedAt),
		})
	}
	return res, nil
}
