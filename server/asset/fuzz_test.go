package asset

import (
	"testing"
)

// FuzzParseSelector: any text either parses into a canonical selector that
// parses to itself, or is refused; it never panics.
func FuzzParseSelector(f *testing.F) {
	for _, s := range []string{"", "site=hq", " env=prod , site=hq", "a=", "=b", "a=1,a=2", "k=v,,", "é=x", "a=b=c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		canonical, labels, err := ParseSelector(s)
		if err != nil {
			return
		}
		again, labels2, err := ParseSelector(canonical)
		if err != nil || again != canonical || len(labels2) != len(labels) {
			t.Fatalf("ParseSelector(%q) = %q, which parses to %q, %v", s, canonical, again, err)
		}
	})
}
