package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/server/registry/registrytest"
)

// TestDatabaseOutageLosesNoLogLine stops the PostgreSQL of a control plane
// for 30 seconds while a robot runs a job that logs a line every
// 100 ms. Meanwhile the API answers unavailable (503), not an internal
// error, and the server is not ready; once PostgreSQL is back the job
// succeeds with every line of its log stored once, in order.
func TestDatabaseOutageLosesNoLogLine(t *testing.T) {
	t.Parallel()
	const (
		lines  = 500
		outage = 30 * time.Second
	)
	pg := registrytest.NewCluster(t)
	s := startServer(t, t.TempDir(), "--database-url", pg.URL(), "--redis-url", ownRedis(t),
		"--heartbeat-interval", "1s", "--robot-grace-period", "10s", "--accept-timeout", "5s")
	token := s.adminToken()
	f := newFleet(t, s)
	f.enrol("outage-robot")

	n := make([]any, lines)
	for i := range n {
		n[i] = i + 1
	}
	wf := workflow("ticker", &casarev1.Step{Id: "tick", Foreach: "inputs.n", Steps: []*casarev1.Step{
		step("line", "log", map[string]any{"message": "line ${{ item }}"}),
		step("pause", "delay", map[string]any{"duration": "100ms"}),
	}})
	job := f.submit(wf, func(r *casarev1.SubmitJobRequest) { r.Inputs = mustStruct(map[string]any{"n": n}) })
	getBody := `{"id": "` + job.GetId() + `"}`

	// Some lines in, over the API: the token is then fresh in the
	// server's cache, so the calls below reach the handlers.
	deadline := time.Now().Add(time.Minute)
	for len(jobLog(t, f, job.GetId())) < 30 {
		if time.Now().After(deadline) {
			t.Fatalf("job %s logged too little within a minute\n%s", job.GetId(), s.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	seen := map[string]bool{}
	for time.Since(stopped) < outage {
		for _, p := range []struct{ procedure, body string }{{getJob, getBody}, {listJobs, `{}`}} {
			status, b := call(t, s.url(), token, p.procedure, p.body)
			var e connectError
			_ = json.Unmarshal(b, &e)
			if status != http.StatusServiceUnavailable || e.Code != "unavailable" {
				t.Fatalf("%s with the database down: HTTP %d %s, want 503 unavailable", p.procedure, status, b)
			}
			seen[e.Message] = true
		}
		if res, err := http.Get(s.url() + "/health/ready"); err != nil {
			t.Fatal(err)
		} else if res.Body.Close(); res.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("/health/ready with the database down: HTTP %d, want 503", res.StatusCode)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if !seen["the database is unavailable now; try again"] {
		t.Errorf("no call during the outage reached a handler's answer; messages %v", seen)
	}
	if err := pg.Start(); err != nil {
		t.Fatal(err)
	}

	done := f.wait(job.GetId(), casarev1.JobStatus_JOB_STATUS_SUCCEEDED, 2*time.Minute)
	if done.GetAttempt() != 1 {
		t.Errorf("the job ran %d attempts, want 1: the outage must not restart it", done.GetAttempt())
	}
	got := jobLog(t, f, job.GetId())
	var want []string
	for i := 1; i <= lines; i++ {
		want = append(want, fmt.Sprintf("line %d", i))
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		missing, extra := diffLines(want, got)
		t.Fatalf("log has %d lines, want %d: missing %v, repeated or extra %v\n%s", len(got), lines, missing, extra, s.log.String())
	}
}

// diffLines lists the wanted lines not in got, and the lines of got that
// are not wanted or come more than once.
func diffLines(want, got []string) (missing, extra []string) {
	count := map[string]int{}
	for _, l := range got {
		count[l]++
	}
	for _, l := range want {
		if count[l] == 0 {
			missing = append(missing, l)
		}
		count[l]--
	}
	for l, n := range count {
		if n != 0 {
			extra = append(extra, l)
		}
	}
	return missing, extra
}

// ownRedis starts a redis-server of the test's own on a free port and
// returns its URL; the test ends it.
func ownRedis(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", t.TempDir())
	log := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return "redis://" + addr + "/0"
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server not listening on %s within 30s\n%s", addr, log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
