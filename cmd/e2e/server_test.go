package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect/v2"
	"connectrpc.com/connect/v2/connecthttp"
	"connectrpc.com/grpcreflect/v2"
	"github.com/redis/go-redis/v9"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/rpc/casare/v1/casarev1connect"
	healthv1 "github.com/casarerpa/casare/rpc/grpc/health/v1"
	"github.com/casarerpa/casare/rpc/grpc/health/v1/healthv1connect"
	"github.com/casarerpa/casare/server/queue/queuetest"
)

func TestRestartKeepsJobsWorkflowsAndTokens(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	s := startServer(t, dataDir)
	admin := s.adminToken()
	if !strings.Contains(s.log.String(), "admin.token") {
		t.Errorf("the log does not say where the admin token is:\n%s", s.log.String())
	}
	info, err := os.Stat(dataDir + "/admin.token")
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("admin.token: %v, mode %v; want 0600", err, info.Mode().Perm())
	}

	var sub submitResponse
	callOK(t, s.url(), admin, submitJob, `{"workflow": `+helloWorkflow+`}`, &sub)
	callOK(t, s.url(), admin, putWorkflow, `{"workflow": `+helloWorkflow+`}`, nil)
	var op struct {
		Token string `json:"token"`
	}
	callOK(t, s.url(), admin, createToken, `{"name": "ci", "role": "ROLE_OPERATOR"}`, &op)

	s.restart()
	if got := s.adminToken(); got != admin {
		t.Fatalf("the admin token changed over a restart")
	}
	var got getResponse
	callOK(t, s.url(), op.Token, getJob, `{"id": "`+sub.Job.ID+`"}`, &got)
	if got.Job.Status != "JOB_STATUS_PENDING" || len(got.Events) != 1 {
		t.Fatalf("job after restart = %+v", got)
	}
	var wf struct {
		Workflow struct {
			Version int `json:"version"`
		} `json:"workflow"`
	}
	callOK(t, s.url(), op.Token, "/casare.v1.WorkflowService/GetWorkflow", `{"name": "hello"}`, &wf)
	if wf.Workflow.Version != 1 {
		t.Fatalf("workflow after restart = %+v", wf)
	}
}

// metricValue reads one sample from /metrics; -1 when it is absent.
func metricValue(t testing.TB, s *serverProc, name, labels string) float64 {
	t.Helper()
	res, err := http.Get(s.url() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name+"{"+labels+"}") + ` (\S+)$`)
	m := re.FindSubmatch(b)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

func TestRedisFlushLosesNoJob(t *testing.T) {
	t.Parallel()
	redisURL := queuetest.RedisURL(t, 13)
	opts, err := redis.ParseURL(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { rdb.Close() })
	if err := rdb.FlushDB(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, t.TempDir(), "--redis-url", redisURL, "--reconcile-interval", "200ms")
	token := s.adminToken()

	const jobs = 50
	for i := range jobs {
		callOK(t, s.url(), token, submitJob, fmt.Sprintf(`{"workflow": %s, "inputs": {"i": %d}}`, helloWorkflow, i), nil)
	}
	var cancelled submitResponse
	callOK(t, s.url(), token, submitJob, `{"workflow": `+helloWorkflow+`}`, &cancelled)
	callOK(t, s.url(), token, cancelJob, `{"id": "`+cancelled.Job.ID+`"}`, nil)

	depth := func() float64 {
		return metricValue(t, s, "casare_queue_depth", `environment="default",priority="normal"`)
	}
	if d := depth(); d != jobs {
		t.Fatalf("queue depth %v with no robot, want %d", d, jobs)
	}
	// Redis loses everything and the control plane forgets what it held in
	// memory: the jobs are in the database, and the reconciler puts them
	// back in the queue.
	if err := rdb.FlushDB(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	s.kill()
	s.start()
	waitLog(t, s.log, "queued pending jobs that Redis did not hold", 1)
	if d := depth(); d != jobs {
		t.Fatalf("queue depth %v after the flush, want %d", d, jobs)
	}
	// A robot arrives and runs every one of them; the cancelled job stays
	// cancelled.
	f := newFleet(t, s)
	f.enrol("worker", "--max-jobs", "4")
	deadline := time.Now().Add(60 * time.Second)
	succeeded := func() int {
		var list listResponse
		callOK(t, s.url(), token, listJobs, `{"pageSize": 1000, "statuses": ["JOB_STATUS_SUCCEEDED"]}`, &list)
		return len(list.Jobs)
	}
	for succeeded() != jobs || depth() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("queue depth %v 60s after a robot came, want 0\n%s", depth(), s.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if job, _ := f.get(cancelled.Job.ID); job.GetStatus() != casarev1.JobStatus_JOB_STATUS_CANCELLED {
		t.Fatalf("the cancelled job is %s", job.GetStatus())
	}
}

// h2c is a client for gRPC over cleartext HTTP/2, as grpcurl -plaintext.
var h2c = &http.Client{Transport: &http.Transport{
	Protocols: func() *http.Protocols {
		p := new(http.Protocols)
		p.SetUnencryptedHTTP2(true)
		return p
	}(),
}}

func TestHealthReflectionMetricsAndCORS(t *testing.T) {
	t.Parallel()
	s := startServer(t, t.TempDir(), "--cors-origins", "https://app.example.com")
	ctx := context.Background()

	grpcClient := connect.NewClient(connecthttp.NewTransport(h2c, s.url(), connecthttp.WithGRPC()))
	health, err := healthv1connect.NewHealthClient(grpcClient).Check(ctx, &healthv1.HealthCheckRequest{})
	if err != nil || health.GetStatus() != healthv1.HealthCheckResponse_SERVING {
		t.Fatalf("gRPC health check = %v, %v; want SERVING", health, err)
	}
	if _, err := healthv1connect.NewHealthClient(grpcClient).Check(ctx, &healthv1.HealthCheckRequest{Service: "nope"}); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("health of an unknown service: %v, want NotFound", err)
	}

	// The API answers all three protocols on the one port: gRPC over h2c,
	// gRPC-Web and Connect over HTTP/1.1.
	token := s.adminToken()
	for name, transport := range map[string]connect.Transport{
		"grpc":    connecthttp.NewTransport(h2c, s.url(), connecthttp.WithGRPC()),
		"grpcweb": connecthttp.NewTransport(http1, s.url(), connecthttp.WithGRPCWeb()),
		"connect": connecthttp.NewTransport(http1, s.url()),
	} {
		admin := casarev1connect.NewAdminServiceClient(connect.NewClient(transport, bearer(token)))
		who, err := admin.WhoAmI(ctx, &casarev1.WhoAmIRequest{})
		if err != nil || who.GetRole() != casarev1.Role_ROLE_ADMIN {
			t.Errorf("WhoAmI over %s = %v, %v", name, who, err)
		}
		anonymous := casarev1connect.NewAdminServiceClient(connect.NewClient(transport))
		if _, err := anonymous.WhoAmI(ctx, &casarev1.WhoAmIRequest{}); connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Errorf("WhoAmI over %s without a token: %v, want Unauthenticated", name, err)
		}
	}

	stream := grpcreflect.NewClient(grpcClient).NewStream(ctx)
	services, err := stream.ListServices()
	stream.Close()
	if err != nil {
		t.Fatalf("reflection: %v", err)
	}
	var names []string
	for _, n := range services {
		names = append(names, string(n))
	}
	for _, want := range []string{"casare.v1.JobService", "casare.v1.RobotService", "casare.v1.WorkflowService", "casare.v1.AdminService", "grpc.health.v1.Health"} {
		if !strings.Contains(strings.Join(names, " "), want) {
			t.Errorf("reflection lists %v, missing %s", names, want)
		}
	}

	res, err := http.Get(s.url() + "/health/live")
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("/health/live: %v %v", res, err)
	}
	res.Body.Close()
	if v := metricValue(t, s, "casare_queue_depth", `environment="default",priority="critical"`); v != 0 {
		t.Errorf("casare_queue_depth{priority=critical} = %v, want 0", v)
	}

	preflight, _ := http.NewRequest(http.MethodOptions, s.url()+submitJob, nil)
	preflight.Header.Set("Origin", "https://app.example.com")
	preflight.Header.Set("Access-Control-Request-Method", "POST")
	preflight.Header.Set("Access-Control-Request-Headers", "authorization,connect-protocol-version,content-type")
	res, err = http.DefaultClient.Do(preflight)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if got := res.Header.Get("Access-Control-Allow-Origin"); got != "https://app.example.com" {
		t.Errorf("CORS preflight from an allowed origin: Allow-Origin %q", got)
	}
	preflight.Header.Set("Origin", "https://evil.example.com")
	res, err = http.DefaultClient.Do(preflight)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if got := res.Header.Get("Access-Control-Allow-Origin"); got != "" {
		t.Errorf("CORS preflight from another origin: Allow-Origin %q, want none", got)
	}
}

func TestReadinessFollowsRedis(t *testing.T) {
	t.Parallel()
	// A Redis we can stop: a plain TCP proxy to the test Redis.
	redisURL := queuetest.RedisURL(t, 12)
	opts, _ := redis.ParseURL(redisURL)
	proxy := newTCPProxy(t, opts.Addr)
	s := startServer(t, t.TempDir(), "--redis-url", fmt.Sprintf("redis://%s/12", proxy.addr()))
	proxy.stop()
	deadline := time.Now().Add(20 * time.Second)
	for {
		res, err := http.Get(s.url() + "/health/ready")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode == http.StatusServiceUnavailable && strings.Contains(string(body), "redis") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/health/ready still %d with Redis gone: %s", res.StatusCode, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	res, err := http.Get(s.url() + "/health/live")
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("/health/live with Redis gone: %v %v; liveness must not depend on Redis", res, err)
	}
	res.Body.Close()
}

// tcpProxy forwards connections to a target until stopped, so a test can
// take a service away from the server under test.
type tcpProxy struct {
	l      net.Listener
	target string
	conns  chan net.Conn
}

func newTCPProxy(t *testing.T, target string) *tcpProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{l: l, target: target, conns: make(chan net.Conn, 1024)}
	go p.serve()
	t.Cleanup(p.stop)
	return p
}

func (p *tcpProxy) addr() string { return p.l.Addr().String() }

func (p *tcpProxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.conns <- c
		p.conns <- up
		go func() { io.Copy(up, c); up.Close() }()
		go func() { io.Copy(c, up); c.Close() }()
	}
}

func (p *tcpProxy) stop() {
	p.l.Close()
	for {
		select {
		case c := <-p.conns:
			c.Close()
		default:
			return
		}
	}
}

func bearer(token string) connect.ClientInterceptor {
	return func(next connect.ClientFunc) connect.ClientFunc {
		return func(ctx context.Context, spec connect.Spec) (connect.ClientStream, error) {
			if info, ok := connect.CallInfoForClientContext(ctx); ok {
				info.RequestHeader().Set("Authorization", "Bearer "+token)
			}
			return next(ctx, spec)
		}
	}
}
