package asset

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/casarerpa/casare/agent/workflow"
	agentv1 "github.com/casarerpa/casare/rpc/casare/agent/v1"
	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/server/registry"
)

// Store reads asset rows (the registry).
type Store interface {
	// AssetRows returns every row of each name, ordered by name then
	// selector.
	AssetRows(ctx context.Context, names ...string) ([]registry.Asset, error)
}

// Opener opens sealed values (the vault).
type Opener interface {
	Open(ctx context.Context, sealed, context string) ([]byte, error)
}

// ProblemsError lists what is wrong with the assets a workflow reads, each
// problem starting with its field (workflow.steps[0].with.url: …).
type ProblemsError struct {
	Problems []string
}

func (e *ProblemsError) Error() string { return strings.Join(e.Problems, "; ") }

// CheckUses checks that every asset and credential wf reads is stored with
// a type that fits: assets.NAME a value that is not a credential,
// credentials.NAME a credential. It returns a *ProblemsError, or the
// store's error.
func CheckUses(ctx context.Context, store Store, wf *casarev1.Workflow) error {
	uses := workflow.AssetUses(wf)
	if len(uses) == 0 {
		return nil
	}
	names := make([]string, 0, len(uses))
	for _, u := range uses {
		names = append(names, u.Name)
	}
	rows, err := store.AssetRows(ctx, names...)
	if err != nil {
		return err
	}
	typeOf := make(map[string]registry.AssetType, len(rows))
	for _, row := range rows {
		typeOf[row.Name] = row.Type
	}
	var problems []string
	for _, u := range uses {
		ref := "assets." + u.Name
		if u.Credential {
			ref = "credentials." + u.Name
			if u.Field != "" {
				ref += "." + u.Field
			}
		}
		t, ok := typeOf[u.Name]
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("workflow.%s: %s: no asset named %q (create it with casarectl assets set)", u.Path, ref, u.Name))
		case u.Credential && t != registry.AssetCredential:
			problems = append(problems, fmt.Sprintf("workflow.%s: %s: asset %s is %s, not a credential; read it as assets.%s", u.Path, ref, u.Name, t, u.Name))
		case !u.Credential && t == registry.AssetCredential:
			problems = append(problems, fmt.Sprintf("workflow.%s: %s: asset %s is a credential; read it as credentials.%s.username or .password", u.Path, ref, u.Name, u.Name))
		}
	}
	if len(problems) > 0 {
		return &ProblemsError{Problems: problems}
	}
	return nil
}

// ErrUnresolved says a job's asset has no value for the robot, or is gone.
var ErrUnresolved = errors.New("asset not resolved")

// Resolver resolves the assets a job reads for the robot it is assigned
// to.
type Resolver struct {
	Store Store
	Vault Opener
}

// Resolve returns the value of each asset and credential wf reads, as the
// robot with the labels gets it (see Pick), secrets and passwords opened.
// ErrUnresolved, naming the asset, when one is gone or has no value for
// the robot.
func (r *Resolver) Resolve(ctx context.Context, wf *casarev1.Workflow, robot map[string]string) ([]*agentv1.AssignedAsset, error) {
	assets, creds := workflow.AssetNames(workflow.AssetUses(wf))
	return r.ResolveNames(ctx, assets, creds, robot)
}

// ResolveNames is Resolve for the names of the assets and credentials a
// workflow reads (workflow.AssetNames).
func (r *Resolver) ResolveNames(ctx context.Context, assets, creds []string, robot map[string]string) ([]*agentv1.AssignedAsset, error) {
	if len(assets)+len(creds) == 0 {
		return nil, nil
	}
	rows, err := r.Store.AssetRows(ctx, slices.Concat(assets, creds)...)
	if err != nil {
		return nil, err
	}
	byName := make(map[string][]registry.Asset, len(assets)+len(creds))
	for _, row := range rows {
		byName[row.Name] = append(byName[row.Name], row)
	}
	out := make([]*agentv1.AssignedAsset, 0, len(assets)+len(creds))
	seen := make(map[string]bool, len(assets)+len(creds))
	for _, name := range slices.Concat(assets, creds) {
		if seen[name] {
			// Read both as an asset and as a credential: CheckUses
			// refused that for the stored type; the type decides.
			continue
		}
		seen[name] = true
		rowsOf := byName[name]
		if len(rowsOf) == 0 {
			return nil, fmt.Errorf("%w: asset %s no longer exists", ErrUnresolved, name)
		}
		row := Pick(rowsOf, robot)
		if row == nil {
			return nil, fmt.Errorf("%w: asset %s has no value for this robot: no override matches its labels and there is no default", ErrUnresolved, name)
		}
		a, err := r.assigned(ctx, row)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

// assigned is row as job_assign carries it.
func (r *Resolver) assigned(ctx context.Context, row *registry.Asset) (*agentv1.AssignedAsset, error) {
	a := &agentv1.AssignedAsset{Name: row.Name, Type: string(row.Type)}
	var secret string
	if row.Type.Sealed() {
		plain, err := r.Vault.Open(ctx, row.Sealed, registry.AssetSealContext(row.Name, row.Selector))
		if err != nil {
			return nil, fmt.Errorf("open asset %s: %w", row.Name, err)
		}
		secret = string(plain)
	}
	switch row.Type {
	case registry.AssetCredential:
		a.Username, a.Password = row.Username, secret
	case registry.AssetSecret:
		a.Value = structpb.NewStringValue(secret)
	default:
		v, err := Value(row.Type, row.Value)
		if err != nil {
			return nil, fmt.Errorf("asset %s: stored value does not fit its type: %w", row.Name, err)
		}
		pv, err := structpb.NewValue(v)
		if err != nil {
			return nil, fmt.Errorf("asset %s: %w", row.Name, err)
		}
		a.Value = pv
	}
	return a, nil
}
