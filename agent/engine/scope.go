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

// eval evaluates one expression in the frame.
func (f *frame) eval(ctx context.Context, src string) (any, error) {
	p, err := f.run.program(src)
	if err != nil {
		return nil, fmt.Errorf("${{ %s }}: %w", src, err)
	}
	f.run.mu.RLock()
	v, err := p.Eval(f)
	f.run.mu.RUnlock()
	if err != nil {
		if err.Error() == "no such overload" {
			// Mostly 2 + 1.0: CEL has no implicit conversions, and every
			// number that came through JSON is a double.
			return nil, fmt.Errorf("${{ %s }}: %w (numbers are doubles unless declared integer: write 1.0, or int(x))", src, err)
		}
		return nil, fmt.Errorf("${{ %s }}: %w", src, err)
	}
	return v, nil
}

// expand evaluates the ${{ }} expressions in every string of v. A string
// that is one expression keeps the value's type, so numbers and maps pass
// through steps unchanged; others get the values written into the text.
func (f *frame) expand(ctx context.Context, v any) (any, error) {
	switch v := v.(type) {
	case string:
		if !strings.Contains(v, "${{") {
			return v, nil
		}
		t, err := f.run.template(v)
		if err != nil {
			return nil, err
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
				val, err := f.eval(ctx, p.Expr)
				if err != nil {
					return nil, err
				}
				text = expr.Format(val)
			}
			if size := b.Len() + len(text); size > expr.MaxValueBytes {
				return nil, &expr.TooLargeError{What: "the text", Size: size, Limit: expr.MaxValueBytes}
			}
			b.WriteString(text)
		}
		return b.String(), nil
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, item := range v {
			e, err := f.expand(ctx, item)
			if err != nil {
				return nil, err
			}
			out[k] = e
		}
		return out, nil
	case []any:
		out := make([]any, len(v))
		for i, item := range v {
			e, err := f.expand(ctx, item)
			if err != nil {
				return nil, err
			}
			out[i] = e
		}
		return out, nil
	}
	return v, nil
}

// condition evaluates an if: a CEL expression, bare or in ${{ }}, that
// must give true or false.
func (f *frame) condition(ctx context.Context, src string) (bool, error) {
	e := expr.Bare(src)
	v, err := f.eval(ctx, e)
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
// its keys, sorted, so that runs repeat.
func (f *frame) list(ctx context.Context, src string) ([]any, error) {
	e := expr.Bare(src)
	v, err := f.eval(ctx, e)
	if err != nil {
		return nil, err
	}
	switch v := v.(type) {
	case []any:
		return v, nil
	case map[string]any:
		keys := make([]any, 0, len(v))
		for _, k := range slices.Sorted(maps.Keys(v)) {
			keys = append(keys, k)
		}
		return keys, nil
	}
	return nil, fmt.Errorf("%s is %s, not a list", e, expr.Describe(v))
}

// masker hides secret values in everything the run says.
type masker struct {
	secrets []string
}

func newMasker(secrets []string) masker {
	// Longest first, so a secret that contains another is hidden whole.
	s := slices.Clone(secrets)
	slices.SortFunc(s, func(a, b string) int { return len(b) - len(a) })
	return masker{secrets: slices.Compact(s)}
}

func (m masker) mask(s string) string {
	for _, secret := range m.secrets {
		if strings.Contains(s, secret) {
			s = strings.ReplaceAll(s, secret, "***")
		}
	}
	return s
}

func (m masker) maskError(err error) error {
	if len(m.secrets) == 0 {
		return err
	}
	if ee, ok := err.(*Error); ok {
		masked := *ee
		masked.Message = m.mask(ee.Message)
		return &masked
	}
	return &Error{Message: m.mask(err.Error())}
}

// maskedReporter passes on what the run says with secrets hidden.
type maskedReporter struct {
	r  Reporter
	ms masker
}

func (m maskedReporter) Log(level, stepID, message string) {
	m.r.Log(level, stepID, m.ms.mask(message))
}

func (m maskedReporter) Progress(stepID string, percent int32, message string) {
	m.r.Progress(stepID, percent, m.ms.mask(message))
}
