// Package engine runs workflows on the robot.
//
// The core engine here knows only the core steps (log, set, delay, fail)
// and ${{ path }} substitution; the full language (CEL expressions, the
// browser and desktop step families) will replace it behind the same
// Engine interface, so the robot never depends on which one it runs.
package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

// Reporter receives what a running workflow says. Implementations must be
// safe for concurrent use.
type Reporter interface {
	// Log writes a line of the job's log; level is debug, info, warn or
	// error.
	Log(level, stepID, message string)
	// Progress says how far the workflow got, percent from 0 to 100.
	Progress(stepID string, percent int32, message string)
}

// Engine runs a workflow to its end and returns its outputs.
type Engine interface {
	Run(ctx context.Context, wf *casarev1.Workflow, inputs map[string]any, r Reporter) (outputs map[string]any, err error)
}

// Error is a workflow failure. Business errors say the data was wrong, so
// running again cannot help and they are never retried; the others are
// application errors.
type Error struct {
	StepID   string
	Message  string
	Business bool
}

func (e *Error) Error() string {
	if e.StepID == "" {
		return e.Message
	}
	return "step " + e.StepID + ": " + e.Message
}

// New returns the core engine.
func New() Engine { return core{} }

// core keeps no state so that one engine can run many jobs at once; each
// Run has its own scope.
type core struct{}

// run is the scope of one workflow run. Steps of a run execute one at a
// time, so it needs no lock.
type run struct {
	r      Reporter
	inputs map[string]any
	vars   map[string]any
	steps  map[string]any // step id -> {"outputs": {...}}
}

func (core) Run(ctx context.Context, wf *casarev1.Workflow, inputs map[string]any, r Reporter) (map[string]any, error) {
	jobCtx := ctx
	if d := wf.GetTimeout(); d != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, d.AsDuration(), timedOut(d.AsDuration()))
		defer cancel()
	}
	in, err := applyInputs(wf.GetInputs(), inputs)
	if err != nil {
		return nil, err
	}
	x := &run{r: r, inputs: in, vars: map[string]any{}, steps: map[string]any{}}
	outputs, err := x.workflow(ctx, wf)
	if err != nil {
		// A cancelled job has nobody to report to; but the workflow's own
		// timeout is a failure like any other, so its handlers run under
		// the job's context, which that timeout did not end.
		if len(wf.GetOnError()) > 0 && jobCtx.Err() == nil {
			x.onError(jobCtx, wf.GetOnError(), err)
		}
		return nil, err
	}
	r.Progress("", 100, "done")
	return outputs, nil
}

func (x *run) workflow(ctx context.Context, wf *casarev1.Workflow) (map[string]any, error) {
	steps := wf.GetSteps()
	for i, s := range steps {
		x.r.Progress(s.GetId(), int32(i*100/len(steps)), "")
		if err := x.step(ctx, s); err != nil {
			return nil, err
		}
	}
	// Never nil: the robot turns the map into the job's result, and an
	// empty result is not a missing one.
	outputs := map[string]any{}
	for _, name := range slices.Sorted(maps.Keys(wf.GetOutputs())) {
		v, err := x.expand(wf.GetOutputs()[name])
		if err != nil {
			return nil, &Error{Message: "outputs." + name + ": " + err.Error()}
		}
		outputs[name] = v
	}
	return outputs, nil
}

// timedOut is the cause given to deadlines the workflow sets, so that a
// step that overruns says which limit it hit.
type timedOut time.Duration

func (t timedOut) Error() string { return "timed out after " + time.Duration(t).String() }

// applyInputs fills defaults and checks required inputs, without changing
// the caller's map.
func applyInputs(specs map[string]*casarev1.InputSpec, given map[string]any) (map[string]any, error) {
	out := make(map[string]any, len(given)+len(specs))
	for k, v := range given {
		out[k] = normalize(v)
	}
	for _, name := range slices.Sorted(maps.Keys(specs)) {
		spec := specs[name]
		if _, ok := out[name]; ok {
			continue
		}
		if spec.GetDefault() != nil {
			out[name] = spec.GetDefault().AsInterface()
			continue
		}
		if spec.GetRequired() {
			return nil, &Error{Message: "input " + name + " is required", Business: true}
		}
	}
	return out, nil
}

// normalize turns Go values into the JSON-like forms a workflow sees
// (float64, string, bool, nil, []any, map[string]any), so that inputs
// given as int or []string behave like those that came over the wire.
func normalize(v any) any {
	if pv, err := structpb.NewValue(v); err == nil {
		return pv.AsInterface()
	}
	// structpb takes only []any and map[string]any; JSON takes any slice,
	// map or struct a Go caller may pass.
	b, err := json.Marshal(v)
	if err != nil {
		return v
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		return v
	}
	return out
}

// step runs one step with its if, foreach, on_error and
// continue_on_error.
func (x *run) step(ctx context.Context, s *casarev1.Step) error {
	id := s.GetId()
	// Checked before every step, not only in delays, so that a cancelled
	// job stops at once even when its remaining steps never wait.
	if ctx.Err() != nil {
		return &Error{StepID: id, Message: stopReason(ctx).Error()}
	}
	if s.GetIf() != "" {
		ok, err := x.condition(s.GetIf())
		if err != nil {
			return &Error{StepID: id, Message: "if: " + err.Error()}
		}
		if !ok {
			x.r.Log("debug", id, "skipped")
			return nil
		}
	}
	err := x.body(ctx, s)
	if err == nil {
		return nil
	}
	// When the job or an enclosing step ran out of time, this step did not
	// fail on its own: neither its handlers nor continue_on_error apply.
	if ctx.Err() != nil {
		return err
	}
	if len(s.GetOnError()) > 0 {
		x.onError(ctx, s.GetOnError(), err)
	}
	if s.GetContinueOnError() {
		x.r.Log("warn", id, "failed, going on: "+err.Error())
		return nil
	}
	return err
}

// onError runs the steps that handle a failure, with vars.error set. The
// failure stands whatever they do; theirs are only logged, so the job's
// error stays the one that caused it.
func (x *run) onError(ctx context.Context, steps []*casarev1.Step, cause error) {
	x.vars["error"] = cause.Error()
	for _, s := range steps {
		if err := x.step(ctx, s); err != nil {
			x.r.Log("error", s.GetId(), "on_error step failed: "+err.Error())
			return
		}
	}
}

// body runs a step once, or once per item of its foreach, and records its
// outputs.
func (x *run) body(ctx context.Context, s *casarev1.Step) error {
	id := s.GetId()
	if s.GetForeach() == "" {
		out, err := x.attempts(ctx, s)
		if err == nil && s.GetUses() != "" {
			x.steps[id] = map[string]any{"outputs": out}
		}
		return err
	}
	items, err := x.list(s.GetForeach())
	if err != nil {
		return &Error{StepID: id, Message: "foreach: " + err.Error()}
	}
	// Nested loops must see their own item, and the outer one again once
	// the inner loop ends.
	for _, name := range []string{"item", "index"} {
		if old, ok := x.vars[name]; ok {
			defer func() { x.vars[name] = old }()
		} else {
			defer delete(x.vars, name)
		}
	}
	results := make([]any, 0, len(items))
	for i, item := range items {
		if ctx.Err() != nil {
			return &Error{StepID: id, Message: stopReason(ctx).Error()}
		}
		x.vars["item"], x.vars["index"] = item, i
		x.r.Log("debug", id, fmt.Sprintf("item %d of %d", i+1, len(items)))
		out, err := x.attempts(ctx, s)
		if err != nil {
			return err
		}
		if out == nil {
			out = map[string]any{}
		}
		results = append(results, out)
	}
	if s.GetUses() != "" {
		x.steps[id] = map[string]any{"outputs": map[string]any{"results": results}}
	}
	return nil
}

// maxBackoff caps the doubling of retry waits at the longest wait a
// workflow may ask for, so many attempts cannot overflow.
const maxBackoff = time.Hour

// attempts runs a step as often as its retry allows. Business errors are
// not retried: the same data would fail the same way.
func (x *run) attempts(ctx context.Context, s *casarev1.Step) (map[string]any, error) {
	n := max(s.GetRetry().GetAttempts(), 1)
	backoff := s.GetRetry().GetBackoff().AsDuration()
	for try := int32(1); ; try++ {
		out, err := x.once(ctx, s)
		var ee *Error
		if err == nil || try >= n || ctx.Err() != nil || (errors.As(err, &ee) && ee.Business) {
			return out, err
		}
		x.r.Log("warn", s.GetId(), fmt.Sprintf("attempt %d of %d failed, retrying in %s: %v", try, n, backoff, err))
		if err := sleep(ctx, backoff); err != nil {
			return nil, &Error{StepID: s.GetId(), Message: err.Error()}
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

// once runs a step one time under its timeout.
func (x *run) once(ctx context.Context, s *casarev1.Step) (map[string]any, error) {
	id := s.GetId()
	if t := s.GetTimeout(); t != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, t.AsDuration(), timedOut(t.AsDuration()))
		defer cancel()
	}
	x.r.Log("debug", id, "step started")
	if s.GetUses() == "" {
		for _, child := range s.GetSteps() {
			if err := x.step(ctx, child); err != nil {
				return nil, err
			}
		}
		return nil, nil
	}
	with := map[string]any{}
	if s.GetWith() != nil {
		expanded, err := x.expand(s.GetWith().AsMap())
		if err != nil {
			return nil, &Error{StepID: id, Message: err.Error()}
		}
		with = expanded.(map[string]any)
	}
	outputs, err := x.call(ctx, id, s.GetUses(), with)
	if err == nil && ctx.Err() != nil {
		// A step that finished after its limit still overran it.
		err = stopReason(ctx)
	}
	if err != nil {
		var ee *Error
		if errors.As(err, &ee) {
			if ee.StepID == "" {
				ee.StepID = id
			}
			return nil, ee
		}
		return nil, &Error{StepID: id, Message: err.Error()}
	}
	return outputs, nil
}

// call runs one core step.
func (x *run) call(ctx context.Context, id, uses string, with map[string]any) (map[string]any, error) {
	switch uses {
	case "log":
		msg, err := text(with, "message", "")
		if err != nil {
			return nil, err
		}
		level, err := text(with, "level", "info")
		if err != nil {
			return nil, err
		}
		if !slices.Contains([]string{"debug", "info", "warn", "error"}, level) {
			return nil, &Error{Message: fmt.Sprintf("with.level: %q is not debug, info, warn or error", level), Business: true}
		}
		x.r.Log(level, id, msg)
		return map[string]any{"message": msg}, nil
	case "set":
		maps.Copy(x.vars, with)
		return maps.Clone(with), nil
	case "delay":
		d, err := duration(with["duration"])
		if err != nil {
			return nil, &Error{Message: "with.duration: " + err.Error(), Business: true}
		}
		if err := sleep(ctx, d); err != nil {
			return nil, &Error{Message: err.Error()}
		}
		return map[string]any{}, nil
	case "fail":
		msg, err := text(with, "message", "failed by the workflow")
		if err != nil {
			return nil, err
		}
		business := false
		if v, ok := with["business"]; ok && v != nil {
			if business, ok = v.(bool); !ok {
				return nil, &Error{Message: fmt.Sprintf("with.business: want true or false, got %s", describe(v)), Business: true}
			}
		}
		return nil, &Error{Message: msg, Business: business}
	}
	return nil, &Error{Message: fmt.Sprintf("unknown step %q; the core engine runs log, set, delay, fail", uses)}
}

// text reads a text parameter. Numbers and booleans are accepted as their
// text because a lone ${{ path }} keeps its value's type, and writing
// message: ${{ vars.count }} should still log the count. An empty def
// makes the parameter required.
func text(with map[string]any, name, def string) (string, error) {
	v, ok := with[name]
	if !ok || v == nil {
		if def == "" {
			return "", &Error{Message: "with." + name + ": required, a string", Business: true}
		}
		return def, nil
	}
	switch v := v.(type) {
	case string:
		if v == "" && def != "" {
			return def, nil
		}
		return v, nil
	case float64, bool:
		return format(v), nil
	}
	return "", &Error{Message: fmt.Sprintf("with.%s: want a string, got %s", name, describe(v)), Business: true}
}

func duration(v any) (time.Duration, error) {
	var d time.Duration
	switch v := v.(type) {
	case string:
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			return 0, fmt.Errorf("%q is not a duration like 1.5s", v)
		}
	case float64:
		d = time.Duration(v * float64(time.Second))
	case nil:
		return 0, errors.New("required: a duration like 1.5s or a number of seconds")
	default:
		return 0, fmt.Errorf("want a duration like 1.5s or a number of seconds, got %s", describe(v))
	}
	if d < 0 {
		return 0, fmt.Errorf("%v is negative", v)
	}
	return d, nil
}

// sleep waits d or until ctx ends, saying why it ended.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		if ctx.Err() != nil {
			return stopReason(ctx)
		}
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return stopReason(ctx)
	}
}

// stopReason says in words why ctx ended: a limit the workflow set names
// its length; a deadline from outside cannot, and anything else is the
// job being cancelled.
func stopReason(ctx context.Context) error {
	var t timedOut
	if cause := context.Cause(ctx); errors.As(cause, &t) {
		return t
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return errors.New("timed out: the job's deadline passed")
	}
	return errors.New("cancelled")
}

var (
	expression = regexp.MustCompile(`\$\{\{\s*([^}]*?)\s*\}\}`)
	// A path is what the core engine resolves; anything richer (operators,
	// calls, literals) is left to the full engine rather than half-parsed.
	pathSyntax = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_-]+)*$`)
)

// expand replaces ${{ path }} in every string of v. A string that is one
// expression keeps the value's type, so numbers and maps pass through
// steps unchanged.
func (x *run) expand(v any) (any, error) {
	switch v := v.(type) {
	case string:
		if m := expression.FindStringSubmatchIndex(v); m != nil && m[0] == 0 && m[1] == len(v) {
			return x.lookup(v[m[2]:m[3]])
		}
		var err error
		out := expression.ReplaceAllStringFunc(v, func(s string) string {
			if err != nil {
				return ""
			}
			val, lerr := x.lookup(expression.FindStringSubmatch(s)[1])
			if lerr != nil {
				err = lerr
				return ""
			}
			return format(val)
		})
		if err != nil {
			return nil, err
		}
		return out, nil
	case map[string]any:
		out := make(map[string]any, len(v))
		for _, k := range slices.Sorted(maps.Keys(v)) {
			e, err := x.expand(v[k])
			if err != nil {
				return nil, err
			}
			out[k] = e
		}
		return out, nil
	case []any:
		out := make([]any, len(v))
		for i, item := range v {
			e, err := x.expand(item)
			if err != nil {
				return nil, err
			}
			out[i] = e
		}
		return out, nil
	}
	return v, nil
}

// lookup resolves a dotted path in the run's scope; a number indexes a
// list.
func (x *run) lookup(path string) (any, error) {
	if !pathSyntax.MatchString(path) {
		return nil, fmt.Errorf("${{ %s }}: expressions beyond a path like inputs.name need the full engine", path)
	}
	var cur any = map[string]any{"inputs": x.inputs, "vars": x.vars, "steps": x.steps}
	for _, p := range strings.Split(path, ".") {
		ok := false
		switch c := cur.(type) {
		case map[string]any:
			cur, ok = c[p]
		case []any:
			if i, err := strconv.Atoi(p); err == nil && i >= 0 && i < len(c) {
				cur, ok = c[i], true
			}
		}
		if !ok {
			return nil, fmt.Errorf("${{ %s }}: unknown name %q", path, path)
		}
	}
	return cur, nil
}

// list resolves a foreach: a path, bare or in ${{ }}, to a list.
func (x *run) list(expr string) ([]any, error) {
	v, err := x.lookup(unwrap(expr))
	if err != nil {
		return nil, err
	}
	// Inputs are normalized and vars come from structpb, so every list is
	// a []any.
	if l, ok := v.([]any); ok {
		return l, nil
	}
	return nil, fmt.Errorf("%s is %s, not a list", unwrap(expr), describe(v))
}

// unwrap takes the path out of "${{ path }}"; a bare path stays as it is.
func unwrap(expr string) string {
	expr = strings.TrimSpace(expr)
	if m := expression.FindStringSubmatch(expr); m != nil && m[0] == expr {
		return m[1]
	}
	return expr
}

// condition evaluates an if: true, false, or a path holding a bool.
func (x *run) condition(expr string) (bool, error) {
	e := unwrap(expr)
	switch e {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	if !pathSyntax.MatchString(e) {
		return false, fmt.Errorf("%q: if expressions beyond a path need the full engine", expr)
	}
	v, err := x.lookup(e)
	if err != nil {
		return false, err
	}
	b, ok := v.(bool)
	if !ok {
		return false, fmt.Errorf("%s is %s, not true or false", e, describe(v))
	}
	return b, nil
}

// format writes a value into text: integral numbers without a trailing
// .0, maps and lists as JSON.
func format(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	case float32:
		return strconv.FormatFloat(float64(v), 'f', -1, 32)
	case nil:
		return ""
	case bool, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64:
		return fmt.Sprint(v)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// describe names a value's kind for error messages, in workflow terms.
func describe(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case string:
		return fmt.Sprintf("the string %q", v)
	case bool:
		return fmt.Sprint(v)
	case float64, float32, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64:
		return "the number " + format(v)
	case map[string]any:
		return "a map"
	case []any:
		return "a list"
	}
	return fmt.Sprintf("a %T", v)
}
