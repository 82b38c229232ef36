package server

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect/v2"
	"connectrpc.com/connect/v2/connecthttp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/types/known/structpb"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/rpc/casare/v1/casarev1connect"
	"github.com/casarerpa/casare/server/auth"
	"github.com/casarerpa/casare/server/logtest"
	"github.com/casarerpa/casare/server/queue/queuetest"
	"github.com/casarerpa/casare/server/registry/registrytest"
)

// schedulerLockClass is the first key of the scheduler's advisory lock
// (schedule.lockClass), to find the session that holds it.
const schedulerLockClass = 0x63617372

// scheduleRedisDB is the Redis database of this file's tests; they run one
// after the other.
const scheduleRedisDB = 6

// scheduling is a control plane running in-process with API clients.
type scheduling struct {
	srv       *Server
	schedules casarev1connect.ScheduleServiceClient
	jobs      casarev1connect.JobServiceClient
	stop      func()
}

// startScheduling starts a control plane on the database and Redis given
// ("" for the embedded ones) in dataDir, and stores a workflow "tick".
func startScheduling(t testing.TB, dataDir, dbURL, redisURL, adminToken string, options ...func(*Config)) *scheduling {
	t.Helper()
	cfg, err := ConfigFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range options {
		o(&cfg)
	}
	cfg.HTTPAddr, cfg.QUICAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.DataDir = dataDir
	cfg.DatabaseURL, cfg.RedisURL = dbURL, redisURL
	cfg.SchedulerTick = 200 * time.Millisecond
	if adminToken != "" {
		file := filepath.Join(dataDir, "given.token")
		if err := os.WriteFile(file, []byte(adminToken), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg.AdminTokenFile = file
	}
	var out logtest.Buffer
	s, err := New(context.Background(), cfg, slog.New(slog.NewTextHandler(&out, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- s.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		<-ran
		s.Close()
	}
	t.Cleanup(stop)
	token := adminToken
	if token == "" {
		b, err := os.ReadFile(filepath.Join(dataDir, AdminTokenFile))
		if err != nil {
			t.Fatal(err)
		}
		token = strings.TrimSpace(string(b))
	}
	client := connect.NewClient(connecthttp.NewTransport(http.DefaultClient, "http://"+s.Addr()), bearerToken(token))
	sc := &scheduling{srv: s, schedules: casarev1connect.NewScheduleServiceClient(client), jobs: casarev1connect.NewJobServiceClient(client), stop: stop}
	wf := casarev1connect.NewWorkflowServiceClient(client)
	_, err = wf.PutWorkflow(context.Background(), &casarev1.PutWorkflowRequest{Workflow: &casarev1.Workflow{
		Name:  "tick",
		Steps: []*casarev1.Step{{Id: "a", Uses: "log", With: mustStruct(t, map[string]any{"message": "tick"})}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return sc
}

// fires reads casare_schedule_fires_total{outcome}.
func (sc *scheduling) fires(outcome string) float64 {
	return testutil.ToFloat64(sc.srv.scheduler.Collectors()[0].(*prometheus.CounterVec).WithLabelValues(outcome))
}

func mustStruct(t testing.TB, m map[string]any) *structpb.Struct {
	t.Helper()
	s, err := structpb.NewStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func bearerToken(token string) connect.ClientInterceptor {
	return func(next connect.ClientFunc) connect.ClientFunc {
		return func(ctx context.Context, spec connect.Spec) (connect.ClientStream, error) {
			if info, ok := connect.CallInfoForClientContext(ctx); ok {
				info.RequestHeader().Set("Authorization", "Bearer "+token)
			}
			return next(ctx, spec)
		}
	}
}

// scheduledJobs returns the jobs made by the named schedule, oldest first.
func (sc *scheduling) scheduledJobs(t *testing.T, name string) []*casarev1.Job {
	t.Helper()
	res, err := sc.jobs.ListJobs(context.Background(), &casarev1.ListJobsRequest{WorkflowName: "tick", PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var out []*casarev1.Job
	for i := len(res.GetJobs()) - 1; i >= 0; i-- {
		if j := res.GetJobs()[i]; j.GetCreatedBy() == "schedule/"+name {
			out = append(out, j)
		}
	}
	return out
}

// waitUntil polls cond until it holds or the deadline passes.
func waitUntil(t *testing.T, what string, deadline time.Duration, cond func() bool) {
	t.Helper()
	end := time.Now().Add(deadline)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("after %s: %s", deadline, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (sc *scheduling) create(t *testing.T, name, cron string, overlap casarev1.OverlapPolicy) {
	t.Helper()
	_, err := sc.schedules.CreateSchedule(context.Background(), &casarev1.CreateScheduleRequest{Schedule: &casarev1.Schedule{
		Name: name, WorkflowName: "tick", Cron: cron, OverlapPolicy: overlap,
	}})
	if err != nil {
		t.Fatal(err)
	}
}

// checkOneJobPerInstant fails when two jobs share a scheduled instant.
func checkOneJobPerInstant(t *testing.T, jobs []*casarev1.Job) {
	t.Helper()
	seen := map[string]string{}
	for _, j := range jobs {
		key := j.GetIdempotencyKey()
		if !strings.HasPrefix(key, "schedule/") {
			t.Errorf("job %s has idempotency key %q, not a schedule's", j.GetId(), key)
		}
		if other, ok := seen[key]; ok {
			t.Errorf("jobs %s and %s both fired %s", other, j.GetId(), key)
		}
		seen[key] = j.GetId()
	}
}

// forEachStore runs test on the embedded default and on PostgreSQL and
// Redis.
func forEachStore(t *testing.T, test func(t *testing.T, start func() *scheduling)) {
	t.Run("embedded", func(t *testing.T) {
		test(t, func() *scheduling { return startScheduling(t, t.TempDir(), "", "", "") })
	})
	t.Run("postgres", func(t *testing.T) {
		db, redis := registrytest.DatabaseURL(t), queuetest.RedisURL(t, scheduleRedisDB)
		test(t, func() *scheduling { return startScheduling(t, t.TempDir(), db, redis, "") })
	})
}

// TestScheduleFiresEverySecond: @every 1s makes a job each second, each
// instant once, and a paused schedule makes none.
func TestScheduleFiresEverySecond(t *testing.T) {
	forEachStore(t, func(t *testing.T, start func() *scheduling) {
		sc := start()
		sc.create(t, "often", "@every 1s", casarev1.OverlapPolicy_OVERLAP_POLICY_ALLOW)
		const n = 4
		waitUntil(t, fmt.Sprintf("%d jobs from @every 1s", n), 30*time.Second, func() bool { return len(sc.scheduledJobs(t, "often")) >= n })
		got, err := sc.schedules.GetSchedule(context.Background(), &casarev1.GetScheduleRequest{Name: "often"})
		if err != nil {
			t.Fatal(err)
		}
		if s := got.GetSchedule(); s.GetLastJobId() == "" || s.GetLastJobStatus() != casarev1.JobStatus_JOB_STATUS_PENDING || s.GetNextFireTime() == nil || s.GetLastFireTime() == nil {
			t.Errorf("schedule after fires = %v; want its last job, that job's status and its next fire", s)
		}
		if _, err := sc.schedules.PauseSchedule(context.Background(), &casarev1.PauseScheduleRequest{Name: "often"}); err != nil {
			t.Fatal(err)
		}
		// A pass that read the schedule before the pause may still end.
		time.Sleep(300 * time.Millisecond)
		paused := len(sc.scheduledJobs(t, "often"))
		time.Sleep(1500 * time.Millisecond)
		jobs := sc.scheduledJobs(t, "often")
		if len(jobs) != paused {
			t.Errorf("a paused schedule made %d jobs", len(jobs)-paused)
		}
		checkOneJobPerInstant(t, jobs)
		if created := sc.fires("created"); created < float64(len(jobs)) {
			t.Errorf("casare_schedule_fires_total{outcome=created} = %v, want at least the %d jobs", created, len(jobs))
		}
	})
}

// TestScheduleOverlapPolicies: with no robot the first job stays pending,
// so every later fire overlaps it.
func TestScheduleOverlapPolicies(t *testing.T) {
	forEachStore(t, func(t *testing.T, start func() *scheduling) {
		ctx := context.Background()
		sc := start()
		sc.create(t, "skip", "@every 1s", casarev1.OverlapPolicy_OVERLAP_POLICY_UNSPECIFIED)
		sc.create(t, "queue", "@every 1s", casarev1.OverlapPolicy_OVERLAP_POLICY_QUEUE_ONE)
		sc.create(t, "cancel", "@every 1s", casarev1.OverlapPolicy_OVERLAP_POLICY_CANCEL_PREVIOUS)

		// skip (the default) and queue_one both skip once a fire waits;
		// two skips each means both saw the overlap.
		waitUntil(t, "fires skipped for the pending job", 30*time.Second, func() bool { return sc.fires("skipped_overlap") >= 4 })
		if jobs := sc.scheduledJobs(t, "skip"); len(jobs) != 1 {
			t.Errorf("skip made %d jobs while the first was pending, want 1", len(jobs))
		}
		queued := sc.scheduledJobs(t, "queue")
		if len(queued) != 1 {
			t.Fatalf("queue_one made %d jobs while the first was pending, want 1", len(queued))
		}
		// The fire held back runs once the job before it ends.
		if _, err := sc.jobs.CancelJob(ctx, &casarev1.CancelJobRequest{Id: queued[0].GetId()}); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, "the held fire's job after the first ended", 30*time.Second, func() bool { return len(sc.scheduledJobs(t, "queue")) == 2 })
		queued = sc.scheduledJobs(t, "queue")
		if !(queued[0].GetIdempotencyKey() < queued[1].GetIdempotencyKey()) {
			t.Errorf("the held fire %s is not after the first %s", queued[1].GetIdempotencyKey(), queued[0].GetIdempotencyKey())
		}

		// cancel_previous: each fire cancels the job before it.
		waitUntil(t, "three jobs of cancel_previous", 30*time.Second, func() bool { return len(sc.scheduledJobs(t, "cancel")) >= 3 })
		jobs := sc.scheduledJobs(t, "cancel")
		for _, j := range jobs[:len(jobs)-1] {
			got, err := sc.jobs.GetJob(ctx, &casarev1.GetJobRequest{Id: j.GetId()})
			if err != nil {
				t.Fatal(err)
			}
			if got.GetJob().GetStatus() != casarev1.JobStatus_JOB_STATUS_CANCELLED || !strings.Contains(got.GetJob().GetStatusMessage(), "schedule cancel") {
				t.Errorf("job %s before the last is %s (%q), want cancelled by the schedule", j.GetId(), got.GetJob().GetStatus(), got.GetJob().GetStatusMessage())
			}
		}
		for _, name := range []string{"skip", "queue", "cancel"} {
			checkOneJobPerInstant(t, sc.scheduledJobs(t, name))
		}
	})
}

// leads reads casare_scheduler_leader.
func (sc *scheduling) leads() bool {
	return testutil.ToFloat64(sc.srv.scheduler.Collectors()[2].(prometheus.Gauge)) == 1
}

// TestSchedulerFailover: two control planes on one PostgreSQL database;
// one leads, and when it stops the other takes over, and no instant has
// two jobs.
func TestSchedulerFailover(t *testing.T) {
	dbURL, redis := registrytest.DatabaseURL(t), queuetest.RedisURL(t, scheduleRedisDB)
	token := auth.NewToken()
	aDir := t.TempDir()
	a := startScheduling(t, aDir, dbURL, redis, token)
	// Replicas of one database share its vault key, as they share its CA.
	b := startScheduling(t, t.TempDir(), dbURL, redis, token, func(c *Config) { c.SecretKeyFile = filepath.Join(aDir, SecretKeyFile) })
	a.create(t, "shared", "@every 1s", casarev1.OverlapPolicy_OVERLAP_POLICY_ALLOW)
	waitUntil(t, "one of the two leads", 30*time.Second, func() bool { return a.leads() != b.leads() })
	leader, other := a, b
	if b.leads() {
		leader, other = b, a
	}
	waitUntil(t, "jobs from the first leader", 30*time.Second, func() bool { return len(other.scheduledJobs(t, "shared")) >= 2 })
	for range 5 {
		if a.leads() && b.leads() {
			t.Fatal("both control planes lead")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Cutting the connection that holds the lock loses the lead: one of
	// the two (either) holds it again on a new connection, never both.
	db, err := sql.Open("pgx", dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	holders := func() []int {
		t.Helper()
		rows, err := db.Query(`SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
			AND classid = $1 AND objid::bigint = (hashtext(current_schema())::bigint & 4294967295)`, schedulerLockClass)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var pids []int
		for rows.Next() {
			var pid int
			if err := rows.Scan(&pid); err != nil {
				t.Fatal(err)
			}
			pids = append(pids, pid)
		}
		return pids
	}
	cut := holders()
	if len(cut) != 1 {
		t.Fatalf("sessions holding the scheduler's lock: %v, want one", cut)
	}
	if _, err := db.Exec("SELECT pg_terminate_backend($1)", cut[0]); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the lock held again on another connection", 30*time.Second, func() bool {
		now := holders()
		return len(now) == 1 && now[0] != cut[0]
	})
	waitUntil(t, "one of the two leads after the cut", 30*time.Second, func() bool { return a.leads() != b.leads() })
	leader, other = a, b
	if b.leads() {
		leader, other = b, a
	}

	before := len(other.scheduledJobs(t, "shared"))
	leader.stop()
	stopped := time.Now()
	waitUntil(t, "the other takes the lead", 30*time.Second, other.leads)
	t.Logf("took over %v after the leader stopped (tick %v)", time.Since(stopped).Round(10*time.Millisecond), other.srv.cfg.SchedulerTick)
	waitUntil(t, "jobs from the new leader", 30*time.Second, func() bool { return len(other.scheduledJobs(t, "shared")) >= before+2 })
	checkOneJobPerInstant(t, other.scheduledJobs(t, "shared"))
}
