package workflow

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"

	"github.com/casarerpa/casare/agent/step"
	"github.com/casarerpa/casare/agent/workflow/expr"
	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

// ValidationError lists every problem of a workflow, each with its path.
type ValidationError struct {
	Problems []string
}

func (e *ValidationError) Error() string {
	return "invalid workflow:\n  " + strings.Join(e.Problems, "\n  ")
}

// Validate checks a workflow against the rules of the API and, when cat is
// not nil, against the actions it knows: unknown steps and parameters,
// missing required parameters, literal parameters of the wrong type,
// expressions that do not parse or type-check, and references to steps,
// inputs, item, index or error that cannot hold where they are used. It
// returns a *ValidationError with every problem at once, or nil.
func Validate(wf *casarev1.Workflow, cat step.Catalogue) error {
	v := &validation{cat: cat}
	if err := validator.Validate(wf); err != nil {
		var verr *protovalidateError
		if !errors.As(err, &verr) {
			return fmt.Errorf("validate workflow: %w", err)
		}
		for _, violation := range verr.Violations {
			v.problems = append(v.problems, violation.String())
		}
	}
	v.workflow(wf)
	if len(v.problems) == 0 {
		return nil
	}
	return &ValidationError{Problems: v.problems}
}

// validation gathers the problems of one workflow.
type validation struct {
	cat      step.Catalogue
	checker  *expr.Checker
	inputs   map[string]*casarev1.InputSpec
	allIDs   map[string]bool
	problems []string
}

func (v *validation) add(path, format string, args ...any) {
	v.problems = append(v.problems, path+": "+fmt.Sprintf(format, args...))
}

// where says what an expression may refer to at its place.
type where struct {
	done    map[string]bool // steps that have run
	inLoop  bool            // item and index exist
	inError bool            // error exists
}

func (w where) with(ids ...string) where {
	done := maps.Clone(w.done)
	for _, id := range ids {
		done[id] = true
	}
	w.done = done
	return w
}

func (v *validation) workflow(wf *casarev1.Workflow) {
	v.inputs = wf.GetInputs()
	for _, name := range slices.Sorted(maps.Keys(v.inputs)) {
		v.input("inputs."+name, v.inputs[name])
	}
	checker, err := expr.NewChecker(v.inputs)
	if err != nil {
		v.add("inputs", "%v", err)
		checker, _ = expr.NewChecker(nil)
	}
	v.checker = checker
	v.allIDs = map[string]bool{}
	collectIDs(wf.GetSteps(), v.allIDs)
	collectIDs(wf.GetOnError(), v.allIDs)

	at := v.steps("steps", wf.GetSteps(), where{done: map[string]bool{}})
	for _, name := range slices.Sorted(maps.Keys(wf.GetOutputs())) {
		v.template("outputs."+name, wf.GetOutputs()[name], at)
	}
	// The workflow's handlers run after any step may have failed.
	handlers := at
	handlers.inError = true
	v.steps("on_error", wf.GetOnError(), handlers)
}

func collectIDs(steps []*casarev1.Step, into map[string]bool) {
	for _, s := range steps {
		into[s.GetId()] = true
		collectIDs(s.GetSteps(), into)
		collectIDs(s.GetOnError(), into)
	}
}

// steps checks a list of steps run in order and returns the place after
// them.
func (v *validation) steps(path string, steps []*casarev1.Step, at where) where {
	for i, s := range steps {
		at = v.step(fmt.Sprintf("%s[%d]", path, i), s, at)
	}
	return at
}

// step checks one step and returns the place after it.
func (v *validation) step(path string, s *casarev1.Step, at where) where {
	if s.GetIf() != "" {
		v.bare(path+".if", s.GetIf(), at, cel.BoolType)
	}
	inside := at
	if s.GetForeach() != "" {
		v.bare(path+".foreach", s.GetForeach(), at, cel.ListType(cel.DynType))
		inside.inLoop = true
	}
	if s.GetParallelism() > 1 && s.GetForeach() == "" {
		v.add(path+".parallelism", "only a foreach step runs in parallel")
	}
	if s.GetUses() != "" {
		v.action(path, s, inside)
	}
	after := v.steps(path+".steps", s.GetSteps(), inside)
	handlers := after
	handlers.inError = true
	v.steps(path+".on_error", s.GetOnError(), handlers)

	ran := map[string]bool{}
	collectIDs([]*casarev1.Step{s}, ran)
	return at.with(slices.Collect(maps.Keys(ran))...)
}

// action checks a step's uses and with against the catalogue.
func (v *validation) action(path string, s *casarev1.Step, at where) {
	with := s.GetWith().AsMap()
	for _, k := range slices.Sorted(maps.Keys(with)) {
		v.value(path+".with."+k, with[k], at)
	}
	if v.cat == nil {
		return
	}
	a, err := v.cat.Lookup(s.GetUses())
	if err != nil {
		v.add(path+".uses", "%v", err)
		return
	}
	if a.Name == "assert" {
		if c, ok := with["condition"].(string); ok && !strings.Contains(c, "${{") {
			v.bare(path+".with.condition", c, at, cel.BoolType)
		}
	}
	if a.Params == nil {
		return
	}
	fields := map[string]step.Field{}
	for _, f := range step.Fields(a.Params) {
		fields[f.Name] = f
		if _, ok := with[f.Name]; f.Required && (!ok || with[f.Name] == nil) {
			v.add(path+".with."+f.Name, "required")
		}
	}
	for _, k := range slices.Sorted(maps.Keys(with)) {
		f, ok := fields[k]
		if !ok {
			v.add(path+".with."+k, "unknown parameter of %s (it takes %s)", a.Name, strings.Join(slices.Sorted(maps.Keys(fields)), ", "))
			continue
		}
		if hasExpression(with[k]) || with[k] == nil {
			continue
		}
		if err := decodeLiteral(a.Params, f, with[k]); err != nil {
			v.add(path+".with."+k, "%v", err)
		}
	}
}

// decodeLiteral decodes one literal parameter as the action would, so a
// literal of the wrong type is reported before the workflow runs.
func decodeLiteral(params reflect.Type, f step.Field, value any) error {
	data, err := json.Marshal(map[string]any{f.Name: value})
	if err != nil {
		return err
	}
	err = json.Unmarshal(data, reflect.New(params).Interface())
	var typeErr *json.UnmarshalTypeError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &typeErr):
		return fmt.Errorf("want %s, got %s", f.Type, typeErr.Value)
	}
	return errors.New(strings.TrimPrefix(err.Error(), "json: "))
}

func hasExpression(v any) bool {
	switch v := v.(type) {
	case string:
		return strings.Contains(v, "${{")
	case map[string]any:
		for _, e := range v {
			if hasExpression(e) {
				return true
			}
		}
	case []any:
		for _, e := range v {
			if hasExpression(e) {
				return true
			}
		}
	}
	return false
}

// value checks the expressions in every string of a with value.
func (v *validation) value(path string, val any, at where) {
	switch val := val.(type) {
	case string:
		v.template(path, val, at)
	case map[string]any:
		for _, k := range slices.Sorted(maps.Keys(val)) {
			v.value(path+"."+k, val[k], at)
		}
	case []any:
		for i, e := range val {
			v.value(fmt.Sprintf("%s[%d]", path, i), e, at)
		}
	}
}

// template checks the ${{ }} expressions of a string.
func (v *validation) template(path, s string, at where) {
	if !strings.Contains(s, "${{") {
		return
	}
	t, err := expr.ParseTemplate(s)
	if err != nil {
		v.add(path, "%v", err)
		return
	}
	for _, p := range t.Pieces {
		if p.IsExpr {
			v.expression(path, p.Expr, at, nil)
		}
	}
}

// bare checks the expression of an if, foreach or assert.
func (v *validation) bare(path, s string, at where, want *cel.Type) {
	if t, err := expr.ParseTemplate(strings.TrimSpace(s)); err != nil || (t.HasExpr() && !t.Lone()) {
		v.add(path, "write one expression, bare or in one ${{ }}")
		return
	}
	v.expression(path, expr.Bare(s), at, want)
}

// expression type-checks src and the names it uses.
func (v *validation) expression(path, src string, at where, want *cel.Type) {
	checked, err := v.checker.Check(src)
	if err != nil {
		v.add(path, "${{ %s }}: %v", src, err)
		return
	}
	if want != nil {
		// A foreach may also walk a map's keys.
		got := checked.OutputType()
		if k := got.Kind(); k != types.DynKind && k != want.Kind() && !(want.Kind() == types.ListKind && k == types.MapKind) {
			v.add(path, "${{ %s }}: gives %s, want %s", src, got, describeType(want))
		}
	}
	refs := expr.References(checked)
	for _, id := range refs.Steps {
		switch {
		case !v.allIDs[id]:
			v.add(path, "${{ %s }}: steps.%s: no step has id %q", src, id, id)
		case !at.done[id]:
			v.add(path, "${{ %s }}: steps.%s: that step has not run yet here", src, id)
		}
	}
	if len(v.inputs) > 0 {
		for _, in := range refs.Inputs {
			if _, ok := v.inputs[in]; !ok {
				v.add(path, "${{ %s }}: inputs.%s: not an input of the workflow (it takes %s)", src, in, strings.Join(slices.Sorted(maps.Keys(v.inputs)), ", "))
			}
		}
	}
	for _, id := range slices.Compact(slices.Sorted(slices.Values(refs.Idents))) {
		switch {
		case (id == expr.Item || id == expr.Index) && !at.inLoop:
			v.add(path, "${{ %s }}: %s exists only inside a foreach", src, id)
		case id == expr.Error && !at.inError:
			v.add(path, "${{ %s }}: error exists only in on_error steps", src)
		}
	}
}

// input checks that an input's default agrees with its type and required.
func (v *validation) input(path string, spec *casarev1.InputSpec) {
	if spec.GetDefault() == nil {
		return
	}
	if spec.GetRequired() {
		v.add(path, "required and with a default: a default makes the input optional; drop one")
	}
	if _, err := expr.CheckInput(spec.GetType(), spec.GetDefault().AsInterface()); err != nil {
		v.add(path+".default", "%v", err)
	}
}

func describeType(t *cel.Type) string {
	if t.Kind() == types.ListKind {
		return "a list"
	}
	return t.String()
}
