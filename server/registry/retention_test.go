package registry

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/casarerpa/casare/server/registry/registrytest"
)

// retained is what is left of a job after a prune.
type retained struct {
	Job                     bool
	Events, Logs, Artifacts int64
}

// finishedJob stores a job that finished at the given time (or is still
// running when finished is zero) with two events, logs log lines and
// artifacts artifacts.
func finishedJob(t *testing.T, r *Registry, finished time.Time, logs, artifacts int) string {
	t.Helper()
	ctx := context.Background()
	job := newJob("retention")
	job.CreatedAt = time.Now().Add(-365 * 24 * time.Hour)
	if _, _, err := r.CreateJob(ctx, job, nil); err != nil {
		t.Fatal(err)
	}
	status, at := JobRunning, (*time.Time)(nil)
	if !finished.IsZero() {
		f := normalize(finished)
		status, at = JobSucceeded, &f
	}
	if _, err := r.db.NewUpdate().Table("jobs").Set("status = ?", status).Set("finished_at = ?", at).Where("id = ?", job.ID).Exec(ctx); err != nil {
		t.Fatal(err)
	}
	ev := firstEvent(job)
	ev.FromStatus, ev.ToStatus = JobPending, status
	if _, err := r.db.NewInsert().Model(ev).Exec(ctx); err != nil {
		t.Fatal(err)
	}
	var lines []JobLog
	for i := range logs {
		lines = append(lines, JobLog{JobID: job.ID, Attempt: 1, Line: int64(i + 1), Time: job.CreatedAt, Level: "info", Message: fmt.Sprint("line ", i)})
	}
	if len(lines) > 0 {
		if err := r.AppendJobLogs(ctx, lines); err != nil {
			t.Fatal(err)
		}
	}
	for i := range artifacts {
		a := &JobArtifact{JobID: job.ID, Name: fmt.Sprintf("shot-%d.png", i), Attempt: 1, ContentType: "image/png", Size: 3, SHA256: "00", Data: []byte("png"), CreatedAt: job.CreatedAt}
		if _, err := r.db.NewInsert().Model(a).Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return job.ID
}

func whatRemains(t *testing.T, r *Registry, id string) retained {
	t.Helper()
	ctx := context.Background()
	var got retained
	n, err := r.db.NewSelect().Table("jobs").Where("id = ?", id).Count(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got.Job = n == 1
	for table, count := range map[string]*int64{"job_events": &got.Events, "job_logs": &got.Logs, "job_artifacts": &got.Artifacts} {
		if *count, err = r.db.NewSelect().Table(table).Where("job_id = ?", id).Count(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return got
}

// TestPrune keeps what is young or unfinished and removes, in batches
// far smaller than what is due, what finished longer ago than each
// retention says.
func TestPrune(t *testing.T) {
	now := time.Now()
	day := 24 * time.Hour
	for _, tc := range []struct {
		name       string
		keep       Retention
		old, young retained // what is left of a job finished 40 and 10 days ago
		pruned     Pruned
	}{
		{
			name:   "jobs after 30 days",
			keep:   Retention{Jobs: 30 * day},
			old:    retained{},
			young:  retained{Job: true, Events: 2, Logs: 7, Artifacts: 3},
			pruned: Pruned{Jobs: 2, JobEvents: 4, JobLogs: 14, JobArtifacts: 6},
		},
		{
			name:   "logs after 30 days",
			keep:   Retention{Logs: 30 * day},
			old:    retained{Job: true, Events: 2, Artifacts: 3},
			young:  retained{Job: true, Events: 2, Logs: 7, Artifacts: 3},
			pruned: Pruned{JobLogs: 14},
		},
		{
			name:   "artifacts after a week, logs after 30 days",
			keep:   Retention{Logs: 30 * day, Artifacts: 7 * day},
			old:    retained{Job: true, Events: 2},
			young:  retained{Job: true, Events: 2, Logs: 7},
			pruned: Pruned{JobLogs: 14, JobArtifacts: 12},
		},
		{
			name:   "nothing kept forever",
			keep:   Retention{},
			old:    retained{Job: true, Events: 2, Logs: 7, Artifacts: 3},
			young:  retained{Job: true, Events: 2, Logs: 7, Artifacts: 3},
			pruned: Pruned{},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			forEachBackend(t, func(t *testing.T, r *Registry) {
				r.pruneBatches = pruneBatches{jobs: 1, logs: 3, artifacts: 2}
				var old, young []string
				for range 2 {
					old = append(old, finishedJob(t, r, now.Add(-40*day), 7, 3))
					young = append(young, finishedJob(t, r, now.Add(-10*day), 7, 3))
				}
				running := finishedJob(t, r, time.Time{}, 7, 3)
				pruned, ran, err := r.Prune(context.Background(), tc.keep, now)
				if err != nil || !ran {
					t.Fatalf("Prune: ran %v, %v", ran, err)
				}
				if diff := cmp.Diff(tc.pruned, pruned, cmp.AllowUnexported(Pruned{})); diff != "" {
					t.Errorf("pruned (-want +got):\n%s", diff)
				}
				for _, id := range old {
					if diff := cmp.Diff(tc.old, whatRemains(t, r, id)); diff != "" {
						t.Errorf("a job finished 40 days ago (-want +got):\n%s", diff)
					}
				}
				for _, id := range young {
					if diff := cmp.Diff(tc.young, whatRemains(t, r, id)); diff != "" {
						t.Errorf("a job finished 10 days ago (-want +got):\n%s", diff)
					}
				}
				if diff := cmp.Diff(retained{Job: true, Events: 2, Logs: 7, Artifacts: 3}, whatRemains(t, r, running)); diff != "" {
					t.Errorf("a job still running, created a year ago (-want +got):\n%s", diff)
				}
				// A second pass finds nothing more.
				if again, _, err := r.Prune(context.Background(), tc.keep, now); err != nil || again.Total() != 0 {
					t.Errorf("second Prune removed %+v, %v; want nothing", again, err)
				}
			})
		})
	}
}

// TestPruneOneReplicaAtATime: while another session holds the retention
// lock on PostgreSQL, Prune removes nothing and says it did not run.
func TestPruneOneReplicaAtATime(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := registrytest.DatabaseURL(t)
	open := func() *Registry {
		r, err := Open(ctx, Options{DatabaseURL: url, MaxOpenConns: 4})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return r
	}
	r, other := open(), open()
	if _, err := r.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	id := finishedJob(t, r, time.Now().Add(-48*time.Hour), 2, 1)
	conn, err := other.db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_lock(?, "+pruneLockKey+")", pruneLockClass); err != nil {
		t.Fatal(err)
	}
	keep := Retention{Jobs: time.Hour}
	pruned, ran, err := r.Prune(ctx, keep, time.Now())
	if err != nil || ran || pruned.Total() != 0 {
		t.Fatalf("Prune while another replica prunes: ran %v, pruned %+v, %v; want it not to run", ran, pruned, err)
	}
	if got := whatRemains(t, r, id); !got.Job {
		t.Fatalf("the job went while another replica held the lock: %+v", got)
	}
	if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_unlock(?, "+pruneLockKey+")", pruneLockClass); err != nil {
		t.Fatal(err)
	}
	if pruned, ran, err = r.Prune(ctx, keep, time.Now()); err != nil || !ran || pruned.Jobs != 1 {
		t.Fatalf("Prune once the lock is free: ran %v, pruned %+v, %v; want the job removed", ran, pruned, err)
	}
}
