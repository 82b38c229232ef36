package api

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect/v2"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/rpc/casare/v1/casarev1connect"
	"github.com/casarerpa/casare/server/asset"
	"github.com/casarerpa/casare/server/auth"
	"github.com/casarerpa/casare/server/registry"
	"github.com/casarerpa/casare/server/vault"
)

// Vault seals the values the control plane keeps secret.
type Vault interface {
	Seal(plaintext []byte, context string) (string, error)
	Open(ctx context.Context, sealed, context string) ([]byte, error)
}

type assetService struct{ *Services }

var _ casarev1connect.AssetServiceHandler = (*assetService)(nil)

// PutAsset checks the value against its type and stores it; secrets and
// passwords sealed. Operators write text, number, bool and JSON; only
// admins write secrets and credentials.
func (s *assetService) PutAsset(ctx context.Context, req *casarev1.PutAssetRequest) (*casarev1.PutAssetResponse, error) {
	in := req.GetAsset()
	auth.SetAuditTarget(ctx, "asset/"+in.GetName())
	t, ok := asset.TypeFromProto(in.GetType())
	if !ok {
		return nil, invalid("asset.type", "unknown type %v: use text, number, bool, json, secret or credential", in.GetType())
	}
	if t.Sealed() {
		if p, ok := auth.PrincipalFrom(ctx); !ok || p.Role < casarev1.Role_ROLE_ADMIN {
			return nil, connect.Errorf(connect.CodePermissionDenied, "asset.type: only an admin token writes %s assets", t)
		}
	}
	selector, _, err := asset.ParseSelector(in.GetSelector())
	if err != nil {
		return nil, invalid("asset.selector", "%v", err)
	}
	row := &registry.Asset{Name: in.GetName(), Selector: selector, Type: t, UpdatedBy: actor(ctx)}
	switch t {
	case registry.AssetCredential:
		if in.GetPassword() == "" {
			return nil, invalid("asset.password", "a credential needs a password")
		}
		if in.GetValue() != "" {
			return nil, invalid("asset.value", "a credential has a username and a password, not a value")
		}
		row.Username = in.GetUsername()
		err = s.seal(row, in.GetPassword())
	case registry.AssetSecret:
		if in.GetUsername() != "" || in.GetPassword() != "" {
			return nil, invalid("asset.password", "only a credential has a username and a password; a secret has a value")
		}
		if in.GetValue() == "" {
			return nil, invalid("asset.value", "a secret needs a value")
		}
		err = s.seal(row, in.GetValue())
	default:
		if in.GetUsername() != "" || in.GetPassword() != "" {
			return nil, invalid("asset.password", "only a credential has a username and a password")
		}
		if err := asset.CheckValue(t, in.GetValue()); err != nil {
			return nil, invalid("asset.value", "%v", err)
		}
		row.Value = in.GetValue()
	}
	if err != nil {
		return nil, toConnect(err)
	}
	target := "asset/" + row.Name
	details := map[string]any{"type": string(t)}
	if selector != "" {
		details["selector"] = selector
	}
	created, err := s.reg.PutAsset(ctx, row, auth.AuditEvent(ctx, target, details))
	if errors.Is(err, registry.ErrConflict) {
		return nil, connect.NewError(connect.CodeFailedPrecondition, "asset.type: "+err.Error())
	}
	if err != nil {
		return nil, toConnect(err)
	}
	return &casarev1.PutAssetResponse{Asset: assetToProto(row), Created: created}, nil
}

func (s *assetService) seal(row *registry.Asset, secret string) error {
	if s.vault == nil {
		return errors.New("no vault: the server was started without a secret key")
	}
	sealed, err := s.vault.Seal([]byte(secret), registry.AssetSealContext(row.Name, row.Selector))
	if err != nil {
		return err
	}
	row.Sealed = sealed
	row.KeyID, _ = vault.KeyOf(sealed)
	return nil
}

// GetAsset returns the asset and its overrides, and with for_robot the one
// that robot gets, all without secret values.
func (s *assetService) GetAsset(ctx context.Context, req *casarev1.GetAssetRequest) (*casarev1.GetAssetResponse, error) {
	rows, err := s.reg.AssetRows(ctx, req.GetName())
	if err != nil {
		return nil, toConnect(err)
	}
	if len(rows) == 0 {
		return nil, connect.Errorf(connect.CodeNotFound, "name: no asset named %q", req.GetName())
	}
	res := &casarev1.GetAssetResponse{}
	for i := range rows {
		if rows[i].Selector == "" {
			res.Asset = assetToProto(&rows[i])
		} else {
			res.Overrides = append(res.Overrides, assetToProto(&rows[i]))
		}
	}
	if req.GetForRobot() != "" {
		robot, err := s.reg.GetRobot(ctx, req.GetForRobot())
		if errors.Is(err, registry.ErrNotFound) {
			return nil, connect.Errorf(connect.CodeNotFound, "for_robot: no robot with id or name %q", req.GetForRobot())
		}
		if err != nil {
			return nil, toConnect(err)
		}
		labels, err := robot.DecodeLabels()
		if err != nil {
			return nil, toConnect(err)
		}
		res.RobotId = robot.ID
		if row := asset.Pick(rows, labels); row != nil {
			res.Resolved = assetToProto(row)
		}
	}
	return res, nil
}

func (s *assetService) ListAssets(ctx context.Context, req *casarev1.ListAssetsRequest) (*casarev1.ListAssetsResponse, error) {
	rows, next, err := s.reg.ListAssets(ctx, registry.Page{Size: int(req.GetPageSize()), Token: req.GetPageToken()})
	if err != nil {
		return nil, toConnect(err)
	}
	res := &casarev1.ListAssetsResponse{Assets: make([]*casarev1.Asset, len(rows)), NextPageToken: next}
	for i := range rows {
		res.Assets[i] = assetToProto(&rows[i])
	}
	return res, nil
}

// DeleteAsset deletes the asset with its overrides, or one override.
// Deleting a secret or a credential takes an admin, as writing one does.
func (s *assetService) DeleteAsset(ctx context.Context, req *casarev1.DeleteAssetRequest) (*casarev1.DeleteAssetResponse, error) {
	auth.SetAuditTarget(ctx, "asset/"+req.GetName())
	selector, _, err := asset.ParseSelector(req.GetSelector())
	if err != nil {
		return nil, invalid("selector", "%v", err)
	}
	rows, err := s.reg.AssetRows(ctx, req.GetName())
	if err != nil {
		return nil, toConnect(err)
	}
	if len(rows) > 0 && rows[0].Type.Sealed() {
		if p, ok := auth.PrincipalFrom(ctx); !ok || p.Role < casarev1.Role_ROLE_ADMIN {
			return nil, connect.Errorf(connect.CodePermissionDenied, "name: only an admin token deletes %s assets", rows[0].Type)
		}
	}
	details := map[string]any{}
	if selector != "" {
		details["selector"] = selector
	}
	n, err := s.reg.DeleteAsset(ctx, req.GetName(), selector, selector == "", auth.AuditEvent(ctx, "asset/"+req.GetName(), details))
	if errors.Is(err, registry.ErrNotFound) {
		if selector != "" {
			return nil, connect.Errorf(connect.CodeNotFound, "selector: asset %q has no override for %s", req.GetName(), selector)
		}
		return nil, connect.Errorf(connect.CodeNotFound, "name: no asset named %q", req.GetName())
	}
	if err != nil {
		return nil, toConnect(err)
	}
	return &casarev1.DeleteAssetResponse{Deleted: int32(n)}, nil
}

// assetToProto converts a row for an answer: a secret's value and a
// credential's password are never in it, only Masked.
func assetToProto(a *registry.Asset) *casarev1.Asset {
	out := &casarev1.Asset{
		Name:      a.Name,
		Type:      asset.TypeToProto(a.Type),
		Selector:  a.Selector,
		Username:  a.Username,
		UpdatedBy: a.UpdatedBy,
		CreatedAt: timestamppb.New(a.CreatedAt),
		UpdatedAt: timestamppb.New(a.UpdatedAt),
	}
	switch a.Type {
	case registry.AssetSecret:
		out.Value = asset.Masked
	case registry.AssetCredential:
		out.Password = asset.Masked
	default:
		out.Value = a.Value
	}
	return out
}

// checkAssetUses refuses a workflow that reads an asset that is not
// stored, or reads one as the wrong type, naming the field.
func (s *Services) checkAssetUses(ctx context.Context, wf *casarev1.Workflow) error {
	err := asset.CheckUses(ctx, s.reg, wf)
	var perr *asset.ProblemsError
	if errors.As(err, &perr) {
		return connect.NewError(connect.CodeInvalidArgument, perr.Error())
	}
	return toConnect(err)
}

// sealSecretInputs moves the inputs wf declares secret out of inputs and
// into job.SecretInputs, sealed as one JSON object bound to the job, so
// jobs.inputs never holds them. Without a vault they stay in inputs.
func (s *Services) sealSecretInputs(job *registry.Job, wf *casarev1.Workflow, inputs *structpb.Struct) error {
	if s.vault == nil {
		return nil
	}
	secret := &structpb.Struct{Fields: map[string]*structpb.Value{}}
	for name, spec := range wf.GetInputs() {
		if v, ok := inputs.GetFields()[name]; ok && spec.GetSecret() {
			secret.Fields[name] = v
			delete(inputs.Fields, name)
		}
	}
	if len(secret.Fields) == 0 {
		return nil
	}
	plain, err := protojson.Marshal(secret)
	if err != nil {
		return fmt.Errorf("encode secret inputs: %w", err)
	}
	job.SecretInputs, err = s.vault.Seal(plain, registry.JobSecretSealContext(job.ID))
	if err != nil {
		return fmt.Errorf("seal secret inputs: %w", err)
	}
	return nil
}
