// Package trigger serves inbound webhook triggers: POST /hooks/{id} on the
// API port checks the sender's signature or bearer token, maps the request
// to a stored workflow's inputs with the trigger's CEL expressions, and
// submits the job, once per delivery.
package trigger

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/interpreter"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/casarerpa/casare/agent/workflow/expr"
	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

// Names a mapping expression may use.
const (
	// Body is the request body: the JSON value when the request says it
	// is JSON, else its text.
	Body = "body"
	// Headers maps each lower-case header name to its values joined with
	// ", ". Authorization is left out, so no mapping can copy a bearer
	// token into a job.
	Headers = "headers"
	// Query maps each query parameter to its first value.
	Query = "query"
)

// CostLimit bounds the work of one input's expression on one request: a
// tenth of a workflow expression's, as mapping a request is glue.
const CostLimit = expr.DefaultCostLimit / 10

var env = func() *expr.Env {
	strings := cel.MapType(cel.StringType, cel.StringType)
	e, err := expr.NewEnv(map[string]*cel.Type{Body: cel.DynType, Headers: strings, Query: strings})
	if err != nil {
		panic("trigger: " + err.Error())
	}
	return e
}()

// Mapping computes a job's inputs from a request: one compiled expression
// per input.
type Mapping struct {
	programs map[string]*expr.Program
	names    []string
}

// Compile compiles and type-checks the expressions of inputs (input name to
// CEL). With specs, the declared inputs of the workflow, every name must be
// declared and every expression whose type is known must give the declared
// type. The error is a *CompileError naming each input at fault as
// inputs.NAME.
func Compile(inputs map[string]string, specs map[string]*casarev1.InputSpec) (*Mapping, error) {
	m := &Mapping{programs: make(map[string]*expr.Program, len(inputs)), names: slices.Sorted(maps.Keys(inputs))}
	var problems []string
	for _, name := range m.names {
		spec, declared := specs[name]
		if len(specs) > 0 && !declared {
			problems = append(problems, fmt.Sprintf("inputs.%s: not an input of the workflow (it takes %s)",
				name, strings.Join(slices.Sorted(maps.Keys(specs)), ", ")))
			continue
		}
		prg, typ, err := env.Compile(inputs[name], CostLimit)
		if err != nil {
			problems = append(problems, fmt.Sprintf("inputs.%s: %v", name, err))
			continue
		}
		if declared && !fits(typ, spec.GetType()) {
			problems = append(problems, fmt.Sprintf("inputs.%s: the expression gives %s, the input is of type %s", name, typ, spec.GetType()))
			continue
		}
		m.programs[name] = prg
	}
	if len(problems) > 0 {
		return nil, &CompileError{Problems: problems}
	}
	return m, nil
}

// CompileError lists what is wrong with a mapping, each problem naming its
// input (inputs.NAME: ...).
type CompileError struct {
	Problems []string
}

func (e *CompileError) Error() string { return strings.Join(e.Problems, "; ") }

// fits reports whether a value of type got can be an input of type want
// (a workflow input type: string, number, integer, boolean, object, array
// or any). A type only known at run time fits; Submit checks the value.
func fits(got *cel.Type, want string) bool {
	if got.Kind() == cel.DynKind || got.Kind() == cel.AnyKind || want == "" || want == "any" {
		return true
	}
	switch want {
	case "number":
		return got.Kind() == cel.DoubleKind || got.Kind() == cel.IntKind || got.Kind() == cel.UintKind
	case "integer":
		return got.Kind() == cel.IntKind || got.Kind() == cel.UintKind
	}
	return expr.InputType(want).IsAssignableType(got) || got.Kind() == cel.NullTypeKind
}

// Request is what a mapping reads.
type Request struct {
	Body    any
	Headers map[string]string
	Query   map[string]string
}

// Eval computes the inputs from req. The error names the input whose
// expression failed (inputs.NAME: ...).
func (m *Mapping) Eval(req *Request) (*structpb.Struct, error) {
	vars, err := interpreter.NewActivation(map[string]any{Body: req.Body, Headers: req.Headers, Query: req.Query})
	if err != nil {
		return nil, err
	}
	out := &structpb.Struct{Fields: make(map[string]*structpb.Value, len(m.names))}
	for _, name := range m.names {
		v, err := m.programs[name].Eval(vars)
		if err != nil {
			return nil, fmt.Errorf("inputs.%s: %w", name, err)
		}
		pv, err := structpb.NewValue(v)
		if err != nil {
			return nil, fmt.Errorf("inputs.%s: %w", name, err)
		}
		out.Fields[name] = pv
	}
	return out, nil
}
