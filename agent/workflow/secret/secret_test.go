package secret_test

import (
	"encoding/base64"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/casarerpa/casare/agent/workflow/secret"
)

func TestMaskerHidesTheSecretAndItsTransforms(t *testing.T) {
	t.Parallel()
	const pw = "Hunter2/x y"
	m := secret.New(pw)
	for _, text := range []string{
		pw,
		strings.ToUpper(pw),
		strings.ToLower(pw),
		"y x/2retnuH",
		base64.StdEncoding.EncodeToString([]byte(pw)),
		base64.RawURLEncoding.EncodeToString([]byte(pw)),
		url.QueryEscape(pw),
		url.PathEscape(pw),
	} {
		t.Run(text, func(t *testing.T) {
			got := m.String("before " + text + " after")
			if got != "before *** after" {
				t.Errorf("String(%q) = %q, want it hidden", text, got)
			}
		})
	}
}

func TestShortTextsKeepTheirTransforms(t *testing.T) {
	t.Parallel()
	m := secret.New("ab")
	if got := m.String("ab AB"); got != "*** AB" {
		t.Errorf("a short secret is hidden, its upper case is not: got %q", got)
	}
	m.AddDerived("7")
	if got := m.String("7 days"); got != "7 days" {
		t.Errorf("a short derived value is not hidden: got %q", got)
	}
}

func TestLongestFirst(t *testing.T) {
	t.Parallel()
	m := secret.New("pass", "password1")
	if got := m.String("password1"); got != "***" {
		t.Errorf("String = %q, want the longer secret hidden whole", got)
	}
}

func TestValue(t *testing.T) {
	t.Parallel()
	m := secret.New("s3cr3t", "123456")
	in := map[string]any{
		"a": "the s3cr3t is out",
		"b": []any{"fine", 123456.0, 7.0},
		"c": map[string]any{"d": "S3CR3T"},
		"e": true,
	}
	want := map[string]any{
		"a": "the *** is out",
		"b": []any{"fine", "***", 7.0},
		"c": map[string]any{"d": "***"},
		"e": true,
	}
	if diff := cmp.Diff(want, m.Value(in)); diff != "" {
		t.Errorf("Value (-want +got):\n%s", diff)
	}
	if in["a"] != "the s3cr3t is out" {
		t.Errorf("Value changed its argument")
	}
}

// BenchmarkString is the cost of masking one log line of a run that holds
// a secret and a few values derived from it (each with its transforms).
func BenchmarkString(b *testing.B) {
	m := secret.New("correct-horse-battery")
	for _, d := range []string{"orrect-horse", "CORRECT", "battery-staple"} {
		m.AddDerived(d)
	}
	line := strings.Repeat("fetched 20 rows from https://erp.example.com/api/v2/invoices ", 3)
	b.ReportAllocs()
	for b.Loop() {
		m.String(line)
	}
}
