package vault

import (
	"context"
	"errors"
	"testing"
)

// FuzzParseKeys: a key file either gives keys of KeySize bytes or is
// refused; it never panics.
func FuzzParseKeys(f *testing.F) {
	f.Add(FormatKey(make([]byte, KeySize)) + "\n# old\n")
	f.Add("a,b\n\n")
	f.Add("")
	f.Fuzz(func(t *testing.T, text string) {
		keys, err := ParseKeys(text)
		if err != nil {
			return
		}
		for _, k := range keys {
			if len(k.Key) != KeySize {
				t.Fatalf("key %s of %d bytes", k.ID, len(k.Key))
			}
		}
	})
}

// FuzzOpen: text that is not a value this vault sealed is refused, never
// opened, and never panics.
func FuzzOpen(f *testing.F) {
	v, err := Open(context.Background(), keyText(NewKey()), &memStore{})
	if err != nil {
		f.Fatal(err)
	}
	sealed, _ := v.Seal([]byte("x"), "c")
	f.Add(sealed)
	f.Add("v1.dk-1.AAAA")
	f.Add("v1..")
	f.Fuzz(func(t *testing.T, s string) {
		got, err := v.Open(context.Background(), s, "c")
		// Another spelling of the same bytes (base64's spare bits) may
		// open, to the same plaintext; nothing else may.
		if err == nil && string(got) != "x" {
			t.Fatalf("Open(%q) = %q: a forged value opened", s, got)
		}
		if err != nil && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrWrongKey) {
			t.Fatalf("Open(%q) = %v", s, err)
		}
	})
}
