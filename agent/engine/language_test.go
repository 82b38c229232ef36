package engine

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/casarerpa/casare/agent/step"
	"github.com/casarerpa/casare/agent/step/core"
	"github.com/casarerpa/casare/agent/workflow/secret"
	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

func TestExpressions(t *testing.T) {
	inputs := map[string]any{"names": []any{"ada", "bob"}, "user": map[string]any{"name": "Ada"}, "n": 3}
	for _, tc := range []runCase{
		{
			name: "operators and functions",
			wf: withOutputs(wfOf(logStep("a", "x")), map[string]string{
				"size":  "${{ size(inputs.names) }}",
				"upper": "${{ inputs.user.name.upperAscii() }}",
				"join":  "${{ inputs.names.join(', ') }}",
				"map":   "${{ inputs.names.map(n, n + '!') }}",
				"cond":  "${{ inputs.n > 2 ? 'big' : 'small' }}",
				"math":  "${{ math.greatest(1, 5, 3) }}",
				"b64":   "${{ base64.encode(b'hi') }}",
				"text":  "${{ size(inputs.names) }} names, first ${{ inputs.names[0] }}",
				"obj":   "${{ {'k': inputs.names[1]} }}",
			}),
			outputs: map[string]any{
				"size": 2.0, "upper": "ADA", "join": "ada, bob", "map": []any{"ada!", "bob!"},
				"cond": "big", "math": 5.0, "b64": "aGk=", "text": "2 names, first ada", "obj": map[string]any{"k": "bob"},
			},
		},
		{
			name: "job id",
			wf:   withOutputs(wfOf(logStep("a", "x")), map[string]string{"id": "${{ job.id }}"}),
		},
		{
			name: "a syntax error",
			wf:   wfOf(logStep("a", "${{ 1 + }}")),
			err:  "step a: with.message: ${{ 1 + }}: column 4: Syntax error: mismatched input '<EOF>' expecting expression", business: true,
		},
		{
			name: "an unclosed expression",
			wf:   wfOf(logStep("a", "${{ 1 + 1")),
			err:  "step a: with.message: ${{ without a closing }}", business: true,
		},
	} {
		tc.inputs = inputs
		t.Run(tc.name, tc.check)
	}
}

func TestCostLimit(t *testing.T) {
	wf := withOutputs(wfOf(logStep("a", "x")), map[string]string{
		"big": "${{ lists.range(1000).map(i, lists.range(1000).map(j, i * j)).size() }}",
	})
	e := New(step.NewCatalogue(core.Actions()...), Options{CostLimit: 10_000})
	_, err := e.Run(context.Background(), wf, nil, nil, &recorder{})
	var ee *Error
	if !errors.As(err, &ee) || !ee.Business || !strings.Contains(err.Error(), "outputs.big: ${{ lists.range(1000)") || !strings.Contains(err.Error(), "cost limit exceeded") {
		t.Fatalf("err = %v, want the cost limit named", err)
	}
	small := withOutputs(wfOf(logStep("a", "x")), map[string]string{"n": "${{ lists.range(10).size() }}"})
	if out, err := e.Run(context.Background(), small, nil, nil, &recorder{}); err != nil || out["n"] != 10.0 {
		t.Fatalf("a cheap expression: %v, %v", out, err)
	}
}

func TestTypedInputs(t *testing.T) {
	specs := map[string]*casarev1.InputSpec{
		"count": {Type: "integer", Default: structpb.NewNumberValue(2)},
		"price": {Type: "number"},
		"name":  {Type: "string"},
		"on":    {Type: "boolean"},
		"tags":  {Type: "array"},
		"user":  {Type: "object"},
		"any":   {Type: "any"},
	}
	outputs := map[string]string{"next": "${{ inputs.count + 1 }}", "half": "${{ inputs.count / 2 }}"}
	for _, tc := range []runCase{
		{
			name:    "integers are integers",
			wf:      &casarev1.Workflow{Inputs: specs, Steps: []*casarev1.Step{logStep("a", "x")}, Outputs: outputs},
			inputs:  map[string]any{"count": 5},
			outputs: map[string]any{"next": 6.0, "half": 2.0},
		},
		{
			name:    "the default",
			wf:      &casarev1.Workflow{Inputs: specs, Steps: []*casarev1.Step{logStep("a", "x")}, Outputs: outputs},
			outputs: map[string]any{"next": 3.0, "half": 1.0},
		},
		{
			name: "every type accepted",
			wf:   &casarev1.Workflow{Inputs: specs, Steps: []*casarev1.Step{logStep("a", "x")}},
			inputs: map[string]any{
				"count": 1.0, "price": 1.5, "name": "x", "on": true, "tags": []string{"a"}, "user": map[string]any{}, "any": nil,
			},
		},
		{name: "a string for an integer", wf: &casarev1.Workflow{Inputs: specs, Steps: []*casarev1.Step{logStep("a", "x")}},
			inputs: map[string]any{"count": "x"}, err: `input count: want integer, got "x"`, business: true, logged: []string{}},
		{name: "a fraction for an integer", wf: &casarev1.Workflow{Inputs: specs, Steps: []*casarev1.Step{logStep("a", "x")}},
			inputs: map[string]any{"count": 1.5}, err: `input count: want integer, got 1.5`, business: true},
		{name: "a number for a string", wf: &casarev1.Workflow{Inputs: specs, Steps: []*casarev1.Step{logStep("a", "x")}},
			inputs: map[string]any{"name": 7}, err: `input name: want string, got 7`, business: true},
		{name: "a string for a boolean", wf: &casarev1.Workflow{Inputs: specs, Steps: []*casarev1.Step{logStep("a", "x")}},
			inputs: map[string]any{"on": "yes"}, err: `input on: want boolean, got "yes"`, business: true},
		{name: "a map for a list", wf: &casarev1.Workflow{Inputs: specs, Steps: []*casarev1.Step{logStep("a", "x")}},
			inputs: map[string]any{"tags": map[string]any{"a": 1}}, err: `input tags: want array, got {"a":1}`, business: true},
		{name: "a list for an object", wf: &casarev1.Workflow{Inputs: specs, Steps: []*casarev1.Step{logStep("a", "x")}},
			inputs: map[string]any{"user": []any{}}, err: `input user: want object, got []`, business: true},
	} {
		t.Run(tc.name, tc.check)
	}
}

func TestSecretsAreMasked(t *testing.T) {
	wf := &casarev1.Workflow{
		Inputs: map[string]*casarev1.InputSpec{
			"password": {Type: "string", Secret: true},
			"pin":      {Type: "integer", Secret: true, Default: structpb.NewNumberValue(4711)},
		},
		Steps: []*casarev1.Step{
			logStep("say", "logging in with ${{ inputs.password }} and pin ${{ inputs.pin }}"),
			action("env", "echo", map[string]any{"text": "env says ${{ inputs.password }}"}),
			action("boom", "fail", map[string]any{"message": "wrong password hunter2!"}),
		},
	}
	echo := step.Define("echo", "Writes through the env.", func(_ context.Context, env *step.Env, p map[string]any) (map[string]any, error) {
		env.Logf("info", "%v", p["text"])
		return nil, nil
	})
	e := New(step.NewCatalogue(append(core.Actions(), echo)...), Options{})
	r := &recorder{}
	var envLines []string
	env := &step.Env{Log: func(level, message string) { envLines = append(envLines, message) }}
	_, err := e.Run(context.Background(), wf, map[string]any{"password": "hunter2"}, env, r)
	if err == nil || err.Error() != "step boom: wrong password ***!" {
		t.Errorf("err = %v, want the password masked", err)
	}
	want := []string{"info say: logging in with *** and pin ***"}
	if got := r.logged(); !reflect.DeepEqual(got, want) {
		t.Errorf("log = %q, want %q", got, want)
	}
	if !reflect.DeepEqual(envLines, []string{"env says ***"}) {
		t.Errorf("env log = %q", envLines)
	}
	env.Log("info", "hunter2")
	if envLines[len(envLines)-1] != "hunter2" {
		t.Error("the caller's env keeps masking after the run")
	}
}

func TestCapabilities(t *testing.T) {
	click := step.Define("browser.click", "Clicks.", func(context.Context, *step.Env, map[string]any) (map[string]any, error) {
		return map[string]any{"clicked": true}, nil
	}, step.NeedsCapability("browser"))
	cat := step.NewCatalogue(append(core.Actions(), click)...)
	wf := withOutputs(wfOf(action("c", "browser.click", nil)), map[string]string{"ok": "${{ steps.c.outputs.clicked }}"})

	_, err := New(cat, Options{}).Run(context.Background(), wf, nil, nil, &recorder{})
	var ee *Error
	if !errors.As(err, &ee) || !ee.Business || err.Error() != `step c: browser.click needs a robot with the "browser" capability, and this one does not have it` {
		t.Fatalf("err = %v, want a business error naming the capability", err)
	}
	out, err := New(cat, Options{Capabilities: []string{"browser"}}).Run(context.Background(), wf, nil, nil, &recorder{})
	if err != nil || out["ok"] != true {
		t.Fatalf("with the capability: %v, %v", out, err)
	}
}

func TestAssert(t *testing.T) {
	inputs := map[string]any{"n": 3}
	for _, tc := range []runCase{
		{name: "an expression that holds", wf: wfOf(action("a", "assert", map[string]any{"condition": "inputs.n == 3"}))},
		{name: "an evaluated bool", wf: wfOf(action("a", "assert", map[string]any{"condition": "${{ inputs.n > 1 }}"}))},
		{
			name: "an expression that does not hold", wf: wfOf(action("a", "assert", map[string]any{"condition": "inputs.n > 5"})),
			err: "step a: assertion failed: inputs.n > 5", business: true,
		},
		{
			name: "with a message", wf: wfOf(action("a", "assert", map[string]any{"condition": false, "message": "n is ${{ inputs.n }}"})),
			err: "step a: n is 3", business: true,
		},
		{
			name: "not a bool", wf: wfOf(action("a", "assert", map[string]any{"condition": "inputs.n"})),
			err: "step a: with.condition: inputs.n is the number 3, not true or false", business: true,
		},
	} {
		tc.inputs = inputs
		t.Run(tc.name, tc.check)
	}
}

func TestControlFlow(t *testing.T) {
	each := func(expr string, s *casarev1.Step) *casarev1.Step {
		s.Foreach = expr
		return s
	}
	group := func(id string, steps ...*casarev1.Step) *casarev1.Step {
		return &casarev1.Step{Id: id, Steps: steps}
	}
	for _, tc := range []runCase{
		{
			name: "a group's outputs are its children's",
			wf: withOutputs(wfOf(group("g", logStep("a", "one"), action("b", "set", map[string]any{"x": 1.0}))),
				map[string]string{"g": "${{ steps.g.outputs }}", "a": "${{ steps.a.outputs.message }}"}),
			outputs: map[string]any{"g": map[string]any{"a": map[string]any{"message": "one"}, "b": map[string]any{"x": 1.0}}, "a": "one"},
		},
		{
			name: "a foreach over a group lists each iteration's outputs",
			wf: withOutputs(wfOf(each("[1, 2]", group("g", action("sq", "set", map[string]any{"v": "${{ item * item }}"})))),
				map[string]string{"all": "${{ steps.g.outputs.map(o, o.sq.v) }}"}),
			outputs: map[string]any{"all": []any{1.0, 4.0}},
		},
		{
			name: "a foreach over a map walks its keys",
			wf: withOutputs(wfOf(each("{'b': 1, 'a': 2}", logStep("k", "${{ item }}"))),
				map[string]string{"n": "${{ size(steps.k.outputs) }}"}),
			outputs: map[string]any{"n": 2.0},
		},
		{
			name: "an if on the step outputs of an earlier one",
			wf: wfOf(
				action("count", "set", map[string]any{"n": 2.0}),
				func() *casarev1.Step { s := logStep("many", "yes"); s.If = "steps.count.outputs.n >= 2"; return s }(),
				func() *casarev1.Step { s := logStep("few", "no"); s.If = "steps.count.outputs.n < 2"; return s }(),
			),
			logged: []string{"info many: yes"},
		},
		{
			name: "error names the failing step in on_error",
			wf: wfOf(func() *casarev1.Step {
				s := group("g", logStep("ok", "fine"), action("bad", "fail", map[string]any{"message": "nope"}))
				s.OnError = []*casarev1.Step{logStep("why", "${{ error.step }}: ${{ error.message }}")}
				s.ContinueOnError = true
				return s
			}()),
			logged: []string{"info ok: fine", "info why: bad: step bad: nope", "warn g: failed, going on: step bad: nope"},
		},
		{
			name: "a business error in a retried step runs once",
			wf: wfOf(func() *casarev1.Step {
				s := action("bad", "assert", map[string]any{"condition": false})
				s.Retry = &casarev1.Retry{Attempts: 3}
				return s
			}()),
			err: "step bad: assertion failed: false", business: true, logged: []string{},
		},
	} {
		t.Run(tc.name, tc.check)
	}
}

// gate is an action that records how many of its runs overlap.
type gate struct {
	mu       sync.Mutex
	running  int
	most     int
	finished atomic.Int32
}

func (g *gate) action() *step.Action {
	return step.Define("test.gate", "Waits a little, counting overlaps.", func(ctx context.Context, _ *step.Env, p map[string]any) (map[string]any, error) {
		g.mu.Lock()
		g.running++
		g.most = max(g.most, g.running)
		g.mu.Unlock()
		defer func() {
			g.mu.Lock()
			g.running--
			g.mu.Unlock()
		}()
		if p["fail"] == true {
			return nil, step.Failf("item %v failed", p["item"])
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		g.finished.Add(1)
		return map[string]any{"item": p["item"]}, nil
	})
}

func TestParallelForeach(t *testing.T) {
	items := make([]any, 12)
	for i := range items {
		items[i] = float64(i)
	}
	for _, tc := range []struct {
		name        string
		parallelism int32
		wantMost    int
	}{
		{"in order", 0, 1},
		{"one at a time", 1, 1},
		{"four at once", 4, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := &gate{}
			e := New(step.NewCatalogue(append(core.Actions(), g.action())...), Options{})
			s := action("each", "test.gate", map[string]any{"item": "${{ item }}", "index": "${{ index }}"})
			s.Foreach, s.Parallelism = "inputs.items", tc.parallelism
			wf := withOutputs(wfOf(s), map[string]string{"items": "${{ steps.each.outputs.map(o, o.item) }}"})
			out, err := e.Run(context.Background(), wf, map[string]any{"items": items}, nil, &recorder{})
			if err != nil {
				t.Fatal(err)
			}
			if g.most != tc.wantMost {
				t.Errorf("%d iterations overlapped, want %d", g.most, tc.wantMost)
			}
			if !reflect.DeepEqual(out["items"], items) {
				t.Errorf("outputs %v, want them in the order of the items", out["items"])
			}
		})
	}

	t.Run("iterations see their own steps and item", func(t *testing.T) {
		e := New(step.NewCatalogue(core.Actions()...), Options{})
		body := &casarev1.Step{Id: "body", Foreach: "lists.range(20)", Parallelism: 8, Steps: []*casarev1.Step{
			action("mine", "set", map[string]any{"v": "${{ item }}"}),
			action("delay", "delay", map[string]any{"duration": "1ms"}),
			action("check", "assert", map[string]any{"condition": "steps.mine.outputs.v == item"}),
		}}
		if _, err := e.Run(context.Background(), wfOf(body), nil, nil, &recorder{}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("a failure stops the rest", func(t *testing.T) {
		g := &gate{}
		e := New(step.NewCatalogue(append(core.Actions(), g.action())...), Options{})
		s := action("each", "test.gate", map[string]any{"item": "${{ item }}", "fail": "${{ item == 1 }}"})
		s.Foreach, s.Parallelism = "lists.range(40)", 2
		_, err := e.Run(context.Background(), wfOf(s), nil, nil, &recorder{})
		if err == nil || err.Error() != "step each: item 1 failed" {
			t.Fatalf("err = %v, want item 1's failure", err)
		}
		if n := g.finished.Load(); n > 4 {
			t.Errorf("%d iterations finished after one failed", n)
		}
	})
}

// BenchmarkThousandSetSteps runs a workflow of 1,000 set steps, each with
// an expression of its own, compiling each once.
func BenchmarkThousandSetSteps(b *testing.B) {
	steps := make([]*casarev1.Step, 1000)
	for i := range steps {
		steps[i] = action(fmt.Sprintf("s%d", i), "set", map[string]any{fmt.Sprintf("v%d", i%10): fmt.Sprintf("${{ inputs.n + %d }}", i)})
	}
	wf := &casarev1.Workflow{
		Inputs:  map[string]*casarev1.InputSpec{"n": {Type: "integer"}},
		Steps:   steps,
		Outputs: map[string]string{"last": "${{ vars.v9 }}"},
	}
	cat := step.NewCatalogue(core.Actions()...)
	shared := New(cat, Options{})
	for _, bc := range []struct {
		name   string
		engine func() Engine
	}{
		// A new engine compiles all 1,000 expressions; one that ran the
		// workflow before has them compiled.
		{"cold", func() Engine { return New(cat, Options{}) }},
		{"warm", func() Engine { return shared }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				out, err := bc.engine().Run(context.Background(), wf, map[string]any{"n": 1}, nil, nopReporter{})
				if err != nil || out["last"] != 1000.0 {
					b.Fatalf("%v, %v", out, err)
				}
			}
		})
	}
}

// BenchmarkExpression evaluates one compiled expression against a run's
// scope.
func BenchmarkExpression(b *testing.B) {
	for _, bc := range []struct{ name, src string }{
		{"path", "inputs.user.name"},
		{"arithmetic", "inputs.n * 2 + 1"},
		{"comparison", "size(inputs.tags) > 1 && inputs.n < 10"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			x := &run{
				e:      &engine{cache: newCache()},
				inputs: map[string]any{"n": int64(3), "user": map[string]any{"name": "ada"}, "tags": []any{"a", "b"}},
				ms:     secret.New(),
				vars:   map[string]any{},
			}
			f := &frame{run: x, steps: map[string]any{}}
			ctx := context.Background()
			if _, _, err := f.eval(ctx, bc.src); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := f.eval(ctx, bc.src); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

type nopReporter struct{}

func (nopReporter) Log(string, string, string)     {}
func (nopReporter) Progress(string, int32, string) {}

func TestJobScopeHasIDAndAttempt(t *testing.T) {
	wf := withOutputs(wfOf(logStep("a", "x")), map[string]string{
		"id": "${{ job.id }}", "attempt": "${{ job.attempt }}", "line": "${{ job.id }}/${{ job.attempt + 1 }}",
	})
	e := New(step.NewCatalogue(core.Actions()...), Options{})
	out, err := e.Run(context.Background(), wf, nil, &step.Env{JobID: "j1", Attempt: 3}, &recorder{})
	if err != nil {
		t.Fatal(err)
	}
	if out["id"] != "j1" || fmt.Sprint(out["attempt"]) != "3" || out["line"] != "j1/4" {
		t.Fatalf("outputs = %#v, want id j1, attempt 3, line j1/4", out)
	}
}
