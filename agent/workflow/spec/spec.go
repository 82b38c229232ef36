// Package spec describes the steps a workflow may use as plain data: each
// action's name, parameters, outputs, errors and the capability it needs.
// The step families declare their actions in agent/step and a generator
// writes what they declare into agent/workflow/builtin, so that the control
// plane and casarectl check workflows against the same specs the robots
// run, without linking the code that runs them (a browser driver, a
// spreadsheet library). This package imports nothing else of agent/.
package spec

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Action is what a workflow needs to know of one kind of step, named
// family.action (browser.click) or a core name (log).
type Action struct {
	// Name is what a workflow writes in uses.
	Name string
	// Summary is one sentence for the catalogue.
	Summary string
	// Capability is what a robot must advertise to run the action; empty
	// when every robot can.
	Capability string
	// AnyParams is true when the action takes any parameters (set); Params
	// is then empty.
	AnyParams bool
	// Params are the parameters with takes, in declaration order.
	Params []Field
	// Outputs are the outputs the action gives, in declaration order;
	// empty when they are free form.
	Outputs []Field
	// Errors documents how the action fails.
	Errors []ErrorDoc
	// Nested is true for a construct whose step has nested steps that
	// the action runs (queue.process runs them once per item); a step of
	// any other action has none.
	Nested bool
	// AfterSteps names the parameters of a construct that are evaluated
	// after its nested steps, once per round, with what they see in
	// scope (queue.process's output, from the item and their outputs).
	AfterSteps []string
}

// Field documents one parameter or output.
type Field struct {
	Name string
	// Type is how the catalogue shows the type: string, number, integer,
	// boolean, duration, list of X, object or any.
	Type     string
	Required bool
	Doc      string
	// Shape is what a literal value of the parameter must be, finer than
	// Type (a text parameter also takes numbers, a map of strings takes
	// only strings). Outputs leave it zero.
	Shape Shape
}

// ErrorDoc documents one way an action fails.
type ErrorDoc struct {
	// When says what happened, in the words of the error.
	When string
	// Business is true when the data was wrong, so retrying cannot help.
	Business bool
}

// Catalogue holds the actions a build knows, by name.
type Catalogue map[string]*Action

// NewCatalogue gathers actions; a name defined twice is a programming
// error.
func NewCatalogue(actions ...*Action) Catalogue {
	c := make(Catalogue, len(actions))
	for _, a := range actions {
		if _, dup := c[a.Name]; dup {
			panic("spec: action " + a.Name + " defined twice")
		}
		c[a.Name] = a
	}
	return c
}

// Lookup returns the action named name, or an error that suggests the
// closest name: unknown step "brower.click"; did you mean "browser.click"?
func (c Catalogue) Lookup(name string) (*Action, error) {
	if a, ok := c[name]; ok {
		return a, nil
	}
	return nil, UnknownStep(name, c.Names())
}

// Names lists the actions in order.
func (c Catalogue) Names() []string { return slices.Sorted(maps.Keys(c)) }

// UnknownStep is the error for a step name that is none of known (sorted):
// it suggests the known name nearest to name by edit distance, when it is
// near enough to be a slip rather than another word.
func UnknownStep(name string, known []string) error {
	best, bestDist := "", len(name)/3+2
	for _, k := range known {
		if d := distance(strings.ToLower(name), k); d < bestDist {
			best, bestDist = k, d
		}
	}
	if best != "" {
		return fmt.Errorf("unknown step %q; did you mean %q?", name, best)
	}
	return fmt.Errorf("unknown step %q", name)
}

// distance is the Levenshtein distance between a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
