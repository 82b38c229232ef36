package e2e

import (
	"net/http"
	"testing"
	"time"

	"github.com/casarerpa/casare/server/registry/registrytest"
)

// TestRetentionPrunesFinishedJobs runs a control plane that keeps
// finished jobs for a second: a cancelled job goes, with its events,
// and the metric counts it; a pending job, however old, stays. On the
// embedded default and on PostgreSQL.
func TestRetentionPrunesFinishedJobs(t *testing.T) {
	t.Parallel()
	retain := []string{"--retain-jobs", "1s", "--retain-logs", "1d", "--prune-interval", "1s"}
	t.Run("embedded", func(t *testing.T) {
		t.Parallel()
		retention(t, startServer(t, t.TempDir(), retain...))
	})
	t.Run("postgres+redis", func(t *testing.T) {
		t.Parallel()
		retention(t, startServer(t, t.TempDir(), append(retain, "--database-url", registrytest.DatabaseURL(t), "--redis-url", ownRedis(t))...))
	})
}

func retention(t *testing.T, s *serverProc) {
	token := s.adminToken()
	// Logged as the pruning starts, which may be a moment after the
	// server answers.
	waitLog(t, s.log, "jobs=1s logs=1d", 1)
	// No robot: both jobs wait, then one is cancelled.
	var done, waiting submitResponse
	callOK(t, s.url(), token, submitJob, `{"workflow": `+helloWorkflow+`}`, &done)
	callOK(t, s.url(), token, submitJob, `{"workflow": `+helloWorkflow+`}`, &waiting)
	callOK(t, s.url(), token, cancelJob, `{"id": "`+done.Job.ID+`"}`, nil)

	deadline := time.Now().Add(time.Minute)
	for {
		status, body := call(t, s.url(), token, getJob, `{"id": "`+done.Job.ID+`"}`)
		if status == http.StatusNotFound {
			break
		}
		if status != http.StatusOK {
			t.Fatalf("GetJob of the cancelled job: HTTP %d %s", status, body)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the cancelled job is still there a minute after it finished, with --retain-jobs 1s\n%s", s.log.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if n := metricValue(t, s, "casare_retention_pruned_rows_total", `table="jobs"`); n != 1 {
		t.Errorf("casare_retention_pruned_rows_total{table=\"jobs\"} = %v, want 1", n)
	}
	if n := metricValue(t, s, "casare_retention_pruned_rows_total", `table="job_events"`); n < 2 {
		t.Errorf("casare_retention_pruned_rows_total{table=\"job_events\"} = %v, want its submit and cancel events", n)
	}
	var got getResponse
	callOK(t, s.url(), token, getJob, `{"id": "`+waiting.Job.ID+`"}`, &got)
	if got.Job.Status != "JOB_STATUS_PENDING" {
		t.Errorf("the waiting job: %+v, want it kept and pending", got.Job)
	}
}
