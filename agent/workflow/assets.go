package workflow

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/casarerpa/casare/agent/workflow/expr"
	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

// AssetUse is a place where a workflow reads an asset or a credential.
type AssetUse struct {
	// Path is where, as validation problems name it (steps[0].with.url).
	Path string
	// Name is the asset's name.
	Name string
	// Credential is set for credentials.NAME, unset for assets.NAME.
	Credential bool
	// Field is what is read of a credential: username, password, or ""
	// for the whole credential.
	Field string
}

// CredentialFields are the fields a credential has.
var CredentialFields = []string{"username", "password"}

// AssetUses lists where the workflow reads assets and credentials, each
// name and field once, at the first place that reads it. Expressions that
// do not parse are skipped: validation reports them.
func AssetUses(wf *casarev1.Workflow) []AssetUse {
	w := &assetWalk{seen: map[AssetUse]bool{}}
	w.steps("steps", wf.GetSteps())
	w.steps("on_error", wf.GetOnError())
	for _, k := range slices.Sorted(maps.Keys(wf.GetOutputs())) {
		w.template("outputs."+k, wf.GetOutputs()[k])
	}
	return w.uses
}

// AssetNames returns the names of the assets and of the credentials the
// workflow reads, each sorted and once.
func AssetNames(uses []AssetUse) (assets, credentials []string) {
	for _, u := range uses {
		if u.Credential {
			credentials = append(credentials, u.Name)
		} else {
			assets = append(assets, u.Name)
		}
	}
	return slices.Compact(slices.Sorted(slices.Values(assets))), slices.Compact(slices.Sorted(slices.Values(credentials)))
}

type assetWalk struct {
	uses []AssetUse
	seen map[AssetUse]bool
}

func (w *assetWalk) steps(path string, steps []*casarev1.Step) {
	for i, s := range steps {
		p := fmt.Sprintf("%s[%d]", path, i)
		if s.GetIf() != "" {
			w.expression(p+".if", expr.Bare(s.GetIf()))
		}
		if s.GetForeach() != "" {
			w.expression(p+".foreach", expr.Bare(s.GetForeach()))
		}
		if s.GetWith() != nil {
			w.value(p+".with", structpb.NewStructValue(s.GetWith()))
		}
		w.steps(p+".steps", s.GetSteps())
		w.steps(p+".on_error", s.GetOnError())
	}
}

func (w *assetWalk) value(path string, v *structpb.Value) {
	switch k := v.GetKind().(type) {
	case *structpb.Value_StringValue:
		w.template(path, k.StringValue)
	case *structpb.Value_ListValue:
		for i, e := range k.ListValue.GetValues() {
			w.value(fmt.Sprintf("%s[%d]", path, i), e)
		}
	case *structpb.Value_StructValue:
		fields := k.StructValue.GetFields()
		for _, key := range slices.Sorted(maps.Keys(fields)) {
			w.value(path+"."+key, fields[key])
		}
	}
}

func (w *assetWalk) template(path, s string) {
	t, err := expr.ParseTemplate(s)
	if err != nil {
		return
	}
	for _, p := range t.Pieces {
		if p.IsExpr {
			w.expression(path, p.Expr)
		}
	}
}

func (w *assetWalk) expression(path, src string) {
	// Most expressions name neither: the server lists the uses of every
	// job it is asked to run, and parsing each expression of a large
	// workflow again would cost milliseconds.
	if !strings.Contains(src, expr.Assets) && !strings.Contains(src, expr.Credentials) {
		return
	}
	parsed, err := expr.Parse(src)
	if err != nil {
		return
	}
	refs := expr.ReferencesParsed(parsed)
	for _, name := range refs.Assets {
		w.add(AssetUse{Path: path, Name: name})
	}
	for _, c := range refs.Credentials {
		w.add(AssetUse{Path: path, Name: c.Name, Credential: true, Field: c.Field})
	}
}

func (w *assetWalk) add(u AssetUse) {
	key := u
	key.Path = ""
	if w.seen[key] {
		return
	}
	w.seen[key] = true
	w.uses = append(w.uses, u)
}
