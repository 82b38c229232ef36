package workflow

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/testing/protocmp"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

const exampleYAML = `
name: invoice-sync
requires: {capabilities: [browser], labels: {app: sap}}
inputs: {url: {type: string, required: true}}
steps:
  - id: open
    uses: browser.navigate
    with: {url: "${{ inputs.url }}"}
  - id: rows
    uses: browser.scrape
    with: {selector: "table tr"}
    retry: {attempts: 3, backoff: 2s}
  - id: report
    if: "size(steps.rows.outputs.rows) > 0"
    uses: log
    with: {message: "found ${{ size(steps.rows.outputs.rows) }} rows"}
outputs: {count: "${{ size(steps.rows.outputs.rows) }}"}
`

const exampleJSON = `{
  "name": "invoice-sync",
  "requires": {"capabilities": ["browser"], "labels": {"app": "sap"}},
  "inputs": {"url": {"type": "string", "required": true}},
  "steps": [
    {"id": "open", "uses": "browser.navigate", "with": {"url": "${{ inputs.url }}"}},
    {"id": "rows", "uses": "browser.scrape", "with": {"selector": "table tr"}, "retry": {"attempts": 3, "backoff": "2s"}},
    {"id": "report", "if": "size(steps.rows.outputs.rows) > 0", "uses": "log", "with": {"message": "found ${{ size(steps.rows.outputs.rows) }} rows"}}
  ],
  "outputs": {"count": "${{ size(steps.rows.outputs.rows) }}"}
}`

func TestParseYAMLAndJSONAgree(t *testing.T) {
	fromYAML, err := Parse([]byte(exampleYAML))
	if err != nil {
		t.Fatal(err)
	}
	fromJSON, err := Parse([]byte(exampleJSON))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(fromJSON, fromYAML, protocmp.Transform()); diff != "" {
		t.Fatalf("YAML and JSON differ (-json +yaml):\n%s", diff)
	}
	if fromYAML.GetSteps()[1].GetRetry().GetBackoff().AsDuration().String() != "2s" {
		t.Errorf("backoff = %v", fromYAML.GetSteps()[1].GetRetry().GetBackoff())
	}
	if err := Validate(fromYAML, testCatalogue); err != nil {
		t.Fatalf("the DESIGN example is invalid: %v", err)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, input, want string
	}{
		{"Empty", "  \n", "empty"},
		{"UnknownField", "name: x\nstepz: []\n", `unknown field "stepz"`},
		{"UnknownStepField", "steps:\n  - id: a\n    uses: log\n    wiht: {}\n", `unknown field "wiht"`},
		{"BadYAML", "steps: [\n", "yaml"},
		{"BadDuration", "steps:\n  - id: a\n    uses: log\n    timeout: soon\n", `Duration value "soon"`},
		{"NonStringKey", "steps:\n  - id: a\n    uses: log\n    with: {1: x}\n", "keys must be strings"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.input))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Parse() error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestValidateListsEveryProblem(t *testing.T) {
	wf, err := Parse([]byte(`
name: Bad Name
steps:
  - {id: a, uses: log}
  - {id: a, uses: "brower click"}
  - {id: g, steps: [{id: x, uses: log}, {id: x, uses: set}]}
  - {id: both, uses: log, steps: [{id: on, uses: log}]}
`))
	if err != nil {
		t.Fatal(err)
	}
	err = Validate(wf, testCatalogue)
	var verr *ValidationError
	if !errors.As(err, &verr) {
		t.Fatalf("Validate() = %v, want a *ValidationError", err)
	}
	for _, want := range []string{
		"name:",
		`steps: step id "a" is used more than once`,
		"steps[1].uses:",
		`steps[2].steps: step id "x" is used more than once`,
		"steps[3]: a step needs either uses or nested steps, not both",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() does not report %q:\n%v", want, err)
		}
	}
	if _, err := Parse([]byte("name: empty\nsteps: []\n")); err != nil {
		t.Fatal(err)
	}
	empty, _ := Parse([]byte("name: empty\nsteps: []\n"))
	if err := Validate(empty, testCatalogue); err == nil || !strings.Contains(err.Error(), "steps:") {
		t.Errorf("a workflow without steps: %v", err)
	}
}

func FuzzParseValidate(f *testing.F) {
	f.Add([]byte(exampleYAML))
	f.Add([]byte(exampleJSON))
	f.Add([]byte("steps: [{id: a, uses: log, with: {n: 1}}]"))
	f.Add([]byte("inputs: {n: {type: integer, default: 1}}\nsteps: [{id: a, uses: log, if: \"inputs.n > 0\", foreach: \"[1]\", with: {message: \"${{ item + steps.a.outputs.x }}\"}}]"))
	f.Add([]byte(`{"steps": [{"id": "g", "steps": [{"id": "a", "uses": "assert", "with": {"condition": "${{ error.message"}}], "on_error": [{"id": "b", "uses": "set"}]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		wf, err := Parse(data)
		if err != nil {
			return
		}
		_ = Validate(wf, testCatalogue)
		again, err := Parse(mustJSON(t, wf))
		if err != nil {
			t.Fatalf("re-parsing our own output failed: %v", err)
		}
		if diff := cmp.Diff(wf, again, protocmp.Transform()); diff != "" {
			t.Fatalf("round trip changed the workflow:\n%s", diff)
		}
	})
}

func mustJSON(t *testing.T, wf *casarev1.Workflow) []byte {
	t.Helper()
	b, err := protojson.Marshal(wf)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
