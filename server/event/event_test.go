package event

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/casarerpa/casare/server/registry"
	"github.com/casarerpa/casare/server/registry/registrytest"
)

func TestSignMatchesTheStandardWebhooksVector(t *testing.T) {
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	body := []byte(`{"test": 2432232314}`)
	ts := time.Unix(1614265330, 0)
	got, err := Sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", ts, body)
	if err != nil {
		t.Fatal(err)
	}
	if want := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="; got != want {
		t.Fatalf("Sign() = %s; want %s", got, want)
	}
	for _, tc := range []struct {
		name, id, sigs string
		body           []byte
		now            time.Time
		ok             bool
	}{
		{name: "Valid", id: "msg_p5jXN8AQM9LWM0D4loKWxJek", sigs: "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= " + got, body: body, now: ts, ok: true},
		{name: "ErrBodyChanged", id: "msg_p5jXN8AQM9LWM0D4loKWxJek", sigs: got, body: []byte(`{"test": 1}`), now: ts},
		{name: "ErrOtherID", id: "msg_other", sigs: got, body: body, now: ts},
		{name: "ErrReplayedLater", id: "msg_p5jXN8AQM9LWM0D4loKWxJek", sigs: got, body: body, now: ts.Add(time.Hour)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Verify(secret, tc.id, "1614265330", tc.sigs, tc.body, tc.now, 5*time.Minute)
			if (err == nil) != tc.ok {
				t.Fatalf("Verify() = %v; want ok %v", err, tc.ok)
			}
		})
	}
	if s := NewSecret(); Verify(s, "a", "1", mustSign(t, s, "a", time.Unix(1, 0), nil), nil, time.Unix(1, 0), time.Second) != nil {
		t.Fatal("a new secret does not verify its own signature")
	}
}

func mustSign(t *testing.T, secret, id string, ts time.Time, body []byte) string {
	t.Helper()
	sig, err := Sign(secret, id, ts, body)
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

// forEachBackend runs test on a migrated SQLite registry and a PostgreSQL
// one of its own schema.
func forEachBackend(t *testing.T, test func(t *testing.T, reg *registry.Registry)) {
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		test(t, openRegistry(t, registry.Options{DataDir: t.TempDir()}))
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		test(t, openRegistry(t, registry.Options{DatabaseURL: registrytest.DatabaseURL(t), MaxOpenConns: 10}))
	})
}

func openRegistry(t testing.TB, opts registry.Options) *registry.Registry {
	t.Helper()
	reg, err := registry.Open(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	if _, err := reg.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return reg
}

// receiver is a real HTTP server that checks every signature and records
// what it got.
type receiver struct {
	*httptest.Server
	secret string
	mu     sync.Mutex
	// answer decides the status of a request; nil answers 204.
	answer    func(id string) int
	delivered map[string]int // event id → times delivered (2xx)
	order     map[string][]string
	tries     int
	bad       []string
}

func newReceiver(t testing.TB, answer func(id string) int) *receiver {
	rc := &receiver{secret: NewSecret(), answer: answer, delivered: map[string]int{}, order: map[string][]string{}}
	rc.Server = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	id := r.Header.Get(HeaderID)
	verr := Verify(rc.secret, id, r.Header.Get(HeaderTimestamp), r.Header.Get(HeaderSignature), body, time.Now(), time.Minute)
	var env struct {
		ID   string `json:"id"`
		Data struct {
			Resource string `json:"resource"`
		} `json:"data"`
	}
	jerr := json.Unmarshal(body, &env)
	status := http.StatusNoContent
	if rc.answer != nil {
		status = rc.answer(id)
	}
	rc.mu.Lock()
	rc.tries++
	if verr != nil || jerr != nil || env.ID != id {
		rc.bad = append(rc.bad, fmt.Sprintf("%s: %v %v", id, verr, jerr))
	}
	if status < 300 {
		rc.delivered[id]++
		rc.order[env.Data.Resource] = append(rc.order[env.Data.Resource], id)
	}
	rc.mu.Unlock()
	w.WriteHeader(status)
}

func (rc *receiver) count() (delivered, tries int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.delivered), rc.tries
}

func subscribe(t testing.TB, reg *registry.Registry, name string, rc *receiver, types ...string) *registry.Subscription {
	t.Helper()
	s := &registry.Subscription{ID: registry.NewID(), Name: name, URL: rc.URL, EventTypes: registry.JoinEventTypes(types),
		Secret: rc.secret, Enabled: true, CreatedBy: "tester"}
	if err := reg.CreateSubscription(context.Background(), s, nil); err != nil {
		t.Fatal(err)
	}
	return s
}

// appendEvents writes robot.offline events for the resources in turn, n in
// all, and returns their ids by resource in the order written.
func appendEvents(t testing.TB, reg *registry.Registry, n int, resources ...string) map[string][]string {
	t.Helper()
	events := make([]registry.Event, n)
	for i := range events {
		events[i] = registry.Event{Type: registry.EventRobotOffline, ResourceKind: registry.ResourceRobot, ResourceID: resources[i%len(resources)]}
	}
	err := reg.DB().RunInTx(context.Background(), nil, func(ctx context.Context, tx bun.Tx) error {
		return registry.AppendEvents(ctx, tx, events...)
	})
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string][]string{}
	for _, e := range events {
		ids[e.ResourceID] = append(ids[e.ResourceID], e.ID)
	}
	return ids
}

// render gives the resource id as the event's data.
func render(_ context.Context, e *registry.Event) (json.RawMessage, error) {
	return json.Marshal(map[string]string{"resource": e.ResourceID})
}

func start(t testing.TB, reg *registry.Registry, opts Options) *Service {
	t.Helper()
	opts.Store, opts.Render = reg, render
	opts.PollInterval = or(opts.PollInterval, 10*time.Millisecond)
	opts.InitialBackoff = or(opts.InitialBackoff, 10*time.Millisecond)
	opts.MaxBackoff = or(opts.MaxBackoff, 50*time.Millisecond)
	s := New(opts)
	s.Start(context.Background())
	t.Cleanup(s.Stop)
	return s
}

// eventually polls cond until it holds or 30 seconds pass.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after 30s: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestReceiverDownForAWhileGetsEveryEvent(t *testing.T) {
	forEachBackend(t, func(t *testing.T, reg *registry.Registry) {
		var mu sync.Mutex
		refused := 0
		rc := newReceiver(t, func(string) int {
			mu.Lock()
			defer mu.Unlock()
			if refused < 25 {
				refused++
				return http.StatusServiceUnavailable
			}
			return http.StatusOK
		})
		subscribe(t, reg, "down-a-while", rc, registry.EventRobotOffline)
		want := appendEvents(t, reg, 40, "robot-1", "robot-2", "robot-3", "robot-4")
		start(t, reg, Options{})
		eventually(t, "every event delivered", func() bool { n, _ := rc.count(); return n == 40 })
		rc.mu.Lock()
		defer rc.mu.Unlock()
		if len(rc.bad) > 0 {
			t.Fatalf("requests that do not verify: %v", rc.bad)
		}
		for resource, ids := range want {
			if got := rc.order[resource]; fmt.Sprint(got) != fmt.Sprint(ids) {
				t.Errorf("%s: delivered %v; want %v, in order", resource, got, ids)
			}
		}
		for id, n := range rc.delivered {
			if n != 1 {
				t.Errorf("event %s delivered %d times", id, n)
			}
		}
	})
}

func TestHangingReceiverDoesNotHoldAnother(t *testing.T) {
	forEachBackend(t, func(t *testing.T, reg *registry.Registry) {
		var hanging atomic.Int32
		slow := newReceiver(t, nil)
		slow.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// Read the body first: only then does the server notice the
			// client going away and end the request's context.
			io.Copy(io.Discard, r.Body)
			hanging.Add(1)
			<-r.Context().Done()
		})
		fast := newReceiver(t, nil)
		subscribe(t, reg, "slow", slow, registry.EventRobotOffline)
		subscribe(t, reg, "fast", fast, registry.EventRobotOffline)
		resources := make([]string, 50)
		for i := range resources {
			resources[i] = fmt.Sprint("robot-", i)
		}
		appendEvents(t, reg, 50, resources...)
		// An attempt timeout far past the test: the slow receiver holds
		// its lane the whole time.
		start(t, reg, Options{AttemptTimeout: time.Hour})
		eventually(t, "the slow receiver holds its lane's 8 tries", func() bool { return hanging.Load() == 8 })
		eventually(t, "the fast receiver got all 50 while the slow one hangs", func() bool { n, _ := fast.count(); return n == 50 })
		if n := hanging.Load(); n != 8 {
			t.Fatalf("the slow receiver got %d tries; want its lane's 8, all still hanging", n)
		}
	})
}

func TestDisabledAfterMaxFailures(t *testing.T) {
	forEachBackend(t, func(t *testing.T, reg *registry.Registry) {
		ctx := context.Background()
		rc := newReceiver(t, func(string) int { return http.StatusInternalServerError })
		sub := subscribe(t, reg, "broken", rc, registry.EventRobotOffline)
		appendEvents(t, reg, 1, "robot-1")
		start(t, reg, Options{MaxFailures: 3})
		eventually(t, "the subscription is disabled", func() bool {
			s, err := reg.GetSubscription(ctx, sub.ID)
			return err == nil && !s.Enabled
		})
		attempts, _, err := reg.ListDeliveryAttempts(ctx, sub.ID, registry.Page{})
		if err != nil || len(attempts) != 3 || attempts[0].StatusCode != 500 || attempts[0].Error != "HTTP 500" {
			t.Fatalf("ListDeliveryAttempts() = %+v, %v; want 3 tries that got HTTP 500", attempts, err)
		}
		audit, _, err := reg.ListAudit(ctx, registry.AuditFilter{Target: "subscription/" + sub.ID}, registry.Page{})
		if err != nil || len(audit) != 1 {
			t.Fatalf("ListAudit() = %+v, %v; want the disabling", audit, err)
		}
	})
}

func TestTwoServicesNeverSendOneEventAtOnce(t *testing.T) {
	reg := openRegistry(t, registry.Options{DatabaseURL: registrytest.DatabaseURL(t), MaxOpenConns: 20})
	var mu sync.Mutex
	inFlight := map[string]bool{}
	var overlaps []string
	rc := newReceiver(t, nil)
	inner := rc.Config.Handler
	rc.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(HeaderID)
		mu.Lock()
		if inFlight[id] {
			overlaps = append(overlaps, id)
		}
		inFlight[id] = true
		mu.Unlock()
		// Long enough for the other service to look at the same rows.
		time.Sleep(2 * time.Millisecond)
		inner.ServeHTTP(w, r)
		mu.Lock()
		delete(inFlight, id)
		mu.Unlock()
	})
	subscribe(t, reg, "shared", rc, registry.EventRobotOffline)
	resources := make([]string, 100)
	for i := range resources {
		resources[i] = fmt.Sprint("robot-", i)
	}
	appendEvents(t, reg, 300, resources...)
	start(t, reg, Options{})
	start(t, reg, Options{})
	eventually(t, "all 300 delivered", func() bool { n, _ := rc.count(); return n == 300 })
	mu.Lock()
	defer mu.Unlock()
	if len(overlaps) > 0 {
		t.Fatalf("events sent by both services at once: %v", overlaps)
	}
	if _, tries := rc.count(); tries != 300 {
		t.Fatalf("%d tries for 300 events to a receiver that never fails; want 300", tries)
	}
}
