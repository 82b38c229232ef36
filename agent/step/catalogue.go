package step

import (
	"fmt"
	"maps"
	"slices"
	"strings"
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
	if near := c.closest(name); near != "" {
		return nil, fmt.Errorf("unknown step %q; did you mean %q?", name, near)
	}
	return nil, fmt.Errorf("unknown step %q", name)
}

// Names lists the actions in order.
func (c Catalogue) Names() []string { return slices.Sorted(maps.Keys(c)) }

// closest finds the known name nearest to name by edit distance, when it
// is near enough to be a slip rather than another word.
func (c Catalogue) closest(name string) string {
	best, bestDist := "", len(name)/3+2
	for _, known := range c.Names() {
		if d := distance(strings.ToLower(name), known); d < bestDist {
			best, bestDist = known, d
		}
	}
	return best
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
