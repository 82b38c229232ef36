package api

import (
	"context"
	"errors"
	"runtime"
	"time"

	"connectrpc.com/connect/v2"

	agentv1 "github.com/casarerpa/casare/rpc/casare/agent/v1"
	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/rpc/casare/v1/casarev1connect"
	"github.com/casarerpa/casare/server/auth"
	"github.com/casarerpa/casare/server/registry"
)

type adminService struct{ *Services }

var _ casarev1connect.AdminServiceHandler = (*adminService)(nil)

// CreateToken makes a token and returns its secret, which is stored only as
// a hash and so is never shown again.
func (s *adminService) CreateToken(ctx context.Context, req *casarev1.CreateTokenRequest) (*casarev1.CreateTokenResponse, error) {
	auth.SetAuditTarget(ctx, "token/"+req.GetName())
	role, err := auth.RoleFromProto(req.GetRole())
	if err != nil {
		return nil, invalid("role", "%v", err)
	}
	secret := auth.NewToken()
	token := &registry.APIToken{
		ID:        registry.NewID(),
		Name:      req.GetName(),
		Role:      role,
		Hash:      auth.HashToken(secret),
		CreatedBy: actor(ctx),
		CreatedAt: time.Now().UTC(),
	}
	if req.GetTtl() != nil {
		expires := token.CreatedAt.Add(req.GetTtl().AsDuration())
		token.ExpiresAt = &expires
	}
	err = s.reg.CreateToken(ctx, token, auth.AuditEvent(ctx, "token/"+token.ID, map[string]any{"name": token.Name, "role": role}))
	if errors.Is(err, registry.ErrAlreadyExists) {
		return nil, connect.Errorf(connect.CodeAlreadyExists, "name: a token named %q exists; revoke it first or pick another name", req.GetName())
	}
	if err != nil {
		return nil, toConnect(err)
	}
	return &casarev1.CreateTokenResponse{Token: secret, Info: tokenToProto(token)}, nil
}

func (s *adminService) ListTokens(ctx context.Context, req *casarev1.ListTokensRequest) (*casarev1.ListTokensResponse, error) {
	tokens, next, err := s.reg.ListTokens(ctx, req.GetIncludeRevoked(), registry.Page{Size: int(req.GetPageSize()), Token: req.GetPageToken()})
	if err != nil {
		return nil, toConnect(err)
	}
	res := &casarev1.ListTokensResponse{Tokens: make([]*casarev1.ApiToken, len(tokens)), NextPageToken: next}
	for i := range tokens {
		res.Tokens[i] = tokenToProto(&tokens[i])
	}
	return res, nil
}

// RevokeToken revokes a token by id or name; calls with it fail at once.
func (s *adminService) RevokeToken(ctx context.Context, req *casarev1.RevokeTokenRequest) (*casarev1.RevokeTokenResponse, error) {
	auth.SetAuditTarget(ctx, "token/"+req.GetId())
	token, err := s.reg.RevokeToken(ctx, req.GetId(), time.Now().UTC(), auth.AuditEvent(ctx, "token/"+req.GetId(), nil))
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return nil, connect.Errorf(connect.CodeNotFound, "no active token with id or name %q", req.GetId())
	case errors.Is(err, registry.ErrConflict):
		return nil, connect.Errorf(connect.CodeFailedPrecondition, "token %q is already revoked", req.GetId())
	case err != nil:
		return nil, toConnect(err)
	}
	s.auth.Forget(token.ID)
	return &casarev1.RevokeTokenResponse{Token: tokenToProto(token)}, nil
}

func (s *adminService) WhoAmI(ctx context.Context, _ *casarev1.WhoAmIRequest) (*casarev1.WhoAmIResponse, error) {
	p, ok := auth.PrincipalFrom(ctx)
	if !ok {
		return nil, connect.NewError(connect.CodeUnauthenticated, "no caller")
	}
	return &casarev1.WhoAmIResponse{TokenId: p.TokenID, Name: p.Name, Role: p.Role}, nil
}

// GetVersion says which build of the control plane answers and which robot
// protocol versions it serves.
func (s *adminService) GetVersion(context.Context, *casarev1.GetVersionRequest) (*casarev1.GetVersionResponse, error) {
	return &casarev1.GetVersionResponse{
		Version:            s.version,
		Revision:           s.revision,
		GoVersion:          runtime.Version(),
		MinProtocolVersion: agentv1.MinProtocolVersion,
		MaxProtocolVersion: agentv1.ProtocolVersion,
	}, nil
}

func (s *adminService) ListAuditEvents(ctx context.Context, req *casarev1.ListAuditEventsRequest) (*casarev1.ListAuditEventsResponse, error) {
	events, next, err := s.reg.ListAudit(ctx, registry.AuditFilter{Actor: req.GetActor(), Target: req.GetTarget()},
		registry.Page{Size: int(req.GetPageSize()), Token: req.GetPageToken()})
	if err != nil {
		return nil, toConnect(err)
	}
	res := &casarev1.ListAuditEventsResponse{Events: make([]*casarev1.AuditEvent, len(events)), NextPageToken: next}
	for i := range events {
		res.Events[i] = auditToProto(&events[i])
	}
	return res, nil
}
