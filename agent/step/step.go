// Package step defines what a workflow step is: a named action with typed,
// documented parameters and outputs. The step families (core, http, file,
// csv and excel, shell, browser) live in packages of their own and describe
// their actions with Define; the engine runs them, the validator checks
// workflows against them and the catalogue documents them, all from the
// same definitions, so the documentation cannot drift from the code.
package step

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"sync"

	"github.com/casarerpa/casare/agent/workflow/spec"
)

// Action is one kind of step, named family.action (browser.click) or a core
// name (log).
type Action struct {
	// Name is what a workflow writes in uses.
	Name string
	// Summary is one sentence for the catalogue.
	Summary string
	// Capability is what a robot must advertise to run the action; empty
	// when every robot can.
	Capability string
	// Params is the struct type `with` decodes into, nil when the action
	// takes any parameters (set).
	Params reflect.Type
	// Outputs is the struct type of the outputs, nil when they are free
	// form.
	Outputs reflect.Type
	// Errors documents how the action fails.
	Errors []ErrorDoc
	// Nested says the step has nested steps, which the action runs
	// through a Body (queue.process); other actions take none.
	Nested bool
	// AfterSteps names the parameters of a construct the engine evaluates
	// after the nested steps of each round, not before the action runs:
	// the action never sees them, and gets them from its Body instead.
	AfterSteps []string

	run func(ctx context.Context, env *Env, with map[string]any, body Body) (map[string]any, error)
}

// Body runs the nested steps of a construct's step once, with item and
// index in scope as foreach gives them, and returns the round's result:
// the AfterSteps parameters evaluated after them, by name, and their
// outputs by step id. Its errors are *Error, business when the failing
// step's was.
type Body func(ctx context.Context, item any, index int) (Round, error)

// Round is what one run of a construct's nested steps gave.
type Round struct {
	// Params holds the AfterSteps parameters the step sets, evaluated.
	Params map[string]any
	// Outputs holds the nested steps' outputs by step id.
	Outputs map[string]any
}

// EvaluatedAfterSteps says a construct's parameter names are evaluated
// after its nested steps, once per round (see Action.AfterSteps).
func EvaluatedAfterSteps(names ...string) Option {
	return func(a *Action) { a.AfterSteps = append(a.AfterSteps, names...) }
}

// ErrorDoc documents one way an action fails.
type ErrorDoc = spec.ErrorDoc

// Option refines a definition.
type Option func(*Action)

// NeedsCapability says robots must advertise capability to run the action.
func NeedsCapability(capability string) Option {
	return func(a *Action) { a.Capability = capability }
}

// Fails documents an application error (the system failed; retry may help).
func Fails(when string) Option {
	return func(a *Action) { a.Errors = append(a.Errors, ErrorDoc{When: when}) }
}

// Rejects documents a business error (the data was wrong; never retried).
func Rejects(when string) Option {
	return func(a *Action) { a.Errors = append(a.Errors, ErrorDoc{When: when, Business: true}) }
}

// Define describes an action whose parameters decode into P and whose
// outputs encode from O. P and O are structs whose fields carry json tags
// (the names a workflow uses) and doc tags (what the catalogue says);
// `step:"required"` marks a parameter that must be given. Either may be
// map[string]any for free-form parameters or outputs. A parameter type
// that decodes itself says what it takes with a LiteralKind method; a
// parameter of a type Shape cannot describe is a programming error.
func Define[P, O any](name, summary string, run func(ctx context.Context, env *Env, p P) (O, error), opts ...Option) *Action {
	return define(name, summary, false, func(ctx context.Context, env *Env, p P, _ Body) (O, error) {
		return run(ctx, env, p)
	}, opts...)
}

// DefineConstruct describes, as Define does, an action whose step has
// nested steps that it runs through body, as many times as it decides.
func DefineConstruct[P, O any](name, summary string, run func(ctx context.Context, env *Env, p P, body Body) (O, error), opts ...Option) *Action {
	return define(name, summary, true, run, opts...)
}

func define[P, O any](name, summary string, nested bool, run func(ctx context.Context, env *Env, p P, body Body) (O, error), opts ...Option) *Action {
	a := &Action{Name: name, Summary: summary, Nested: nested}
	if t := reflect.TypeFor[P](); t.Kind() == reflect.Struct {
		a.Params = t
	}
	if t := reflect.TypeFor[O](); t.Kind() == reflect.Struct {
		a.Outputs = t
	}
	for _, o := range opts {
		o(a)
	}
	if _, err := paramSpecs(a.Params); err != nil {
		// A parameter the validator cannot describe would be checked
		// differently from how the robot decodes it.
		panic("step: " + name + ": " + err.Error())
	}
	a.run = func(ctx context.Context, env *Env, with map[string]any, body Body) (map[string]any, error) {
		var p P
		if err := Decode(with, &p); err != nil {
			return nil, err
		}
		out, err := run(ctx, env, p, body)
		if err != nil {
			return nil, err
		}
		return encode(out)
	}
	return a
}

// Run decodes with into the action's parameters and runs it. with holds
// values already expanded by the engine (JSON-like: string, float64, bool,
// nil, []any, map[string]any).
func (a *Action) Run(ctx context.Context, env *Env, with map[string]any) (map[string]any, error) {
	if a.Nested {
		return nil, Businessf("%s needs nested steps to run", a.Name)
	}
	return a.run(ctx, env, with, nil)
}

// RunNested runs a construct (Nested) with the body that runs its step's
// nested steps; for any other action it is Run.
func (a *Action) RunNested(ctx context.Context, env *Env, with map[string]any, body Body) (map[string]any, error) {
	if !a.Nested {
		return a.Run(ctx, env, with)
	}
	return a.run(ctx, env, with, body)
}

// Decode turns expanded parameters into a typed value. Unknown and missing
// required parameters are business errors naming the parameter, as
// "with.url: required".
func Decode(with map[string]any, into any) error {
	if m, ok := into.(*map[string]any); ok {
		*m = with
		return nil
	}
	if t := reflect.TypeOf(into).Elem(); t.Kind() == reflect.Struct {
		for _, f := range Fields(t) {
			if v, ok := with[f.Name]; f.Required && (!ok || v == nil) {
				return Businessf("with.%s: required", f.Name)
			}
		}
	}
	data, err := json.Marshal(with)
	if err != nil {
		return Businessf("with: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(into); err != nil {
		return Businessf("%s", decodeProblem(err))
	}
	return nil
}

// decodeProblem names the parameter a JSON decoding error is about.
func decodeProblem(err error) string {
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) {
		return fmt.Sprintf("with.%s: want %s, got %s", typeErr.Field, describeKind(typeErr.Type), typeErr.Value)
	}
	msg := err.Error()
	if field, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		return "with." + strings.Trim(field, `"`) + ": unknown parameter"
	}
	return "with: " + strings.TrimPrefix(msg, "json: ")
}

func describeKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int32, reflect.Int64, reflect.Uint, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "an object"
	}
	return t.String()
}

// encode turns outputs into the JSON-like map the workflow addresses as
// steps.ID.outputs.
func encode(out any) (map[string]any, error) {
	if m, ok := out.(map[string]any); ok {
		if m == nil {
			m = map[string]any{}
		}
		return m, nil
	}
	data, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("encode outputs: %w", err)
	}
	m := map[string]any{}
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("encode outputs: %w", err)
	}
	return m, nil
}

// Field documents one parameter or output.
type Field = spec.Field

// Fields lists the documented fields of a parameter or output struct, in
// declaration order.
func Fields(t reflect.Type) []Field {
	if t == nil {
		return nil
	}
	var out []Field
	for f := range t.Fields() {
		name := jsonName(f)
		if name == "" {
			continue
		}
		out = append(out, Field{
			Name:     name,
			Type:     TypeName(f.Type),
			Required: f.Tag.Get("step") == "required",
			Doc:      f.Tag.Get("doc"),
		})
	}
	return out
}

// jsonName is the name a workflow gives the field, empty for a field
// encoding/json skips.
func jsonName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
	switch name {
	case "-":
		return ""
	case "":
		return f.Name
	}
	return name
}

// TypeName is how the catalogue names a Go type.
func TypeName(t reflect.Type) string {
	if t == reflect.TypeFor[Duration]() {
		return "duration"
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Int, reflect.Int32, reflect.Int64, reflect.Uint, reflect.Uint32, reflect.Uint64:
		return "integer"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Slice, reflect.Array:
		return "list of " + TypeName(t.Elem())
	case reflect.Pointer:
		return TypeName(t.Elem())
	case reflect.Interface:
		return "any"
	}
	return "object"
}

// Env is what a step sees of the job it runs in. One Env serves one job; it
// is safe for concurrent use because foreach may run iterations at once.
type Env struct {
	// JobID identifies the job, for names of files and artifacts.
	JobID string
	// Attempt is the job's attempt number, from 1; zero in a local run.
	Attempt int32
	// WorkDir is the job's own directory. File steps are confined to it
	// and to Roots.
	WorkDir string
	// Roots are further directories the robot's configuration lets file
	// steps reach.
	Roots []string
	// Log writes a line to the job's log; level is debug, info, warn or
	// error.
	Log func(level, message string)
	// SaveArtifact stores a file the job produced (a screenshot) where the
	// API can return it. It may be nil when nothing stores artifacts, as
	// in a local run, and then steps keep the file in WorkDir only.
	SaveArtifact func(name, contentType string, data []byte) error
	// WorkItems reaches the control plane's work queues for the queue
	// steps. It is nil when there is no control plane, as in a local run,
	// and the queue steps then fail with ErrNoControlPlane.
	WorkItems WorkItems

	mu        sync.Mutex
	resources map[string]io.Closer
	order     []string
	closed    bool
}

// Resource returns the job's resource under key (its browser), opening it on
// first use. Resources live until Close, which the robot calls when the job
// ends for any reason: success, failure, cancel, timeout or drain.
func (e *Env) Resource(key string, open func() (io.Closer, error)) (io.Closer, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, errors.New("the job has ended")
	}
	if r, ok := e.resources[key]; ok {
		return r, nil
	}
	r, err := open()
	if err != nil {
		return nil, err
	}
	if e.resources == nil {
		e.resources = map[string]io.Closer{}
	}
	e.resources[key] = r
	e.order = append(e.order, key)
	return r, nil
}

// Forget drops a resource the step closed itself (browser.close), so that
// the next use opens a new one.
func (e *Env) Forget(key string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.resources, key)
}

// Close closes every resource the job opened, newest first.
func (e *Env) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.closed = true
	var errs []error
	for i := len(e.order) - 1; i >= 0; i-- {
		if r, ok := e.resources[e.order[i]]; ok {
			errs = append(errs, r.Close())
		}
	}
	e.resources, e.order = nil, nil
	return errors.Join(errs...)
}

// Logf writes a formatted line at level to the job's log, if it has one.
func (e *Env) Logf(level, format string, args ...any) {
	if e != nil && e.Log != nil {
		e.Log(level, fmt.Sprintf(format, args...))
	}
}
