package expr

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"cel.dev/cel-go/interpreter"
)

// tenfold makes 'aaaaaaaaaa' ten times longer n times: 10^(n+1) characters.
func tenfold(n int) string {
	return "'aaaaaaaaaa'" + strings.Repeat(".replace('a','aaaaaaaaaa')", n)
}

func TestValueLimits(t *testing.T) {
	for _, tc := range []struct {
		name string
		src  string
		err  string
	}{
		{name: "StringUnderLimit", src: "size(" + tenfold(5) + ")"},
		{name: "StringOverLimit", src: tenfold(6), err: "the value of replace is 9.5 MiB, the limit is 4 MiB"},
		// The 100,000,000 characters: stopped before it is made.
		{name: "HundredMillionChars", src: tenfold(7), err: "the value of replace is 9.5 MiB, the limit is 4 MiB"},
		{name: "ReplaceForeseen", src: "('a' + " + tenfold(4) + ").replace('a', " + tenfold(2) + ")", err: "the value of replace is 95.4 MiB, the limit is 4 MiB"},
		{name: "JoinForeseen", src: "lists.range(100).map(i, inputs.s).join()", err: "the value of join is 95.4 MiB, the limit is 4 MiB"},
		{name: "FormatForeseen", src: "'%s'.format([lists.range(100).map(i, inputs.s)])", err: "the value of format"},
		{name: "RangeItems", src: "size(lists.range(100000000))", err: "the value of lists.range has 100000000 items, the limit is 100000"},
		{name: "RangeAtLimit", src: "size(lists.range(100000))"},
		// A value that only passes through is not made by the expression.
		{name: "PassThrough", src: "size(inputs.big)"},
		// Three 1.5 MB strings: the cost limit, which counts what + makes
		// as it makes it, is not reached before the value limit is.
		{name: "Concat", src: "size(inputs.m + inputs.m + inputs.m)", err: "the value of + is 4.3 MiB, the limit is 4 MiB"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Compile(tc.src, 0)
			if err != nil {
				t.Fatal(err)
			}
			act, err := interpreter.NewActivation(map[string]any{"inputs": map[string]any{
				"s":   strings.Repeat("a", 1_000_000),
				"m":   strings.Repeat("a", 1_500_000),
				"big": strings.Repeat("a", 10<<20),
			}})
			if err != nil {
				t.Fatal(err)
			}
			_, err = p.Eval(act)
			if tc.err == "" {
				if err != nil {
					t.Fatalf("err = %v", err)
				}
				return
			}
			var tl *TooLargeError
			if err == nil || !errors.As(err, &tl) || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("err = %v, want a TooLargeError with %q", err, tc.err)
			}
		})
	}
}

func TestTruncate(t *testing.T) {
	if got := Truncate("short", 10); got != "short" {
		t.Errorf("short text changed: %q", got)
	}
	long := strings.Repeat("é", 100_000)
	got := Truncate(long, 1000)
	if len(got) > 1000 || !utf8.ValidString(got) || !strings.HasSuffix(got, "… [cut: 194.3 KiB of 195.3 KiB]") {
		t.Errorf("Truncate = %d bytes, valid %v, ends %q", len(got), utf8.ValidString(got), got[len(got)-40:])
	}
}

func TestFormatSize(t *testing.T) {
	for n, want := range map[int]string{512: "512 bytes", 64 << 10: "64 KiB", 1 << 20: "1 MiB", 10_000_000: "9.5 MiB", 1536: "1.5 KiB"} {
		if got := FormatSize(n); got != want {
			t.Errorf("FormatSize(%d) = %q, want %q", n, got, want)
		}
	}
}
