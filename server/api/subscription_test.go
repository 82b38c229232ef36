package api

import (
	"strings"
	"testing"
)

func TestCheckReceiverURL(t *testing.T) {
	for _, tc := range []struct {
		name, url, err string
	}{
		{name: "HTTPS", url: "https://ops.example.com/casare?team=a"},
		{name: "HTTPWithPort", url: "http://127.0.0.1:9000/hook"},
		{name: "ErrFTP", url: "ftp://example.com/hook", err: `scheme "ftp"`},
		{name: "ErrFile", url: "file:///etc/passwd", err: `scheme "file"`},
		{name: "ErrJavaScript", url: "javascript:alert(1)", err: `scheme "javascript"`},
		{name: "ErrRelative", url: "/hook", err: `scheme ""`},
		{name: "ErrNoHost", url: "http:///hook", err: "no host"},
		{name: "ErrPortOnly", url: "http://:80/hook", err: "no host"},
		{name: "ErrCredentials", url: "https://user:pass@example.com/hook", err: "credentials"},
		{name: "ErrFragment", url: "https://example.com/hook#x", err: "fragment"},
		{name: "ErrControlCharacter", url: "https://example.com/\x7fhook", err: "not a URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkReceiverURL(tc.url)
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("checkReceiverURL(%q) = %v; want ok", tc.url, err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("checkReceiverURL(%q) = %v; want an error with %q", tc.url, err, tc.err)
			}
		})
	}
}
