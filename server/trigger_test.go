package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect/v2"
	"connectrpc.com/connect/v2/connecthttp"
	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/rpc/casare/v1/casarev1connect"
	"github.com/casarerpa/casare/server"
	"github.com/casarerpa/casare/server/queue/queuetest"
	"github.com/casarerpa/casare/server/registry/registrytest"
	"github.com/casarerpa/casare/server/stdwebhook"
)

// triggerServer is a control plane serving on loopback and clients of it.
type triggerServer struct {
	url       string
	http      *http.Client
	jobs      casarev1connect.JobServiceClient
	webhooks  casarev1connect.WebhookServiceClient
	workflows casarev1connect.WorkflowServiceClient
	admin     casarev1connect.AdminServiceClient
}

// startTriggerServer starts a control plane in this process: on its
// embedded default, or on PostgreSQL (a schema of its own) and Redis
// (database redisDB, flushed before and after).
func startTriggerServer(tb testing.TB, production bool, redisDB int) *triggerServer {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	cfg, err := server.ConfigFromEnv()
	if err != nil {
		tb.Fatal(err)
	}
	cfg.HTTPAddr, cfg.QUICAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.DataDir = tb.TempDir()
	cfg.DatabaseURL, cfg.RedisURL = "", ""
	if production {
		cfg.RedisURL = queuetest.RedisURL(tb, redisDB)
		ropts, err := redis.ParseURL(cfg.RedisURL)
		if err != nil {
			tb.Fatal(err)
		}
		rdb := redis.NewClient(ropts)
		tb.Cleanup(func() { rdb.FlushDB(context.Background()); rdb.Close() })
		if err := rdb.FlushDB(ctx).Err(); err != nil {
			tb.Fatal(err)
		}
		cfg.DatabaseURL = registrytest.DatabaseURL(tb)
	}
	srv, err := server.New(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{})
	go func() { srv.Run(ctx); close(done) }()
	tb.Cleanup(func() { cancel(); <-done; srv.Close() })
	token, err := os.ReadFile(filepath.Join(cfg.DataDir, server.AdminTokenFile))
	if err != nil {
		tb.Fatal(err)
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = 256
	httpClient := &http.Client{Transport: transport}
	s := &triggerServer{url: "http://" + srv.Addr(), http: httpClient}
	client := connect.NewClient(connecthttp.NewTransport(httpClient, s.url), bearer(strings.TrimSpace(string(token))))
	s.jobs = casarev1connect.NewJobServiceClient(client)
	s.webhooks = casarev1connect.NewWebhookServiceClient(client)
	s.workflows = casarev1connect.NewWorkflowServiceClient(client)
	s.admin = casarev1connect.NewAdminServiceClient(client)
	return s
}

// ordersWorkflow takes an order number and where it came from.
var ordersWorkflow = &casarev1.Workflow{
	Name: "orders",
	Inputs: map[string]*casarev1.InputSpec{
		"order":  {Type: "integer", Required: true},
		"source": {Type: "string"},
	},
	Steps: []*casarev1.Step{{Id: "noop", Uses: "log", With: mustStruct(map[string]any{"message": "order"})}},
}

// delivery is one request to a trigger.
type delivery struct {
	id       string
	at       time.Time
	body     string
	secret   string // signs with this Standard Webhooks secret
	bearer   string
	header   map[string]string
	rawSig   string // sent as webhook-signature instead of a signature
	nohdrs   bool   // sends no webhook-* headers
	typeJSON bool
}

type answer struct {
	status int
	jobID  string
	err    string
	header http.Header
}

func (s *triggerServer) post(t testing.TB, path string, d delivery) answer {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.url+path, strings.NewReader(d.body))
	if err != nil {
		t.Fatal(err)
	}
	if d.typeJSON || d.body == "" || d.body[0] == '{' {
		req.Header.Set("Content-Type", "application/json")
	}
	if d.at.IsZero() {
		d.at = time.Now()
	}
	if !d.nohdrs && d.bearer == "" {
		req.Header.Set(stdwebhook.HeaderID, d.id)
		req.Header.Set(stdwebhook.HeaderTimestamp, strconv.FormatInt(d.at.Unix(), 10))
		sig := d.rawSig
		if d.secret != "" {
			key, err := stdwebhook.DecodeSecret(d.secret)
			if err != nil {
				t.Fatal(err)
			}
			sig = stdwebhook.Sign(key, d.id, d.at, []byte(d.body))
		}
		req.Header.Set(stdwebhook.HeaderSignature, sig)
	}
	if d.bearer != "" {
		req.Header.Set("Authorization", "Bearer "+d.bearer)
	}
	for k, v := range d.header {
		req.Header.Set(k, v)
	}
	res, err := s.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var out struct {
		JobID string `json:"jobId"`
		Error string `json:"error"`
	}
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
		t.Fatalf("POST %s: %d with a body that is not JSON: %v", path, res.StatusCode, err)
	}
	return answer{status: res.StatusCode, jobID: out.JobID, err: out.Error, header: res.Header}
}

func (s *triggerServer) countJobs(t testing.TB, workflow string) int {
	t.Helper()
	res, err := s.jobs.ListJobs(context.Background(), &casarev1.ListJobsRequest{WorkflowName: workflow, PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return len(res.GetJobs())
}

func TestWebhookTriggers(t *testing.T) {
	for _, production := range []bool{false, true} {
		name := "embedded"
		if production {
			name = "postgres"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testWebhookTriggers(t, startTriggerServer(t, production, 0))
		})
	}
}

func testWebhookTriggers(t *testing.T, s *triggerServer) {
	ctx := context.Background()
	if _, err := s.workflows.PutWorkflow(ctx, &casarev1.PutWorkflowRequest{Workflow: ordersWorkflow}); err != nil {
		t.Fatal(err)
	}
	created, err := s.webhooks.CreateTrigger(ctx, &casarev1.CreateTriggerRequest{Trigger: &casarev1.Trigger{
		Name:          "orders-hook",
		WorkflowName:  "orders",
		Inputs:        map[string]string{"order": "int(body.order)", "source": "'x-source' in headers ? headers['x-source'] : 'unknown'"},
		RatePerSecond: 1000,
	}})
	if err != nil {
		t.Fatal(err)
	}
	secret, path := created.GetSecret(), created.GetTrigger().GetUrlPath()
	if !strings.HasPrefix(secret, stdwebhook.SecretPrefix) || path != "/hooks/"+created.GetTrigger().GetId() {
		t.Fatalf("CreateTrigger = %v", created)
	}

	t.Run("CreateRefusesBadTriggers", func(t *testing.T) {
		good := func() *casarev1.Trigger {
			return &casarev1.Trigger{Name: "other", WorkflowName: "orders", Inputs: map[string]string{"order": "1"}}
		}
		tests := []struct {
			name   string
			change func(*casarev1.Trigger)
			code   connect.Code
			want   string
		}{
			{"BadExpression", func(tr *casarev1.Trigger) { tr.Inputs["order"] = "body.(" }, connect.CodeInvalidArgument, "trigger.inputs.order:"},
			{"UnknownVariable", func(tr *casarev1.Trigger) { tr.Inputs["order"] = "secrets.x" }, connect.CodeInvalidArgument, "trigger.inputs.order:"},
			{"WrongType", func(tr *casarev1.Trigger) { tr.Inputs["order"] = "'x'" }, connect.CodeInvalidArgument, "trigger.inputs.order: the expression gives string"},
			{"UndeclaredInput", func(tr *casarev1.Trigger) { tr.Inputs["colour"] = "'red'" }, connect.CodeInvalidArgument, "trigger.inputs.colour: not an input"},
			{"RequiredInputNotMapped", func(tr *casarev1.Trigger) { delete(tr.Inputs, "order") }, connect.CodeInvalidArgument, "trigger.inputs.order: required"},
			{"UnknownWorkflow", func(tr *casarev1.Trigger) { tr.WorkflowName = "nope" }, connect.CodeNotFound, "trigger.workflow_name:"},
			{"UnknownVersion", func(tr *casarev1.Trigger) { tr.WorkflowVersion = 9 }, connect.CodeNotFound, "trigger.workflow_version:"},
			{"DuplicateName", func(tr *casarev1.Trigger) { tr.Name = "orders-hook" }, connect.CodeAlreadyExists, "trigger.name:"},
			{"NUL", func(tr *casarev1.Trigger) { tr.Inputs["order"] = "1\x00" }, connect.CodeInvalidArgument, "trigger.inputs"},
			{"LongExpression", func(tr *casarev1.Trigger) { tr.Inputs["order"] = strings.Repeat("1+", 3000) + "1" }, connect.CodeInvalidArgument, "trigger.inputs"},
			{"BadName", func(tr *casarev1.Trigger) { tr.Name = "Has Spaces" }, connect.CodeInvalidArgument, "trigger.name"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				tr := good()
				tt.change(tr)
				_, err := s.webhooks.CreateTrigger(ctx, &casarev1.CreateTriggerRequest{Trigger: tr})
				if connect.CodeOf(err) != tt.code || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("CreateTrigger = %v; want %s naming %q", err, tt.code, tt.want)
				}
			})
		}
		list, err := s.webhooks.ListTriggers(ctx, &casarev1.ListTriggersRequest{})
		if err != nil || len(list.GetTriggers()) != 1 {
			t.Fatalf("after refused creates: %v, %v; want only orders-hook", list, err)
		}
	})

	t.Run("SignedDeliveryMakesOneJob", func(t *testing.T) {
		d := delivery{id: "msg_first", body: `{"order": 42}`, secret: secret, header: map[string]string{"X-Source": "shop"}}
		first := s.post(t, path, d)
		if first.status != http.StatusAccepted || first.jobID == "" {
			t.Fatalf("first delivery: %+v, want 202 with a job id", first)
		}
		job, err := s.jobs.GetJob(ctx, &casarev1.GetJobRequest{Id: first.jobID})
		if err != nil {
			t.Fatal(err)
		}
		in := job.GetJob().GetInputs().AsMap()
		if in["order"] != 42.0 || in["source"] != "shop" || job.GetJob().GetCreatedBy() != "trigger/orders-hook" ||
			job.GetJob().GetIdempotencyKey() != "trigger/"+created.GetTrigger().GetId()+"/msg_first" {
			t.Fatalf("the job: %v", job.GetJob())
		}
		// The sender's retry, and a replay of the same bytes, within the
		// tolerance: the same job, never a second.
		for _, again := range []delivery{d, {id: "msg_first", body: `{"order": 42}`, secret: secret, at: time.Now().Add(time.Minute)}} {
			if got := s.post(t, path, again); got.status != http.StatusOK || got.jobID != first.jobID {
				t.Fatalf("retry: %+v, want 200 with job %s", got, first.jobID)
			}
		}
		if n := s.countJobs(t, "orders"); n != 1 {
			t.Fatalf("%d jobs after a delivery and its retries, want 1", n)
		}
		audit, err := s.admin.ListAuditEvents(ctx, &casarev1.ListAuditEventsRequest{Target: "job/" + first.jobID})
		if err != nil {
			t.Fatal(err)
		}
		if ev := audit.GetEvents(); len(ev) != 1 || ev[0].GetActor() != "trigger/orders-hook" || ev[0].GetAction() != "POST "+path {
			t.Fatalf("audit of the job: %v; want one event by the trigger", ev)
		}
	})

	t.Run("ConcurrentRetriesMakeOneJob", func(t *testing.T) {
		before := s.countJobs(t, "orders")
		d := delivery{id: "msg_burst", body: `{"order": 5}`, secret: secret}
		answers := make([]answer, 16)
		var wg sync.WaitGroup
		for i := range answers {
			wg.Go(func() { answers[i] = s.post(t, path, d) })
		}
		wg.Wait()
		created := 0
		for _, a := range answers {
			switch {
			case a.status == http.StatusAccepted:
				created++
			case a.status != http.StatusOK:
				t.Fatalf("a concurrent retry: %+v", a)
			}
			if a.jobID != answers[0].jobID {
				t.Fatalf("concurrent retries answered jobs %s and %s", answers[0].jobID, a.jobID)
			}
		}
		if created != 1 || s.countJobs(t, "orders") != before+1 {
			t.Fatalf("%d answers said created, %d new jobs; want 1 of each", created, s.countJobs(t, "orders")-before)
		}
	})

	t.Run("UnauthenticatedCreatesNothing", func(t *testing.T) {
		before := s.countJobs(t, "orders")
		other := stdwebhook.NewSecret()
		tests := []struct {
			name string
			d    delivery
			want string
		}{
			{"WrongSecret", delivery{id: "msg_a", body: `{"order": 1}`, secret: other}, "webhook-signature: no signature matches"},
			{"NoHeaders", delivery{body: `{"order": 1}`, nohdrs: true}, "webhook-id: missing"},
			{"NoSignature", delivery{id: "msg_b", body: `{"order": 1}`}, "webhook-signature: missing"},
			{"GarbageSignature", delivery{id: "msg_c", body: `{"order": 1}`, rawSig: "v1,!!"}, "webhook-signature: malformed"},
			{"Stale", delivery{id: "msg_d", body: `{"order": 1}`, secret: secret, at: time.Now().Add(-10 * time.Minute)}, "webhook-timestamp"},
			{"Future", delivery{id: "msg_e", body: `{"order": 1}`, secret: secret, at: time.Now().Add(10 * time.Minute)}, "webhook-timestamp"},
			// The first delivery's id, replayed after the tolerance.
			{"StaleReplay", delivery{id: "msg_first", body: `{"order": 42}`, secret: secret, at: time.Now().Add(-6 * time.Minute)}, "webhook-timestamp"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				got := s.post(t, path, tt.d)
				if got.status != http.StatusUnauthorized || got.jobID != "" || !strings.Contains(got.err, tt.want) {
					t.Fatalf("%+v; want 401 naming %q", got, tt.want)
				}
			})
		}
		// A signature of other bytes than those sent.
		key, _ := stdwebhook.DecodeSecret(secret)
		tampered := delivery{id: "msg_f", body: `{"order": 2}`, rawSig: stdwebhook.Sign(key, "msg_f", time.Now(), []byte(`{"order": 1}`))}
		if got := s.post(t, path, tampered); got.status != http.StatusUnauthorized {
			t.Fatalf("tampered body: %+v, want 401", got)
		}
		if after := s.countJobs(t, "orders"); after != before {
			t.Fatalf("%d jobs after refused deliveries, want %d", after, before)
		}
	})

	t.Run("BadRequestsCreateNothing", func(t *testing.T) {
		before := s.countJobs(t, "orders")
		tests := []struct {
			name   string
			body   string
			status int
			want   string
		}{
			{"MappingFails", `{"other": 1}`, http.StatusUnprocessableEntity, "inputs.order:"},
			{"NotANumber", `{"order": "abc"}`, http.StatusUnprocessableEntity, "inputs.order"},
			{"NotJSON", `{"order":`, http.StatusBadRequest, "request body"},
			{"TooLarge", `{"order": 1, "pad": "` + strings.Repeat("x", 1<<20) + `"}`, http.StatusRequestEntityTooLarge, "1 MiB"},
		}
		for i, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				got := s.post(t, path, delivery{id: fmt.Sprint("msg_bad_", i), body: tt.body, secret: secret})
				if got.status != tt.status || !strings.Contains(got.err, tt.want) {
					t.Fatalf("%+v; want %d naming %q", got, tt.status, tt.want)
				}
			})
		}
		for _, p := range []string{"/hooks/no-such-trigger", "/hooks/" + strings.Repeat("a", 10000)} {
			if got := s.post(t, p, delivery{id: "x", body: "{}", secret: secret}); got.status != http.StatusNotFound {
				t.Fatalf("an unknown trigger: %+v, want 404", got)
			}
		}
		if after := s.countJobs(t, "orders"); after != before {
			t.Fatalf("%d jobs after bad requests, want %d", after, before)
		}
	})

	t.Run("RotatedSecret", func(t *testing.T) {
		rotated, err := s.webhooks.RotateTriggerSecret(ctx, &casarev1.RotateTriggerSecretRequest{Name: "orders-hook"})
		if err != nil {
			t.Fatal(err)
		}
		if rotated.GetSecret() == secret || rotated.GetTrigger().GetPreviousSecretExpiresAt() == nil {
			t.Fatalf("RotateTriggerSecret = %v", rotated)
		}
		for i, sec := range []string{secret, rotated.GetSecret()} {
			if got := s.post(t, path, delivery{id: fmt.Sprint("msg_rot_", i), body: `{"order": 7}`, secret: sec}); got.status != http.StatusAccepted {
				t.Fatalf("secret %d during the grace period: %+v, want 202", i, got)
			}
		}
		// No grace: the old secret ends at once.
		again, err := s.webhooks.RotateTriggerSecret(ctx, &casarev1.RotateTriggerSecretRequest{Name: "orders-hook", Grace: durationpb.New(0)})
		if err != nil {
			t.Fatal(err)
		}
		if got := s.post(t, path, delivery{id: "msg_rot_old", body: `{"order": 7}`, secret: rotated.GetSecret()}); got.status != http.StatusUnauthorized {
			t.Fatalf("the replaced secret after its grace: %+v, want 401", got)
		}
		if got := s.post(t, path, delivery{id: "msg_rot_new", body: `{"order": 7}`, secret: again.GetSecret()}); got.status != http.StatusAccepted {
			t.Fatalf("the new secret: %+v, want 202", got)
		}
		secret = again.GetSecret()
	})

	t.Run("Bearer", func(t *testing.T) {
		res, err := s.webhooks.CreateTrigger(ctx, &casarev1.CreateTriggerRequest{Trigger: &casarev1.Trigger{
			Name: "orders-bearer", WorkflowName: "orders", Inputs: map[string]string{"order": "int(query.n)"},
			Auth: casarev1.TriggerAuth_TRIGGER_AUTH_BEARER,
		}})
		if err != nil {
			t.Fatal(err)
		}
		bpath := res.GetTrigger().GetUrlPath()
		before := s.countJobs(t, "orders")
		for _, d := range []delivery{{bearer: "wrong"}, {nohdrs: true}, {secret: res.GetSecret(), id: "msg_x"}} {
			if got := s.post(t, bpath+"?n=3", d); got.status != http.StatusUnauthorized {
				t.Fatalf("bearer trigger with %+v: %+v, want 401", d, got)
			}
		}
		keyed := delivery{bearer: res.GetSecret(), header: map[string]string{"Idempotency-Key": "order-3"}}
		first := s.post(t, bpath+"?n=3", keyed)
		if first.status != http.StatusAccepted {
			t.Fatalf("bearer delivery: %+v", first)
		}
		if again := s.post(t, bpath+"?n=3", keyed); again.status != http.StatusOK || again.jobID != first.jobID {
			t.Fatalf("bearer retry: %+v, want 200 with %s", again, first.jobID)
		}
		if after := s.countJobs(t, "orders"); after != before+1 {
			t.Fatalf("%d jobs, want %d", after, before+1)
		}

		// An update changes the mapping and keeps the URL and the secret.
		updated, err := s.webhooks.UpdateTrigger(ctx, &casarev1.UpdateTriggerRequest{Trigger: &casarev1.Trigger{
			Name: "orders-bearer", WorkflowName: "orders", Inputs: map[string]string{"order": "int(query.n) * 10"},
		}})
		if err != nil || updated.GetTrigger().GetUrlPath() != bpath || updated.GetTrigger().GetAuth() != casarev1.TriggerAuth_TRIGGER_AUTH_BEARER {
			t.Fatalf("UpdateTrigger = %v, %v", updated, err)
		}
		got := s.post(t, bpath+"?n=4", delivery{bearer: res.GetSecret()})
		job, err := s.jobs.GetJob(ctx, &casarev1.GetJobRequest{Id: got.jobID})
		if err != nil || job.GetJob().GetInputs().AsMap()["order"] != 40.0 {
			t.Fatalf("a delivery after the update: %+v, %v, %v", got, job, err)
		}
		for _, bad := range []struct {
			tr   *casarev1.Trigger
			want string
		}{
			{&casarev1.Trigger{Name: "orders-bearer", WorkflowName: "orders", Inputs: map[string]string{"order": "1"}, Auth: casarev1.TriggerAuth_TRIGGER_AUTH_STANDARD_WEBHOOKS}, "trigger.auth"},
			{&casarev1.Trigger{Name: "orders-bearer", WorkflowName: "orders", Inputs: map[string]string{"order": "body.("}}, "trigger.inputs.order"},
			{&casarev1.Trigger{Name: "nope", WorkflowName: "orders", Inputs: map[string]string{"order": "1"}}, "trigger.name"},
		} {
			if _, err := s.webhooks.UpdateTrigger(ctx, &casarev1.UpdateTriggerRequest{Trigger: bad.tr}); err == nil || !strings.Contains(err.Error(), bad.want) {
				t.Errorf("UpdateTrigger(%v) = %v, want an error naming %s", bad.tr, err, bad.want)
			}
		}
		// The token never reaches a mapping: headers has no authorization.
		leaky, err := s.webhooks.CreateTrigger(ctx, &casarev1.CreateTriggerRequest{Trigger: &casarev1.Trigger{
			Name: "leaky", WorkflowName: "orders", Inputs: map[string]string{"order": "1", "source": "headers.authorization"},
			Auth: casarev1.TriggerAuth_TRIGGER_AUTH_BEARER,
		}})
		if err != nil {
			t.Fatal(err)
		}
		got = s.post(t, leaky.GetTrigger().GetUrlPath(), delivery{bearer: leaky.GetSecret()})
		if got.status != http.StatusUnprocessableEntity || !strings.Contains(got.err, "inputs.source") {
			t.Fatalf("a mapping reading the Authorization header: %+v, want 422 naming inputs.source", got)
		}
	})

	t.Run("RateLimited", func(t *testing.T) {
		res, err := s.webhooks.CreateTrigger(ctx, &casarev1.CreateTriggerRequest{Trigger: &casarev1.Trigger{
			Name: "slow", WorkflowName: "orders", Inputs: map[string]string{"order": "1"}, RatePerSecond: 0.1, Burst: 1,
		}})
		if err != nil {
			t.Fatal(err)
		}
		p := res.GetTrigger().GetUrlPath()
		if got := s.post(t, p, delivery{id: "r1", body: "{}", secret: res.GetSecret()}); got.status != http.StatusAccepted {
			t.Fatalf("first: %+v", got)
		}
		got := s.post(t, p, delivery{id: "r2", body: "{}", secret: res.GetSecret()})
		if got.status != http.StatusTooManyRequests || got.header.Get("Retry-After") == "" {
			t.Fatalf("second within the rate: %+v, want 429 with Retry-After", got)
		}
		if secs, err := strconv.Atoi(got.header.Get("Retry-After")); err != nil || secs < 1 || secs > 10 {
			t.Fatalf("Retry-After %q, want 1 to 10 seconds at 0.1/s", got.header.Get("Retry-After"))
		}
	})

	t.Run("GetListDelete", func(t *testing.T) {
		got, err := s.webhooks.GetTrigger(ctx, &casarev1.GetTriggerRequest{Name: "orders-hook"})
		if err != nil || got.GetTrigger().GetInputs()["order"] != "int(body.order)" {
			t.Fatalf("GetTrigger = %v, %v", got, err)
		}
		// No read carries a secret, however it is encoded.
		list, err := s.webhooks.ListTriggers(ctx, &casarev1.ListTriggersRequest{})
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := json.Marshal(list)
		if bytes.Contains(raw, []byte(strings.TrimPrefix(secret, stdwebhook.SecretPrefix))) || len(list.GetTriggers()) != 4 {
			t.Fatalf("ListTriggers = %s", raw)
		}
		if _, err := s.webhooks.DeleteTrigger(ctx, &casarev1.DeleteTriggerRequest{Name: "orders-hook"}); err != nil {
			t.Fatal(err)
		}
		if got := s.post(t, path, delivery{id: "after-delete", body: `{"order": 1}`, secret: secret}); got.status != http.StatusNotFound {
			t.Fatalf("a deleted trigger: %+v, want 404", got)
		}
		if _, err := s.webhooks.DeleteTrigger(ctx, &casarev1.DeleteTriggerRequest{Name: "orders-hook"}); connect.CodeOf(err) != connect.CodeNotFound {
			t.Fatalf("deleting twice: %v", err)
		}
		events, err := s.admin.ListAuditEvents(ctx, &casarev1.ListAuditEventsRequest{Target: "trigger/" + created.GetTrigger().GetId()})
		if err != nil {
			t.Fatal(err)
		}
		var actions []string
		for _, e := range events.GetEvents() {
			actions = append(actions, e.GetAction()[strings.LastIndex(e.GetAction(), "/")+1:])
		}
		if want := "[DeleteTrigger RotateTriggerSecret RotateTriggerSecret CreateTrigger]"; fmt.Sprint(actions) != want {
			t.Fatalf("audit of the trigger: %v, want %s", actions, want)
		}
	})

	t.Run("Metrics", func(t *testing.T) {
		res, err := s.http.Get(s.url + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		for _, want := range []string{`casare_trigger_requests_total{outcome="created"}`, `casare_trigger_requests_total{outcome="unauthorized"}`,
			`casare_trigger_requests_total{outcome="rate_limited"} 1`, "casare_trigger_request_duration_seconds_bucket"} {
			if !bytes.Contains(b, []byte(want)) {
				t.Errorf("/metrics has no %s", want)
			}
		}
	})
}

func mustStruct(m map[string]any) *structpb.Struct {
	s, err := structpb.NewStruct(m)
	if err != nil {
		panic(err)
	}
	return s
}
