package e2e

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"connectrpc.com/connect/v2"
	"connectrpc.com/connect/v2/connecthttp"
	"google.golang.org/protobuf/types/known/structpb"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/rpc/casare/v1/casarev1connect"
	"github.com/casarerpa/casare/server/registry/registrytest"
)

// TestEventWebhooks subscribes a receiver to a job's events on the real
// server, on the embedded default and on PostgreSQL and Redis: a job no
// robot takes waits too long (job.waiting), then is cancelled
// (job.cancelled), and the receiver gets both, signed, in that order.
func TestEventWebhooks(t *testing.T) {
	t.Parallel()
	flags := []string{"--event-job-waiting-after", "1s"}
	t.Run("embedded", func(t *testing.T) {
		t.Parallel()
		eventWebhooks(t, startServer(t, t.TempDir(), flags...))
	})
	t.Run("postgres+redis", func(t *testing.T) {
		t.Parallel()
		eventWebhooks(t, startServer(t, t.TempDir(), append(flags, "--database-url", registrytest.DatabaseURL(t), "--redis-url", ownRedis(t))...))
	})
}

func eventWebhooks(t *testing.T, s *serverProc) {
	ctx := context.Background()
	client := connect.NewClient(connecthttp.NewTransport(http1, s.url()), bearer(s.adminToken()))
	hooks := casarev1connect.NewWebhookServiceClient(client)
	jobs := casarev1connect.NewJobServiceClient(client)
	rc := &webhookReceiver{seen: map[string]bool{}, times: map[string]int{}}
	rc.srv = httptest.NewServer(rc)
	t.Cleanup(rc.srv.Close)

	created, err := hooks.CreateSubscription(ctx, &casarev1.CreateSubscriptionRequest{Subscription: &casarev1.Subscription{
		Name: "ops", Url: rc.srv.URL, EventTypes: []string{"job.waiting", "job.cancelled"}, WorkflowName: "hello",
	}})
	if err != nil {
		t.Fatal(err)
	}
	rc.mu.Lock()
	rc.secret = created.GetSecret()
	rc.mu.Unlock()

	submit := func(name string) string {
		t.Helper()
		res, err := jobs.SubmitJob(ctx, &casarev1.SubmitJobRequest{Source: &casarev1.SubmitJobRequest_Workflow{Workflow: &casarev1.Workflow{
			Name:  name,
			Steps: []*casarev1.Step{{Id: "greet", Uses: "log", With: &structpb.Struct{Fields: map[string]*structpb.Value{"message": structpb.NewStringValue("hello")}}}},
		}}})
		if err != nil {
			t.Fatal(err)
		}
		return res.GetJob().GetId()
	}
	job := submit("hello")
	other := submit("other") // another workflow: the filter keeps it out
	waitUntil(t, "a job.waiting event", func() bool { n, _ := rc.count("job.waiting"); return n == 1 })
	if _, err := jobs.CancelJob(ctx, &casarev1.CancelJobRequest{Id: job}); err != nil {
		t.Fatal(err)
	}
	if _, err := jobs.CancelJob(ctx, &casarev1.CancelJobRequest{Id: other}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "a job.cancelled event", func() bool { n, _ := rc.count("job.cancelled"); return n == 1 })
	waitMetric(t, s, "casare_webhook_deliveries_total", `outcome="delivered"`, func(v float64) bool { return v == 2 }, 30*time.Second)

	rc.mu.Lock()
	defer rc.mu.Unlock()
	if len(rc.rejected) > 0 {
		t.Fatalf("deliveries whose signature did not verify: %v", rc.rejected)
	}
	if len(rc.events) != 2 || rc.events[0].Type != "job.waiting" || rc.events[1].Type != "job.cancelled" {
		t.Fatalf("got %+v; want job.waiting then job.cancelled of job %s only", rc.events, job)
	}
}

// waitUntil polls cond until it holds, for 30 seconds at most.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after 30s: no %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
