package workflow_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/casarerpa/casare/agent/workflow"
	"github.com/casarerpa/casare/agent/workflow/builtin"
	"github.com/casarerpa/casare/agent/workflow/workflowtest"
)

// catalogue is the one the control plane checks workflows against.
var catalogue = builtin.Steps

func TestValidateStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := workflow.ValidateContext(ctx, workflowtest.Largest(), catalogue); !errors.Is(err, context.Canceled) {
		t.Fatalf("ValidateContext = %v, want context.Canceled", err)
	}
}

func TestLargestIsValid(t *testing.T) {
	wf := workflowtest.Largest()
	if n := workflowtest.Count(wf.Steps); n != workflow.MaxSteps {
		t.Fatalf("%d steps", n)
	}
	if n := workflowtest.Values(wf); n != workflow.MaxValues {
		t.Fatalf("%d values", n)
	}
	if err := workflow.Validate(wf, catalogue); err != nil {
		t.Fatalf("Validate: %.2000v", err)
	}
	// It fits in a file and in a request, and fills most of either.
	data, err := protojson.Marshal(wf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := workflow.Parse(data); err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if n := proto.Size(wf); n > workflow.MaxDefinitionBytes || max(n, len(data)) < workflow.MaxDefinitionBytes*9/10 {
		t.Fatalf("%d bytes in the binary form, %d as JSON; the limit is %d", n, len(data), workflow.MaxDefinitionBytes)
	}
}

// TestLargestPlusOneValue checks that the largest workflow is at the value
// limit: one value more is refused, as a file and as a message.
func TestLargestPlusOneValue(t *testing.T) {
	wf := workflowtest.Largest()
	wf.Description = "one more"
	want := fmt.Sprintf("more than %d values in the workflow, the limit is %d", workflow.MaxValues, workflow.MaxValues)
	data, err := protojson.Marshal(wf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := workflow.Parse(data); err == nil || err.Error() != "parse workflow: "+want {
		t.Errorf("Parse = %v, want %q", err, want)
	}
	var verr *workflow.ValidationError
	if err := workflow.Validate(wf, catalogue); !errors.As(err, &verr) || len(verr.Problems) != 1 || !strings.HasSuffix(verr.Problems[0], ": "+want) {
		t.Errorf("Validate = %.500v, want one problem %q", err, want)
	}
}

// BenchmarkValidateLargest validates the largest, deepest workflow the
// limits allow; over 100 ms is a bug.
func BenchmarkValidateLargest(b *testing.B) {
	wf := workflowtest.Largest()
	data, _ := protojson.Marshal(wf)
	b.SetBytes(int64(len(data)))
	defer workflowtest.ReportCPU(b)()
	for b.Loop() {
		if err := workflow.Validate(wf, catalogue); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseValidateLargest adds decoding the JSON file.
func BenchmarkParseValidateLargest(b *testing.B) {
	data, _ := protojson.Marshal(workflowtest.Largest())
	b.SetBytes(int64(len(data)))
	defer workflowtest.ReportCPU(b)()
	for b.Loop() {
		wf, err := workflow.Parse(data)
		if err != nil {
			b.Fatal(err)
		}
		if err := workflow.Validate(wf, catalogue); err != nil {
			b.Fatal(err)
		}
	}
}
