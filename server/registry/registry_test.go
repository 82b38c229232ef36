package registry

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/casarerpa/casare/server/registry/registrytest"
)

// forEachBackend runs test against a fresh SQLite registry and a fresh
// PostgreSQL one (a schema of its own), as parallel subtests.
func forEachBackend(t *testing.T, test func(t *testing.T, r *Registry)) {
	t.Helper()
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		r, err := Open(context.Background(), Options{DataDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		if _, err := r.Migrate(context.Background()); err != nil {
			t.Fatal(err)
		}
		test(t, r)
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		test(t, openPostgres(t))
	})
}

// openPostgres opens a migrated registry on a schema of the test's (or
// benchmark's) own.
func openPostgres(t testing.TB) *Registry {
	t.Helper()
	return openPostgresWith(t, "")
}

// openPostgresWith opens a migrated registry on a fresh schema, with
// params ("&name=value…") added to the URL.
func openPostgresWith(t testing.TB, params string) *Registry {
	t.Helper()
	r, err := Open(context.Background(), Options{DatabaseURL: registrytest.DatabaseURL(t) + params, MaxOpenConns: 10})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	if _, err := r.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return r
}

func newJob(workflow string) *Job {
	return &Job{
		ID:           NewID(),
		WorkflowName: workflow,
		Workflow:     `{"steps":[{"id":"a","uses":"log"}]}`,
		Status:       JobPending,
		Priority:     PriorityNormal,
		Attempt:      1,
		MaxAttempts:  3,
		Inputs:       "{}",
		Requires:     "{}",
		CreatedBy:    "tester",
	}
}

func TestMigrations(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		pending, err := r.PendingMigrations(ctx)
		if err != nil || len(pending) != 0 {
			t.Fatalf("PendingMigrations() = %v, %v; want none after Migrate", pending, err)
		}
		applied, err := r.Migrate(ctx)
		if err != nil || len(applied) != 0 {
			t.Fatalf("second Migrate() = %v, %v; want nothing to do", applied, err)
		}
	})
}

func TestCreateAndGetJob(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		job := newJob("invoice")
		audit := &AuditEvent{Actor: "tester", Action: "submit", Target: "job/" + job.ID, Outcome: "ok"}
		saved, existing, err := r.CreateJob(ctx, job, audit)
		if err != nil || existing {
			t.Fatalf("CreateJob() = %v, %v", existing, err)
		}
		got, err := r.GetJob(ctx, job.ID)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(saved, got); diff != "" {
			t.Errorf("GetJob() differs from what CreateJob saved (-saved +got):\n%s", diff)
		}
		events, err := r.JobEvents(ctx, job.ID)
		if err != nil || len(events) != 1 || events[0].ToStatus != JobPending || events[0].FromStatus != "" || events[0].Actor != "tester" {
			t.Fatalf("JobEvents() = %+v, %v", events, err)
		}
		audits, _, err := r.ListAudit(ctx, AuditFilter{Target: "job/" + job.ID}, Page{})
		if err != nil || len(audits) != 1 {
			t.Fatalf("audit of the submit = %+v, %v", audits, err)
		}
		if _, err := r.GetJob(ctx, "missing"); !errors.Is(err, ErrNotFound) {
			t.Errorf("GetJob(missing) = %v, want ErrNotFound", err)
		}
	})
}

func TestIdempotencyKeyUnderConcurrency(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		key := "nightly"
		const n = 20
		ids := make([]string, n)
		created := make([]bool, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				job := newJob("w")
				job.IdempotencyKey = &key
				saved, existing, err := r.CreateJob(ctx, job, nil)
				if err != nil {
					t.Error(err)
					return
				}
				ids[i], created[i] = saved.ID, !existing
			})
		}
		wg.Wait()
		made := 0
		for i := range n {
			if ids[i] != ids[0] {
				t.Fatalf("submits with one key returned different jobs: %v", ids)
			}
			if created[i] {
				made++
			}
		}
		if made != 1 {
			t.Fatalf("%d submits created a job, want 1", made)
		}
		jobs, _, err := r.ListJobs(ctx, JobFilter{}, Page{})
		if err != nil || len(jobs) != 1 {
			t.Fatalf("ListJobs() = %d jobs, %v; want 1", len(jobs), err)
		}
		events, _ := r.JobEvents(ctx, ids[0])
		if len(events) != 1 {
			t.Fatalf("%d events for the one job, want 1", len(events))
		}
	})
}

func TestListJobsFiltersAndPages(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		var all []string
		for i := range 25 {
			job := newJob([]string{"a", "b"}[i%2])
			if i%5 == 0 {
				job.RobotID = "robot-1"
			}
			if _, _, err := r.CreateJob(ctx, job, nil); err != nil {
				t.Fatal(err)
			}
			all = append([]string{job.ID}, all...) // newest first
		}
		if _, err := r.TransitionJob(ctx, Transition{JobID: all[0], From: []JobStatus{JobPending}, To: JobCancelled}, nil); err != nil {
			t.Fatal(err)
		}

		var seen []string
		token := ""
		for page := 0; ; page++ {
			jobs, next, err := r.ListJobs(ctx, JobFilter{}, Page{Size: 10, Token: token})
			if err != nil {
				t.Fatal(err)
			}
			for _, j := range jobs {
				seen = append(seen, j.ID)
			}
			if next == "" {
				break
			}
			token = next
			if page > 5 {
				t.Fatal("pagination does not end")
			}
		}
		if diff := cmp.Diff(all, seen); diff != "" {
			t.Fatalf("paging through every job (-want +got):\n%s", diff)
		}

		tests := []struct {
			name   string
			filter JobFilter
			want   int
		}{
			{"Workflow", JobFilter{WorkflowName: "a"}, 13},
			{"Robot", JobFilter{RobotID: "robot-1"}, 5},
			{"Cancelled", JobFilter{Statuses: []JobStatus{JobCancelled}}, 1},
			{"PendingOrCancelled", JobFilter{Statuses: []JobStatus{JobPending, JobCancelled}}, 25},
			{"Combined", JobFilter{WorkflowName: "a", RobotID: "robot-1"}, 3},
		}
		for _, tt := range tests {
			jobs, _, err := r.ListJobs(ctx, tt.filter, Page{Size: 100})
			if err != nil || len(jobs) != tt.want {
				t.Errorf("%s: %d jobs, %v; want %d", tt.name, len(jobs), err, tt.want)
			}
		}

		_, next, _ := r.ListJobs(ctx, JobFilter{WorkflowName: "a"}, Page{Size: 2})
		if _, _, err := r.ListJobs(ctx, JobFilter{WorkflowName: "b"}, Page{Size: 2, Token: next}); !errors.Is(err, ErrInvalidPageToken) {
			t.Errorf("a token used with another filter: %v, want ErrInvalidPageToken", err)
		}
		if _, _, err := r.ListJobs(ctx, JobFilter{}, Page{Token: "garbage!"}); !errors.Is(err, ErrInvalidPageToken) {
			t.Errorf("a garbage token: %v, want ErrInvalidPageToken", err)
		}
	})
}

func TestTransitionJob(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		job := newJob("w")
		if _, _, err := r.CreateJob(ctx, job, nil); err != nil {
			t.Fatal(err)
		}
		robot := "robot-1"
		running, err := r.TransitionJob(ctx, Transition{
			JobID: job.ID, From: []JobStatus{JobPending}, To: JobRunning, Attempt: 1,
			RobotID: &robot, Message: "running", Reason: "accepted", Actor: "robot-1",
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if running.Status != JobRunning || running.StartedAt == nil || running.FinishedAt != nil || running.RobotID != robot {
			t.Fatalf("after start: %+v", running)
		}

		// A message about another attempt is fenced off and changes nothing.
		stale, err := r.TransitionJob(ctx, Transition{JobID: job.ID, From: []JobStatus{JobRunning}, To: JobSucceeded, Attempt: 2}, nil)
		if !errors.Is(err, ErrConflict) || stale == nil || stale.Status != JobRunning {
			t.Fatalf("stale attempt: %+v, %v; want the running job and ErrConflict", stale, err)
		}

		// So is one from a robot the job is not on.
		other, err := r.TransitionJob(ctx, Transition{JobID: job.ID, From: []JobStatus{JobRunning}, To: JobSucceeded, Robot: "robot-2"}, nil)
		if !errors.Is(err, ErrConflict) || other == nil || other.Status != JobRunning {
			t.Fatalf("other robot: %+v, %v; want the running job and ErrConflict", other, err)
		}
		if changed, err := r.SetJobProgress(ctx, ProgressNote{JobID: job.ID, Attempt: 1, RobotID: robot, From: []JobStatus{JobRunning}, Percent: 40, Step: "step2"}); err != nil || !changed {
			t.Fatalf("progress: changed %v, %v", changed, err)
		}

		requeued, err := r.TransitionJob(ctx, Transition{JobID: job.ID, From: []JobStatus{JobRunning}, To: JobPending, NextAttempt: true, Reason: "robot lost"}, nil)
		if err == nil && (requeued.Progress != 0 || requeued.CurrentStep != "" || requeued.StartedAt == nil) {
			t.Fatalf("a new attempt keeps the old one's progress or loses its start: %+v", requeued)
		}
		if err != nil || requeued.Attempt != 2 {
			t.Fatalf("requeue: %+v, %v", requeued, err)
		}
		result := `{"rows":3}`
		done, err := r.TransitionJob(ctx, Transition{JobID: job.ID, From: []JobStatus{JobPending}, To: JobSucceeded, Attempt: 2, Result: &result}, nil)
		if err != nil || done.FinishedAt == nil || done.Result != result || done.Progress != 100 {
			t.Fatalf("succeed: %+v, %v", done, err)
		}
		again, err := r.TransitionJob(ctx, Transition{JobID: job.ID, From: []JobStatus{JobPending, JobRunning}, To: JobCancelled}, nil)
		if !errors.Is(err, ErrConflict) || again.Status != JobSucceeded {
			t.Fatalf("cancel a finished job: %+v, %v; want ErrConflict", again, err)
		}
		if _, err := r.TransitionJob(ctx, Transition{JobID: "missing", From: []JobStatus{JobPending}, To: JobCancelled}, nil); !errors.Is(err, ErrNotFound) {
			t.Fatalf("missing job: %v, want ErrNotFound", err)
		}

		events, _ := r.JobEvents(ctx, job.ID)
		var got []string
		for _, e := range events {
			got = append(got, fmt.Sprintf("%s>%s@%d", e.FromStatus, e.ToStatus, e.Attempt))
		}
		want := []string{">pending@1", "pending>running@1", "running>pending@2", "pending>succeeded@2"}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("events (-want +got):\n%s", diff)
		}
		if e := events[1]; e.RobotID != robot || e.Reason != "accepted" || e.Actor != "robot-1" {
			t.Fatalf("start event %+v", e)
		}
		stored, err := r.GetJob(ctx, job.ID)
		if err != nil || stored.Status != JobSucceeded || stored.Attempt != 2 || stored.Result != result || stored.Workflow != job.Workflow {
			t.Fatalf("stored %+v, %v", stored, err)
		}
	})
}

func TestPendingJobs(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		var ids []string
		for range 7 {
			job := newJob("w")
			job.Priority = PriorityHigh
			if _, _, err := r.CreateJob(ctx, job, nil); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, job.ID)
		}
		if _, err := r.TransitionJob(ctx, Transition{JobID: ids[3], From: []JobStatus{JobPending}, To: JobCancelled}, nil); err != nil {
			t.Fatal(err)
		}
		var got []string
		after := ""
		for {
			page, err := r.PendingJobs(ctx, after, 2)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range page {
				if p.Attempt != 1 || p.Priority != PriorityHigh {
					t.Fatalf("pending job %+v lacks its attempt or priority", p)
				}
				got = append(got, p.ID)
			}
			if len(page) < 2 {
				break
			}
			after = page[len(page)-1].ID
		}
		want := append(append([]string{}, ids[:3]...), ids[4:]...)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("PendingJobs (-want +got):\n%s", diff)
		}
	})
}

func TestWorkflowVersions(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		put := func(digest string) (*WorkflowVersion, bool) {
			t.Helper()
			v, created, err := r.PutWorkflow(ctx, &WorkflowVersion{Name: "sync", Digest: digest, Definition: "{}", CreatedBy: "t"}, nil)
			if err != nil {
				t.Fatal(err)
			}
			return v, created
		}
		if v, created := put("d1"); v.Version != 1 || !created {
			t.Fatalf("first put: version %d created %v", v.Version, created)
		}
		if v, created := put("d1"); v.Version != 1 || created {
			t.Fatalf("same digest: version %d created %v; want 1, false", v.Version, created)
		}
		if v, created := put("d2"); v.Version != 2 || !created {
			t.Fatalf("new digest: version %d created %v; want 2, true", v.Version, created)
		}

		var wg sync.WaitGroup
		for i := range 8 {
			wg.Go(func() {
				if _, _, err := r.PutWorkflow(ctx, &WorkflowVersion{Name: "race", Digest: fmt.Sprint(i), Definition: "{}"}, nil); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		latest, err := r.GetWorkflow(ctx, "race", 0)
		if err != nil || latest.Version != 8 {
			t.Fatalf("after 8 concurrent pushes: %+v, %v; want version 8", latest, err)
		}
		if v, err := r.GetWorkflow(ctx, "sync", 1); err != nil || v.Digest != "d1" {
			t.Fatalf("GetWorkflow(sync, 1) = %+v, %v", v, err)
		}
		if _, err := r.GetWorkflow(ctx, "sync", 3); !errors.Is(err, ErrNotFound) {
			t.Fatalf("GetWorkflow(sync, 3) = %v, want ErrNotFound", err)
		}
		list, next, err := r.ListWorkflows(ctx, Page{Size: 1})
		if err != nil || len(list) != 1 || list[0].Name != "race" || list[0].LatestVersion != 8 || next == "" {
			t.Fatalf("ListWorkflows page 1 = %+v, %q, %v", list, next, err)
		}
		list, next, err = r.ListWorkflows(ctx, Page{Size: 1, Token: next})
		if err != nil || len(list) != 1 || list[0].Name != "sync" || list[0].LatestVersion != 2 || next != "" {
			t.Fatalf("ListWorkflows page 2 = %+v, %q, %v", list, next, err)
		}
	})
}

func TestTokens(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		past := time.Now().Add(-time.Hour)
		tokens := []*APIToken{
			{ID: NewID(), Name: "ci", Role: RoleOperator, Hash: "h1"},
			{ID: NewID(), Name: "old", Role: RoleViewer, Hash: "h2", ExpiresAt: &past},
		}
		for _, tok := range tokens {
			if err := r.CreateToken(ctx, tok, nil); err != nil {
				t.Fatal(err)
			}
		}
		if err := r.CreateToken(ctx, &APIToken{ID: NewID(), Name: "ci", Role: RoleAdmin, Hash: "h3"}, nil); !errors.Is(err, ErrAlreadyExists) {
			t.Fatalf("a second token named ci: %v, want ErrAlreadyExists", err)
		}
		if n, err := r.CountActiveTokens(ctx); err != nil || n != 1 {
			t.Fatalf("CountActiveTokens() = %d, %v; want 1 (one expired)", n, err)
		}
		got, err := r.TokenByHash(ctx, "h1")
		if err != nil || got.Name != "ci" || got.Role != RoleOperator {
			t.Fatalf("TokenByHash(h1) = %+v, %v", got, err)
		}
		if _, err := r.TokenByHash(ctx, "nope"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("TokenByHash(nope) = %v", err)
		}
		used := time.Now().UTC().Truncate(time.Microsecond)
		if err := r.TouchTokens(ctx, map[string]time.Time{tokens[0].ID: used}); err != nil {
			t.Fatal(err)
		}
		if got, _ := r.TokenByHash(ctx, "h1"); got.LastUsedAt == nil || !got.LastUsedAt.Equal(used) {
			t.Fatalf("last used = %v, want %v", got.LastUsedAt, used)
		}
		revoked, err := r.RevokeToken(ctx, "ci", time.Now(), &AuditEvent{Actor: "admin", Action: "revoke", Outcome: "ok"})
		if err != nil || revoked.RevokedAt == nil || revoked.ID != tokens[0].ID {
			t.Fatalf("RevokeToken(ci) = %+v, %v", revoked, err)
		}
		if _, err := r.RevokeToken(ctx, tokens[0].ID, time.Now(), nil); !errors.Is(err, ErrConflict) {
			t.Fatalf("revoking twice: %v, want ErrConflict", err)
		}
		if _, err := r.RevokeToken(ctx, "nobody", time.Now(), nil); !errors.Is(err, ErrNotFound) {
			t.Fatalf("revoking an unknown token: %v, want ErrNotFound", err)
		}
		// The name is free again once revoked.
		if err := r.CreateToken(ctx, &APIToken{ID: NewID(), Name: "ci", Role: RoleOperator, Hash: "h4"}, nil); err != nil {
			t.Fatalf("reusing a revoked token's name: %v", err)
		}
		active, _, err := r.ListTokens(ctx, false, Page{})
		if err != nil || len(active) != 2 {
			t.Fatalf("ListTokens(active) = %d, %v; want 2", len(active), err)
		}
		all, _, err := r.ListTokens(ctx, true, Page{})
		if err != nil || len(all) != 3 {
			t.Fatalf("ListTokens(all) = %d, %v; want 3", len(all), err)
		}
		audits, _, _ := r.ListAudit(ctx, AuditFilter{Target: "token/" + tokens[0].ID}, Page{})
		if len(audits) != 1 {
			t.Fatalf("the revocation wrote %d audit events with its target, want 1", len(audits))
		}
	})
}

func TestAuditPages(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		for i := range 5 {
			actor := []string{"alice", "bob"}[i%2]
			if err := r.InsertAudit(ctx, &AuditEvent{Actor: actor, Action: "x", Target: fmt.Sprint("job/", i), Outcome: "ok"}); err != nil {
				t.Fatal(err)
			}
		}
		first, next, err := r.ListAudit(ctx, AuditFilter{Actor: "alice"}, Page{Size: 2})
		if err != nil || len(first) != 2 || first[0].Target != "job/4" || next == "" {
			t.Fatalf("page 1 = %+v, %q, %v", first, next, err)
		}
		second, next, err := r.ListAudit(ctx, AuditFilter{Actor: "alice"}, Page{Size: 2, Token: next})
		if err != nil || len(second) != 1 || second[0].Target != "job/0" || next != "" {
			t.Fatalf("page 2 = %+v, %q, %v", second, next, err)
		}
	})
}

// TestActiveJobIDs: the jobs each robot holds are its assigned and
// running ones, not those it finished or that wait.
func TestActiveJobIDs(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		move := func(to JobStatus, robot string) string {
			t.Helper()
			job := newJob("w")
			if _, _, err := r.CreateJob(ctx, job, nil); err != nil {
				t.Fatal(err)
			}
			if to == JobPending {
				return job.ID
			}
			if _, err := r.TransitionJob(ctx, Transition{JobID: job.ID, From: []JobStatus{JobPending}, To: to, Attempt: 1, RobotID: &robot}, nil); err != nil {
				t.Fatal(err)
			}
			return job.ID
		}
		a1, a2 := move(JobAssigned, "a"), move(JobRunning, "a")
		b1 := move(JobRunning, "b")
		move(JobSucceeded, "a")
		move(JobPending, "")
		all, err := r.ActiveJobIDs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string][]string{"a": {a1, a2}, "b": {b1}}
		slices.Sort(want["a"])
		if len(all) != 2 || !slices.Equal(all["a"], want["a"]) || !slices.Equal(all["b"], want["b"]) {
			t.Fatalf("every robot's jobs: %v, want %v", all, want)
		}
		one, err := r.ActiveJobIDs(ctx, "b", "c")
		if err != nil {
			t.Fatal(err)
		}
		if len(one) != 1 || !slices.Equal(one["b"], want["b"]) {
			t.Fatalf("robots b and c: %v, want b's only", one)
		}
	})
}

func TestRobots(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		seen := time.Now().UTC().Truncate(time.Microsecond)
		rb := &Robot{ID: NewID(), Name: "win-01", Labels: `{"site":"hq"}`, Capabilities: `["browser"]`, Status: "idle", MaxJobs: 2, LastSeen: &seen}
		if err := r.UpsertRobot(ctx, rb); err != nil {
			t.Fatal(err)
		}
		rb.Status = "busy"
		if err := r.UpsertRobot(ctx, rb); err != nil {
			t.Fatal(err)
		}
		if err := r.UpsertRobot(ctx, &Robot{ID: NewID(), Name: "linux-01", Labels: "{}", Capabilities: "[]", Status: "offline"}); err != nil {
			t.Fatal(err)
		}
		if err := r.UpsertRobot(ctx, &Robot{ID: NewID(), Name: "win-01", Labels: "{}", Capabilities: "[]", Status: "offline"}); !errors.Is(err, ErrAlreadyExists) {
			t.Fatalf("a second robot named win-01: %v, want ErrAlreadyExists", err)
		}
		for _, key := range []string{rb.ID, "win-01"} {
			got, err := r.GetRobot(ctx, key)
			if err != nil || got.ID != rb.ID || got.Status != "busy" || !got.LastSeen.Equal(seen) {
				t.Fatalf("GetRobot(%s) = %+v, %v", key, got, err)
			}
		}
		if _, err := r.GetRobot(ctx, "nope"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("GetRobot(nope) = %v", err)
		}
		list, _, err := r.ListRobots(ctx, nil, Page{})
		if err != nil || len(list) != 2 || list[0].Name != "linux-01" {
			t.Fatalf("ListRobots() = %+v, %v", list, err)
		}
		busy, _, err := r.ListRobots(ctx, []RobotStatus{RobotBusy}, Page{})
		if err != nil || len(busy) != 1 || busy[0].Name != "win-01" {
			t.Fatalf("ListRobots(busy) = %+v, %v", busy, err)
		}
	})
}

// TestOpenGivesUpOnASilentDatabase points the registry at a port that
// accepts connections and never answers, as a frozen PostgreSQL host
// does: Open fails on its own connect timeout instead of waiting for as
// long as its caller does.
func TestOpenGivesUpOnASilentDatabase(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var held []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	opened := make(chan error, 1)
	go func() {
		r, err := Open(context.Background(), Options{DatabaseURL: "postgres://postgres@" + ln.Addr().String() + "/test?sslmode=disable"})
		if err == nil {
			r.Close()
		}
		opened <- err
	}()
	select {
	case err := <-opened:
		if err == nil {
			t.Fatal("Open succeeded against a database that answers nothing")
		}
		if !Unavailable(err) {
			t.Errorf("Open against a silent database: %v, want an error that reads as unavailable", err)
		}
	case <-time.After(4 * defaultConnectTimeout):
		t.Fatalf("Open against a silent database still waiting after %s; the connect timeout is %s", 4*defaultConnectTimeout, defaultConnectTimeout)
	}
}
