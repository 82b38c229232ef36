package httpreq

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/casarerpa/casare/agent/step"
)

// echo answers every request with what it received, as JSON, so a test
// can see exactly what the step sent.
func echo(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Add("X-Multi", "first")
	w.Header().Add("X-Multi", "second")
	json.NewEncoder(w).Encode(map[string]any{
		"method":       r.Method,
		"path":         r.URL.Path,
		"query":        r.URL.Query(),
		"content_type": r.Header.Get("Content-Type"),
		"auth":         r.Header.Get("Authorization"),
		"accept":       r.Header.Values("Accept"),
		"host":         r.Host,
		"body":         string(body),
	})
}

func setup(t *testing.T, handler http.Handler) (*httptest.Server, *step.Env) {
	t.Helper()
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	return srv, &step.Env{WorkDir: t.TempDir()}
}

func run(env *step.Env, with map[string]any) (map[string]any, error) {
	return requestAction.Run(context.Background(), env, with)
}

func TestRequestSendsWhatTheWorkflowSays(t *testing.T) {
	t.Parallel()
	srv, env := setup(t, http.HandlerFunc(echo))
	for _, tc := range []struct {
		name  string
		with  map[string]any
		check func(t *testing.T, got map[string]any)
	}{
		{"DefaultGet", map[string]any{"url": srv.URL + "/invoices"}, func(t *testing.T, got map[string]any) {
			if got["method"] != "GET" || got["path"] != "/invoices" || got["body"] != "" {
				t.Fatalf("got %v", got)
			}
		}},
		{"QueryMergedAndRepeated", map[string]any{"url": srv.URL + "/?a=1", "query": map[string]any{"b": 2.5, "c": []any{"x", "y"}, "d": true}}, func(t *testing.T, got map[string]any) {
			q := got["query"].(map[string]any)
			if q["a"].([]any)[0] != "1" || q["b"].([]any)[0] != "2.5" || len(q["c"].([]any)) != 2 || q["d"].([]any)[0] != "true" {
				t.Fatalf("query = %v", q)
			}
		}},
		{"JSONBody", map[string]any{"method": "post", "url": srv.URL, "json": map[string]any{"id": 7.0, "tags": []any{"a"}}}, func(t *testing.T, got map[string]any) {
			if got["method"] != "POST" || got["content_type"] != "application/json" || got["body"] != `{"id":7,"tags":["a"]}` {
				t.Fatalf("got %v", got)
			}
		}},
		{"JSONKeepsAGivenContentType", map[string]any{"method": "PUT", "url": srv.URL, "json": []any{1.0}, "headers": map[string]any{"content-type": "application/vnd.api+json"}}, func(t *testing.T, got map[string]any) {
			if got["content_type"] != "application/vnd.api+json" {
				t.Fatalf("content type = %v", got["content_type"])
			}
		}},
		{"TextBodyAndHeaders", map[string]any{"method": "PATCH", "url": srv.URL, "body": "a=1", "headers": map[string]any{"Authorization": "Bearer t", "Accept": []any{"text/plain", "application/json"}, "Host": "billing.internal"}}, func(t *testing.T, got map[string]any) {
			if got["body"] != "a=1" || got["auth"] != "Bearer t" || len(got["accept"].([]any)) != 2 || got["host"] != "billing.internal" {
				t.Fatalf("got %v", got)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := run(env, tc.with)
			if err != nil {
				t.Fatal(err)
			}
			if out["status"] != 200.0 {
				t.Fatalf("status = %v", out["status"])
			}
			got, ok := out["json"].(map[string]any)
			if !ok {
				t.Fatalf("json output = %#v, body %q", out["json"], out["body"])
			}
			tc.check(t, got)
		})
	}
}

func TestResponseOutputs(t *testing.T) {
	t.Parallel()
	srv, env := setup(t, http.HandlerFunc(echo))
	out, err := run(env, map[string]any{"url": srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	headers := out["headers"].(map[string]any)
	if headers["X-Multi"] != "first" || !strings.HasPrefix(headers["Content-Type"].(string), "application/json") {
		t.Fatalf("headers = %v", headers)
	}
	if !strings.Contains(out["body"].(string), `"method":"GET"`) || out["size"] != float64(len(out["body"].(string))) {
		t.Fatalf("body = %q size = %v", out["body"], out["size"])
	}
}

func TestStatusHandling(t *testing.T) {
	t.Parallel()
	mux := http.NewServeMux()
	mux.HandleFunc("/missing", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no such invoice", http.StatusNotFound) })
	mux.HandleFunc("/broken", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "database down", http.StatusBadGateway) })
	mux.HandleFunc("/text", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "plain {not json}") })
	mux.HandleFunc("/liar", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, "<html>")
	})
	srv, env := setup(t, mux)

	t.Run("ErrorStatusIsAnOutputByDefault", func(t *testing.T) {
		out, err := run(env, map[string]any{"url": srv.URL + "/missing"})
		if err != nil || out["status"] != 404.0 || out["body"] != "no such invoice\n" {
			t.Fatalf("out = %v, err = %v", out, err)
		}
	})
	t.Run("FailOn4xxIsBusiness", func(t *testing.T) {
		_, err := run(env, map[string]any{"url": srv.URL + "/missing", "fail_on_status": true})
		if err == nil || !step.IsBusiness(err) || !strings.Contains(err.Error(), "404 Not Found: no such invoice") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("FailOn5xxIsApplication", func(t *testing.T) {
		_, err := run(env, map[string]any{"url": srv.URL + "/broken", "fail_on_status": true})
		if err == nil || step.IsBusiness(err) || !strings.Contains(err.Error(), "502 Bad Gateway: database down") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("NoJSONForText", func(t *testing.T) {
		out, err := run(env, map[string]any{"url": srv.URL + "/text"})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := out["json"]; ok {
			t.Fatalf("json output for a text response: %v", out["json"])
		}
	})
	t.Run("NoJSONWhenTheBodyIsNot", func(t *testing.T) {
		var logged []string
		env := &step.Env{WorkDir: env.WorkDir, Log: func(level, msg string) { logged = append(logged, level+": "+msg) }}
		out, err := run(env, map[string]any{"url": srv.URL + "/liar"})
		if err != nil || out["body"] != "<html>" {
			t.Fatalf("out = %v, err = %v", out, err)
		}
		if _, ok := out["json"]; ok || len(logged) != 1 || !strings.HasPrefix(logged[0], "warn: ") {
			t.Fatalf("json = %v, logged = %v", out["json"], logged)
		}
	})
}

func TestRejectsBadParameters(t *testing.T) {
	t.Parallel()
	_, env := setup(t, http.HandlerFunc(echo))
	for _, tc := range []struct {
		name string
		with map[string]any
		want string
	}{
		{"URLRequired", map[string]any{}, "with.url: required"},
		{"RelativeURL", map[string]any{"url": "/invoices"}, `with.url: "/invoices" is not an absolute http or https URL`},
		{"OtherScheme", map[string]any{"url": "file:///etc/passwd"}, "is not an absolute http or https URL"},
		{"BadMethod", map[string]any{"url": "http://x", "method": "GE T"}, `with.method: "GE T" is not an HTTP method`},
		{"BodyAndJSON", map[string]any{"url": "http://x", "body": "a", "json": map[string]any{}}, "with: give body or json, not both"},
		{"HeaderObject", map[string]any{"url": "http://x", "headers": map[string]any{"X-A": map[string]any{}}}, "with.headers.X-A: want text"},
		{"HeaderNewline", map[string]any{"url": "http://x", "headers": map[string]any{"X-A": "a\r\nX-Evil: 1"}}, "cannot hold a line break"},
		{"QueryNested", map[string]any{"url": "http://x", "query": map[string]any{"a": []any{[]any{"b"}}}}, "with.query.a: want text"},
		{"Timeout", map[string]any{"url": "http://x", "timeout": "soon"}, "not a duration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := run(env, tc.with)
			if err == nil || !step.IsBusiness(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want a business error containing %q", err, tc.want)
			}
		})
	}
}

func TestTransportFailuresAreApplicationErrors(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	srv, env := setup(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(release) })

	t.Run("Timeout", func(t *testing.T) {
		start := time.Now()
		_, err := run(env, map[string]any{"url": srv.URL, "timeout": "200ms"})
		if err == nil || step.IsBusiness(err) || !strings.Contains(err.Error(), "no complete response within 200ms") {
			t.Fatalf("err = %v", err)
		}
		if elapsed := time.Since(start); elapsed > 5*time.Second {
			t.Fatalf("the timeout took %s", elapsed)
		}
	})
	t.Run("ConnectionRefused", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		_, err = run(env, map[string]any{"url": "http://" + addr + "/"})
		if err == nil || step.IsBusiness(err) || !strings.Contains(err.Error(), "GET http://"+addr+"/") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("Cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(100*time.Millisecond, cancel)
		_, err := requestAction.Run(ctx, env, map[string]any{"url": srv.URL})
		if err == nil || step.IsBusiness(err) || !strings.Contains(err.Error(), "context canceled") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("PasswordRedacted", func(t *testing.T) {
		_, err := run(env, map[string]any{"url": "http://user:hunter2@" + srv.Listener.Addr().String(), "timeout": "50ms"})
		if err == nil || strings.Contains(err.Error(), "hunter2") {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestLargeBodies(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("x", MaxBody+1)
	srv, env := setup(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, big) }))

	_, err := run(env, map[string]any{"url": srv.URL})
	if err == nil || !step.IsBusiness(err) || !strings.Contains(err.Error(), "larger than 32 MiB; set save_to") {
		t.Fatalf("err = %v", err)
	}
	out, err := run(env, map[string]any{"url": srv.URL, "save_to": "downloads/big.txt"})
	if err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(env.WorkDir, "downloads", "big.txt")
	if out["path"] != want || out["size"] != float64(len(big)) || out["body"] != "" {
		t.Fatalf("path = %v size = %v body length %d", out["path"], out["size"], len(out["body"].(string)))
	}
	if info, err := os.Stat(want); err != nil || info.Size() != int64(len(big)) {
		t.Fatalf("saved file: %v, %v", info, err)
	}
	_, err = run(env, map[string]any{"url": srv.URL, "save_to": "/etc/big.txt"})
	if err == nil || !step.IsBusiness(err) || !strings.Contains(err.Error(), "with.save_to: /etc/big.txt is outside") {
		t.Fatalf("err = %v", err)
	}
}
