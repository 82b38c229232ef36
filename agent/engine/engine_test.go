package engine

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/casarerpa/casare/agent/step"
	"github.com/casarerpa/casare/agent/step/core"
	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

// recorder is a Reporter that keeps everything it is told.
type recorder struct {
	mu       sync.Mutex
	lines    []string // "level id: message"
	progress []string // "id percent message"
}

func (r *recorder) Log(level, stepID, message string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, level+" "+stepID+": "+message)
}

func (r *recorder) Progress(stepID string, percent int32, message string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.progress = append(r.progress, fmt.Sprintf("%s %d %s", stepID, percent, message))
}

// logged returns the lines above debug, which is what a workflow author
// sees by default.
func (r *recorder) logged() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := []string{}
	for _, l := range r.lines {
		if !strings.HasPrefix(l, "debug ") {
			out = append(out, l)
		}
	}
	return out
}

func (r *recorder) count(line string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, l := range r.lines {
		if l == line {
			n++
		}
	}
	return n
}

func action(id, uses string, with map[string]any) *casarev1.Step {
	s := &casarev1.Step{Id: id, Uses: uses}
	if with != nil {
		w, err := structpb.NewStruct(with)
		if err != nil {
			panic(err)
		}
		s.With = w
	}
	return s
}

func logStep(id, message string) *casarev1.Step {
	return action(id, "log", map[string]any{"message": message})
}

func wfOf(steps ...*casarev1.Step) *casarev1.Workflow {
	return &casarev1.Workflow{Steps: steps}
}

func withOutputs(wf *casarev1.Workflow, outputs map[string]string) *casarev1.Workflow {
	wf.Outputs = outputs
	return wf
}

func withTimeout(s *casarev1.Step, d time.Duration) *casarev1.Step {
	s.Timeout = durationpb.New(d)
	return s
}

type runCase struct {
	name     string
	wf       *casarev1.Workflow
	inputs   map[string]any
	outputs  map[string]any // checked when not nil
	logged   []string       // lines above debug, checked when not nil
	err      string         // the whole error text; empty means success
	contains bool           // err need only be part of the error
	business bool
}

func (tc runCase) check(t *testing.T) {
	t.Helper()
	r := &recorder{}
	out, err := newEngine().Run(context.Background(), tc.wf, tc.inputs, nil, r)
	if tc.err == "" {
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		if out == nil {
			t.Fatal("Run returned nil outputs")
		}
		if tc.outputs != nil && !reflect.DeepEqual(out, tc.outputs) {
			t.Errorf("outputs = %#v, want %#v", out, tc.outputs)
		}
	} else {
		var ee *Error
		if !errors.As(err, &ee) {
			t.Fatalf("err = %v (%T), want an *Error %q", err, err, tc.err)
		}
		if got := err.Error(); tc.contains && !strings.Contains(got, tc.err) || !tc.contains && got != tc.err {
			t.Errorf("err = %q, want %q", got, tc.err)
		}
		if ee.Business != tc.business {
			t.Errorf("business = %v, want %v", ee.Business, tc.business)
		}
	}
	if tc.logged != nil && !reflect.DeepEqual(r.logged(), tc.logged) {
		t.Errorf("log = %q, want %q", r.logged(), tc.logged)
	}
}

func TestSteps(t *testing.T) {
	for _, tc := range []runCase{
		{
			name:    "log at info by default",
			wf:      withOutputs(wfOf(logStep("hi", "hello")), map[string]string{"said": "${{ steps.hi.outputs.message }}"}),
			outputs: map[string]any{"said": "hello"},
			logged:  []string{"info hi: hello"},
		},
		{
			name:   "log at a level",
			wf:     wfOf(action("hi", "log", map[string]any{"message": "careful", "level": "warn"})),
			logged: []string{"warn hi: careful"},
		},
		{
			name:   "log a lone number",
			wf:     wfOf(action("hi", "log", map[string]any{"message": "${{ inputs.n }}"})),
			inputs: map[string]any{"n": 3},
			logged: []string{"info hi: 3"},
		},
		{
			name: "log without message", wf: wfOf(action("say", "log", nil)),
			err: "step say: with.message: required", business: true,
		},
		{
			name: "log a map", wf: wfOf(action("say", "log", map[string]any{"message": map[string]any{"a": 1.0}})),
			err: "step say: with.message: want a string, got a map", business: true,
		},
		{
			name: "log at an unknown level", wf: wfOf(action("say", "log", map[string]any{"message": "x", "level": "loud"})),
			err: `step say: with.level: "loud" is not debug, info, warn or error`, business: true,
		},
		{
			name: "set vars and outputs",
			wf: withOutputs(wfOf(action("keep", "set", map[string]any{"n": 2.0, "who": "${{ inputs.who }}"})),
				map[string]string{"n": "${{ vars.n }}", "who": "${{ steps.keep.outputs.who }}"}),
			inputs:  map[string]any{"who": "ada"},
			outputs: map[string]any{"n": 2.0, "who": "ada"},
		},
		{
			name: "set overwrites",
			wf: withOutputs(wfOf(
				action("a", "set", map[string]any{"x": "one"}),
				action("b", "set", map[string]any{"x": "two"}),
			), map[string]string{"x": "${{ vars.x }}", "first": "${{ steps.a.outputs.x }}"}),
			outputs: map[string]any{"x": "two", "first": "one"},
		},
		{name: "delay as a duration", wf: wfOf(action("wait", "delay", map[string]any{"duration": "1ms"}))},
		{name: "delay as seconds", wf: wfOf(action("wait", "delay", map[string]any{"duration": 0.001}))},
		{name: "delay of zero", wf: wfOf(action("wait", "delay", map[string]any{"duration": 0.0}))},
		{
			name: "delay without duration", wf: wfOf(action("wait", "delay", nil)),
			err: "step wait: with.duration: required", contains: true, business: true,
		},
		{
			name: "delay of nonsense", wf: wfOf(action("wait", "delay", map[string]any{"duration": "soon"})),
			err: `"soon" is not a duration like 1.5s`, contains: true, business: true,
		},
		{
			name: "delay of a bool", wf: wfOf(action("wait", "delay", map[string]any{"duration": true})),
			err: "want a duration like 1.5s or a number of seconds, got true", contains: true, business: true,
		},
		{
			name: "negative delay", wf: wfOf(action("wait", "delay", map[string]any{"duration": -1.0})),
			err: "-1 is negative", contains: true, business: true,
		},
		{name: "fail by default", wf: wfOf(action("boom", "fail", nil)), err: "step boom: failed by the workflow"},
		{
			name: "fail as business", wf: wfOf(action("boom", "fail", map[string]any{"message": "no invoice", "business": true})),
			err: "step boom: no invoice", business: true,
		},
		{
			name: "fail with a wrong business", wf: wfOf(action("boom", "fail", map[string]any{"business": "yes"})),
			err: `step boom: with.business: want true or false, got string`, business: true,
		},
		{
			name: "unknown step", wf: wfOf(action("x", "brower.click", nil)),
			err: `step x: unknown step "brower.click"`, business: true,
		},
		{
			name: "nested steps in order",
			wf: wfOf(&casarev1.Step{Id: "group", Steps: []*casarev1.Step{
				logStep("one", "1"),
				{Id: "inner", Steps: []*casarev1.Step{logStep("two", "2")}},
				logStep("three", "3"),
			}}),
			logged: []string{"info one: 1", "info two: 2", "info three: 3"},
		},
		{
			name:   "failure in a nested step",
			wf:     wfOf(&casarev1.Step{Id: "group", Steps: []*casarev1.Step{action("deep", "fail", nil)}}, logStep("after", "no")),
			err:    "step deep: failed by the workflow",
			logged: []string{},
		},
	} {
		t.Run(tc.name, tc.check)
	}
}

func TestSubstitution(t *testing.T) {
	inputs := map[string]any{
		"n":    3,
		"half": 1.5,
		"flag": true,
		"user": map[string]any{"name": "ada", "tags": []any{"x", "y"}},
		"list": []string{"a", "b"},
	}
	for _, tc := range []runCase{
		{
			name: "a lone expression keeps its type",
			wf: withOutputs(wfOf(action("keep", "set", map[string]any{
				"n": "${{ inputs.n }}", "flag": "${{inputs.flag}}", "user": "${{ inputs.user }}", "list": "${{ inputs.list }}",
			})), map[string]string{"n": "${{ vars.n }}", "flag": "${{ vars.flag }}", "user": "${{ vars.user }}", "list": "${{ vars.list }}"}),
			outputs: map[string]any{
				"n": 3.0, "flag": true, "list": []any{"a", "b"},
				"user": map[string]any{"name": "ada", "tags": []any{"x", "y"}},
			},
		},
		{
			name: "text around expressions is formatted",
			wf: withOutputs(wfOf(), map[string]string{
				"n":     "n=${{ inputs.n }}",
				"half":  "${{ inputs.half }}s",
				"flag":  "flag ${{ inputs.flag }}",
				"user":  "user ${{ inputs.user }}",
				"list":  "${{ inputs.list }}!",
				"two":   "${{ inputs.user.name }} and ${{ inputs.list[1] }}",
				"plain": "no expression",
			}),
			outputs: map[string]any{
				"n":     "n=3",
				"half":  "1.5s",
				"flag":  "flag true",
				"user":  `user {"name":"ada","tags":["x","y"]}`,
				"list":  `["a","b"]!`,
				"two":   "ada and b",
				"plain": "no expression",
			},
		},
		{
			name: "inside lists and maps of with",
			wf: withOutputs(wfOf(action("keep", "set", map[string]any{
				"deep": map[string]any{"list": []any{"${{ inputs.user.name }}", "n=${{ inputs.n }}", 7.0}},
			})), map[string]string{"deep": "${{ steps.keep.outputs.deep }}"}),
			outputs: map[string]any{"deep": map[string]any{"list": []any{"ada", "n=3", 7.0}}},
		},
		{
			name: "unknown path",
			wf:   wfOf(logStep("greet", "${{ inputs.nme }}")),
			err:  `step greet: with.message: ${{ inputs.nme }}: no such key: nme`, business: true,
		},
		{
			name: "unknown path inside text",
			wf:   wfOf(logStep("greet", "hello ${{ vars.who }}")),
			err:  `step greet: with.message: ${{ vars.who }}: no such key: who`, business: true,
		},
		{
			name: "a field of a string",
			wf:   wfOf(logStep("greet", "${{ inputs.user.name.first }}")),
			err:  `step greet: with.message: ${{ inputs.user.name.first }}: no such key: first`, business: true,
		},
		{
			name: "a list index out of range",
			wf:   wfOf(logStep("greet", "${{ inputs.list[2] }}")),
			err:  `step greet: with.message: ${{ inputs.list[2] }}: index out of bounds: 2`, business: true,
		},
		{
			name: "outputs of a later step",
			wf:   wfOf(logStep("first", "${{ steps.second.outputs.message }}"), logStep("second", "x")),
			err:  `step first: with.message: ${{ steps.second.outputs.message }}: no such key: second`, business: true,
		},
		{
			name: "numbers from JSON are doubles",
			wf:   wfOf(logStep("sum", "${{ inputs.n + 1 }}")),
			err:  "step sum: with.message: ${{ inputs.n + 1 }}: no such overload (numbers are doubles unless declared integer: write 1.0, or int(x))", business: true,
		},
	} {
		tc.inputs = inputs
		t.Run(tc.name, tc.check)
	}
}

func TestIf(t *testing.T) {
	cond := func(expr string) *casarev1.Step {
		s := logStep("maybe", "ran")
		s.If = expr
		return s
	}
	inputs := map[string]any{"yes": true, "no": false, "n": 1, "nested": map[string]any{"on": true}}
	for _, tc := range []runCase{
		{name: "true", wf: wfOf(cond("true")), logged: []string{"info maybe: ran"}},
		{name: "false", wf: wfOf(cond("false")), logged: []string{}},
		{name: "an expression true", wf: wfOf(cond("${{ inputs.yes }}")), logged: []string{"info maybe: ran"}},
		{name: "an expression false", wf: wfOf(cond("${{ inputs.no }}")), logged: []string{}},
		{name: "a bare path", wf: wfOf(cond("inputs.nested.on")), logged: []string{"info maybe: ran"}},
		{name: "a bare path false", wf: wfOf(cond(" inputs.no ")), logged: []string{}},
		{
			name: "not a bool", wf: wfOf(cond("inputs.n")),
			err: "step maybe: if: inputs.n is the number 1, not true or false", business: true,
		},
		{
			name: "an unknown path", wf: wfOf(cond("${{ inputs.maybe }}")),
			err: `step maybe: if: ${{ inputs.maybe }}: no such key: maybe`, business: true,
		},
		{name: "an expression", wf: wfOf(cond("inputs.n > 0 && size(inputs.nested) == 1")), logged: []string{"info maybe: ran"}},
		{name: "an expression false", wf: wfOf(cond("${{ inputs.n > 1 }}")), logged: []string{}},
		{
			name: "a skipped step has no outputs",
			wf:   wfOf(cond("false"), logStep("after", "${{ steps.maybe.outputs.message }}")),
			err:  `step after: with.message: ${{ steps.maybe.outputs.message }}: no such key: maybe`, business: true,
			logged: []string{},
		},
	} {
		tc.inputs = inputs
		t.Run(tc.name, tc.check)
	}

	r := &recorder{}
	if _, err := newEngine().Run(context.Background(), wfOf(cond("false")), nil, nil, r); err != nil {
		t.Fatal(err)
	}
	if r.count("debug maybe: skipped") != 1 || r.count("debug maybe: step started") != 0 {
		t.Errorf("a skipped step logged %q", r.lines)
	}
}

func TestForeach(t *testing.T) {
	each := func(expr string, s *casarev1.Step) *casarev1.Step {
		s.Foreach = expr
		return s
	}
	inputs := map[string]any{"names": []any{"ada", "bob"}, "n": 2, "grid": []any{[]any{1, 2}, []any{3}}}
	for _, tc := range []runCase{
		{
			name: "items and indexes",
			wf: withOutputs(wfOf(each("${{ inputs.names }}", logStep("greet", "${{ index }}: ${{ item }}"))),
				map[string]string{"all": "${{ steps.greet.outputs }}"}),
			logged:  []string{"info greet: 0: ada", "info greet: 1: bob"},
			outputs: map[string]any{"all": []any{map[string]any{"message": "0: ada"}, map[string]any{"message": "1: bob"}}},
		},
		{
			name: "nested loops",
			wf: wfOf(each("inputs.grid", &casarev1.Step{Id: "rows", Steps: []*casarev1.Step{
				action("row", "set", map[string]any{"row": "${{ index }}"}),
				each("item", logStep("cell", "${{ vars.row }},${{ index }}=${{ item }}")),
				logStep("after", "row ${{ index }} done"),
			}})),
			logged: []string{"info cell: 0,0=1", "info cell: 0,1=2", "info after: row 0 done", "info cell: 1,0=3", "info after: row 1 done"},
		},
		{
			name: "the item is gone after the loop",
			wf:   wfOf(each("inputs.names", action("x", "set", nil)), logStep("after", "${{ item }}")),
			err:  `step after: with.message: ${{ item }}: no such attribute(s): item`, business: true,
			logged: []string{},
		},
		{
			name:   "an empty list",
			wf:     wfOf(each("inputs.none", logStep("never", "x"))),
			inputs: map[string]any{"none": []any{}},
			logged: []string{},
		},
		{
			name: "not a list", wf: wfOf(each("inputs.n", logStep("x", "x"))),
			err: "step x: foreach: inputs.n is the number 2, not a list", business: true,
		},
		{
			name: "an unknown list", wf: wfOf(each("inputs.nope", logStep("x", "x"))),
			err: `step x: foreach: ${{ inputs.nope }}: no such key: nope`, business: true,
		},
		{
			name: "a failing item stops the loop",
			wf: wfOf(each("inputs.names", &casarev1.Step{Id: "body", Steps: []*casarev1.Step{
				logStep("greet", "${{ item }}"),
				action("boom", "fail", map[string]any{"message": "no ${{ item }}"}),
			}})),
			err:    "step boom: no ada",
			logged: []string{"info greet: ada"},
		},
	} {
		if tc.inputs == nil {
			tc.inputs = inputs
		}
		t.Run(tc.name, tc.check)
	}
}

func TestContinueOnError(t *testing.T) {
	soft := action("soft", "fail", map[string]any{"message": "nope"})
	soft.ContinueOnError = true
	runCase{
		wf:     wfOf(soft, logStep("after", "still here")),
		logged: []string{"warn soft: failed, going on: step soft: nope", "info after: still here"},
	}.check(t)
}

func TestRetry(t *testing.T) {
	for _, tc := range []struct {
		name     string
		step     *casarev1.Step
		attempts int
	}{
		{"no retry", action("s", "fail", nil), 1},
		{"application errors are retried", action("s", "fail", nil), 3},
		{"business errors are not", action("s", "fail", map[string]any{"business": true}), 1},
		{"timeouts are retried", withTimeout(action("s", "delay", map[string]any{"duration": "10s"}), 5*time.Millisecond), 3},
		{"success is not", logStep("s", "fine"), 1},
		{
			name:     "a group is retried whole",
			step:     &casarev1.Step{Id: "s", Steps: []*casarev1.Step{logStep("a", "x"), action("b", "fail", nil)}},
			attempts: 3,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.step
			if tc.name != "no retry" {
				s.Retry = &casarev1.Retry{Attempts: 3, Backoff: durationpb.New(time.Millisecond)}
			}
			r := &recorder{}
			_, err := newEngine().Run(context.Background(), wfOf(s), nil, nil, r)
			if got := r.count("debug s: step started"); got != tc.attempts {
				t.Errorf("%d attempts, want %d; log %q (err %v)", got, tc.attempts, r.lines, err)
			}
		})
	}

	r := &recorder{}
	s := action("s", "fail", nil)
	s.Retry = &casarev1.Retry{Attempts: 3, Backoff: durationpb.New(time.Millisecond)}
	if _, err := newEngine().Run(context.Background(), wfOf(s), nil, nil, r); err == nil {
		t.Fatal("a failing step succeeded")
	}
	want := []string{
		"warn s: attempt 1 of 3 failed, retrying in 1ms: step s: failed by the workflow",
		"warn s: attempt 2 of 3 failed, retrying in 2ms: step s: failed by the workflow",
	}
	if !reflect.DeepEqual(r.logged(), want) {
		t.Errorf("log %q, want the backoff doubling: %q", r.logged(), want)
	}
}

func TestOnError(t *testing.T) {
	caught := func(id string) *casarev1.Step { return logStep(id, "caught: ${{ error.message }}") }
	failing := func(on ...*casarev1.Step) *casarev1.Step {
		s := action("flaky", "fail", map[string]any{"message": "broken"})
		s.OnError = on
		return s
	}
	for _, tc := range []runCase{
		{
			name:   "on a step",
			wf:     wfOf(failing(caught("report")), logStep("after", "no")),
			err:    "step flaky: broken",
			logged: []string{"info report: caught: step flaky: broken"},
		},
		{
			name: "on a step that goes on",
			wf: func() *casarev1.Workflow {
				s := failing(caught("report"))
				s.ContinueOnError = true
				return wfOf(s, logStep("after", "yes"))
			}(),
			logged: []string{"info report: caught: step flaky: broken", "warn flaky: failed, going on: step flaky: broken", "info after: yes"},
		},
		{
			name: "on the workflow",
			wf: &casarev1.Workflow{
				Steps:   []*casarev1.Step{failing(), logStep("after", "no")},
				OnError: []*casarev1.Step{caught("report")},
			},
			err:    "step flaky: broken",
			logged: []string{"info report: caught: step flaky: broken"},
		},
		{
			name: "both, the step's first",
			wf: &casarev1.Workflow{
				Steps:   []*casarev1.Step{failing(caught("mine"))},
				OnError: []*casarev1.Step{caught("global")},
			},
			err:    "step flaky: broken",
			logged: []string{"info mine: caught: step flaky: broken", "info global: caught: step flaky: broken"},
		},
		{
			name: "a failing handler keeps the first error",
			wf:   wfOf(failing(action("oops", "fail", map[string]any{"message": "worse"}), caught("never"))),
			err:  "step flaky: broken",
			logged: []string{
				"error oops: on_error step failed: step oops: worse",
			},
		},
		{
			name: "on the workflow's timeout",
			wf: &casarev1.Workflow{
				Timeout: durationpb.New(20 * time.Millisecond),
				Steps:   []*casarev1.Step{action("slow", "delay", map[string]any{"duration": "10s"})},
				OnError: []*casarev1.Step{caught("report")},
			},
			err:    "step slow: timed out after 20ms",
			logged: []string{"info report: caught: step slow: timed out after 20ms"},
		},
	} {
		t.Run(tc.name, tc.check)
	}
}

func TestTimeouts(t *testing.T) {
	slow := func() *casarev1.Step { return action("slow", "delay", map[string]any{"duration": "10s"}) }
	for _, tc := range []runCase{
		{name: "a step", wf: wfOf(withTimeout(slow(), 20*time.Millisecond)), err: "step slow: timed out after 20ms"},
		{
			name: "a group",
			wf:   wfOf(withTimeout(&casarev1.Step{Id: "group", Steps: []*casarev1.Step{slow()}}, 20*time.Millisecond)),
			err:  "step slow: timed out after 20ms",
		},
		{
			name: "a step within its limit",
			wf:   wfOf(withTimeout(action("quick", "delay", map[string]any{"duration": "1ms"}), 10*time.Second)),
		},
		{
			name: "the workflow",
			wf:   &casarev1.Workflow{Timeout: durationpb.New(20 * time.Millisecond), Steps: []*casarev1.Step{slow()}},
			err:  "step slow: timed out after 20ms",
		},
		{
			name: "the workflow, not excused by continue_on_error",
			wf: func() *casarev1.Workflow {
				s := slow()
				s.ContinueOnError = true
				return &casarev1.Workflow{Timeout: durationpb.New(20 * time.Millisecond), Steps: []*casarev1.Step{s, logStep("after", "no")}}
			}(),
			err:    "step slow: timed out after 20ms",
			logged: []string{},
		},
		{
			name: "a step that goes on",
			wf: func() *casarev1.Workflow {
				s := withTimeout(slow(), 20*time.Millisecond)
				s.ContinueOnError = true
				return wfOf(s, logStep("after", "yes"))
			}(),
			logged: []string{"warn slow: failed, going on: step slow: timed out after 20ms", "info after: yes"},
		},
	} {
		t.Run(tc.name, tc.check)
	}
}

func TestCancel(t *testing.T) {
	soft := action("wait", "delay", map[string]any{"duration": 10.0})
	soft.ContinueOnError = true
	for _, tc := range []struct {
		name string
		wf   *casarev1.Workflow
	}{
		{"during a delay", wfOf(action("wait", "delay", map[string]any{"duration": 10.0}))},
		{"during a delay that would go on", wfOf(soft, logStep("after", "no"))},
		{"during a retry's backoff", wfOf(&casarev1.Step{Id: "wait", Uses: "fail", Retry: &casarev1.Retry{Attempts: 2, Backoff: durationpb.New(10 * time.Second)}})},
		{"during a loop", &casarev1.Workflow{
			Inputs: map[string]*casarev1.InputSpec{"l": {Default: structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{structpb.NewNumberValue(1), structpb.NewNumberValue(2)}})}},
			Steps:  []*casarev1.Step{{Id: "wait", Foreach: "inputs.l", Uses: "delay", With: soft.With}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			r := &recorder{}
			done := make(chan error, 1)
			go func() {
				_, err := newEngine().Run(ctx, tc.wf, nil, nil, r)
				done <- err
			}()
			time.Sleep(20 * time.Millisecond)
			cancel()
			select {
			case err := <-done:
				var ee *Error
				if !errors.As(err, &ee) || ee.Message != "cancelled" || ee.StepID != "wait" {
					t.Fatalf("err = %v, want step wait: cancelled", err)
				}
				if n := r.count("info after: no"); n != 0 {
					t.Errorf("a step ran after the cancel: %q", r.lines)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Run did not return after its context was cancelled")
			}
		})
	}

	t.Run("before the run", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		r := &recorder{}
		_, err := newEngine().Run(ctx, wfOf(logStep("hi", "x")), nil, nil, r)
		var ee *Error
		if !errors.As(err, &ee) || ee.Message != "cancelled" {
			t.Fatalf("err = %v, want cancelled", err)
		}
		if len(r.logged()) != 0 {
			t.Errorf("steps ran: %q", r.logged())
		}
	})
}

func TestInputs(t *testing.T) {
	specs := map[string]*casarev1.InputSpec{
		"who":   {Default: structpb.NewStringValue("world")},
		"times": {Default: structpb.NewNumberValue(2)},
		"url":   {Required: true},
		"opt":   {},
	}
	outputs := map[string]string{"who": "${{ inputs.who }}", "times": "${{ inputs.times }}", "url": "${{ inputs.url }}"}
	for _, tc := range []runCase{
		{
			name:    "defaults",
			wf:      &casarev1.Workflow{Inputs: specs, Steps: []*casarev1.Step{logStep("a", "x")}, Outputs: outputs},
			inputs:  map[string]any{"url": "http://x"},
			outputs: map[string]any{"who": "world", "times": 2.0, "url": "http://x"},
		},
		{
			name:    "given over defaults",
			wf:      &casarev1.Workflow{Inputs: specs, Steps: []*casarev1.Step{logStep("a", "x")}, Outputs: outputs},
			inputs:  map[string]any{"url": "http://x", "who": "ada", "times": 5},
			outputs: map[string]any{"who": "ada", "times": 5.0, "url": "http://x"},
		},
		{
			name: "a required input missing",
			wf:   &casarev1.Workflow{Inputs: specs, Steps: []*casarev1.Step{logStep("a", "x")}},
			err:  "input url is required", business: true, logged: []string{},
		},
		{
			name:   "an optional input missing",
			wf:     &casarev1.Workflow{Inputs: specs, Steps: []*casarev1.Step{logStep("a", "${{ inputs.opt }}")}},
			inputs: map[string]any{"url": "http://x"},
			err:    `step a: with.message: ${{ inputs.opt }}: no such key: opt`, business: true,
		},
	} {
		t.Run(tc.name, tc.check)
	}

	given := map[string]any{"url": "http://x"}
	if _, err := newEngine().Run(context.Background(), &casarev1.Workflow{Inputs: specs, Steps: []*casarev1.Step{logStep("a", "x")}}, given, nil, &recorder{}); err != nil {
		t.Fatal(err)
	}
	if len(given) != 1 {
		t.Errorf("Run changed the caller's inputs: %v", given)
	}
}

func TestOutputs(t *testing.T) {
	for _, tc := range []runCase{
		{name: "none declared", wf: wfOf(logStep("a", "x")), outputs: map[string]any{}},
		{
			name:    "after all steps",
			wf:      withOutputs(wfOf(action("a", "set", map[string]any{"x": 1.0}), action("b", "set", map[string]any{"x": 2.0})), map[string]string{"x": "${{ vars.x }}", "text": "x is ${{ vars.x }}"}),
			outputs: map[string]any{"x": 2.0, "text": "x is 2"},
		},
		{
			name: "an unknown name",
			wf:   withOutputs(wfOf(logStep("a", "x")), map[string]string{"x": "${{ vars.x }}"}),
			err:  `outputs.x: ${{ vars.x }}: no such key: x`, business: true,
		},
	} {
		t.Run(tc.name, tc.check)
	}
}

func TestProgress(t *testing.T) {
	wf := wfOf(logStep("a", "1"), logStep("b", "2"), &casarev1.Step{Id: "c", Steps: []*casarev1.Step{logStep("c1", "3"), logStep("c2", "4")}}, logStep("d", "5"))
	r := &recorder{}
	if _, err := newEngine().Run(context.Background(), wf, nil, nil, r); err != nil {
		t.Fatal(err)
	}
	want := []string{"a 0 ", "b 25 ", "c 50 ", "d 75 ", " 100 done"}
	if !reflect.DeepEqual(r.progress, want) {
		t.Errorf("progress %q, want %q", r.progress, want)
	}

	r = &recorder{}
	if _, err := newEngine().Run(context.Background(), wfOf(logStep("a", "1"), action("b", "fail", nil)), nil, nil, r); err == nil {
		t.Fatal("a failing workflow succeeded")
	}
	if want := []string{"a 0 ", "b 50 "}; !reflect.DeepEqual(r.progress, want) {
		t.Errorf("progress of a failure %q, want %q", r.progress, want)
	}

	r = &recorder{}
	if _, err := newEngine().Run(context.Background(), wfOf(), nil, nil, r); err != nil {
		t.Fatal(err)
	}
	if want := []string{" 100 done"}; !reflect.DeepEqual(r.progress, want) {
		t.Errorf("progress without steps %q, want %q", r.progress, want)
	}
}

func TestStepStarted(t *testing.T) {
	r := &recorder{}
	if _, err := newEngine().Run(context.Background(), wfOf(logStep("a", "x"), &casarev1.Step{Id: "g", Steps: []*casarev1.Step{logStep("b", "y")}}), nil, nil, r); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "g", "b"} {
		if r.count("debug "+id+": step started") != 1 {
			t.Errorf("no start logged for %s: %q", id, r.lines)
		}
	}
}

// One engine serves all of a robot's jobs at once; each run keeps its own
// variables.
func TestConcurrentRuns(t *testing.T) {
	e := newEngine()
	wf := withOutputs(wfOf(
		action("keep", "set", map[string]any{"me": "${{ inputs.i }}"}),
		action("wait", "delay", map[string]any{"duration": "1ms"}),
	), map[string]string{"me": "${{ vars.me }}"})
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			out, err := e.Run(context.Background(), wf, map[string]any{"i": i}, nil, &recorder{})
			if err != nil || out["me"] != float64(i) {
				t.Errorf("run %d: %v, %v", i, out, err)
			}
		})
	}
	wg.Wait()
}

func newEngine() Engine {
	return New(step.NewCatalogue(core.Actions()...), Options{})
}
