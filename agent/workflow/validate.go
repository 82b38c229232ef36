package workflow

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/casarerpa/casare/agent/workflow/expr"
	"github.com/casarerpa/casare/agent/workflow/spec"
	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

// ValidationError lists the problems of a workflow, each with its path: at
// most MaxProblems of them, and how many more there were.
type ValidationError struct {
	Problems []string
	// More counts the problems found past MaxProblems.
	More int
}

func (e *ValidationError) Error() string {
	msg := "invalid workflow:\n  " + strings.Join(e.Problems, "\n  ")
	if e.More > 0 {
		msg += fmt.Sprintf("\n  and %d more", e.More)
	}
	return msg
}

// Validate checks a workflow as ValidateContext does, with no deadline.
func Validate(wf *casarev1.Workflow, cat spec.Catalogue) error {
	return ValidateContext(context.Background(), wf, cat)
}

// ValidateContext checks a workflow against the rules of the API and, when
// cat is not nil, against the actions it knows: unknown steps and
// parameters, missing required parameters, literal parameters of the wrong
// type, step ids used twice among siblings, expressions that do not parse
// or type-check, and references to steps, inputs, item, index or error
// that cannot hold where they are used. The size limits (CheckLimits) come
// first, and nothing else is checked in a workflow over one, so that the
// work is linear in a bounded size. It returns a *ValidationError, the
// context's error when ctx ends first, or nil.
func ValidateContext(ctx context.Context, wf *casarev1.Workflow, cat spec.Catalogue) error {
	return validate(ctx, wf, cat, true)
}

// ValidateAfterRules is ValidateContext for a workflow whose protovalidate
// rules the caller has already checked, as the API's validating
// interceptor does for every request: they are not checked twice.
func ValidateAfterRules(ctx context.Context, wf *casarev1.Workflow, cat spec.Catalogue) error {
	return validate(ctx, wf, cat, false)
}

func validate(ctx context.Context, wf *casarev1.Workflow, cat spec.Catalogue, rules bool) error {
	if err := CheckLimits(wf); err != nil {
		return err
	}
	v := &validation{ctx: ctx, cat: cat}
	if rules {
		// The rules and the walk only read the workflow: beside each
		// other they take a tenth off the time on a core to spare. The
		// walk waits for the rules, which protovalidate bounds by the
		// workflow's size, so the goroutine never outlives the call.
		found := &validation{}
		ruled := make(chan error, 1)
		go func() { ruled <- found.rules(wf) }()
		v.workflow(wf)
		if err := <-ruled; err != nil {
			return err
		}
		v.after(found)
	} else {
		v.workflow(wf)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("validate workflow: %w", err)
	}
	if len(v.problems) == 0 {
		return nil
	}
	return &ValidationError{Problems: v.problems, More: v.more}
}

// rules adds the violations of the workflow's protovalidate rules.
func (v *validation) rules(wf *casarev1.Workflow) error {
	err := validator.Validate(wf)
	if err == nil {
		return nil
	}
	var verr *protovalidateError
	if !errors.As(err, &verr) {
		return fmt.Errorf("validate workflow: %w", err)
	}
	for _, violation := range verr.Violations {
		v.addProblem(violation.String())
	}
	return nil
}

// after puts the problems of first before those of v, as if they had
// been found first, within MaxProblems.
func (v *validation) after(first *validation) {
	all := append(first.problems, v.problems...)
	more := first.more + v.more
	if len(all) > MaxProblems {
		more += len(all) - MaxProblems
		all = all[:MaxProblems]
	}
	v.problems, v.more = all, more
}

// MaxProblems bounds the problems a ValidationError lists: a workflow with
// a thousand broken steps gets an answer of a readable size.
const MaxProblems = 20

// maxQuoted bounds the expression text a problem quotes, and maxProblem
// one problem, so that an error never echoes a huge input back.
const (
	maxQuoted  = 200
	maxProblem = 1024
)

// validation gathers the problems of one workflow.
type validation struct {
	ctx      context.Context
	cat      spec.Catalogue
	checker  *expr.Checker
	inputs   map[string]*casarev1.InputSpec
	allIDs   map[string]bool
	problems []string
	more     int
	// finished holds the ids of the steps whose checks are done. The
	// checks walk the steps in the order they run, so these are the
	// steps that have run at the place being checked.
	finished map[string]bool
	walked   int

	// in backs the way into the with value being checked (site.in):
	// values nest at most MaxValueDepth deep, so one array serves them all.
	in []elem

	params     map[string]params
	compiled   map[string]compiled
	exprCount  int
	exprBytes  int
	exprNodes  int
	overBudget bool
}

// compiled is what checking an expression found, kept by its text.
type compiled struct {
	err  error
	out  *cel.Type
	refs expr.Refs
}

func (v *validation) add(path, format string, args ...any) {
	v.addProblem(path + ": " + fmt.Sprintf(format, args...))
}

func (v *validation) addProblem(p string) {
	if len(v.problems) >= MaxProblems {
		v.more++
		return
	}
	v.problems = append(v.problems, expr.Truncate(p, maxProblem))
}

// quote shows an expression in a problem, cut short.
func quote(src string) string { return expr.Truncate(src, maxQuoted) }

// site is where a value or an expression is, written out only for a
// problem: most have none, and writing out the path of every value of a
// large with took longer than checking the values.
type site struct {
	path  string // a step's or the workflow's, steps[0]
	field string // a field below path, .if or .with
	in    []elem // the way into a with value from the field
}

// elem is a map key, or a list index when it is not a key.
type elem struct {
	key   string
	index int
	isKey bool
}

// key is the site of a map's value, index that of a list's. They append
// to in, which the sites of siblings share: a site is written out, if at
// all, before the next sibling's is made.
func (p site) key(k string) site {
	p.in = append(p.in, elem{key: k, isKey: true})
	return p
}

func (p site) index(i int) site {
	p.in = append(p.in, elem{index: i})
	return p
}

func (p site) String() string {
	if p.field == "" && len(p.in) == 0 {
		return p.path
	}
	var b strings.Builder
	b.WriteString(p.path)
	b.WriteString(p.field)
	for _, e := range p.in {
		if e.isKey {
			b.WriteByte('.')
			b.WriteString(e.key)
		} else {
			b.WriteByte('[')
			b.WriteString(strconv.Itoa(e.index))
			b.WriteByte(']')
		}
	}
	return b.String()
}

func (v *validation) addAt(p site, format string, args ...any) {
	v.add(p.String(), format, args...)
}

// where says what an expression may refer to at its place, beside the
// steps that have run.
type where struct {
	inLoop  bool // item and index exist
	inError bool // error exists
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
	v.finished = make(map[string]bool, len(v.allIDs))
	v.in = make([]elem, 0, MaxValueDepth+1)

	v.steps("steps", wf.GetSteps(), where{})
	for _, name := range slices.Sorted(maps.Keys(wf.GetOutputs())) {
		v.template(site{path: "outputs." + name}, wf.GetOutputs()[name], where{})
	}
	// The workflow's handlers run after any step may have failed.
	v.steps("on_error", wf.GetOnError(), where{inError: true})
}

func collectIDs(steps []*casarev1.Step, into map[string]bool) {
	for _, s := range steps {
		into[s.GetId()] = true
		collectIDs(s.GetSteps(), into)
		collectIDs(s.GetOnError(), into)
	}
}

// steps checks a list of steps run in order.
func (v *validation) steps(path string, steps []*casarev1.Step, at where) {
	if len(steps) > 1 {
		// times counts each id up to twice: the second use is reported.
		times := make(map[string]int, len(steps))
		for _, s := range steps {
			id := s.GetId()
			if times[id]++; times[id] == 2 && id != "" {
				v.add(path, "step id %q is used more than once", expr.Truncate(id, maxQuoted))
			}
		}
	}
	for i, s := range steps {
		v.step(path+"["+strconv.Itoa(i)+"]", s, at)
	}
}

// step checks one step, then counts it as run.
func (v *validation) step(path string, s *casarev1.Step, at where) {
	// A client that left stops the work: checked every few steps, since
	// one step's checks take microseconds.
	if v.walked++; v.walked%64 == 0 && v.ctx.Err() != nil {
		return
	}
	nested := v.nested(s.GetUses())
	switch {
	case nested && len(s.GetSteps()) == 0:
		v.add(path+".steps", "%s needs nested steps: they run once per item", s.GetUses())
	case s.GetUses() == "" && len(s.GetSteps()) == 0:
		v.add(path, "a step needs either uses or nested steps, not both")
	case !nested && s.GetUses() != "" && len(s.GetSteps()) > 0:
		v.add(path, "a step needs either uses or nested steps, not both%s", v.constructs())
	}
	if s.GetIf() != "" {
		v.bare(site{path: path, field: ".if"}, s.GetIf(), at, cel.BoolType)
	}
	inside := at
	if s.GetForeach() != "" {
		v.bare(site{path: path, field: ".foreach"}, s.GetForeach(), at, cel.ListType(cel.DynType))
		inside.inLoop = true
	}
	if s.GetParallelism() > 1 && s.GetForeach() == "" {
		v.add(path+".parallelism", "only a foreach step runs in parallel")
	}
	var after []string
	if s.GetUses() != "" {
		after = v.action(path, s, inside)
	}
	if len(s.GetSteps()) > 0 {
		body := inside
		if nested {
			// A construct runs its steps once per item, with it as item.
			body.inLoop = true
		}
		v.steps(path+".steps", s.GetSteps(), body)
		// Evaluated after the nested steps, in their scope.
		with := s.GetWith().GetFields()
		for _, k := range after {
			v.value(site{path: path, field: ".with", in: v.in[:0]}.key(k), with[k], body)
		}
	}
	if len(s.GetOnError()) > 0 {
		handlers := inside
		handlers.inError = true
		v.steps(path+".on_error", s.GetOnError(), handlers)
	}
	v.finished[s.GetId()] = true
}

// nested reports whether uses names a construct whose step has nested
// steps (queue.process). Without a catalogue every action may: nothing
// about actions is checked then.
func (v *validation) nested(uses string) bool {
	if uses == "" {
		return false
	}
	if v.cat == nil {
		return true
	}
	a, ok := v.cat[uses]
	return ok && a.Nested
}

// constructs names the actions that take both, for a problem.
func (v *validation) constructs() string {
	var names []string
	for _, name := range v.cat.Names() {
		if v.cat[name].Nested {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return ""
	}
	return " (only " + strings.Join(names, ", ") + " takes both)"
}

// action checks a step's uses and with against the catalogue, and
// returns the keys of with that a construct evaluates after its nested
// steps: their expressions are for the caller to check, in that scope.
// The with is read as the Struct it is: converting every step's to a map
// first was a tenth of checking a large workflow.
func (v *validation) action(path string, s *casarev1.Step, at where) (after []string) {
	with := s.GetWith().GetFields()
	keys := slices.Sorted(maps.Keys(with))
	var a *spec.Action
	if v.cat != nil {
		a = v.cat[s.GetUses()]
	}
	in := site{path: path, field: ".with", in: v.in[:0]}
	for _, k := range keys {
		if a != nil && a.Nested && slices.Contains(a.AfterSteps, k) {
			after = append(after, k)
			continue
		}
		v.value(in.key(k), with[k], at)
	}
	if v.cat == nil {
		return after
	}
	a, err := v.cat.Lookup(s.GetUses())
	if err != nil {
		v.add(path+".uses", "%v", err)
		return after
	}
	if a.Name == "assert" {
		if c, ok := with["condition"].GetKind().(*structpb.Value_StringValue); ok && !strings.Contains(c.StringValue, "${{") {
			v.bare(site{path: path, field: ".with.condition"}, c.StringValue, at, cel.BoolType)
		}
	}
	if a.AnyParams {
		return after
	}
	params := v.fields(a)
	fields := params.byName
	for _, f := range params.list {
		if f.Required && isNull(with[f.Name]) {
			v.add(path+".with."+f.Name, "required")
		}
	}
	for _, k := range keys {
		f, ok := fields[k]
		if !ok {
			v.add(path+".with."+k, "unknown parameter of %s (it takes %s)", a.Name, params.names)
			continue
		}
		if hasExpression(with[k]) || isNull(with[k]) {
			continue
		}
		// Checked as the robot decodes it, so a literal of the wrong
		// type is reported before the workflow runs.
		if err := f.Check(with[k]); err != nil {
			v.add(path+".with."+k, "%v", err)
		}
	}
	return after
}

// isNull reports whether a with value is missing or null, which leaves a
// parameter unset.
func isNull(v *structpb.Value) bool {
	switch v.GetKind().(type) {
	case nil, *structpb.Value_NullValue:
		return true
	}
	return false
}

// params are an action's parameters, in order and by name.
type params struct {
	list   []spec.Field
	byName map[string]*spec.Field
	names  string // the names in order, as a problem lists them
}

// fields returns an action's parameters by name, gathered once per
// validation rather than once per step.
func (v *validation) fields(a *spec.Action) params {
	if p, ok := v.params[a.Name]; ok {
		return p
	}
	p := params{list: a.Params, byName: make(map[string]*spec.Field, len(a.Params))}
	for i := range a.Params {
		p.byName[a.Params[i].Name] = &a.Params[i]
	}
	p.names = strings.Join(slices.Sorted(maps.Keys(p.byName)), ", ")
	if v.params == nil {
		v.params = map[string]params{}
	}
	v.params[a.Name] = p
	return p
}

func hasExpression(v *structpb.Value) bool {
	switch k := v.GetKind().(type) {
	case *structpb.Value_StringValue:
		return strings.Contains(k.StringValue, "${{")
	case *structpb.Value_StructValue:
		for _, e := range k.StructValue.GetFields() {
			if hasExpression(e) {
				return true
			}
		}
	case *structpb.Value_ListValue:
		for _, e := range k.ListValue.GetValues() {
			if hasExpression(e) {
				return true
			}
		}
	}
	return false
}

// value checks the expressions in every string of a with value.
func (v *validation) value(p site, val *structpb.Value, at where) {
	switch k := val.GetKind().(type) {
	case *structpb.Value_StringValue:
		v.template(p, k.StringValue, at)
	case *structpb.Value_StructValue:
		fields := k.StructValue.GetFields()
		if len(fields) < 2 {
			// Nothing to sort: a with of a million empty maps spent
			// most of its checking sorting their keys.
			for name, e := range fields {
				v.value(p.key(name), e, at)
			}
			return
		}
		for _, name := range slices.Sorted(maps.Keys(fields)) {
			v.value(p.key(name), fields[name], at)
		}
	case *structpb.Value_ListValue:
		for i, e := range k.ListValue.GetValues() {
			v.value(p.index(i), e, at)
		}
	}
}

// template checks the ${{ }} expressions of a string.
func (v *validation) template(p site, s string, at where) {
	if !strings.Contains(s, "${{") {
		return
	}
	t, err := expr.ParseTemplate(s)
	if err != nil {
		v.addAt(p, "%v", err)
		return
	}
	for _, piece := range t.Pieces {
		if piece.IsExpr {
			v.expression(p, piece.Expr, at, nil)
		}
	}
}

// bare checks the expression of an if, foreach or assert.
func (v *validation) bare(p site, s string, at where, want *cel.Type) {
	src := strings.TrimSpace(s)
	t, err := expr.ParseTemplate(src)
	if err != nil || (t.HasExpr() && !t.Lone()) {
		v.addAt(p, "write one expression, bare or in one ${{ }}")
		return
	}
	if t.Lone() {
		// As expr.Bare has it, without parsing the template again.
		src = t.Pieces[0].Expr
	}
	v.expression(p, src, at, want)
}

// expression type-checks src and the names it uses.
func (v *validation) expression(p site, src string, at where, want *cel.Type) {
	c, ok := v.compiled[src]
	if !ok {
		// Compiling is most of validation's cost, tens of microseconds
		// an expression and more for long ones: an expression written
		// many times is compiled once, and the different ones are held
		// to a budget so that no workflow takes long to check.
		v.exprCount++
		v.exprBytes += len(src)
		if v.exprCount > MaxExpressions || v.exprBytes > MaxExpressionBytes {
			if !v.overBudget {
				v.overBudget = true
				if v.exprCount > MaxExpressions {
					v.addAt(p, "more than %d different expressions in the workflow, the limit is %d", MaxExpressions, MaxExpressions)
				} else {
					v.addAt(p, "more than %s of different expressions in the workflow, the limit is %s", expr.FormatSize(MaxExpressionBytes), expr.FormatSize(MaxExpressionBytes))
				}
			}
			return
		}
		var checked *cel.Ast
		parsed, err := expr.Parse(src)
		if err == nil {
			// Checked before type-checking, which costs several times
			// what parsing does.
			if v.exprNodes += parsed.Nodes(); v.exprNodes > MaxExpressionNodes {
				if !v.overBudget {
					v.overBudget = true
					v.addAt(p, "more than %d syntax-tree nodes in the different expressions of the workflow, the limit is %d", MaxExpressionNodes, MaxExpressionNodes)
				}
				return
			}
			checked, err = v.checker.CheckParsed(parsed)
		}
		c = compiled{err: err}
		if err == nil {
			c.out = checked.OutputType()
			c.refs = expr.References(checked)
			// Sorted and each once, as the problems list them.
			c.refs.Idents = slices.Compact(slices.Sorted(slices.Values(c.refs.Idents)))
		}
		if v.compiled == nil {
			v.compiled = map[string]compiled{}
		}
		v.compiled[src] = c
	}
	src = quote(src)
	if c.err != nil {
		v.addAt(p, "${{ %s }}: %v", src, c.err)
		return
	}
	if want != nil {
		// A foreach may also walk a map's keys.
		got := c.out
		if k := got.Kind(); k != types.DynKind && k != want.Kind() && !(want.Kind() == types.ListKind && k == types.MapKind) {
			v.addAt(p, "${{ %s }}: gives %s, want %s", src, got, describeType(want))
		}
	}
	refs := c.refs
	for _, id := range refs.Steps {
		switch {
		case !v.allIDs[id]:
			v.addAt(p, "${{ %s }}: steps.%s: no step has id %q", src, id, id)
		case !v.finished[id]:
			v.addAt(p, "${{ %s }}: steps.%s: that step has not run yet here", src, id)
		}
	}
	if len(v.inputs) > 0 {
		for _, in := range refs.Inputs {
			if _, ok := v.inputs[in]; !ok {
				v.addAt(p, "${{ %s }}: inputs.%s: not an input of the workflow (it takes %s)", src, in, strings.Join(slices.Sorted(maps.Keys(v.inputs)), ", "))
			}
		}
	}
	for _, c := range refs.Credentials {
		if c.Field != "" && !slices.Contains(CredentialFields, c.Field) {
			v.addAt(p, "${{ %s }}: credentials.%s.%s: a credential has only username and password", src, c.Name, c.Field)
		}
	}
	for _, id := range refs.Idents {
		switch {
		case (id == expr.Item || id == expr.Index) && !at.inLoop:
			v.addAt(p, "${{ %s }}: %s exists only inside a foreach", src, id)
		case id == expr.Error && !at.inError:
			v.addAt(p, "${{ %s }}: error exists only in on_error steps", src)
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
