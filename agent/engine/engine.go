// Package engine runs workflows on the robot: steps from a catalogue, CEL
// expressions, conditions, loops, retries, time limits and error handlers.
package engine

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/casarerpa/casare/agent/step"
	"github.com/casarerpa/casare/agent/step/core"
	"github.com/casarerpa/casare/agent/workflow/expr"
	"github.com/casarerpa/casare/agent/workflow/secret"
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
	// Run runs wf with inputs. env is the job's: the caller creates it,
	// owns its work directory and closes it when the job ends; nil gives
	// the run an empty one of its own. While a workflow with secret
	// inputs runs, env.Log is wrapped to mask them, and restored after.
	// Failures are *Error.
	Run(ctx context.Context, wf *casarev1.Workflow, inputs map[string]any, env *step.Env, r Reporter) (outputs map[string]any, err error)
	// RunWithAssets is Run for a job that reads assets: expressions see
	// them as assets and credentials, and every secret and password
	// among them is masked like a secret input.
	RunWithAssets(ctx context.Context, wf *casarev1.Workflow, inputs map[string]any, assets Assets, env *step.Env, r Reporter) (outputs map[string]any, err error)
}

// Assets are the control plane's assets as a job gets them, resolved for
// the robot. They live in memory for the run only.
type Assets struct {
	// Values are the values of assets.NAME.
	Values map[string]any
	// Credentials are credentials.NAME, each with username and password.
	Credentials map[string]map[string]string
	// Secrets are the texts to mask: secret values and passwords.
	Secrets []string
}

// Options configures an engine.
type Options struct {
	// Capabilities are the robot's; a step whose action needs another
	// fails with a business error.
	Capabilities []string
	// CostLimit bounds the work of one expression evaluation; zero means
	// expr.DefaultCostLimit.
	CostLimit uint64
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

// New returns an engine that runs the actions of cat.
func New(cat step.Catalogue, opts Options) Engine {
	return &engine{cat: cat, opts: opts, cache: newCache()}
}

// engine keeps no state of its own runs, so that one engine can run many
// jobs at once; what it does keep, compiled expressions, is immutable.
type engine struct {
	cat   step.Catalogue
	opts  Options
	cache *cache
}

// run is the state of one workflow run.
type run struct {
	e   *engine
	r   Reporter
	env *step.Env
	// ms hides the secret inputs and what the run derives from them; it
	// grows as tainted expressions give values.
	ms *secret.Masker
	// secretInputs names the inputs declared secret.
	secretInputs map[string]bool

	// mu guards vars, the steps maps of every frame and the taint of
	// vars and steps: foreach iterations may run at once. Expressions
	// read them under RLock for the whole evaluation.
	mu     sync.RWMutex
	inputs map[string]any
	vars   map[string]any
	job    map[string]any
	// taintedVars and taintedSteps name the variables and the steps whose
	// outputs hold values derived from a secret.
	taintedVars  map[string]bool
	taintedSteps map[string]bool
	// assets and credentials are read only.
	assets      map[string]any
	credentials map[string]any
	// secretAssets names the assets of type secret: what an expression
	// derives from them is masked too.
	secretAssets map[string]bool
}

func (e *engine) Run(ctx context.Context, wf *casarev1.Workflow, inputs map[string]any, env *step.Env, r Reporter) (map[string]any, error) {
	return e.RunWithAssets(ctx, wf, inputs, Assets{}, env, r)
}

func (e *engine) RunWithAssets(ctx context.Context, wf *casarev1.Workflow, inputs map[string]any, assets Assets, env *step.Env, r Reporter) (map[string]any, error) {
	if env == nil {
		env = &step.Env{}
		defer env.Close()
	}
	in, secrets, err := applyInputs(wf.GetInputs(), inputs)
	if err != nil {
		return nil, err
	}
	for _, s := range assets.Secrets {
		if s != "" {
			secrets = append(secrets, s)
		}
	}
	if assets.Values == nil {
		assets.Values = map[string]any{}
	}
	creds := make(map[string]any, len(assets.Credentials))
	for name, c := range assets.Credentials {
		creds[name] = map[string]any{"username": c["username"], "password": c["password"]}
	}
	x := &run{
		e: e, env: env, ms: secret.New(secrets...), secretInputs: map[string]bool{},
		inputs: in, vars: map[string]any{}, job: map[string]any{"id": env.JobID, "attempt": int64(env.Attempt)},
		taintedVars: map[string]bool{}, taintedSteps: map[string]bool{},
		assets: assets.Values, credentials: creds, secretAssets: map[string]bool{},
	}
	for name, v := range assets.Values {
		if text := expr.Format(v); text != "" && slices.Contains(assets.Secrets, text) {
			x.secretAssets[name] = true
		}
	}
	for name, spec := range wf.GetInputs() {
		if spec.GetSecret() {
			x.secretInputs[name] = true
		}
	}
	// Masked first: a cut could split a secret and leave part of it.
	x.r = maskedReporter{cappedReporter{r}, x.ms}
	if env.Log != nil {
		// Lines steps write through the env are masked and cut too; the
		// env is the caller's, so it gets its own function back.
		orig := env.Log
		env.Log = func(level, message string) { orig(level, expr.Truncate(x.ms.String(message), MaxLogLine)) }
		defer func() { env.Log = orig }()
	}
	outputs, err := x.workflow(ctx, wf)
	if err != nil {
		return nil, capError(maskError(x.ms, err))
	}
	x.r.Progress("", 100, "done")
	return outputs, nil
}

func (x *run) workflow(ctx context.Context, wf *casarev1.Workflow) (map[string]any, error) {
	jobCtx := ctx
	if d := wf.GetTimeout(); d != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, d.AsDuration(), timedOut(d.AsDuration()))
		defer cancel()
	}
	top := &frame{run: x, steps: map[string]any{}}
	outputs, err := top.workflow(ctx, wf)
	if err != nil {
		// A cancelled job has nobody to report to; but the workflow's own
		// timeout is a failure like any other, so its handlers run under
		// the job's context, which that timeout did not end.
		if len(wf.GetOnError()) > 0 && jobCtx.Err() == nil {
			top.onError(jobCtx, wf.GetOnError(), err)
		}
		return nil, err
	}
	return outputs, nil
}

func (f *frame) workflow(ctx context.Context, wf *casarev1.Workflow) (map[string]any, error) {
	steps := wf.GetSteps()
	for i, s := range steps {
		f.run.r.Progress(s.GetId(), int32(i*100/len(steps)), "")
		if err := f.step(ctx, s); err != nil {
			return nil, err
		}
	}
	// Never nil: the robot turns the map into the job's result, and an
	// empty result is not a missing one.
	outputs := map[string]any{}
	names := slices.Sorted(maps.Keys(wf.GetOutputs()))
	for _, name := range names {
		v, tainted, err := f.expand(ctx, wf.GetOutputs()[name])
		if err != nil {
			return nil, &Error{Message: "outputs." + name + ": " + err.Error(), Business: true}
		}
		// An output computed from a secret is one, however short or
		// disguised; any other output has the secrets in it hidden.
		if tainted {
			outputs[name] = secret.Mask
		} else {
			outputs[name] = f.run.ms.Value(v)
		}
	}
	if err := checkOutputs(outputs, names); err != nil {
		return nil, err
	}
	return outputs, nil
}

// frame is the scope steps run in: the workflow's, one foreach
// iteration's, or an error handler's.
type frame struct {
	run *run
	// steps holds the outputs of the steps run so far, by id, as
	// {"outputs": ...}. An iteration starts with a copy of its loop's,
	// so iterations running at once each see their own.
	steps  map[string]any
	inLoop bool
	item   any
	index  int64
	err    map[string]any // in error handlers: message and step
	// itemTainted says item comes from a list derived from a secret.
	itemTainted bool
}

// timedOut is the cause given to deadlines the workflow sets, so that a
// step that overruns says which limit it hit.
type timedOut time.Duration

func (t timedOut) Error() string { return "timed out after " + time.Duration(t).String() }

// step runs one step with its if, foreach, on_error and
// continue_on_error.
func (f *frame) step(ctx context.Context, s *casarev1.Step) error {
	id := s.GetId()
	// Checked before every step, not only in delays, so that a cancelled
	// job stops at once even when its remaining steps never wait.
	if ctx.Err() != nil {
		return &Error{StepID: id, Message: stopReason(ctx).Error()}
	}
	if s.GetIf() != "" {
		ok, err := f.condition(ctx, s.GetIf())
		if err != nil {
			return &Error{StepID: id, Message: "if: " + err.Error(), Business: true}
		}
		if !ok {
			f.run.r.Log("debug", id, "skipped")
			return nil
		}
	}
	err := f.body(ctx, s)
	if err == nil {
		return nil
	}
	// When the job or an enclosing step ran out of time, this step did not
	// fail on its own: neither its handlers nor continue_on_error apply.
	if ctx.Err() != nil {
		return err
	}
	if len(s.GetOnError()) > 0 {
		f.onError(ctx, s.GetOnError(), err)
	}
	if s.GetContinueOnError() {
		f.run.r.Log("warn", id, "failed, going on: "+err.Error())
		return nil
	}
	return err
}

// onError runs the steps that handle a failure, with error.message and
// error.step in scope. The failure stands whatever they do; theirs are
// only logged, so the job's error stays the one that caused it.
func (f *frame) onError(ctx context.Context, steps []*casarev1.Step, cause error) {
	handler := *f
	failed := ""
	var ee *Error
	if errors.As(cause, &ee) {
		failed = ee.StepID
	}
	// The message is shown masked, so a handler that logs it shows
	// nothing the failure would not.
	handler.err = map[string]any{"message": f.run.ms.String(cause.Error()), "step": failed}
	for _, s := range steps {
		if err := handler.step(ctx, s); err != nil {
			f.run.r.Log("error", s.GetId(), "on_error step failed: "+err.Error())
			return
		}
	}
}

// record keeps a step's outputs for the steps after it.
func (f *frame) record(id string, outputs any) {
	f.run.mu.Lock()
	f.steps[id] = map[string]any{"outputs": outputs}
	f.run.mu.Unlock()
}

// body runs a step once, or once per item of its foreach, and records its
// outputs: a foreach step's are the list of each iteration's.
func (f *frame) body(ctx context.Context, s *casarev1.Step) error {
	id := s.GetId()
	if s.GetForeach() == "" {
		out, err := f.attempts(ctx, s)
		if err == nil {
			f.record(id, out)
		}
		return err
	}
	items, tainted, err := f.list(ctx, s.GetForeach())
	if err != nil {
		return &Error{StepID: id, Message: "foreach: " + err.Error(), Business: true}
	}
	results := make([]any, len(items))
	iterate := func(ctx context.Context, i int) error {
		if ctx.Err() != nil {
			return &Error{StepID: id, Message: stopReason(ctx).Error()}
		}
		f.run.r.Log("debug", id, fmt.Sprintf("item %d of %d", i+1, len(items)))
		it := f.iteration(items[i], i)
		it.itemTainted = tainted
		out, err := it.attempts(ctx, s)
		if err != nil {
			return err
		}
		results[i] = out
		return nil
	}
	if err := forEach(ctx, len(items), int(s.GetParallelism()), iterate); err != nil {
		return err
	}
	f.record(id, results)
	return nil
}

// iteration returns the frame of one foreach iteration.
func (f *frame) iteration(item any, index int) *frame {
	f.run.mu.RLock()
	steps := maps.Clone(f.steps)
	f.run.mu.RUnlock()
	return &frame{run: f.run, steps: steps, inLoop: true, item: item, index: int64(index), err: f.err}
}

// forEach calls do for 0..n-1, in order when parallelism is 0 or 1 and
// otherwise up to parallelism at once. The first error stops the
// iterations not yet started and is returned once the running ones end.
func forEach(ctx context.Context, n, parallelism int, do func(ctx context.Context, i int) error) error {
	if parallelism <= 1 {
		for i := range n {
			if err := do(ctx, i); err != nil {
				return err
			}
		}
		return nil
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	slots := make(chan struct{}, parallelism)
	for i := range n {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-slots }()
			if err := do(ctx, i); err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
					cancel(errSiblingFailed)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		return &Error{Message: stopReason(ctx).Error()}
	}
	return firstErr
}

// errSiblingFailed stops the other iterations of a parallel foreach when
// one fails.
var errSiblingFailed = errors.New("another iteration failed")

// maxBackoff caps the doubling of retry waits at the longest wait a
// workflow may ask for, so many attempts cannot overflow.
const maxBackoff = time.Hour

// attempts runs a step as often as its retry allows. Business errors are
// not retried: the same data would fail the same way.
func (f *frame) attempts(ctx context.Context, s *casarev1.Step) (any, error) {
	n := max(s.GetRetry().GetAttempts(), 1)
	backoff := s.GetRetry().GetBackoff().AsDuration()
	for try := int32(1); ; try++ {
		out, err := f.once(ctx, s)
		var ee *Error
		if err == nil || try >= n || ctx.Err() != nil || (errors.As(err, &ee) && ee.Business) {
			return out, err
		}
		f.run.r.Log("warn", s.GetId(), fmt.Sprintf("attempt %d of %d failed, retrying in %s: %v", try, n, backoff, err))
		if err := sleep(ctx, backoff); err != nil {
			return nil, &Error{StepID: s.GetId(), Message: err.Error()}
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

// once runs a step one time under its timeout. A group's outputs are its
// children's, by id.
func (f *frame) once(ctx context.Context, s *casarev1.Step) (any, error) {
	id := s.GetId()
	if t := s.GetTimeout(); t != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, t.AsDuration(), timedOut(t.AsDuration()))
		defer cancel()
	}
	f.run.r.Log("debug", id, "step started")
	if s.GetUses() == "" {
		outputs := map[string]any{}
		for _, child := range s.GetSteps() {
			if err := f.step(ctx, child); err != nil {
				return nil, err
			}
			f.run.mu.RLock()
			if rec, ok := f.steps[child.GetId()].(map[string]any); ok {
				outputs[child.GetId()] = rec["outputs"]
			}
			tainted := f.run.taintedSteps[child.GetId()]
			f.run.mu.RUnlock()
			if tainted {
				// A group's outputs hold its children's.
				f.run.taintStep(id)
			}
		}
		return outputs, nil
	}
	outputs, err := f.call(ctx, s)
	if err == nil && ctx.Err() != nil {
		// A step that finished after its limit still overran it.
		err = stopReason(ctx)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, &Error{StepID: id, Message: stopReason(ctx).Error()}
		}
		var ee *Error
		if errors.As(err, &ee) {
			if ee.StepID == "" {
				ee.StepID = id
			}
			return nil, ee
		}
		return nil, &Error{StepID: id, Message: err.Error(), Business: step.IsBusiness(err)}
	}
	return outputs, nil
}

// call runs the step's action with its expanded parameters.
func (f *frame) call(ctx context.Context, s *casarev1.Step) (map[string]any, error) {
	action, err := f.run.e.cat.Lookup(s.GetUses())
	if err != nil {
		return nil, &Error{Message: err.Error(), Business: true}
	}
	if c := action.Capability; c != "" && !slices.Contains(f.run.e.opts.Capabilities, c) {
		return nil, &Error{Message: fmt.Sprintf("%s needs a robot with the %q capability, and this one does not have it", action.Name, c), Business: true}
	}
	with := map[string]any{}
	tainted := map[string]bool{}
	for _, k := range slices.Sorted(maps.Keys(s.GetWith().GetFields())) {
		if action.Nested && slices.Contains(action.AfterSteps, k) {
			// Evaluated by the body, after the nested steps.
			continue
		}
		v, secret, err := f.expand(ctx, s.GetWith().GetFields()[k].AsInterface())
		if err != nil {
			return nil, &Error{Message: "with." + k + ": " + err.Error(), Business: true}
		}
		with[k] = v
		tainted[k] = secret
	}
	ctx = core.WithScope(ctx, stepScope{f, s.GetId(), tainted})
	ctx = core.WithCondition(ctx, f.assertion)
	var body step.Body
	if action.Nested {
		body = f.nestedBody(s, action.AfterSteps)
	}
	outputs, err := action.RunNested(ctx, f.run.env, with, body)
	if err == nil && (s.GetSecret() || f.run.holdsSecret(outputs)) {
		f.run.taintStep(s.GetId())
		if s.GetSecret() {
			f.run.hide(map[string]any(outputs))
		}
	}
	return outputs, err
}

// nestedBody returns what runs the nested steps of a construct's step (the
// queue.process loop) once per item: in a frame of their own, with item
// and index in scope as in a foreach iteration, and then evaluates the
// parameters named after in that frame. Their outputs, those parameters
// and their errors leave the run masked, since the construct hands them
// to the control plane (an item's output, its failure's reason).
func (f *frame) nestedBody(s *casarev1.Step, after []string) step.Body {
	return func(ctx context.Context, item any, index int) (step.Round, error) {
		f.run.r.Log("debug", s.GetId(), fmt.Sprintf("item %d", index+1))
		it := f.iteration(item, index)
		if s.GetSecret() {
			// A step marked secret takes items whose data is: what the
			// nested steps derive from it is masked like a secret input.
			it.itemTainted = true
			if m, ok := item.(map[string]any); ok {
				f.run.hide(m["data"])
			}
		}
		f.run.mu.Lock()
		for _, child := range s.GetSteps() {
			// Only what ran for this item is its output.
			delete(it.steps, child.GetId())
		}
		f.run.mu.Unlock()
		outputs := map[string]any{}
		for _, child := range s.GetSteps() {
			if err := it.step(ctx, child); err != nil {
				var ee *Error
				business := errors.As(err, &ee) && ee.Business
				return step.Round{}, &step.Error{Message: f.run.ms.String(err.Error()), Business: business}
			}
			f.run.mu.RLock()
			rec, ran := it.steps[child.GetId()].(map[string]any)
			tainted := f.run.taintedSteps[child.GetId()]
			f.run.mu.RUnlock()
			switch {
			case !ran:
			case tainted:
				outputs[child.GetId()] = secret.Mask
			default:
				outputs[child.GetId()] = f.run.ms.Value(rec["outputs"])
			}
		}
		params := map[string]any{}
		for _, k := range after {
			raw, ok := s.GetWith().GetFields()[k]
			if !ok {
				continue
			}
			v, tainted, err := it.expand(ctx, raw.AsInterface())
			if err != nil {
				return step.Round{}, &step.Error{Message: f.run.ms.String("with." + k + ": " + err.Error()), Business: true}
			}
			if tainted {
				// Derived from a secret, the value is one.
				f.run.hide(v)
			}
			params[k] = f.run.ms.Value(v)
		}
		return step.Round{Params: params, Outputs: outputs}, nil
	}
}

// taintStep marks the step's outputs as derived from a secret.
func (x *run) taintStep(id string) {
	x.mu.Lock()
	x.taintedSteps[id] = true
	x.mu.Unlock()
}

// holdsSecret reports whether outputs show a text the run hides: a step
// that echoes a secret back has outputs derived from it.
func (x *run) holdsSecret(outputs map[string]any) bool {
	if len(outputs) == 0 || x.ms.Empty() {
		return false
	}
	return x.ms.Contains(expr.Format(outputs))
}

// stepScope is what core steps see of the run: log lines under their
// step, variables to set.
type stepScope struct {
	f  *frame
	id string
	// tainted names the keys of with derived from a secret.
	tainted map[string]bool
}

func (s stepScope) Log(level, message string) { s.f.run.r.Log(level, s.id, message) }

// SetVars sets variables; one set from a value derived from a secret is
// derived from it too, and one set again from a clean value is clean.
func (s stepScope) SetVars(vars map[string]any) {
	x := s.f.run
	x.mu.Lock()
	defer x.mu.Unlock()
	maps.Copy(x.vars, vars)
	for k := range vars {
		if s.tainted[k] {
			x.taintedVars[k] = true
			x.taintedSteps[s.id] = true
		} else {
			delete(x.taintedVars, k)
		}
	}
}

// assertion evaluates the condition of an assert step written as an
// expression.
func (f *frame) assertion(ctx context.Context, src string) (bool, error) {
	return f.condition(ctx, src)
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
