// Package engine runs workflows on the robot. The core engine here runs
// the core steps (log, set, delay, fail) with nested steps, if, step and
// workflow timeouts, continue_on_error and outputs; the full language and
// the step library fill the same Engine interface.
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

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

// Reporter receives what a running workflow says. It must be safe for
// concurrent use.
type Reporter interface {
	// Log writes a line of the job's log; level is debug, info, warn or
	// error.
	Log(level, stepID, message string)
	// Progress says how far the workflow got, 0 to 100.
	Progress(stepID string, percent int32, message string)
}

// Engine runs a workflow to its end and returns its outputs.
type Engine interface {
	Run(ctx context.Context, wf *casarev1.Workflow, inputs map[string]any, r Reporter) (map[string]any, error)
}

// Error is a workflow failure. Business errors say the data was wrong and
// are never retried; the others are application errors.
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

type core struct{}

// run is one workflow run: its scope of names.
type run struct {
	r      Reporter
	inputs map[string]any
	vars   map[string]any
	steps  map[string]any // step id -> {"outputs": {...}}
}

func (core) Run(ctx context.Context, wf *casarev1.Workflow, inputs map[string]any, r Reporter) (map[string]any, error) {
	if wf.GetTimeout() != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, wf.GetTimeout().AsDuration(), timedOut(wf.GetTimeout().AsDuration()))
		defer cancel()
	}
	in, err := applyInputs(wf.GetInputs(), inputs)
	if err != nil {
		return nil, err
	}
	x := &run{r: r, inputs: in, vars: map[string]any{}, steps: map[string]any{}}
	steps := wf.GetSteps()
	for i, s := range steps {
		r.Progress(s.GetId(), int32(i*100/len(steps)), "")
		if err := x.step(ctx, s); err != nil {
			if len(wf.GetOnError()) > 0 {
				x.onError(ctx, wf.GetOnError(), err)
			}
			return nil, err
		}
	}
	outputs := map[string]any{}
	for _, name := range slices.Sorted(maps.Keys(wf.GetOutputs())) {
		v, err := x.expand(wf.GetOutputs()[name])
		if err != nil {
			return nil, &Error{Message: "outputs." + name + ": " + err.Error()}
		}
		outputs[name] = v
	}
	r.Progress("", 100, "done")
	return outputs, nil
}

type timedOut time.Duration

func (t timedOut) Error() string { return "timed out after " + time.Duration(t).String() }

// applyInputs fills defaults and checks required inputs.
func applyInputs(specs map[string]*casarev1.InputSpec, given map[string]any) (map[string]any, error) {
	out := maps.Clone(given)
	if out == nil {
		out = map[string]any{}
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

// step runs one step with its if, timeout and continue_on_error.
func (x *run) step(ctx context.Context, s *casarev1.Step) error {
	if s.GetIf() != "" {
		ok, err := x.condition(s.GetIf())
		if err != nil {
			return &Error{StepID: s.GetId(), Message: err.Error()}
		}
		if !ok {
			x.r.Log("debug", s.GetId(), "skipped")
			return nil
		}
	}
	if s.GetForeach() != "" {
		return &Error{StepID: s.GetId(), Message: "foreach needs the full workflow engine"}
	}
	attempts := max(s.GetRetry().GetAttempts(), 1)
	var err error
	for try := int32(1); try <= attempts; try++ {
		err = x.once(ctx, s)
		var ee *Error
		if err == nil || ctx.Err() != nil || (errors.As(err, &ee) && ee.Business) || try == attempts {
			break
		}
		x.r.Log("warn", s.GetId(), fmt.Sprintf("attempt %d of %d failed: %v", try, attempts, err))
		if err := sleep(ctx, s.GetRetry().GetBackoff().AsDuration()); err != nil {
			return &Error{StepID: s.GetId(), Message: err.Error()}
		}
	}
	if err == nil {
		return nil
	}
	if len(s.GetOnError()) > 0 {
		x.onError(ctx, s.GetOnError(), err)
	}
	if s.GetContinueOnError() {
		x.r.Log("warn", s.GetId(), "failed, going on: "+err.Error())
		return nil
	}
	return err
}

// onError runs the steps that handle a failure, with vars.error set.
func (x *run) onError(ctx context.Context, steps []*casarev1.Step, cause error) {
	x.vars["error"] = cause.Error()
	for _, s := range steps {
		if err := x.step(ctx, s); err != nil {
			x.r.Log("error", s.GetId(), "on_error step failed: "+err.Error())
			return
		}
	}
}

func (x *run) once(ctx context.Context, s *casarev1.Step) error {
	if s.GetTimeout() != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, s.GetTimeout().AsDuration(), timedOut(s.GetTimeout().AsDuration()))
		defer cancel()
	}
	x.r.Log("debug", s.GetId(), "step started")
	if s.GetUses() == "" {
		for _, child := range s.GetSteps() {
			if err := x.step(ctx, child); err != nil {
				return err
			}
		}
		return nil
	}
	with := map[string]any{}
	if s.GetWith() != nil {
		expanded, err := x.expand(s.GetWith().AsMap())
		if err != nil {
			return &Error{StepID: s.GetId(), Message: err.Error()}
		}
		with = expanded.(map[string]any)
	}
	outputs, err := x.call(ctx, s.GetId(), s.GetUses(), with)
	if err != nil {
		var ee *Error
		if errors.As(err, &ee) {
			if ee.StepID == "" {
				ee.StepID = s.GetId()
			}
			return ee
		}
		return &Error{StepID: s.GetId(), Message: err.Error()}
	}
	x.steps[s.GetId()] = map[string]any{"outputs": outputs}
	return nil
}

// call runs one core step.
func (x *run) call(ctx context.Context, id, uses string, with map[string]any) (map[string]any, error) {
	switch uses {
	case "log":
		msg, ok := with["message"].(string)
		if !ok {
			return nil, &Error{Message: "with.message: required, a string", Business: true}
		}
		level := "info"
		if l, ok := with["level"].(string); ok {
			if !slices.Contains([]string{"debug", "info", "warn", "error"}, l) {
				return nil, &Error{Message: fmt.Sprintf("with.level: %q is not debug, info, warn or error", l), Business: true}
			}
			level = l
		}
		x.r.Log(level, id, msg)
		return map[string]any{"message": msg}, nil
	case "set":
		maps.Copy(x.vars, with)
		return with, nil
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
		msg := "failed by the workflow"
		if m, ok := with["message"].(string); ok && m != "" {
			msg = m
		}
		business, _ := with["business"].(bool)
		return nil, &Error{Message: msg, Business: business}
	}
	return nil, &Error{Message: fmt.Sprintf("unknown step %q; the core engine runs log, set, delay and fail", uses)}
}

func duration(v any) (time.Duration, error) {
	switch v := v.(type) {
	case string:
		d, err := time.ParseDuration(v)
		if err != nil {
			return 0, fmt.Errorf("%q is not a duration like 1.5s", v)
		}
		return d, nil
	case float64:
		return time.Duration(v * float64(time.Second)), nil
	case nil:
		return 0, errors.New("required: a duration like 1.5s or a number of seconds")
	}
	return 0, fmt.Errorf("want a duration like 1.5s or a number of seconds, got %v", v)
}

// sleep waits d or until ctx ends, saying why it ended.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return stopReason(ctx)
	}
}

// stopReason says in words why ctx ended.
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

var expression = regexp.MustCompile(`\$\{\{\s*([^}]*?)\s*\}\}`)

// expand replaces ${{ path }} in every string of v. A string that is one
// expression keeps the value's type.
func (x *run) expand(v any) (any, error) {
	switch v := v.(type) {
	case string:
		if m := expression.FindStringSubmatchIndex(v); m != nil && m[0] == 0 && m[1] == len(v) {
			return x.lookup(v[m[2]:m[3]])
		}
		var err error
		out := expression.ReplaceAllStringFunc(v, func(s string) string {
			val, lerr := x.lookup(expression.FindStringSubmatch(s)[1])
			if lerr != nil {
				err = lerr
				return ""
			}
			return format(val)
		})
		return out, err
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, item := range v {
			e, err := x.expand(item)
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

// lookup resolves a dotted path in the run's scope.
func (x *run) lookup(path string) (any, error) {
	parts := strings.Split(path, ".")
	var cur any = map[string]any{"inputs": x.inputs, "vars": x.vars, "steps": x.steps}
	for _, p := range parts {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("${{ %s }}: unknown name %q (the core engine resolves names like inputs.x, vars.x, steps.id.outputs.x)", path, path)
		}
		if cur, ok = m[p]; !ok {
			return nil, fmt.Errorf("${{ %s }}: unknown name %q", path, path)
		}
	}
	return cur, nil
}

// condition evaluates an if: true, false, or a name holding a bool.
func (x *run) condition(expr string) (bool, error) {
	expr = strings.TrimSpace(expr)
	if m := expression.FindStringSubmatch(expr); m != nil && m[0] == expr {
		expr = m[1]
	}
	switch expr {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	v, err := x.lookup(expr)
	if err != nil {
		return false, fmt.Errorf("if: %w (expressions beyond a name need the full workflow engine)", err)
	}
	b, ok := v.(bool)
	if !ok {
		return false, fmt.Errorf("if: %s is %v, not true or false", expr, v)
	}
	return b, nil
}

func format(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	case nil:
		return ""
	case bool, int, int64:
		return fmt.Sprint(v)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}
