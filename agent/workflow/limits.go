package workflow

import (
	"fmt"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

// Limits on the shape of a workflow. They are checked before anything
// else, in one pass that stops at the first one exceeded, so that the rest
// of validation works on a workflow of bounded size.
const (
	// MaxDepth bounds how deeply steps nest (steps and on_error inside
	// steps): a workflow's top-level steps are at depth 1.
	MaxDepth = 32
	// MaxSteps bounds the steps of a workflow, nested ones and error
	// handlers included. With MaxExpressionNodes and MaxValues it bounds
	// the largest workflow's validation (BenchmarkValidateLargest) to
	// under 100 ms on two cores; at 5,000 it took three times that. Two
	// thousand steps is more than a process written as one workflow has:
	// larger ones are split into workflows that start one another.
	MaxSteps = 2_000
	// MaxValueDepth bounds how deeply a with value or an input's default
	// nests (maps and lists in maps and lists).
	MaxValueDepth = 32
	// MaxExpressions bounds the different expressions of a workflow (an
	// expression written many times counts once), and MaxExpressionBytes
	// their text: checking one takes tens of microseconds, a long one
	// milliseconds. A thousand leaves room for a workflow of a thousand
	// steps that each compute something of their own.
	MaxExpressions     = 1_000
	MaxExpressionBytes = 64 << 10
	// MaxExpressionNodes bounds the syntax-tree nodes of a workflow's
	// different expressions, macros expanded. Type-checking costs a few
	// microseconds a node, and 64 KiB of text can hold 60,000 of them
	// ('1+1+1…'); a thousand expressions like
	// "steps.fetch.outputs.rows.size() > 0", of 7 nodes each, fit, or six
	// hundred like "steps.fetch.outputs.rows.size() > 0 && inputs.region
	// == 'eu'", of 12. The nodes are counted as each expression is parsed,
	// before it is checked.
	MaxExpressionNodes = 8_000
	// MaxDefinitionBytes bounds a workflow file Parse reads.
	MaxDefinitionBytes = 4 << 20
	// MaxValues bounds the values of a workflow as JSON: every object,
	// array, string, number, boolean and null, object keys aside, with
	// values and defaults included. Decoding and checking costs over a
	// microsecond a value whatever its size, and 4 MiB can hold two
	// million of them ('[{},{},…]'). MaxSteps steps of some 16 values
	// each (an id, a uses, a with of a few values, an if, now and then a
	// retry) fit with a fifth to spare.
	MaxValues = 40_000
	// maxSyntaxDepth bounds the nesting of a file's JSON or YAML before it
	// is decoded: room for MaxDepth steps (a list and a map each) and a
	// with value MaxValueDepth deep inside them.
	maxSyntaxDepth = 2*MaxDepth + MaxValueDepth + 8
)

// CheckLimits checks a workflow against MaxDepth, MaxSteps, MaxValueDepth
// and MaxValues, in time linear in its size and without recursing past
// the limits. It returns a *ValidationError naming the place and the
// limit, or nil.
func CheckLimits(wf *casarev1.Workflow) error {
	return (&limitCheck{}).check(wf)
}

func (c *limitCheck) check(wf *casarev1.Workflow) error {
	c.values = 1 + c.fields(wf.ProtoReflect())
	for name, spec := range wf.GetInputs() {
		if c.value(spec.GetDefault(), 1) {
			return c.valueFail("inputs." + name + ".default")
		}
	}
	if c.steps("steps", wf.GetSteps(), 1) || c.steps("on_error", wf.GetOnError(), 1) {
		return c.err
	}
	return nil
}

type limitCheck struct {
	count int
	// values counts the workflow's values as protojson writes them, as
	// Parse counts them in a file.
	values int
	err    error
	// at is the way to the list of steps being checked, from the
	// workflow: its path is only written out for a problem.
	at []place
}

// place is a list of steps, named by field, and the index of one in it.
type place struct {
	field string
	index int
}

func (c *limitCheck) fail(path, format string, args ...any) error {
	c.err = &ValidationError{Problems: []string{path + ": " + fmt.Sprintf(format, args...)}}
	return c.err
}

// path writes out the way to the list of steps being checked, and the
// index in it of the step being checked unless step is false.
func (c *limitCheck) path(step bool) string {
	var b strings.Builder
	for i, p := range c.at {
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(p.field)
		if step || i < len(c.at)-1 {
			fmt.Fprintf(&b, "[%d]", p.index)
		}
	}
	return b.String()
}

// steps reports whether a list of steps at depth goes past a limit.
func (c *limitCheck) steps(field string, steps []*casarev1.Step, depth int) bool {
	if len(steps) == 0 {
		return false
	}
	c.at = append(c.at, place{field: field})
	defer func() { c.at = c.at[:len(c.at)-1] }()
	if depth > MaxDepth {
		c.fail(c.path(false), "steps nested %d deep, the limit is %d", depth, MaxDepth)
		return true
	}
	for i, s := range steps {
		c.at[len(c.at)-1].index = i
		if c.count++; c.count > MaxSteps {
			c.fail(c.path(true), "more than %d steps in the workflow, the limit is %d", MaxSteps, MaxSteps)
			return true
		}
		if c.values += 1 + c.fields(s.ProtoReflect()); c.values > MaxValues {
			c.valueFail(c.path(true))
			return true
		}
		for k, v := range s.GetWith().GetFields() {
			if c.value(v, 1) {
				c.valueFail(fmt.Sprintf("%s.with.%.64s", c.path(true), k))
				return true
			}
		}
		if c.steps("steps", s.GetSteps(), depth+1) || c.steps("on_error", s.GetOnError(), depth+1) {
			return true
		}
	}
	return false
}

// valueFail reports the limit value passed, at path.
func (c *limitCheck) valueFail(path string) error {
	if c.values > MaxValues {
		return c.fail(path, "more than %d values in the workflow, the limit is %d", MaxValues, MaxValues)
	}
	return c.fail(path, "nested more than %d deep, the limit is %d", MaxValueDepth, MaxValueDepth)
}

// fields counts the values of m's fields as protojson writes them, but
// not the steps in lists of steps, the fields of a with or a Value field,
// which the walk counts itself as it checks their depth. The workflow has
// few fields besides those, so a reflective count costs little.
func (c *limitCheck) fields(m protoreflect.Message) int {
	n := 0
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		md := fd.Message()
		if md != nil && md.FullName() == valueName {
			return true
		}
		n++
		switch {
		case fd.IsList():
			if md == nil {
				n += v.List().Len()
			} else if md.FullName() != stepName {
				for i := range v.List().Len() {
					n += 1 + c.fields(v.List().Get(i).Message())
				}
			}
		case fd.IsMap():
			if fd.MapValue().Message() == nil {
				n += v.Map().Len()
			} else {
				v.Map().Range(func(_ protoreflect.MapKey, e protoreflect.Value) bool {
					n += 1 + c.fields(e.Message())
					return true
				})
			}
		case md != nil && !wellKnown[md.FullName()]:
			n += c.fields(v.Message())
		}
		return true
	})
	return n
}

var (
	valueName = (&structpb.Value{}).ProtoReflect().Descriptor().FullName()
	stepName  = (&casarev1.Step{}).ProtoReflect().Descriptor().FullName()
	// wellKnown are the messages protojson writes as one value, or
	// whose contents the walk counts (a with).
	wellKnown = map[protoreflect.FullName]bool{
		"google.protobuf.Duration":  true,
		"google.protobuf.Timestamp": true,
		"google.protobuf.Struct":    true,
	}
)

// value counts v and what it holds, and reports whether it nests past
// MaxValueDepth or the workflow's values pass MaxValues.
func (c *limitCheck) value(v *structpb.Value, depth int) bool {
	if v == nil {
		return false
	}
	if c.values++; c.values > MaxValues {
		return true
	}
	switch k := v.GetKind().(type) {
	case *structpb.Value_StructValue:
		if depth > MaxValueDepth {
			return true
		}
		for _, e := range k.StructValue.GetFields() {
			if c.value(e, depth+1) {
				return true
			}
		}
	case *structpb.Value_ListValue:
		if depth > MaxValueDepth {
			return true
		}
		for _, e := range k.ListValue.GetValues() {
			if c.value(e, depth+1) {
				return true
			}
		}
	}
	return false
}
