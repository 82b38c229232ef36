// Package core defines the steps every robot runs: log, set, delay, fail
// and assert. log and set reach into the running workflow (its log lines
// name the step, set writes variables), which they find through the Scope
// the engine puts in the step's context.
package core

import (
	"context"
	"fmt"
	"maps"
	"time"

	"github.com/casarerpa/casare/agent/step"
	"github.com/casarerpa/casare/agent/workflow/expr"
	"github.com/casarerpa/casare/agent/workflow/spec"
)

// Scope is what the engine lends a running core step.
type Scope interface {
	// Log writes a line of the job's log under the running step.
	Log(level, message string)
	// SetVars makes each key a variable, vars.KEY.
	SetVars(vars map[string]any)
}

type scopeKey struct{}

// WithScope returns ctx carrying the scope core steps use.
func WithScope(ctx context.Context, s Scope) context.Context {
	return context.WithValue(ctx, scopeKey{}, s)
}

func scopeOf(ctx context.Context) Scope {
	s, _ := ctx.Value(scopeKey{}).(Scope)
	return s
}

// Actions returns the core steps.
func Actions() []*step.Action {
	return []*step.Action{Log, Set, Delay, Fail, Assert}
}

// Limits of the texts core steps make. The engine holds every log line and
// error to the same limits; cutting here as well keeps a log step's output
// the line that was written.
const (
	// MaxLogMessage bounds the line a log step writes.
	MaxLogMessage = 64 << 10
	// MaxFailMessage bounds the message a fail or assert step fails with.
	MaxFailMessage = 16 << 10
)

// Levels are the log levels a workflow may write at.
var Levels = []string{"debug", "info", "warn", "error"}

type logParams struct {
	Message Text   `json:"message" step:"required" doc:"The line to write; numbers and booleans are written as text."`
	Level   string `json:"level" doc:"debug, info (the default), warn or error."`
}

type logOutputs struct {
	Message string `json:"message" doc:"The line as written."`
}

// Log writes a line to the job's log.
var Log = step.Define("log", "Writes a line to the job's log.",
	func(ctx context.Context, env *step.Env, p logParams) (logOutputs, error) {
		level := p.Level
		switch level {
		case "":
			level = "info"
		case "debug", "info", "warn", "error":
		default:
			return logOutputs{}, step.Businessf("with.level: %q is not debug, info, warn or error", p.Level)
		}
		line := expr.Truncate(string(p.Message), MaxLogMessage)
		if s := scopeOf(ctx); s != nil {
			s.Log(level, line)
		} else {
			env.Logf(level, "%s", line)
		}
		return logOutputs{Message: line}, nil
	},
	step.Rejects("the level is not debug, info, warn or error"))

// Set makes every parameter a variable and an output.
var Set = step.Define("set", "Sets variables: every key of with becomes vars.KEY and an output of the step.",
	func(ctx context.Context, _ *step.Env, p map[string]any) (map[string]any, error) {
		out := maps.Clone(p)
		if out == nil {
			out = map[string]any{}
		}
		if s := scopeOf(ctx); s != nil {
			s.SetVars(out)
		}
		return out, nil
	})

type delayParams struct {
	Duration step.Duration `json:"duration" step:"required" doc:"How long to wait, like 1.5s or 2m, or a number of seconds."`
}

// Delay waits.
var Delay = step.Define("delay", "Waits for a while; a cancelled job stops waiting at once.",
	func(ctx context.Context, _ *step.Env, p delayParams) (struct{}, error) {
		if d := p.Duration.D(); d > 0 {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-t.C:
			case <-ctx.Done():
				return struct{}{}, context.Cause(ctx)
			}
		}
		return struct{}{}, nil
	},
	step.Rejects("the duration is not a duration or is negative"),
	step.Fails("the step's or job's time runs out while waiting"))

type failParams struct {
	Message  Text `json:"message" doc:"Why the workflow fails; \"failed by the workflow\" when empty."`
	Business bool `json:"business" doc:"True when the data was wrong: a business error, never retried."`
}

// Fail ends the step with an error.
var Fail = step.Define("fail", "Fails the step with a message, as an application error or, with business: true, a business error.",
	func(_ context.Context, _ *step.Env, p failParams) (struct{}, error) {
		msg := expr.Truncate(string(p.Message), MaxFailMessage)
		if msg == "" {
			msg = "failed by the workflow"
		}
		return struct{}{}, &step.Error{Message: msg, Business: p.Business}
	},
	step.Fails("always, unless business is true"),
	step.Rejects("always, when business is true"))

type assertParams struct {
	Condition any  `json:"condition" step:"required" doc:"A CEL expression, or a boolean already evaluated (${{ expr }}); it must hold."`
	Message   Text `json:"message" doc:"What the failure says; the condition when empty."`
}

type assertOutputs struct{}

// Condition evaluates an assertion's condition given as text. The engine
// sets it, because only the engine knows the workflow's scope.
type Condition func(ctx context.Context, expression string) (bool, error)

type conditionKey struct{}

// WithCondition returns ctx carrying the evaluator assert uses for a
// condition written as an expression.
func WithCondition(ctx context.Context, c Condition) context.Context {
	return context.WithValue(ctx, conditionKey{}, c)
}

// Assert fails with a business error when its condition does not hold.
var Assert = step.Define("assert", "Checks that a condition holds; when it does not, the step fails with a business error.",
	func(ctx context.Context, _ *step.Env, p assertParams) (assertOutputs, error) {
		var ok bool
		switch c := p.Condition.(type) {
		case bool:
			ok = c
		case string:
			eval, _ := ctx.Value(conditionKey{}).(Condition)
			if eval == nil {
				return assertOutputs{}, step.Businessf("with.condition: %q needs the workflow engine to evaluate", c)
			}
			var err error
			if ok, err = eval(ctx, c); err != nil {
				return assertOutputs{}, step.Businessf("with.condition: %v", err)
			}
		default:
			return assertOutputs{}, step.Businessf("with.condition: want an expression or true or false, got %T", c)
		}
		if ok {
			return assertOutputs{}, nil
		}
		msg := string(p.Message)
		if msg == "" {
			msg = fmt.Sprintf("assertion failed: %v", p.Condition)
		}
		return assertOutputs{}, step.Businessf("%s", expr.Truncate(msg, MaxFailMessage))
	},
	step.Rejects("the condition does not hold"))

// Text is a text parameter that also takes numbers and booleans as their
// text, because a lone ${{ vars.count }} keeps its value's type and
// writing it into a message should still work.
type Text string

func (t *Text) UnmarshalJSON(b []byte) error {
	text, err := spec.DecodeText(b)
	if err != nil {
		return err
	}
	*t = Text(text)
	return nil
}

// LiteralKind says a workflow writes a Text as spec.DecodeText reads it.
func (Text) LiteralKind() spec.Kind { return spec.Text }
