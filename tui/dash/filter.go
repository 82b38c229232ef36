package dash

import (
	"strings"
)

// filter is what the operator typed after `/`: words that must all match.
// A plain word matches anywhere in the row; `field:value` matches one field
// (status:failed, robot:r1, label:site=hq); a leading `-` or `!` negates.
// Matching ignores case and looks for the value inside the field.
type filter struct {
	text  string
	terms []term
}

type term struct {
	field string // empty: anywhere
	value string
	not   bool
}

func parseFilter(text string) filter {
	f := filter{text: strings.TrimSpace(text)}
	for _, w := range strings.Fields(strings.ToLower(f.text)) {
		var t term
		if w[0] == '-' || w[0] == '!' {
			t.not = true
			w = w[1:]
		}
		if field, value, ok := strings.Cut(w, ":"); ok && field != "" {
			t.field, t.value = field, value
		} else {
			t.value = w
		}
		if t.value == "" && t.field == "" {
			continue
		}
		f.terms = append(f.terms, t)
	}
	return f
}

func (f filter) empty() bool { return len(f.terms) == 0 }

// match reports whether a row passes: field returns the lower-case text of
// a named field and whether the row has such a field; all is the row's
// whole text in lower case.
func (f filter) match(all string, field func(name string) (string, bool)) bool {
	for _, t := range f.terms {
		var hit bool
		if t.field == "" {
			hit = strings.Contains(all, t.value)
		} else if v, ok := field(t.field); ok {
			hit = strings.Contains(v, t.value)
		}
		if hit == t.not {
			return false
		}
	}
	return true
}
