package e2e

import (
	"path/filepath"
	"testing"
	"time"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/server/queue/queuetest"
	"github.com/casarerpa/casare/server/registry/registrytest"
)

// TestJobsReachTheReplicaWithTheRobot runs two control planes on one
// PostgreSQL and one Redis, with the only robot on the second. Jobs
// submitted to the first reach it through Redis at once, whichever replica
// took their queue task; the reconciler, which would find them in the end,
// is kept out of it.
func TestJobsReachTheReplicaWithTheRobot(t *testing.T) {
	t.Parallel()
	dbURL, redisURL := registrytest.DatabaseURL(t), queuetest.RedisURL(t, 10)
	shared := []string{"--database-url", dbURL, "--redis-url", redisURL, "--reconcile-interval", "1h"}
	front := startServer(t, t.TempDir(), shared...)
	back := startServer(t, t.TempDir(), append(shared,
		"--ca-cert", filepath.Join(front.dataDir, "ca.crt"), "--ca-key", filepath.Join(front.dataDir, "ca.key"), "--secret-key-file", filepath.Join(front.dataDir, "secret.key"))...)

	f := newFleet(t, front)
	backQUIC := quicListening.FindStringSubmatch(back.log.String())[1]
	f.enrol("only", "--server", backQUIC, "--max-jobs", "4")
	waitStatuses(t, front, map[string]string{"only": "IDLE"}, 15*time.Second)

	var ids []string
	for range 20 {
		ids = append(ids, f.submit(sleeper("1ms")).GetId())
	}
	for _, id := range ids {
		job := f.wait(id, casarev1.JobStatus_JOB_STATUS_SUCCEEDED, 15*time.Second)
		if job.GetAttempt() != 1 {
			t.Errorf("job %s ran on attempt %d, want 1", id, job.GetAttempt())
		}
	}
}
