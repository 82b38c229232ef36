package api

import (
	"context"
	"maps"
	"slices"
	"strings"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/casarerpa/casare/agent/workflow/expr"
	"github.com/casarerpa/casare/agent/workflow/secret"
	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/server/asset"
	"github.com/casarerpa/casare/server/registry"
)

// jobSecrets is what of a job's inputs no answer may show: the names of its
// secret inputs, by the job's own workflow definition, and a masker of
// their values. The robot masks what it reports already; the server masks
// again, so a robot of an older version, or a value that reached a status
// message some other way, still shows nothing.
type jobSecrets struct {
	names  map[string]bool
	masker *secret.Masker
	// sealed names the secret inputs the vault keeps apart from the
	// others: answers show them as given, masked.
	sealed []string
}

// secretsOf reads the job's workflow for inputs declared secret. Most
// workflows declare none, and the workflow column is read only when its
// text can declare one.
func (s *Services) secretsOf(j *registry.Job) jobSecrets {
	if !strings.Contains(j.Workflow, `"secret"`) {
		return jobSecrets{}
	}
	wf, err := j.DecodeWorkflow()
	if err != nil {
		return jobSecrets{}
	}
	names := map[string]bool{}
	for _, name := range slices.Sorted(maps.Keys(wf.GetInputs())) {
		if wf.GetInputs()[name].GetSecret() {
			names[name] = true
		}
	}
	if len(names) == 0 {
		return jobSecrets{}
	}
	m := secret.New()
	var sealed []string
	if j.Inputs != "" {
		inputs, _ := j.DecodeInputs()
		for name := range names {
			if v, ok := inputs.GetFields()[name]; ok {
				m.AddSecret(expr.Format(v.AsInterface()))
			}
		}
	}
	// With a vault the secret inputs are sealed apart from the others.
	if s != nil && s.vault != nil && j.SecretInputs != "" {
		// A job whose secret inputs cannot be opened never ran with them
		// either, so there is nothing of theirs to hide.
		opened, _ := asset.OpenSecretInputs(context.Background(), s.vault, j)
		for name, v := range opened {
			m.AddSecret(expr.Format(v.AsInterface()))
			sealed = append(sealed, name)
		}
	}
	// A default may fill a secret input the request left out.
	for name := range names {
		if d := wf.GetInputs()[name].GetDefault(); d != nil {
			m.AddSecret(expr.Format(d.AsInterface()))
		}
	}
	return jobSecrets{names: names, masker: m, sealed: sealed}
}

func (s jobSecrets) none() bool { return s.masker == nil }

// text masks a message, reason or log line.
func (s jobSecrets) text(t string) string {
	if s.none() {
		return t
	}
	return s.masker.String(t)
}

// inputs shows the secret inputs as secret.Mask.
func (s jobSecrets) inputs(in *structpb.Struct) *structpb.Struct {
	if s.none() || in == nil {
		return in
	}
	for name := range in.GetFields() {
		if s.names[name] {
			in.Fields[name] = structpb.NewStringValue(secret.Mask)
		}
	}
	for _, name := range s.sealed {
		if in.Fields == nil {
			in.Fields = map[string]*structpb.Value{}
		}
		in.Fields[name] = structpb.NewStringValue(secret.Mask)
	}
	return in
}

// result masks every value of the job's outputs that holds a secret.
func (s jobSecrets) result(r *structpb.Struct) *structpb.Struct {
	if s.none() || r == nil {
		return r
	}
	masked, err := structpb.NewStruct(s.masker.Value(r.AsMap()).(map[string]any))
	if err != nil {
		// Masking only puts strings where values were; a result that
		// cannot be rebuilt is not shown rather than shown unmasked.
		return &structpb.Struct{Fields: map[string]*structpb.Value{}}
	}
	return masked
}

// hideSecretDefaults shows the default of each secret input of wf as
// secret.Mask: a workflow read back must not show the value a job would
// take as its secret. The digest still names the stored definition.
func hideSecretDefaults(wf *casarev1.Workflow) *casarev1.Workflow {
	for _, spec := range wf.GetInputs() {
		if spec.GetSecret() && spec.GetDefault() != nil {
			spec.Default = structpb.NewStringValue(secret.Mask)
		}
	}
	return wf
}
