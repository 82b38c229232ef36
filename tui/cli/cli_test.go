package cli

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect/v2"
	"connectrpc.com/connect/v2/connecthttp"
	"google.golang.org/protobuf/types/known/timestamppb"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/rpc/casare/v1/casarev1connect"
)

// fakeJobs is a JobService whose jobs move through a script of statuses,
// one per GetJob call.
type fakeJobs struct {
	casarev1connect.UnimplementedJobServiceHandler
	mu         sync.Mutex
	statuses   []casarev1.JobStatus
	calls      int
	lastAuth   string
	lastSubmit *casarev1.SubmitJobRequest
}

func (f *fakeJobs) auth(ctx context.Context) {
	info, _ := connect.CallInfoForServerContext(ctx)
	f.lastAuth = info.RequestHeader().Get("Authorization")
}

func (f *fakeJobs) job() *casarev1.Job {
	return f.jobAt(f.statuses[min(f.calls, len(f.statuses)-1)])
}

func (f *fakeJobs) jobAt(st casarev1.JobStatus) *casarev1.Job {
	return &casarev1.Job{Id: "job-1", WorkflowName: "hello", Status: st, Attempt: 1, MaxAttempts: 3,
		Priority: casarev1.JobPriority_JOB_PRIORITY_NORMAL, StatusMessage: "because", CreatedAt: timestamppb.Now()}
}

func (f *fakeJobs) SubmitJob(ctx context.Context, req *casarev1.SubmitJobRequest) (*casarev1.SubmitJobResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.auth(ctx)
	f.lastSubmit = req
	return &casarev1.SubmitJobResponse{Job: f.job()}, nil
}

func (f *fakeJobs) GetJob(ctx context.Context, req *casarev1.GetJobRequest) (*casarev1.GetJobResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	return &casarev1.GetJobResponse{Job: f.job(), Events: []*casarev1.JobEvent{
		{ToStatus: casarev1.JobStatus_JOB_STATUS_PENDING, Attempt: 1, Reason: "submitted", Actor: "ci", Time: timestamppb.Now()},
	}}, nil
}

// WatchJobs plays the script: the job as it is, SYNCED, then one UPSERT
// per status that follows.
func (f *fakeJobs) WatchJobs(ctx context.Context, req *casarev1.WatchJobsRequest, stream casarev1connect.JobServiceWatchJobsServerStream) error {
	f.mu.Lock()
	statuses := f.statuses
	f.mu.Unlock()
	job := f.jobAt(statuses[0])
	if err := stream.Send(&casarev1.WatchJobsResponse{Type: casarev1.WatchEventType_WATCH_EVENT_TYPE_SNAPSHOT, Jobs: []*casarev1.Job{job}}); err != nil {
		return err
	}
	stream.Send(&casarev1.WatchJobsResponse{Type: casarev1.WatchEventType_WATCH_EVENT_TYPE_SYNCED})
	for _, st := range statuses[1:] {
		if err := stream.Send(&casarev1.WatchJobsResponse{Type: casarev1.WatchEventType_WATCH_EVENT_TYPE_UPSERT, Jobs: []*casarev1.Job{f.jobAt(st)}}); err != nil {
			return err
		}
	}
	<-ctx.Done()
	return nil
}

func (f *fakeJobs) ListJobs(ctx context.Context, req *casarev1.ListJobsRequest) (*casarev1.ListJobsResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.auth(ctx)
	return &casarev1.ListJobsResponse{Jobs: []*casarev1.Job{f.job()}}, nil
}

type bundle struct {
	jobs   *fakeJobs
	url    string
	home   string
	stdout bytes.Buffer
	stderr bytes.Buffer
	env    map[string]string
}

func setup(t *testing.T, statuses ...casarev1.JobStatus) *bundle {
	t.Helper()
	if len(statuses) == 0 {
		statuses = []casarev1.JobStatus{casarev1.JobStatus_JOB_STATUS_PENDING}
	}
	b := &bundle{jobs: &fakeJobs{statuses: statuses}, home: t.TempDir(), env: map[string]string{}}
	server := connect.NewServer()
	casarev1connect.RegisterJobServiceHandler(server, b.jobs)
	mux := http.NewServeMux()
	connecthttp.Mount(mux, server)
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	b.url = ts.URL
	b.env["HOME"] = b.home
	b.env["CASARE_SERVER"] = ts.URL
	return b
}

func (b *bundle) run(args ...string) int {
	b.stdout.Reset()
	b.stderr.Reset()
	return Run(context.Background(), args, Env{
		Stdin:  strings.NewReader(""),
		Stdout: &b.stdout,
		Stderr: &b.stderr,
		Getenv: func(k string) string { return b.env[k] },
	})
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const hello = "name: hello\nsteps:\n  - {id: greet, uses: log, with: {message: hello}}\n"

func TestWaitExitCodes(t *testing.T) {
	const (
		pending   = casarev1.JobStatus_JOB_STATUS_PENDING
		running   = casarev1.JobStatus_JOB_STATUS_RUNNING
		succeeded = casarev1.JobStatus_JOB_STATUS_SUCCEEDED
		failed    = casarev1.JobStatus_JOB_STATUS_FAILED
		cancelled = casarev1.JobStatus_JOB_STATUS_CANCELLED
	)
	tests := []struct {
		name     string
		statuses []casarev1.JobStatus
		timeout  string
		code     int
		stderr   string
	}{
		{"Succeeded", []casarev1.JobStatus{pending, running, succeeded}, "", ExitOK, "job job-1 SUCCEEDED"},
		{"Failed", []casarev1.JobStatus{pending, failed}, "", ExitFailed, "job job-1 FAILED: because"},
		{"Cancelled", []casarev1.JobStatus{pending, cancelled}, "", ExitFailed, "CANCELLED"},
		{"TimedOut", []casarev1.JobStatus{pending}, "50ms", ExitError, "gave up waiting after 50ms: job job-1 is still PENDING"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := setup(t, tt.statuses...)
			file := writeFile(t, b.home, "wf.yaml", hello)
			args := []string{"jobs", "submit", "-f", file, "--wait"}
			if tt.timeout != "" {
				args = append(args, "--timeout", tt.timeout)
			}
			if code := b.run(args...); code != tt.code {
				t.Fatalf("exit %d, want %d; stderr:\n%s", code, tt.code, b.stderr.String())
			}
			if !strings.Contains(b.stderr.String(), tt.stderr) {
				t.Fatalf("stderr %q lacks %q", b.stderr.String(), tt.stderr)
			}
		})
	}
}

func TestOutputFormats(t *testing.T) {
	b := setup(t)
	if code := b.run("jobs", "list"); code != 0 {
		t.Fatal(b.stderr.String())
	}
	if !strings.Contains(b.stdout.String(), "ID") || !strings.Contains(b.stdout.String(), "job-1  hello     PENDING") {
		t.Errorf("table:\n%s", b.stdout.String())
	}
	b.run("jobs", "get", "job-1", "-o", "json")
	if !strings.Contains(b.stdout.String(), `"status": "JOB_STATUS_PENDING"`) || !strings.Contains(b.stdout.String(), `"reason": "submitted"`) {
		t.Errorf("json:\n%s", b.stdout.String())
	}
	b.run("jobs", "get", "job-1", "-o", "yaml")
	if !strings.Contains(b.stdout.String(), "status: JOB_STATUS_PENDING") {
		t.Errorf("yaml:\n%s", b.stdout.String())
	}
	if code := b.run("jobs", "list", "-o", "xml"); code != ExitError || !strings.Contains(b.stderr.String(), "want table, json or yaml") {
		t.Errorf("-o xml: exit %d, %s", code, b.stderr.String())
	}
}

func TestUsageErrors(t *testing.T) {
	b := setup(t)
	bad := writeFile(t, b.home, "bad.yaml", "steps: []\n")
	tests := []struct {
		name string
		args []string
		msg  string
	}{
		{"NothingToRun", []string{"jobs", "submit"}, "say what to run"},
		{"Both", []string{"jobs", "submit", "-f", bad, "--workflow", "w"}, "not both"},
		{"InvalidWorkflow", []string{"jobs", "submit", "-f", bad}, "steps:"},
		{"MissingFile", []string{"jobs", "submit", "-f", "/no/such/file"}, "no such file"},
		{"BadInput", []string{"jobs", "submit", "--workflow", "w", "--input", "novalue"}, "want key=value"},
		{"BadPriority", []string{"jobs", "submit", "--workflow", "w", "--priority", "asap"}, "--priority"},
		{"UnknownCommand", []string{"jobz"}, "unknown command"},
		{"UnknownFlag", []string{"jobs", "list", "--colour"}, "unknown flag"},
		{"BadStatus", []string{"jobs", "list", "--status", "done"}, `unknown status "done"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if code := b.run(tt.args...); code != ExitError || !strings.Contains(b.stderr.String(), tt.msg) {
				t.Fatalf("exit %d, stderr %q; want 2 and %q", code, b.stderr.String(), tt.msg)
			}
		})
	}
	if b.jobs.lastSubmit != nil {
		t.Fatal("a bad command reached the server")
	}
}

func TestSubmitRequest(t *testing.T) {
	b := setup(t)
	file := writeFile(t, b.home, "wf.yaml", hello)
	code := b.run("jobs", "submit", "-f", file, "--input", "n=3", "--input", "name=ada", "--input", `obj={"a":true}`,
		"--priority", "critical", "--max-attempts", "5", "--job-timeout", "90s", "--idempotency-key", "k1",
		"--require-capability", "browser", "--require-label", "site=hq")
	if code != 0 {
		t.Fatal(b.stderr.String())
	}
	req := b.jobs.lastSubmit
	inputs := req.GetInputs().AsMap()
	if inputs["n"] != 3.0 || inputs["name"] != "ada" || inputs["obj"].(map[string]any)["a"] != true {
		t.Errorf("inputs = %v", inputs)
	}
	if req.GetPriority() != casarev1.JobPriority_JOB_PRIORITY_CRITICAL || req.GetMaxAttempts() != 5 ||
		req.GetTimeout().AsDuration() != 90*time.Second || req.GetIdempotencyKey() != "k1" ||
		req.GetRequires().GetCapabilities()[0] != "browser" || req.GetRequires().GetLabels()["site"] != "hq" ||
		req.GetWorkflow().GetName() != "hello" {
		t.Errorf("request = %v", req)
	}
}

func TestServerAndTokenPrecedence(t *testing.T) {
	b := setup(t)
	delete(b.env, "CASARE_SERVER")
	config := filepath.Join(b.home, "cfg", "config.yaml")
	b.env["CASARE_CONFIG"] = config
	if code := b.run("config", "set-context", "prod", "--server", b.url, "--token", "from-context"); code != 0 {
		t.Fatal(b.stderr.String())
	}
	info, err := os.Stat(config)
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("config file %v, mode %v; want 0600: it holds tokens", err, info.Mode().Perm())
	}

	b.run("jobs", "list")
	if b.jobs.lastAuth != "Bearer from-context" {
		t.Errorf("context token: sent %q", b.jobs.lastAuth)
	}
	b.env["CASARE_TOKEN"] = "from-env"
	b.run("jobs", "list")
	if b.jobs.lastAuth != "Bearer from-env" {
		t.Errorf("env beats context: sent %q", b.jobs.lastAuth)
	}
	b.run("--token", "from-flag", "jobs", "list")
	if b.jobs.lastAuth != "Bearer from-flag" {
		t.Errorf("flag beats env: sent %q", b.jobs.lastAuth)
	}
	b.env["CASARE_SERVER"] = "http://127.0.0.1:1"
	if code := b.run("jobs", "list"); code != ExitError || !strings.Contains(b.stderr.String(), "cannot reach the server at http://127.0.0.1:1") {
		t.Errorf("env server beats context: exit %d, %s", code, b.stderr.String())
	}
	if code := b.run("--server", b.url, "jobs", "list"); code != 0 {
		t.Errorf("flag server beats env: exit %d, %s", code, b.stderr.String())
	}
	if code := b.run("--context", "nope", "jobs", "list"); code != ExitError || !strings.Contains(b.stderr.String(), `no context named "nope"`) {
		t.Errorf("unknown context: exit %d, %s", code, b.stderr.String())
	}
	b.run("config", "get-contexts")
	if strings.Contains(b.stdout.String(), "from-context") {
		t.Error("get-contexts printed a token")
	}
}

func TestValidateNeedsNoServer(t *testing.T) {
	b := setup(t)
	b.env["CASARE_SERVER"] = "http://127.0.0.1:1"
	good := writeFile(t, b.home, "good.yaml", hello)
	if code := b.run("workflows", "validate", good); code != 0 || !strings.Contains(b.stdout.String(), `valid workflow "hello" with 1 steps`) {
		t.Fatalf("valid file: exit %d, %s %s", code, b.stdout.String(), b.stderr.String())
	}
	bad := writeFile(t, b.home, "bad.yaml", "steps:\n  - {id: a, uses: log}\n  - {id: a, uses: Bad}\n")
	if code := b.run("workflows", "validate", bad); code != ExitError ||
		!strings.Contains(b.stderr.String(), `step id "a" is used more than once`) || !strings.Contains(b.stderr.String(), "steps[1].uses") {
		t.Fatalf("invalid file: exit %d, %s", code, b.stderr.String())
	}
}
