package workflow

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/casarerpa/casare/agent/workflow/builtin"
	"github.com/casarerpa/casare/agent/workflow/spec"
	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

// testCatalogue is the core steps and stand-ins for the browser family,
// whose specs are all validation looks at.
var testCatalogue = spec.NewCatalogue(
	builtin.Steps["log"], builtin.Steps["set"], builtin.Steps["delay"], builtin.Steps["fail"], builtin.Steps["assert"],
	&spec.Action{
		Name: "browser.navigate", Summary: "Opens a page.", Capability: "browser",
		Params: []spec.Field{
			{Name: "url", Type: "string", Required: true, Doc: "Where to go.", Shape: spec.Shape{Kind: spec.String}},
			{Name: "timeout", Type: "duration", Doc: "How long to wait.", Shape: spec.Shape{Kind: spec.Duration}},
			{Name: "retries", Type: "integer", Doc: "How often.", Shape: spec.Shape{Kind: spec.Integer}},
		},
	},
	&spec.Action{
		Name: "browser.scrape", Summary: "Reads rows.", Capability: "browser",
		Params:  []spec.Field{{Name: "selector", Type: "string", Required: true, Shape: spec.Shape{Kind: spec.String}}},
		Outputs: []spec.Field{{Name: "rows", Type: "list of string", Doc: "The rows."}},
	},
	&spec.Action{Name: "shell.run", Summary: "Runs a command.", Capability: "shell", AnyParams: true},
)

func problems(t *testing.T, doc string) []string {
	t.Helper()
	wf, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	err = Validate(wf, testCatalogue)
	if err == nil {
		return nil
	}
	var verr *ValidationError
	if !errors.As(err, &verr) {
		t.Fatalf("Validate() = %v, want a *ValidationError", err)
	}
	return verr.Problems
}

func TestValidateSteps(t *testing.T) {
	for _, tc := range []struct {
		name string
		doc  string
		want []string // each must be one problem, exactly
	}{
		{
			name: "UnknownStepSuggests",
			doc:  "steps:\n  - {id: a, uses: brower.navigate, with: {url: x}}\n",
			want: []string{`steps[0].uses: unknown step "brower.navigate"; did you mean "browser.navigate"?`},
		},
		{
			name: "RequiredParameter",
			doc:  "steps:\n  - {id: a, uses: log}\n  - {id: b, uses: browser.navigate, with: {timeout: 2s}}\n",
			want: []string{"steps[0].with.message: required", "steps[1].with.url: required"},
		},
		{
			name: "UnknownParameter",
			doc:  "steps:\n  - {id: a, uses: browser.navigate, with: {url: x, ulr: y}}\n",
			want: []string{"steps[0].with.ulr: unknown parameter of browser.navigate (it takes retries, timeout, url)"},
		},
		{
			name: "LiteralOfTheWrongType",
			doc: "steps:\n  - {id: a, uses: browser.navigate, with: {url: [x], retries: two, timeout: soon}}\n" +
				"  - {id: b, uses: fail, with: {business: \"${{ inputs.x }}\"}}\n",
			want: []string{
				"steps[0].with.retries: want integer, got string",
				`steps[0].with.timeout: "soon" is not a duration like 1.5s`,
				"steps[0].with.url: want string, got array",
			},
		},
		{
			name: "NestedPaths",
			doc:  "steps:\n  - id: g\n    steps:\n      - {id: x, uses: log, with: {message: hi}}\n      - {id: y, uses: log, with: {mesage: hi}}\n",
			want: []string{"steps[0].steps[1].with.message: required", "steps[0].steps[1].with.mesage: unknown parameter of log (it takes level, message)"},
		},
		{
			name: "ExpressionSyntax",
			doc:  "steps:\n  - {id: a, uses: log, with: {message: hi}, if: \"inputs.x >\"}\n",
			want: []string{"steps[0].if: ${{ inputs.x > }}: column 11: Syntax error: mismatched input '<EOF>' expecting expression"},
		},
		{
			name: "ExpressionTypes",
			doc: `inputs: {n: {type: integer}, name: {type: string}, price: {type: number}}
steps:
  - {id: a, uses: log, with: {message: "${{ inputs.n + 1 }} ${{ inputs.name + 1 }}"}}
  - {id: b, uses: log, with: {message: "x"}, if: "inputs.name"}
  - {id: c, uses: log, with: {message: "${{ inputs.price * 2.0 }} ${{ inputs.nope }}"}}
`,
			want: []string{
				"steps[0].with.message: ${{ inputs.name + 1 }}: column 13: found no matching overload for '_+_' applied to '(string, int)'",
				"steps[1].if: ${{ inputs.name }}: gives string, want bool",
				"steps[2].with.message: ${{ inputs.nope }}: inputs.nope: not an input of the workflow (it takes n, name, price)",
			},
		},
		{
			name: "StepReferences",
			doc: `steps:
  - {id: a, uses: log, with: {message: "${{ steps.b.outputs.message }}"}}
  - {id: b, uses: log, with: {message: "${{ steps.a.outputs.message }} ${{ steps.zz.outputs }}"}}
  - {id: c, uses: log, with: {message: "${{ steps.c.outputs.message }}"}}
outputs: {all: "${{ steps.c.outputs.message }}"}
`,
			want: []string{
				"steps[0].with.message: ${{ steps.b.outputs.message }}: steps.b: that step has not run yet here",
				`steps[1].with.message: ${{ steps.zz.outputs }}: steps.zz: no step has id "zz"`,
				"steps[2].with.message: ${{ steps.c.outputs.message }}: steps.c: that step has not run yet here",
			},
		},
		{
			name: "PathsIntoWith",
			doc: `steps:
  - id: a
    uses: set
    with:
      m: {x: ["${{ 1 + }}", {y: "${{ item }}"}], z: "${{ error.message }}"}
      n: [ok, "${{ index }}"]
`,
			want: []string{
				"steps[0].with.m.x[0]: ${{ 1 + }}: column 4: Syntax error: mismatched input '<EOF>' expecting expression",
				"steps[0].with.m.x[1].y: ${{ item }}: item exists only inside a foreach",
				"steps[0].with.m.z: ${{ error.message }}: error exists only in on_error steps",
				"steps[0].with.n[1]: ${{ index }}: index exists only inside a foreach",
			},
		},
		{
			name: "ItemIndexAndError",
			doc: `steps:
  - {id: a, uses: log, with: {message: "${{ item }}"}}
  - {id: b, uses: log, with: {message: "${{ index }} ${{ item }}"}, foreach: "[1, 2]", parallelism: 2}
  - {id: c, uses: log, with: {message: "${{ error.message }}"}, on_error: [{id: d, uses: log, with: {message: "${{ error.step }}"}}]}
  - {id: e, uses: log, with: {message: x}, parallelism: 2}
  - {id: f, uses: log, with: {message: x}, foreach: "'abc'"}
`,
			want: []string{
				"steps[0].with.message: ${{ item }}: item exists only inside a foreach",
				"steps[2].with.message: ${{ error.message }}: error exists only in on_error steps",
				"steps[3].parallelism: only a foreach step runs in parallel",
				"steps[4].foreach: ${{ 'abc' }}: gives string, want a list",
			},
		},
		{
			name: "Inputs",
			doc: `inputs:
  n: {type: integer, default: 1.5}
  s: {type: string, required: true, default: x}
  ok: {type: array, default: [1]}
steps: [{id: a, uses: log, with: {message: x}}]
`,
			want: []string{
				"inputs.n.default: want integer, got 1.5",
				"inputs.s: required and with a default: a default makes the input optional; drop one",
			},
		},
		{
			name: "AssertCondition",
			doc:  "steps:\n  - {id: a, uses: assert, with: {condition: \"1 +\"}}\n  - {id: b, uses: assert, with: {condition: \"size('x') == 1\"}}\n",
			want: []string{"steps[0].with.condition: ${{ 1 + }}: column 4: Syntax error: mismatched input '<EOF>' expecting expression"},
		},
		{
			name: "Valid",
			doc: `inputs: {names: {type: array}, n: {type: integer, default: 2}}
steps:
  - id: each
    foreach: inputs.names
    parallelism: 4
    steps:
      - {id: hi, uses: log, with: {message: "${{ index }}: ${{ item }} ${{ inputs.n + 1 }}"}}
  - {id: keep, uses: set, with: {anything: 1, goes: "${{ steps.each.outputs }}"}}
  - id: risky
    uses: shell.run
    with: {command: ls}
    on_error: [{id: report, uses: log, with: {message: "${{ error.message }} in ${{ error.step }}"}}]
outputs: {n: "${{ size(steps.each.outputs) }}", kept: "${{ vars.anything }}"}
on_error: [{id: last, uses: log, with: {message: "${{ error.message }}"}}]
`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := problems(t, tc.doc)
			for _, want := range tc.want {
				if !slices.Contains(got, want) {
					t.Errorf("missing problem %q in:\n  %s", want, strings.Join(got, "\n  "))
				}
			}
			if len(got) != len(tc.want) {
				t.Errorf("got %d problems, want %d:\n  %s", len(got), len(tc.want), strings.Join(got, "\n  "))
			}
		})
	}
}

func TestValidateWithoutCatalogue(t *testing.T) {
	wf, err := Parse([]byte("steps: [{id: a, uses: nothing.known, with: {x: \"${{ 1 + }}\"}}]"))
	if err != nil {
		t.Fatal(err)
	}
	err = Validate(wf, nil)
	if err == nil || !strings.Contains(err.Error(), "steps[0].with.x: ${{ 1 + }}") || strings.Contains(err.Error(), "unknown step") {
		t.Fatalf("Validate(nil catalogue) = %v, want only the expression problem", err)
	}
}

func TestRequirements(t *testing.T) {
	wf, err := Parse([]byte(`
requires: {capabilities: [desktop, browser], labels: {app: sap}}
steps:
  - {id: a, uses: log, with: {message: x}}
  - id: g
    steps: [{id: b, uses: browser.navigate, with: {url: x}}]
    on_error: [{id: c, uses: shell.run}]
`))
	if err != nil {
		t.Fatal(err)
	}
	req := Requirements(wf, testCatalogue)
	if want := []string{"browser", "desktop", "shell"}; !slices.Equal(req.GetCapabilities(), want) {
		t.Errorf("capabilities = %v, want %v", req.GetCapabilities(), want)
	}
	if req.GetLabels()["app"] != "sap" {
		t.Errorf("labels = %v", req.GetLabels())
	}
	if got := Requirements(&casarev1.Workflow{}, testCatalogue).GetCapabilities(); len(got) != 0 {
		t.Errorf("an empty workflow needs %v", got)
	}
}

// queue.process is the one action whose step has nested steps, and they
// see the item it took.
func TestValidateQueueSteps(t *testing.T) {
	for _, tc := range []struct {
		name string
		doc  string
		want []string
	}{
		{
			name: "ProcessWithItsSteps",
			doc: `steps:
  - id: loop
    uses: queue.process
    with: {queue: invoices, limit: 10}
    steps:
      - {id: pay, uses: log, with: {message: "paying ${{ item.data.invoice }} (${{ index }})"}}
      - {id: note, uses: queue.progress, with: {item: "${{ item }}", progress: "${{ steps.pay.outputs.message }}"}}
  - {id: done, uses: log, with: {message: "${{ steps.loop.outputs.succeeded }} of ${{ steps.loop.outputs.processed }}"}}
`,
		},
		{
			name: "OutputAfterTheNestedSteps",
			doc: `steps:
  - id: loop
    uses: queue.process
    with:
      queue: q
      output: {invoice: "${{ item.data.invoice }}", said: "${{ steps.pay.outputs.message }}", bad: "${{ steps.nope.outputs }}"}
    steps:
      - {id: pay, uses: log, with: {message: "${{ item.reference }}"}}
  - {id: after, uses: log, with: {message: "${{ item }}"}}
`,
			want: []string{
				`steps[0].with.output.bad: ${{ steps.nope.outputs }}: steps.nope: no step has id "nope"`,
				"steps[1].with.message: ${{ item }}: item exists only inside a foreach",
			},
		},
		{
			name: "OutputLiteralMustBeAnObject",
			doc:  "steps:\n  - {id: loop, uses: queue.process, with: {queue: q, output: [1]}, steps: [{id: x, uses: log, with: {message: x}}]}\n",
			want: []string{"steps[0].with.output: want object, got array"},
		},
		{
			name: "ProcessNeedsSteps",
			doc:  "steps:\n  - {id: loop, uses: queue.process, with: {queue: q}}\n",
			want: []string{"steps[0].steps: queue.process needs nested steps: they run once per item"},
		},
		{
			name: "OtherStepsTakeNoSteps",
			doc:  "steps:\n  - {id: n, uses: queue.next, with: {queue: q}, steps: [{id: x, uses: log, with: {message: x}}]}\n",
			want: []string{"steps[0]: a step needs either uses or nested steps, not both (only queue.process takes both)"},
		},
		{
			name: "ItemOnlyInside",
			doc: `steps:
  - {id: loop, uses: queue.process, with: {queue: "${{ item }}"}, steps: [{id: x, uses: log, with: {message: x}}]}
`,
			want: []string{"steps[0].with.queue: ${{ item }}: item exists only inside a foreach"},
		},
		{
			name: "Parameters",
			doc: `steps:
  - {id: a, uses: queue.add, with: {data: {x: 1}, priority: 3}}
  - {id: b, uses: queue.fail, with: {reason: r}}
  - {id: c, uses: queue.process, with: {queue: q, limit: many}, steps: [{id: x, uses: log, with: {message: x}}]}
  - {id: d, uses: queue.next, with: {queue: q, item: x}}
`,
			want: []string{
				"steps[0].with.queue: required",
				"steps[0].with.priority: want string, got number",
				"steps[1].with.item: required",
				"steps[1].with.type: required",
				"steps[2].with.limit: want integer, got string",
				"steps[3].with.item: unknown parameter of queue.next (it takes queue)",
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wf, err := Parse([]byte(tc.doc))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			var verr *ValidationError
			if err := Validate(wf, builtin.Steps); errors.As(err, &verr) {
				got = verr.Problems
			} else if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("problems:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(tc.want, "\n  "))
			}
		})
	}
}
