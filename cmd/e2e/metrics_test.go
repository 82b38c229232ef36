package e2e

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/server/registry/registrytest"
)

// waitMetric polls a replica's /metrics until the series satisfies ok.
func waitMetric(t *testing.T, s *serverProc, name, labels string, ok func(float64) bool, within time.Duration) float64 {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		v := metricValue(t, s, name, labels)
		if ok(v) {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s{%s} = %v after %s", name, labels, v, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// The robot metrics come from the registry: a replica reports the robots
// connected to another one as they are, so a dashboard is right whichever
// replica Prometheus scraped.
func TestRobotMetricsCoverTheWholeFleet(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		replicas bool
	}{
		{name: "EmbeddedDefault"},
		{name: "PostgresReplicas", replicas: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// Each replica dispatches on its own embedded Redis: the robot
			// runs what is submitted to the replica it is connected to, and
			// the other knows of it only through the database.
			var backArgs, frontArgs []string
			if tc.replicas {
				db := registrytest.DatabaseURL(t)
				frontArgs = []string{"--database-url", db}
				backArgs = []string{"--database-url", db}
			}
			// The replica scraped starts first: it writes the admin token
			// and the CA the other shares.
			var scraped, back *serverProc
			scraped = startServer(t, t.TempDir(), append(frontArgs, "--heartbeat-interval", "200ms")...)
			back = scraped
			if tc.replicas {
				back = startServer(t, t.TempDir(), append(backArgs, "--heartbeat-interval", "200ms",
					"--ca-cert", filepath.Join(scraped.dataDir, "ca.crt"), "--ca-key", filepath.Join(scraped.dataDir, "ca.key"), "--secret-key-file", filepath.Join(scraped.dataDir, "secret.key"))...)
				token, err := os.ReadFile(filepath.Join(scraped.dataDir, "admin.token"))
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(back.dataDir, "admin.token"), token, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			f := newFleet(t, back)
			f.enrol("far", "--max-jobs", "2")
			id := robotID(t, f.dirs["far"])
			waitStatuses(t, scraped, map[string]string{"far": "IDLE"}, 15*time.Second)

			within := 15 * time.Second
			waitMetric(t, scraped, "casare_robot_status", `robot_id="`+id+`",status="idle"`, func(v float64) bool { return v == 1 }, within)
			waitMetric(t, scraped, "casare_robot_count", `environment="default",status="idle"`, func(v float64) bool { return v == 1 }, within)
			waitMetric(t, scraped, "casare_robot_connected_seconds", `robot_id="`+id+`"`, func(v float64) bool { return v >= 0 }, within)
			waitMetric(t, scraped, "casare_robot_info", `name="far",os="linux",robot_id="`+id+`",version="`+e2eVersion+`"`, func(v float64) bool { return v == 1 }, within)
			// A year's certificate: it expires between 360 and 370 days from now.
			expiry := waitMetric(t, scraped, "casare_robot_certificate_expiry_timestamp_seconds", `robot_id="`+id+`"`, func(v float64) bool { return v > 0 }, within)
			if left := time.Until(time.Unix(int64(expiry), 0)); left < 360*24*time.Hour || left > 370*24*time.Hour {
				t.Errorf("certificate expiry %v from now, want about a year", left)
			}
			// A job that needs what no robot has waits, and says so.
			f.submit(sleeper("1s"), func(r *casarev1.SubmitJobRequest) {
				r.Requires = &casarev1.Requirements{Capabilities: []string{"mainframe"}}
			})
			waitMetric(t, scraped, "casare_jobs_unrunnable", `environment="default"`, func(v float64) bool { return v == 1 }, within)
			for _, dep := range []string{"database", "redis"} {
				waitMetric(t, scraped, "casare_dependency_up", `dependency="`+dep+`"`, func(v float64) bool { return v == 1 }, within)
			}

			// One job in its two slots: half the fleet's capacity is used;
			// two, and the robot is busy.
			job := f.submit(sleeper("60s"))
			f.wait(job.GetId(), casarev1.JobStatus_JOB_STATUS_RUNNING, 15*time.Second)
			waitMetric(t, scraped, "casare_robot_utilization", `environment="default"`, func(v float64) bool { return v == 0.5 }, within)
			job = f.submit(sleeper("60s"))
			f.wait(job.GetId(), casarev1.JobStatus_JOB_STATUS_RUNNING, 15*time.Second)
			waitMetric(t, scraped, "casare_robot_utilization", `environment="default"`, func(v float64) bool { return v == 1 }, within)
			waitMetric(t, scraped, "casare_robot_status", `robot_id="`+id+`",status="busy"`, func(v float64) bool { return v == 1 }, within)

			// Killed outright, the robot is offline everywhere after its
			// missed heartbeats, and its slots leave the utilization.
			f.agents["far"].cmd.Process.Kill()
			waitMetric(t, scraped, "casare_robot_status", `robot_id="`+id+`",status="offline"`, func(v float64) bool { return v == 1 }, within)
			waitMetric(t, scraped, "casare_robot_utilization", `environment="default"`, func(v float64) bool { return v == 0 }, within)
		})
	}
}

// A pool's metric counts the pending jobs its robots could run, judged as
// the dispatcher judges them, and not the others: what its autoscaler
// scales on.
func TestPoolPendingJobsCountWhatThePoolCouldRun(t *testing.T) {
	t.Parallel()
	s := startServer(t, t.TempDir(),
		"--robot-pool", "cloud=capabilities=browser;labels=pool=cloud+site=eu",
		"--robot-pool", "desk=capabilities=desktop")
	f := newFleet(t, s)
	// No robot is enrolled: every job stays pending.
	need := func(caps []string, labels map[string]string) func(*casarev1.SubmitJobRequest) {
		return func(r *casarev1.SubmitJobRequest) {
			r.Requires = &casarev1.Requirements{Capabilities: caps, Labels: labels}
		}
	}
	for range 3 {
		f.submit(sleeper("1ms"), need([]string{"browser"}, map[string]string{"site": "eu"}))
	}
	for range 2 {
		f.submit(sleeper("1ms"), need([]string{"desktop"}, nil))
	}
	f.submit(sleeper("1ms"))
	// The cloud pool runs the browser jobs and the one that needs nothing,
	// not the desktop ones; the desk pool the other way round.
	within := 15 * time.Second
	waitMetric(t, s, "casare_pool_pending_jobs", `environment="default",pool="cloud"`, func(v float64) bool { return v == 4 }, within)
	waitMetric(t, s, "casare_pool_pending_jobs", `environment="default",pool="desk"`, func(v float64) bool { return v == 3 }, within)
	waitMetric(t, s, "casare_pool_running_jobs", `environment="default",pool="cloud"`, func(v float64) bool { return v == 0 }, within)
}
