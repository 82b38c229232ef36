package cli

import (
	"strings"
	"testing"
)

func TestReadToken(t *testing.T) {
	for _, tc := range []struct {
		name, in, want, problem string
	}{
		{"Line", "csr_abc\n", "csr_abc", ""},
		{"NoNewline", "  csr_abc ", "csr_abc", ""},
		{"CRLF", "csr_abc\r\n", "csr_abc", ""},
		{"Empty", "", "", "holds no token"},
		{"Blank", " \n\n", "", "holds no token"},
		{"TwoLines", "csr_a\ncsr_b\n", "", "more than one line"},
		{"NUL", "csr_a\x00b\n", "", "control character"},
		{"Space", "csr_a b\n", "", "space"},
		{"Huge", strings.Repeat("x", maxTokenBytes+1), "", "more than 4096 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readToken(strings.NewReader(tc.in))
			if tc.problem != "" {
				if err == nil || !strings.Contains(err.Error(), tc.problem) || !strings.Contains(err.Error(), "--token-stdin") {
					t.Fatalf("readToken = %q, %v; want an error naming --token-stdin and %q", got, err, tc.problem)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("readToken = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}
