package engine

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"cel.dev/cel-go/interpreter"

	"github.com/casarerpa/casare/agent/workflow/expr"
	"github.com/casarerpa/casare/agent/workflow/secret"
)

// ResolveName gives expressions the frame's variables: inputs, vars,
// steps, job, and item, index and error where they exist. A frame is the
// CEL activation itself, so an evaluation allocates no map of variables.
func (f *frame) ResolveName(name string) (any, bool) {
	switch name {
	case expr.Inputs:
		return f.run.inputs, true
	case expr.Vars:
		return f.run.vars, true
	case expr.Steps:
		return f.steps, true
	case expr.Job:
		return f.run.job, true
	case expr.Item:
		return f.item, f.inLoop
	case expr.Index:
		return f.index, f.inLoop
	case expr.Error:
		return f.err, f.err != nil
	case expr.Assets:
		return f.run.assets, true
	case expr.Credentials:
		return f.run.credentials, true
	}
	// The validator declares each input as a variable of its own
	// (inputs.count), and expressions are evaluated the same way.
	if in, ok := strings.CutPrefix(name, expr.Inputs+"."); ok {
		v, ok := f.run.inputs[in]
		return v, ok
	}
	return nil, false
}

// Parent is nil: a frame holds every name itself.
func (f *frame) Parent() interpreter.Activation { return nil }

var _ interpreter.Activation = (*frame)(nil)

// cache keeps compiled expressions and parsed templates by their text.
// An expression is compiled once, however often a loop evaluates it and
// however many jobs run the workflow; compiled programs are immutable, so
// runs share them.
type cache struct {
	mu        sync.Mutex
	programs  map[string]*expr.Program
	templates map[string]expr.Template
}

// maxCached bounds the cache; past it, the cache starts over rather than
// keep the expressions of every workflow a long-lived robot ever ran.
const maxCached = 10_000

func newCache() *cache {
	return &cache{programs: map[string]*expr.Program{}, templates: map[string]expr.Template{}}
}

// program returns the compiled src, compiling it on first use.
func (x *run) program(src string) (*expr.Program, error) {
	c := x.e.cache
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.programs[src]; ok {
		return p, nil
	}
	p, err := expr.Compile(src, x.e.opts.CostLimit)
	if err != nil {
		return nil, err
	}
	if len(c.programs) >= maxCached {
		clear(c.programs)
	}
	c.programs[src] = p
	return p, nil
}

// template returns s split at its expressions, parsing it on first use.
func (x *run) template(s string) (expr.Template, error) {
	c := x.e.cache
	c.mu.Lock()
	defer c.mu.Unlock()
	if t, ok := c.templates[s]; ok {
		return t, nil
	}
	t, err := expr.ParseTemplate(s)
	if err != nil {
		return expr.Template{}, err
	}
	if len(c.templates) >= maxCached {
		clear(c.templates)
	}
	c.templates[s] = t
	return t, nil
}

// eval evaluates one expression in the frame. tainted says the
// expression read a secret, or a value derived from one: its value is then
// a secret too, and its text is hidden wherever the run shows it.
func (f *frame) eval(ctx context.Context, src string) (v any, tainted bool, err error) {
	p, err := f.run.program(src)
	if err != nil {
		return nil, false, fmt.Errorf("${{ %s }}: %w", src, err)
	}
	tainted = f.touches(p.Refs())
	f.run.mu.RLock()
	v, err = p.Eval(f)
	f.run.mu.RUnlock()
	if err != nil {
		if err.Error() == "no such overload" {
			// Mostly 2 + 1.0: CEL has no implicit conversions, and every
			// number that came through JSON is a double.
			return nil, tainted, fmt.Errorf("${{ %s }}: %w (numbers are doubles unless declared integer: write 1.0, or int(x))", src, err)
		}
		return nil, tainted, fmt.Errorf("${{ %s }}: %w", src, err)
	}
	if tainted {
		f.run.hide(v)
	}
	return v, tainted, nil
}

// touches reports whether an expression with refs reads a secret input, a
// variable or step output derived from one, or a foreach item of a
// secret list. An expression that reads inputs, vars or steps as a whole
// (inputs[name], vars.all(...)) reads whatever secret they hold.
func (f *frame) touches(r expr.Refs) bool {
	x := f.run
	if len(x.secretInputs) > 0 {
		for _, in := range r.Inputs {
			if x.secretInputs[in] {
				return true
			}
		}
		if count(r.Idents, expr.Inputs) > len(r.Inputs) {
			return true
		}
	}
	if f.itemTainted && slices.Contains(r.Idents, expr.Item) {
		return true
	}
	// A credential's password, the whole credential and a secret asset
	// are secrets as much as a secret input is; a username is not.
	for _, c := range r.Credentials {
		if c.Field != "username" {
			return true
		}
	}
	if count(r.Idents, expr.Credentials) > len(r.Credentials) {
		return true
	}
	if len(x.secretAssets) > 0 {
		for _, a := range r.Assets {
			if x.secretAssets[a] {
				return true
			}
		}
		if count(r.Idents, expr.Assets) > len(r.Assets) {
			return true
		}
	}
	x.mu.RLock()
	defer x.mu.RUnlock()
	if len(x.taintedVars) > 0 {
		for _, v := range r.Vars {
			if x.taintedVars[v] {
				return true
			}
		}
		if count(r.Idents, expr.Vars) > len(r.Vars) {
			return true
		}
	}
	if len(x.taintedSteps) > 0 {
		for _, s := range r.Steps {
			if x.taintedSteps[s] {
				return true
			}
		}
		if count(r.Idents, expr.Steps) > len(r.Steps) {
			return true
		}
	}
	return false
}

func count(names []string, name string) int {
	n := 0
	for _, s := range names {
		if s == name {
			n++
		}
	}
	return n
}

// hide adds the text of a value derived from a secret, and of each string
// in it, to what the run masks. A boolean or null tells too little to
// hide, and hiding every "true" in the log would hide the log.
func (x *run) hide(v any) {
	switch v := v.(type) {
	case bool, nil:
		return
	case map[string]any:
		for _, item := range v {
			x.hide(item)
		}
	case []any:
		for _, item := range v {
			x.hide(item)
		}
	}
	x.ms.AddDerived(expr.Format(v))
}

// expand evaluates the ${{ }} expressions in every string of v. A string
// that is one expression keeps the value's type, so numbers and maps pass
// through steps unchanged; others get the values written into the text.
// tainted says an expression in v read a secret.
func (f *frame) expand(ctx context.Context, v any) (_ any, tainted bool, _ error) {
	switch v := v.(type) {
	case string:
		if !strings.Contains(v, "${{") {
			return v, false, nil
		}
		t, err := f.run.template(v)
		if err != nil {
			return nil, false, err
		}
		if t.Lone() {
			return f.eval(ctx, t.Pieces[0].Expr)
		}
		// Text made of many values is held to the limit of a value an
		// expression makes: a large input written a thousand times into
		// one string would otherwise take a thousand times its memory.
		var b strings.Builder
		for _, p := range t.Pieces {
			text := p.Text
			if p.IsExpr {
				val, secret, err := f.eval(ctx, p.Expr)
				if err != nil {
					return nil, tainted || secret, err
				}
				tainted = tainted || secret
				text = expr.Format(val)
			}
			if size := b.Len() + len(text); size > expr.MaxValueBytes {
				return nil, tainted, &expr.TooLargeError{What: "the text", Size: size, Limit: expr.MaxValueBytes}
			}
			b.WriteString(text)
		}
		return b.String(), tainted, nil
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, item := range v {
			e, secret, err := f.expand(ctx, item)
			tainted = tainted || secret
			if err != nil {
				return nil, tainted, err
			}
			out[k] = e
		}
		return out, tainted, nil
	case []any:
		out := make([]any, len(v))
		for i, item := range v {
			e, secret, err := f.expand(ctx, item)
			tainted = tainted || secret
			if err != nil {
				return nil, tainted, err
			}
			out[i] = e
		}
		return out, tainted, nil
	}
	return v, false, nil
}

// condition evaluates an if: a CEL expression, bare or in ${{ }}, that
// must give true or false.
func (f *frame) condition(ctx context.Context, src string) (bool, error) {
	e := expr.Bare(src)
	v, _, err := f.eval(ctx, e)
	if err != nil {
		return false, err
	}
	b, ok := v.(bool)
	if !ok {
		return false, fmt.Errorf("%s is %s, not true or false", e, expr.Describe(v))
	}
	return b, nil
}

// list evaluates a foreach: a CEL expression giving a list. A map gives
// its keys, sorted, so that runs repeat. tainted says the list is derived
// from a secret, and so is each item.
func (f *frame) list(ctx context.Context, src string) (_ []any, tainted bool, _ error) {
	e := expr.Bare(src)
	v, tainted, err := f.eval(ctx, e)
	if err != nil {
		return nil, tainted, err
	}
	switch v := v.(type) {
	case []any:
		return v, tainted, nil
	case map[string]any:
		keys := make([]any, 0, len(v))
		for _, k := range slices.Sorted(maps.Keys(v)) {
			keys = append(keys, k)
		}
		return keys, tainted, nil
	}
	return nil, tainted, fmt.Errorf("%s is %s, not a list", e, expr.Describe(v))
}

// maskError hides the run's secrets in err's message.
func maskError(ms *secret.Masker, err error) error {
	if ms.Empty() {
		return err
	}
	if ee, ok := err.(*Error); ok {
		masked := *ee
		masked.Message = ms.String(ee.Message)
		return &masked
	}
	return &Error{Message: ms.String(err.Error())}
}

// maskedReporter passes on what the run says with secrets hidden.
type maskedReporter struct {
	r  Reporter
	ms *secret.Masker
}

func (m maskedReporter) Log(level, stepID, message string) {
	m.r.Log(level, stepID, m.ms.String(message))
}

func (m maskedReporter) Progress(stepID string, percent int32, message string) {
	m.r.Progress(stepID, percent, m.ms.String(message))
}
