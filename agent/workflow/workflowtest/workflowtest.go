// Package workflowtest builds workflows for the tests and benchmarks of the
// packages that validate them.
package workflowtest

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/casarerpa/casare/agent/workflow"
	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

// Largest is the largest workflow the limits allow, and as costly to check
// as they let it be: workflow.MaxSteps steps, one branch nested
// workflow.MaxDepth deep, every step with an if and a message,
// workflow.MaxExpressions different expressions filling
// workflow.MaxExpressionBytes, most of them referring to an earlier step.
// It is valid against the core steps.
func Largest() *casarev1.Workflow {
	wf := &casarev1.Workflow{Inputs: map[string]*casarev1.InputSpec{"n": {Type: "integer"}}}
	distinct, bytes := 2, len("inputs.n > 0")+len("size(inputs) + 1")
	prev := ""
	add := func(list *[]*casarev1.Step, id string) {
		s := &casarev1.Step{Id: id, Uses: "log", If: "inputs.n > 0"}
		src := "size(inputs) + 1"
		if prev != "" && distinct < workflow.MaxExpressions-1 {
			// Padded so that the different expressions fill the budget.
			src = "steps." + prev + ".outputs.message + '" + strings.Repeat("x", workflow.MaxExpressionBytes/workflow.MaxExpressions-len(prev)-28) + "'"
			distinct++
			bytes += len(src)
		}
		s.With = Message("${{ " + src + " }}")
		*list = append(*list, s)
		prev = id
	}
	group := &casarev1.Step{Id: "deep"}
	wf.Steps = append(wf.Steps, group)
	n := 1
	for d := 2; d < workflow.MaxDepth; d++ {
		next := &casarev1.Step{Id: fmt.Sprintf("deep%d", d)}
		group.Steps = []*casarev1.Step{next}
		group = next
		n++
	}
	add(&group.Steps, "bottom")
	n++
	for g := 0; n < workflow.MaxSteps; g++ {
		grp := &casarev1.Step{Id: fmt.Sprintf("grp%d", g)}
		wf.Steps = append(wf.Steps, grp)
		n++
		for i := 0; i < 999 && n < workflow.MaxSteps; i++ {
			add(&grp.Steps, fmt.Sprintf("s%d_%d", g, i))
			n++
		}
	}
	if bytes > workflow.MaxExpressionBytes || distinct > workflow.MaxExpressions {
		panic(fmt.Sprintf("largest: %d expressions of %d bytes", distinct, bytes))
	}
	return wf
}

// Message is the with of a log step.
func Message(m string) *structpb.Struct {
	w, err := structpb.NewStruct(map[string]any{"message": m})
	if err != nil {
		panic(err)
	}
	return w
}

// Count counts steps, nested ones and error handlers included.
func Count(steps []*casarev1.Step) int {
	n := 0
	for _, s := range steps {
		n += 1 + Count(s.GetSteps()) + Count(s.GetOnError())
	}
	return n
}

// ReportCPU adds the process's CPU time per operation to a benchmark: on
// a busy machine the wall time per operation says more about the other
// processes than about the code. Call the function it returns when the
// benchmark's loop ends.
func ReportCPU(b *testing.B) func() {
	cpu := func() time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			b.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	start := cpu()
	return func() {
		b.ReportMetric(float64(cpu()-start)/float64(b.N), "cpu-ns/op")
	}
}
