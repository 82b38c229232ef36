package api

import (
	"fmt"
	"strings"
	"testing"

	"github.com/casarerpa/casare/server/registry"
)

func maskedJob(secret bool) *registry.Job {
	spec := `"pw":{"type":"string"}`
	if secret {
		spec = `"pw":{"type":"string","secret":true}`
	}
	var result strings.Builder
	result.WriteString(`{`)
	for i := range 20 {
		fmt.Fprintf(&result, `"out%d":"row %d of the report, nothing secret in it",`, i, i)
	}
	result.WriteString(`"echo":"pw was hunter2-hunter2"}`)
	return &registry.Job{
		ID: "j", WorkflowName: "w", Status: registry.JobFailed,
		Workflow:      `{"name":"w","inputs":{` + spec + `,"user":{"type":"string"}},"steps":[{"id":"a","uses":"log","with":{"message":"hi"}}]}`,
		Inputs:        `{"pw":"hunter2-hunter2","user":"ann"}`,
		Result:        result.String(),
		StatusMessage: "step a: login refused for HUNTER2-HUNTER2",
	}
}

func TestJobToProtoMasks(t *testing.T) {
	got := (*Services)(nil).jobToProto(maskedJob(true))
	if pw := got.GetInputs().GetFields()["pw"].GetStringValue(); pw != "***" {
		t.Errorf("inputs.pw = %q, want ***", pw)
	}
	if user := got.GetInputs().GetFields()["user"].GetStringValue(); user != "ann" {
		t.Errorf("inputs.user = %q, want ann", user)
	}
	if echo := got.GetResult().GetFields()["echo"].GetStringValue(); echo != "pw was ***" {
		t.Errorf("result.echo = %q", echo)
	}
	if got.GetStatusMessage() != "step a: login refused for ***" {
		t.Errorf("status message %q", got.GetStatusMessage())
	}
	plain := (*Services)(nil).jobToProto(maskedJob(false))
	if plain.GetInputs().GetFields()["pw"].GetStringValue() != "hunter2-hunter2" {
		t.Errorf("an input not declared secret is masked")
	}
}

// BenchmarkJobToProto is the cost masking adds to every job of a list or
// watch: a job whose workflow declares no secret pays a substring search.
func BenchmarkJobToProto(b *testing.B) {
	for _, secret := range []bool{false, true} {
		b.Run(fmt.Sprintf("secret=%v", secret), func(b *testing.B) {
			j := maskedJob(secret)
			b.ReportAllocs()
			for b.Loop() {
				(*Services)(nil).jobToProto(j)
			}
		})
	}
}

func TestWorkflowReadsHideSecretDefaults(t *testing.T) {
	v := &registry.WorkflowVersion{Name: "w", Version: 1, Definition: `{"name":"w","inputs":{"pw":{"type":"string","secret":true,"default":"hunter2"},"n":{"type":"number","default":3}},"steps":[{"id":"a","uses":"log"}]}`}
	got := workflowVersionToProto(v).GetWorkflow().GetInputs()
	if d := got["pw"].GetDefault().GetStringValue(); d != "***" {
		t.Errorf("the secret input's default shows %q, want ***", d)
	}
	if d := got["n"].GetDefault().GetNumberValue(); d != 3 {
		t.Errorf("a plain input's default shows %v, want 3", d)
	}
}
