package registry

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestFleet(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		now := time.Now().UTC().Truncate(time.Second)
		old := now.Add(-time.Hour)
		expires := now.Add(10 * 24 * time.Hour)
		robots := []*Robot{
			{ID: "a", Name: "win-a", Version: "v1.2.0", OS: "windows", Status: "busy", MaxJobs: 2, LastSeen: &now, ConnectedSince: &old, CertExpiresAt: &expires},
			// Its replica died without marking it offline.
			{ID: "b", Name: "lin-b", Version: "v1.1.0", OS: "linux", Status: "idle", MaxJobs: 1, LastSeen: &old, ConnectedSince: &old},
			{ID: "c", Name: "lin-c", Version: "v1.2.0", OS: "linux", Status: "draining", MaxJobs: 1, LastSeen: &now, ConnectedSince: &now},
		}
		for _, rb := range robots {
			rb.Labels, rb.Capabilities = "{}", "[]"
			if err := r.UpsertRobot(ctx, rb); err != nil {
				t.Fatal(err)
			}
		}
		for _, j := range []struct {
			status JobStatus
			robot  string
		}{{JobRunning, "a"}, {JobAssigned, "a"}, {JobSucceeded, "a"}, {JobRunning, "c"}, {JobPending, ""}} {
			job, _, err := r.CreateJob(ctx, newJob("w"), nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := r.db.NewUpdate().Model((*Job)(nil)).Set("status = ?", j.status).Set("robot_id = ?", j.robot).Where("id = ?", job.ID).Exec(ctx); err != nil {
				t.Fatal(err)
			}
		}

		fleet, err := r.Fleet(ctx, now.Add(-time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		type row struct {
			ID, Status, Version string
			Running             int
			Cert                bool
		}
		var got []row
		for _, f := range fleet {
			got = append(got, row{f.ID, f.Status, f.Version, f.Running, f.CertExpiresAt != nil && f.CertExpiresAt.Equal(expires)})
		}
		want := []row{{"a", "busy", "v1.2.0", 2, true}, {"b", "offline", "v1.1.0", 0, false}, {"c", "draining", "v1.2.0", 1, false}}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("Fleet (-want +got):\n%s", diff)
		}
	})
}

func TestRobotProtocolRefused(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		if err := r.UpsertRobot(ctx, &Robot{ID: "a", Name: "a", Labels: "{}", Capabilities: "[]", Status: "offline", ProtocolVersion: 1}); err != nil {
			t.Fatal(err)
		}
		if err := r.RobotProtocolRefused(ctx, "a", "v9.0.0", 9, "speaks 9"); err != nil {
			t.Fatal(err)
		}
		got, err := r.GetRobot(ctx, "a")
		if err != nil || got.Version != "v9.0.0" || got.ProtocolVersion != 9 || got.ProtocolProblem != "speaks 9" {
			t.Fatalf("GetRobot after a refused protocol = %+v, %v", got, err)
		}
		// The next hello it is served clears the problem.
		got.ProtocolVersion, got.ProtocolProblem, got.Status = 1, "", "idle"
		if err := r.RobotConnected(ctx, got); err != nil {
			t.Fatal(err)
		}
		if got, err = r.GetRobot(ctx, "a"); err != nil || got.ProtocolVersion != 1 || got.ProtocolProblem != "" {
			t.Fatalf("GetRobot after a served hello = %+v, %v", got, err)
		}
	})
}

func TestOnJobFinishedHearsOnlyEnds(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		var heard []string
		r.OnJobFinished(func(j *Job) { heard = append(heard, j.WorkflowName+":"+string(j.Status)) })
		job, _, err := r.CreateJob(ctx, newJob("invoice"), nil)
		if err != nil {
			t.Fatal(err)
		}
		steps := []Transition{
			{JobID: job.ID, From: []JobStatus{JobPending}, To: JobRunning, Attempt: 1},
			// Fenced off: a conflict finishes nothing.
			{JobID: job.ID, From: []JobStatus{JobRunning}, To: JobSucceeded, Attempt: 2},
			{JobID: job.ID, From: []JobStatus{JobRunning}, To: JobFailed, Attempt: 1},
		}
		for _, s := range steps {
			r.TransitionJob(ctx, s, nil)
		}
		// With an audit event SQLite and PostgreSQL take the same path;
		// without, PostgreSQL takes its one-statement path: both are heard.
		cancelled, _, err := r.CreateJob(ctx, newJob("report"), nil)
		if err != nil {
			t.Fatal(err)
		}
		audit := &AuditEvent{Time: time.Now(), Actor: "tester", Action: "job cancel", Target: "job/" + cancelled.ID, Outcome: "ok", Details: "{}"}
		if _, err := r.TransitionJob(ctx, Transition{JobID: cancelled.ID, From: []JobStatus{JobPending}, To: JobCancelled}, audit); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{"invoice:failed", "report:cancelled"}, heard); diff != "" {
			t.Errorf("heard (-want +got):\n%s", diff)
		}
	})
}

func TestCountPendingWithMessage(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		for _, j := range []struct {
			status  JobStatus
			message string
		}{
			{JobPending, "no robot can run it: it needs capability sap"},
			{JobPending, "waiting: no robot is enrolled"},
			{JobPending, "waiting for the one robot that can run it to be free"},
			{JobFailed, "no robot can run it: gave up"},
			// A prefix is matched as written, not as a LIKE pattern.
			{JobPending, "no_robot%"},
		} {
			job, _, err := r.CreateJob(ctx, newJob("w"), nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := r.db.NewUpdate().Model((*Job)(nil)).Set("status = ?", j.status).Set("status_message = ?", j.message).Where("id = ?", job.ID).Exec(ctx); err != nil {
				t.Fatal(err)
			}
		}
		n, err := r.CountPendingWithMessage(ctx, []string{"no robot can run it", "waiting: no robot is enrolled"})
		if err != nil || n != 2 {
			t.Fatalf("CountPendingWithMessage = %d, %v; want 2", n, err)
		}
	})
}

func TestPendingShapes(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		browser := `{"capabilities":["browser"]}`
		for _, j := range []struct {
			status   JobStatus
			requires string
		}{
			{JobPending, "{}"},
			{JobPending, browser},
			{JobPending, browser},
			{JobPending, browser},
			// Only pending jobs count: these are a robot's or finished.
			{JobRunning, browser},
			{JobSucceeded, "{}"},
		} {
			job := newJob("w")
			job.Requires = j.requires
			created, _, err := r.CreateJob(ctx, job, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := r.db.NewUpdate().Model((*Job)(nil)).Set("status = ?", j.status).Where("id = ?", created.ID).Exec(ctx); err != nil {
				t.Fatal(err)
			}
		}
		got, err := r.PendingShapes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := []PendingShape{{Requires: "{}", N: 1}, {Requires: browser, N: 3}}
		sortShapes := cmpopts.SortSlices(func(a, b PendingShape) bool { return a.Requires < b.Requires })
		if diff := cmp.Diff(want, got, sortShapes); diff != "" {
			t.Errorf("PendingShapes (-want +got):\n%s", diff)
		}
	})
}

// BenchmarkFleet measures one read of the fleet for the metrics, on
// PostgreSQL, with 2,000 robots and 1,000 jobs running: what a scrape of
// each replica costs the database at most every fleetCache.
func BenchmarkFleet(b *testing.B) {
	ctx := context.Background()
	r := openPostgres(b)
	now := time.Now().UTC()
	robots := make([]*Robot, 2000)
	for i := range robots {
		robots[i] = &Robot{ID: NewID(), Name: fmt.Sprintf("r%04d", i), Labels: "{}", Capabilities: "[]", Status: "busy", MaxJobs: 1, LastSeen: &now, ConnectedSince: &now, CertExpiresAt: &now}
	}
	if _, err := r.db.NewInsert().Model(&robots).Exec(ctx); err != nil {
		b.Fatal(err)
	}
	for i := range 1000 {
		job := newJob("w")
		job.ID, job.Status, job.RobotID = NewID(), JobRunning, robots[i].ID
		job.CreatedAt, job.UpdatedAt = now, now
		if _, err := r.db.NewInsert().Model(job).Exec(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		fleet, err := r.Fleet(ctx, now.Add(-time.Minute))
		if err != nil || len(fleet) != 2000 {
			b.Fatalf("Fleet: %d robots, %v", len(fleet), err)
		}
	}
}

// BenchmarkPendingShapes measures one count of the pending jobs by their
// requirements, on PostgreSQL, with a backlog of 100,000 jobs of four
// shapes: what the pool metrics cost the database at most every fleetCache.
func BenchmarkPendingShapes(b *testing.B) {
	ctx := context.Background()
	r := openPostgres(b)
	shapes := []string{"{}", `{"capabilities":["browser"]}`, `{"capabilities":["desktop"]}`, `{"labels":{"site":"eu"}}`}
	now := time.Now().UTC()
	const backlog, batch = 100_000, 2_000
	for start := 0; start < backlog; start += batch {
		jobs := make([]*Job, batch)
		for i := range jobs {
			jobs[i] = newJob("w")
			jobs[i].Requires = shapes[(start+i)%len(shapes)]
			jobs[i].CreatedAt, jobs[i].UpdatedAt = now, now
		}
		if _, err := r.db.NewInsert().Model(&jobs).Exec(ctx); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := r.db.ExecContext(ctx, "ANALYZE jobs"); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		got, err := r.PendingShapes(ctx)
		if err != nil || len(got) != len(shapes) {
			b.Fatalf("PendingShapes: %v, %v", got, err)
		}
	}
}
