// Package workflowtest builds workflows for the tests and benchmarks of the
// packages that validate them.
package workflowtest

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/casarerpa/casare/agent/workflow"
	"github.com/casarerpa/casare/agent/workflow/expr"
	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

// Largest is the largest workflow the limits allow, and as costly to check
// as they let it be. It is valid against the core steps, and it holds:
//
//   - workflow.MaxSteps steps, one branch nested workflow.MaxDepth deep;
//   - on every step every field a step can have, each with the fewest
//     bytes, since each brings its rules;
//   - the 256 inputs and outputs a workflow may declare;
//   - workflow.MaxExpressions different expressions filling
//     workflow.MaxExpressionNodes and workflow.MaxExpressionBytes, most of
//     them referring to an earlier step, each a run of additions of
//     negative numbers and a string literal: type-checking costs about the
//     same per node for every shape we tried (operators, selections,
//     indexes, macros), and these were the costliest to parse with the
//     ANTLR parser cel-go used to have, fifty times a plain one;
//   - the rest of workflow.MaxValues in with values that are empty maps:
//     of the values we tried, the costliest to decode and to walk;
//   - the rest of workflow.MaxDefinitionBytes, both as JSON and in
//     protobuf's binary form (the API's default request limit is the
//     same), in strings beside them.
func Largest() *casarev1.Workflow {
	wf := &casarev1.Workflow{
		// Named as a stored workflow is, so that its name is among its
		// values.
		Name:    "largest",
		Inputs:  map[string]*casarev1.InputSpec{"n": {Type: "integer"}},
		Outputs: map[string]string{},
	}
	for i := 1; i < maxPairs; i++ {
		wf.Inputs[fmt.Sprintf("i%d", i)] = &casarev1.InputSpec{Type: "integer", Default: structpb.NewNumberValue(1)}
	}
	for i := range maxPairs {
		wf.Outputs[fmt.Sprintf("o%d", i)] = "${{ inputs.n }}"
	}
	const (
		cond    = "inputs.n > 0"
		each    = "[1]"
		plain   = "size(inputs) + 1"
		perExpr = workflow.MaxExpressionBytes / workflow.MaxExpressions
	)
	distinct, bytes := 4, len("inputs.n")+len(cond)+len(each)+len(plain)
	nodes := 0
	for _, src := range []string{"inputs.n", cond, each, plain} {
		nodes += nodesOf(src)
	}
	// What each expression that refers to an earlier step may have of
	// what is left of the node budget.
	perNodes := (workflow.MaxExpressionNodes - nodes) / (workflow.MaxExpressions - distinct)
	second := durationpb.New(time.Second)
	fill := func(s *casarev1.Step) {
		s.Name = "n"
		s.Foreach = each
		s.Parallelism = 2
		s.Timeout = second
		s.Retry = &casarev1.Retry{Attempts: 2, Backoff: second}
		s.ContinueOnError = true
	}
	prev := ""
	var leaves []*casarev1.Step
	add := func(list *[]*casarev1.Step, id string) {
		s := &casarev1.Step{Id: id, Uses: "log", If: cond}
		fill(s)
		src := plain
		if prev != "" && distinct < workflow.MaxExpressions {
			// A run of additions of negative numbers, and the size of
			// a string that fills the expression's share of the bytes,
			// three nodes.
			const sized = "+size('')"
			src = "steps." + prev
			for nodesOf(src+"+-1")+3 <= perNodes && len(src+"+-1"+sized) <= perExpr {
				src += "+-1"
			}
			if pad := perExpr - len(src) - len(sized); pad > 0 {
				src += "+size('" + strings.Repeat("p", pad) + "')"
			}
			distinct++
			bytes += len(src)
			nodes += nodesOf(src)
		}
		s.With = Message("${{ " + src + " }}")
		*list = append(*list, s)
		leaves = append(leaves, s)
		prev = id
	}
	group := &casarev1.Step{Id: "deep"}
	fill(group)
	wf.Steps = append(wf.Steps, group)
	n := 1
	for d := 2; d < workflow.MaxDepth; d++ {
		next := &casarev1.Step{Id: fmt.Sprintf("deep%d", d)}
		fill(next)
		group.Steps = []*casarev1.Step{next}
		group = next
		n++
	}
	add(&group.Steps, "bottom")
	n++
	for g := 0; n < workflow.MaxSteps; g++ {
		grp := &casarev1.Step{Id: fmt.Sprintf("grp%d", g)}
		fill(grp)
		wf.Steps = append(wf.Steps, grp)
		n++
		for i := 0; i < 999 && n < workflow.MaxSteps; i++ {
			add(&grp.Steps, fmt.Sprintf("s%d_%d", g, i))
			n++
		}
	}
	if bytes > workflow.MaxExpressionBytes || distinct > workflow.MaxExpressions || nodes > workflow.MaxExpressionNodes {
		panic(fmt.Sprintf("largest: %d expressions of %d bytes and %d nodes", distinct, bytes, nodes))
	}
	bulk(wf, leaves)
	return wf
}

func nodesOf(src string) int {
	p, err := expr.Parse(src)
	if err != nil {
		panic(err)
	}
	return p.Nodes()
}

// maxPairs is how many inputs, and outputs, a workflow may declare.
const maxPairs = 256

// bulk fills what room the workflow has left, spread over half the leaf
// steps, which become set steps to hold it: up to workflow.MaxValues with
// empty maps, of the values we tried the costliest to decode and to walk,
// and the rest of workflow.MaxDefinitionBytes, both as JSON and in
// protobuf's binary form (the API's default request limit is the same),
// with a string in each, which is decoded and searched for expressions.
func bulk(wf *casarev1.Workflow, leaves []*casarev1.Step) {
	var holders []*structpb.Struct
	for i, s := range leaves {
		if i%2 == 1 {
			s.Uses = "set"
			s.With.Fields["v"] = structpb.NewListValue(&structpb.ListValue{})
			s.With.Fields["p"] = structpb.NewStringValue("")
			holders = append(holders, s.With)
		}
	}
	maps := workflow.MaxValues - Values(wf)
	for i, h := range holders {
		l := h.Fields["v"].GetListValue()
		l.Values = make([]*structpb.Value, maps/len(holders))
		if i < maps%len(holders) {
			l.Values = append(l.Values, nil)
		}
		for i := range l.Values {
			l.Values[i] = structpb.NewStructValue(&structpb.Struct{})
		}
	}
	data, err := protojson.Marshal(wf)
	if err != nil {
		panic(err)
	}
	// Room is left for the name a stored workflow gets and the request
	// around it, and for the lengths of the strings in the binary form.
	const slack = 16 << 10
	room := min(workflow.MaxDefinitionBytes-slack-len(data), workflow.MaxDefinitionBytes-slack-proto.Size(wf))
	if room < 0 {
		panic(fmt.Sprintf("largest: %d bytes as JSON, %d in the binary form", len(data), proto.Size(wf)))
	}
	for _, h := range holders {
		h.Fields["p"] = structpb.NewStringValue(strings.Repeat("p", room/len(holders)))
	}
}

// Values counts a workflow's values as JSON, as workflow.MaxValues does:
// every object, array, string, number, boolean and null, keys aside.
func Values(wf *casarev1.Workflow) int {
	data, err := protojson.Marshal(wf)
	if err != nil {
		panic(err)
	}
	var doc any
	if err := json.Unmarshal(data, &doc); err != nil {
		panic(err)
	}
	var count func(any) int
	count = func(v any) int {
		n := 1
		switch v := v.(type) {
		case map[string]any:
			for _, e := range v {
				n += count(e)
			}
		case []any:
			for _, e := range v {
				n += count(e)
			}
		}
		return n
	}
	return count(doc)
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
		d, err := processCPU()
		if err != nil {
			b.Fatal(err)
		}
		return d
	}
	start := cpu()
	return func() {
		b.ReportMetric(float64(cpu()-start)/float64(b.N), "cpu-ns/op")
	}
}
