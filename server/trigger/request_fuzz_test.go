package trigger

import (
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzRequest feeds whatever a sender controls (body, content type, a
// header, the query) through request and a mapping that reads all of it:
// it never panics, and what it gives the mapping is valid UTF-8 text, as
// CEL strings must be.
func FuzzRequest(f *testing.F) {
	m, err := Compile(map[string]string{
		"body":  "body",
		"shout": "'x-shout' in headers ? headers['x-shout'].upperAscii() : ''",
		"n":     "'n' in query ? query.n : ''",
	}, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(`{"a": [1, 2, {"b": null}]}`), "application/json", "hi", "n=1")
	f.Add([]byte("plain \xff text"), "text/plain", "\xfe", "n=%ff")
	f.Add([]byte(`[[[[[[[[`), "application/cloudevents+json; charset=utf-8", "", "")
	f.Fuzz(func(t *testing.T, body []byte, contentType, shout, query string) {
		r := httptest.NewRequest("POST", "/hooks/t1", nil)
		r.URL.RawQuery = query
		r.Header.Set("Content-Type", contentType)
		r.Header.Set("X-Shout", shout)
		req, err := request(r, body)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "request body:") {
				t.Fatalf("error %q does not name the body", err)
			}
			return
		}
		if _, err := m.Eval(req); err != nil && !strings.HasPrefix(err.Error(), "inputs.") {
			t.Fatalf("error %q names no input", err)
		}
	})
}
