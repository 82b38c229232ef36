package engine

import (
	"context"
	"errors"
	"strings"
	"testing"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

// tenfold is the expression: 10^(n+1) characters.
func tenfold(n int) string {
	return "'aaaaaaaaaa'" + strings.Repeat(".replace('a','aaaaaaaaaa')", n)
}

func TestOutputLimits(t *testing.T) {
	// JSON adds the two quotes.
	atLimit := strings.Repeat("a", MaxOutputBytes-2)
	for _, tc := range []runCase{
		{
			name:    "OutputAtLimit",
			wf:      withOutputs(wfOf(logStep("a", "x")), map[string]string{"big": "${{ inputs.s }}"}),
			inputs:  map[string]any{"s": atLimit},
			outputs: map[string]any{"big": atLimit},
		},
		{
			name:   "OutputOverLimit",
			wf:     withOutputs(wfOf(logStep("a", "x")), map[string]string{"big": "${{ inputs.s }}"}),
			inputs: map[string]any{"s": strings.Repeat("a", 10<<20)},
			err:    "output big is 10.0 MiB, the limit is 1 MiB", business: true,
		},
		{
			name: "IssueExpression",
			wf:   withOutputs(wfOf(logStep("a", "x")), map[string]string{"big": "${{ " + tenfold(6) + " }}"}),
			err:  "the value of replace is 9.5 MiB, the limit is 4 MiB", contains: true, business: true,
		},
		{
			// A value written into text many times: the text is held to
			// the limit of a value an expression makes.
			name:   "TemplateOverLimit",
			wf:     withOutputs(wfOf(logStep("a", "x")), map[string]string{"t": strings.Repeat("${{ inputs.s }},", 5)}),
			inputs: map[string]any{"s": atLimit},
			err:    "outputs.t: the text is 5.0 MiB, the limit is 4 MiB", business: true,
		},
		{
			name:   "ResultOverLimit",
			wf:     withOutputs(wfOf(logStep("a", "x")), map[string]string{"a": "${{ inputs.s }}", "b": "${{ inputs.s }}", "c": "${{ inputs.s }}"}),
			inputs: map[string]any{"s": atLimit},
			err:    "the result (all outputs together) is 3 MiB, the limit is 2 MiB", business: true,
		},
	} {
		t.Run(tc.name, tc.check)
	}
}

func TestLogLineLimit(t *testing.T) {
	for _, tc := range []struct {
		name string
		size int
		cut  bool
	}{
		{"AtLimit", MaxLogLine, false},
		{"OverLimit", MaxLogLine + 1, true},
		{"Huge", 10 << 20, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &recorder{}
			wf := withOutputs(wfOf(logStep("a", "${{ inputs.s }}")), map[string]string{"m": "${{ steps.a.outputs.message }}"})
			out, err := newEngine().Run(context.Background(), wf, map[string]any{"s": strings.Repeat("a", tc.size)}, nil, r)
			if err != nil {
				t.Fatal(err)
			}
			lines := r.logged()
			if len(lines) != 1 {
				t.Fatalf("%d lines logged", len(lines))
			}
			line := strings.TrimPrefix(lines[0], "info a: ")
			if len(line) > MaxLogLine {
				t.Errorf("line of %d bytes, over %d", len(line), MaxLogLine)
			}
			if cut := strings.Contains(line, "… [cut: "); cut != tc.cut {
				t.Errorf("cut = %v, want %v", cut, tc.cut)
			}
			if out["m"] != line {
				t.Error("the log step's output is not the line written")
			}
		})
	}
}

func TestErrorLimit(t *testing.T) {
	huge := strings.Repeat("a", 10<<20)
	for _, tc := range []struct {
		name string
		wf   *casarev1.Workflow
	}{
		{"FailMessage", wfOf(action("f", "fail", map[string]any{"message": "${{ inputs.s }}"}))},
		// An error that quotes a value: "inputs.s is the string "aaa…", not true or false".
		{"QuotedValue", wfOf(&casarev1.Step{Id: "c", If: "inputs.s", Uses: "log", With: logStep("c", "x").With})},
		{"ContinueOnErrorLine", wfOf(&casarev1.Step{Id: "f", Uses: "fail", With: action("f", "fail", map[string]any{"message": "${{ inputs.s }}"}).With, ContinueOnError: true})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &recorder{}
			_, err := newEngine().Run(context.Background(), tc.wf, map[string]any{"s": huge}, nil, r)
			for _, l := range r.lines {
				if len(l) > MaxLogLine+100 {
					t.Errorf("a log line of %d bytes", len(l))
				}
			}
			if tc.name == "ContinueOnErrorLine" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var ee *Error
			if !errors.As(err, &ee) {
				t.Fatalf("err = %v", err)
			}
			if len(ee.Message) > MaxErrorBytes || !strings.Contains(ee.Message, "… [cut: ") {
				t.Errorf("message of %d bytes, ending %q", len(ee.Message), ee.Message[max(len(ee.Message)-40, 0):])
			}
		})
	}
}
