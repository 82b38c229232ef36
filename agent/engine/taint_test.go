package engine

import (
	"context"
	"encoding/base64"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/casarerpa/casare/agent/step"
	"github.com/casarerpa/casare/agent/step/core"
	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

// TestDerivedSecretsAreMasked: a value an expression computes from a
// secret input (a substring, an upper-cased copy, a concatenation, a
// variable set from one, a step output marked secret) is hidden in the
// log, the outputs and the error, as are the secret's obvious transforms
// written out literally; values computed from clean data are not.
func TestDerivedSecretsAreMasked(t *testing.T) {
	const pw = "correct-horse"
	vault := step.Define("vault.read", "Reads a credential.", func(context.Context, *step.Env, map[string]any) (map[string]any, error) {
		return map[string]any{"token": "tok-from-vault-42"}, nil
	})
	wf := &casarev1.Workflow{
		Inputs: map[string]*casarev1.InputSpec{
			"pw":   {Type: "string", Secret: true},
			"user": {Type: "string"},
		},
		Steps: []*casarev1.Step{
			logStep("sub", "tail ${{ inputs.pw.substring(1) }}"),
			logStep("upper", "loud ${{ inputs.pw.upperAscii() }}"),
			logStep("concat", "${{ inputs.user + ':' + inputs.pw }}"),
			logStep("b64", "basic ${{ base64.encode(bytes(inputs.pw)) }}"),
			action("keep", "set", map[string]any{"half": "${{ inputs.pw.substring(0, 7) }}", "who": "${{ inputs.user }}"}),
			logStep("fromvar", "var ${{ vars.half.reverse() }} for ${{ vars.who }}"),
			func() *casarev1.Step { s := action("cred", "vault.read", nil); s.Secret = true; return s }(),
			logStep("token", "token ${{ steps.cred.outputs.token.lowerAscii() }}"),
			func() *casarev1.Step {
				s := logStep("checked", "the check was true or false")
				s.If = "size(inputs.pw) > 3"
				return s
			}(),
			logStep("clean", "hello ${{ inputs.user.upperAscii() }}"),
			action("boom", "fail", map[string]any{"message": "refused ${{ inputs.pw.substring(2) }}", "business": true}),
		},
	}
	e := New(step.NewCatalogue(append(core.Actions(), vault)...), Options{})
	r := &recorder{}
	_, err := e.Run(context.Background(), wf, map[string]any{"pw": pw, "user": "ann"}, nil, r)
	want := []string{
		"info sub: tail ***",
		"info upper: loud ***",
		"info concat: ***",
		"info b64: basic ***",
		"info fromvar: var *** for ann",
		"info token: token ***",
		"info checked: the check was true or false",
		"info clean: hello ANN",
	}
	if got := r.logged(); !reflect.DeepEqual(got, want) {
		t.Errorf("log =\n%q\nwant\n%q", got, want)
	}
	if err == nil || err.Error() != "step boom: refused ***" {
		t.Errorf("err = %v, want the derived value masked", err)
	}
	for _, l := range r.lines {
		for _, leak := range []string{pw, strings.ToUpper(pw), pw[1:], pw[2:], base64.StdEncoding.EncodeToString([]byte(pw)), "tok-from-vault-42"} {
			if strings.Contains(l, leak) {
				t.Errorf("log line %q shows %q", l, leak)
			}
		}
	}
}

func TestDerivedSecretOutputs(t *testing.T) {
	wf := withOutputs(&casarev1.Workflow{
		Inputs: map[string]*casarev1.InputSpec{"pw": {Type: "string", Secret: true}, "n": {Type: "integer"}},
		Steps:  []*casarev1.Step{logStep("a", "hi")},
	}, map[string]string{
		"short":   "${{ inputs.pw.substring(0, 2) }}",
		"size":    "${{ size(inputs.pw) }}",
		"written": "pw: ${{ inputs.pw.upperAscii() }}",
		"literal": "shouting HUNTER2-X",
		"clean":   "${{ inputs.n * 2 }}",
	})
	out, err := newEngine().Run(context.Background(), wf, map[string]any{"pw": "hunter2-x", "n": 4}, nil, &recorder{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"short": "***", "size": "***", "written": "***", "literal": "shouting ***", "clean": "8"}
	got := map[string]any{}
	for k, v := range out {
		if k == "clean" {
			v = fmt.Sprint(v)
		}
		got[k] = v
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("outputs = %#v, want %#v", got, want)
	}
}
