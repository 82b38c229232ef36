package trigger

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/server/registry"
	"github.com/casarerpa/casare/server/stdwebhook"
)

// fakes stands in for the registry and the API: triggers by id, and jobs
// by idempotency key.
type fakes struct {
	mu       sync.Mutex
	triggers map[string]*registry.Trigger
	jobs     map[string]*registry.Job
	requests []*casarev1.SubmitJobRequest
}

func (f *fakes) TriggerByID(_ context.Context, id string) (*registry.Trigger, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if t, ok := f.triggers[id]; ok {
		return t, nil
	}
	return nil, registry.ErrNotFound
}

func (f *fakes) Submit(_ context.Context, req *casarev1.SubmitJobRequest, _ string) (*registry.Job, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if job, ok := f.jobs[req.GetIdempotencyKey()]; ok && req.GetIdempotencyKey() != "" {
		return job, true, nil
	}
	job := &registry.Job{ID: registry.NewID()}
	f.jobs[req.GetIdempotencyKey()] = job
	f.requests = append(f.requests, req)
	return job, false, nil
}

type bundle struct {
	fakes   *fakes
	handler http.Handler
	now     time.Time
	trigger *registry.Trigger
	secret  string
}

func setup(t *testing.T) *bundle {
	t.Helper()
	b := &bundle{
		fakes:  &fakes{triggers: map[string]*registry.Trigger{}, jobs: map[string]*registry.Job{}},
		now:    time.Unix(1_800_000_000, 0),
		secret: stdwebhook.NewSecret(),
	}
	b.trigger = &registry.Trigger{
		ID: "t1", Name: "orders", WorkflowName: "orders", Inputs: `{"order":"body.order","ua":"headers['user-agent']","q":"query.x"}`,
		Auth: registry.TriggerAuthStandardWebhooks, Secret: b.secret, RatePerSecond: 1000,
	}
	b.fakes.triggers["t1"] = b.trigger
	mux := http.NewServeMux()
	mux.Handle(Pattern, New(Options{Store: b.fakes, Jobs: b.fakes, Now: func() time.Time { return b.now }}))
	b.handler = mux
	return b
}

func (b *bundle) post(t *testing.T, secret, id string, at time.Time, body string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "/hooks/t1?x=1&x=2", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("User-Agent", "shop/1.0")
	req.Header.Set(stdwebhook.HeaderID, id)
	req.Header.Set(stdwebhook.HeaderTimestamp, strconv.FormatInt(at.Unix(), 10))
	key, err := stdwebhook.DecodeSecret(secret)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(stdwebhook.HeaderSignature, stdwebhook.Sign(key, id, at, []byte(body)))
	rec := httptest.NewRecorder()
	b.handler.ServeHTTP(rec, req)
	return rec
}

func TestHandlerMapsTheRequest(t *testing.T) {
	b := setup(t)
	rec := b.post(t, b.secret, "msg_1", b.now, `{"order": 42}`)
	if rec.Code != http.StatusAccepted {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	var res map[string]string
	if err := json.Unmarshal(rec.Body.Bytes(), &res); err != nil || res["jobId"] == "" {
		t.Fatalf("answer %s: want {\"jobId\": …}", rec.Body)
	}
	req := b.fakes.requests[0]
	in := req.GetInputs().AsMap()
	if in["order"] != 42.0 || in["ua"] != "shop/1.0" || in["q"] != "1" || req.GetIdempotencyKey() != "trigger/t1/msg_1" || req.GetWorkflowName() != "orders" {
		t.Fatalf("submitted %v", req)
	}
}

// The previous secret is good until its grace period ends, the new one
// from the moment of the rotation.
func TestHandlerRotatedSecret(t *testing.T) {
	b := setup(t)
	old := b.secret
	b.trigger.PreviousSecret = old
	b.trigger.Secret = stdwebhook.NewSecret()
	until := b.now.Add(time.Hour)
	b.trigger.PreviousSecretExpiresAt = &until
	tests := []struct {
		name   string
		secret string
		at     time.Time
		want   int
	}{
		{"OldWithinGrace", old, b.now.Add(59 * time.Minute), http.StatusAccepted},
		{"NewWithinGrace", b.trigger.Secret, b.now.Add(59 * time.Minute), http.StatusAccepted},
		{"OldAfterGrace", old, b.now.Add(61 * time.Minute), http.StatusUnauthorized},
		{"NewAfterGrace", b.trigger.Secret, b.now.Add(61 * time.Minute), http.StatusAccepted},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b.now = tt.at
			if rec := b.post(t, tt.secret, "msg_"+strconv.Itoa(i), tt.at, `{"order": 1}`); rec.Code != tt.want {
				t.Fatalf("%d %s, want %d", rec.Code, rec.Body, tt.want)
			}
		})
	}
}

func TestHandlerRateLimit(t *testing.T) {
	b := setup(t)
	b.trigger.RatePerSecond, b.trigger.Burst = 2, 2
	for i, want := range []int{http.StatusAccepted, http.StatusAccepted, http.StatusTooManyRequests} {
		rec := b.post(t, b.secret, "msg_"+strconv.Itoa(i), b.now, `{"order": 1}`)
		if rec.Code != want {
			t.Fatalf("request %d: %d %s, want %d", i, rec.Code, rec.Body, want)
		}
		if want == http.StatusTooManyRequests && rec.Header().Get("Retry-After") != "1" {
			t.Fatalf("Retry-After %q, want 1 at 2/s", rec.Header().Get("Retry-After"))
		}
	}
	// Half a second later a token is back.
	b.now = b.now.Add(500 * time.Millisecond)
	if rec := b.post(t, b.secret, "msg_3", b.now, `{"order": 1}`); rec.Code != http.StatusAccepted {
		t.Fatalf("after the refill: %d %s", rec.Code, rec.Body)
	}
	// A changed rate takes effect at the next request.
	b.trigger.RatePerSecond, b.trigger.Burst = 1000, 1000
	if rec := b.post(t, b.secret, "msg_4", b.now, `{"order": 1}`); rec.Code != http.StatusAccepted {
		t.Fatalf("after raising the rate: %d %s", rec.Code, rec.Body)
	}
}

func TestCompile(t *testing.T) {
	specs := map[string]*casarev1.InputSpec{"n": {Type: "integer"}, "s": {Type: "string"}, "o": {Type: "object"}, "any": {}}
	good := map[string]string{"n": "int(body.n)", "s": "headers['x']", "o": "{'a': 1}", "any": "body"}
	if _, err := Compile(good, specs); err != nil {
		t.Fatal(err)
	}
	bad := map[string]string{"n": "'x'", "s": "1 +", "o": "[1]", "extra": "1"}
	_, err := Compile(bad, specs)
	cerr, ok := err.(*CompileError)
	if !ok || len(cerr.Problems) != 4 {
		t.Fatalf("Compile = %v; want a problem for each of 4 inputs", err)
	}
	for _, p := range cerr.Problems {
		if !strings.HasPrefix(p, "inputs.") {
			t.Errorf("problem %q names no input", p)
		}
	}
}

// A client that sends its headers and then too little of its body, too
// slowly, loses the connection at the read timeout, with no job made.
func TestHandlerCutsSlowClients(t *testing.T) {
	b := setup(t)
	mux := http.NewServeMux()
	mux.Handle(Pattern, New(Options{Store: b.fakes, Jobs: b.fakes, ReadTimeout: 200 * time.Millisecond}))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "POST /hooks/t1 HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(body), "read timeout of 200ms") {
		t.Fatalf("%d %s; want 408 naming the read timeout", res.StatusCode, body)
	}
	if len(b.fakes.requests) != 0 {
		t.Fatal("a job was submitted")
	}
}
