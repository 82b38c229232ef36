package api

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"buf.build/go/protovalidate"
	"connectrpc.com/connect/v2"
	"google.golang.org/protobuf/proto"

	"github.com/casarerpa/casare/agent/workflow"
	"github.com/casarerpa/casare/agent/workflow/workflowtest"
	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

// TestRequestValuesLimit sends the largest workflow, and one with a value
// more, in the requests that carry a workflow: the one over is refused
// for its values alone, before any rule, though it breaks one too.
func TestRequestValuesLimit(t *testing.T) {
	validator, err := protovalidate.New()
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(": more than %d values in the workflow, the limit is %d", workflow.MaxValues, workflow.MaxValues)
	for _, tc := range []struct {
		name string
		req  func(*casarev1.Workflow) proto.Message
	}{
		{"PutWorkflow", func(wf *casarev1.Workflow) proto.Message { return &casarev1.PutWorkflowRequest{Workflow: wf} }},
		{"SubmitJob", func(wf *casarev1.Workflow) proto.Message {
			return &casarev1.SubmitJobRequest{Source: &casarev1.SubmitJobRequest_Workflow{Workflow: wf}}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wf := workflowtest.Largest()
			if err := checkRequest(validator, tc.req(wf)); err != nil {
				t.Fatalf("at the limit: %.500v", err)
			}
			// A step id the rules refuse, and one value more than the
			// limit: an empty map in the last step that holds them.
			wf.Steps[1].Id = "not an id!"
			last := wf.Steps[len(wf.Steps)-1].Steps
			holder := len(last) - 1
			for last[holder].With.Fields["v"] == nil {
				holder--
			}
			l := last[holder].With.Fields["v"].GetListValue()
			l.Values = append(l.Values, l.Values[0])
			// The limit is passed at the last value counted, in the
			// last step's with.
			at := fmt.Sprintf("workflow.steps[%d].steps[%d].with.", len(wf.Steps)-1, len(last)-1)
			err := checkRequest(validator, tc.req(wf))
			var cerr *connect.Error
			if !errors.As(err, &cerr) || cerr.Code() != connect.CodeInvalidArgument || !strings.HasPrefix(cerr.Message(), at) || !strings.HasSuffix(cerr.Message(), want) || strings.Contains(cerr.Message(), ";") {
				t.Fatalf("err = %.500v, want one problem at %s…%s", err, at, want)
			}
		})
	}
}
