package api

import (
	"context"
	"testing"

	"buf.build/go/protovalidate"
	"google.golang.org/protobuf/proto"

	"github.com/casarerpa/casare/agent/workflow/workflowtest"
	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

// BenchmarkPutWorkflowValidateLargest checks a PutWorkflow request with the
// largest workflow the limits allow as the server does before storing it:
// decoding the request, the Validate interceptor's checks, then the
// handler's. Over 100 ms is a bug.
func BenchmarkPutWorkflowValidateLargest(b *testing.B) {
	wf := workflowtest.Largest()
	wf.Name = "largest"
	data, err := proto.Marshal(&casarev1.PutWorkflowRequest{Workflow: wf})
	if err != nil {
		b.Fatal(err)
	}
	validator, err := protovalidate.New()
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	ctx := context.Background()
	defer workflowtest.ReportCPU(b)()
	for b.Loop() {
		req := &casarev1.PutWorkflowRequest{}
		if err := proto.Unmarshal(data, req); err != nil {
			b.Fatal(err)
		}
		if err := checkRequest(validator, req); err != nil {
			b.Fatal(err)
		}
		if err := validateWorkflow(ctx, req.GetWorkflow()); err != nil {
			b.Fatal(err)
		}
	}
}
