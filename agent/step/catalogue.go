package step

import (
	"maps"
	"slices"

	"github.com/casarerpa/casare/agent/workflow/spec"
)

// Catalogue holds the actions a build knows, by name.
type Catalogue map[string]*Action

// NewCatalogue gathers actions; a name defined twice is a programming
// error.
func NewCatalogue(actions ...*Action) Catalogue {
	c := Catalogue{}
	for _, a := range actions {
		if _, dup := c[a.Name]; dup {
			panic("step: action " + a.Name + " defined twice")
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
	return nil, spec.UnknownStep(name, c.Names())
}

// Names lists the actions in order.
func (c Catalogue) Names() []string { return slices.Sorted(maps.Keys(c)) }

// Specs returns what the actions declare, as the data workflows are
// checked against.
func (c Catalogue) Specs() spec.Catalogue {
	specs := make(spec.Catalogue, len(c))
	for name, a := range c {
		specs[name] = a.Spec()
	}
	return specs
}
