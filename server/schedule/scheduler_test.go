package schedule

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/server/registry"
)

// fakeJobs makes jobs in memory, one per idempotency key, as the API's
// Submit does.
type fakeJobs struct {
	mu   sync.Mutex
	keys map[string]*registry.Job
}

func (f *fakeJobs) Submit(_ context.Context, req *casarev1.SubmitJobRequest, createdBy string) (*registry.Job, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := req.GetIdempotencyKey()
	if j, ok := f.keys[key]; ok {
		return j, true, nil
	}
	j := &registry.Job{ID: registry.NewID(), WorkflowName: req.GetWorkflowName(), IdempotencyKey: &key, CreatedBy: createdBy}
	f.keys[key] = j
	return j, false, nil
}

func (f *fakeJobs) Cancel(context.Context, string, string, string, *registry.AuditEvent) (*registry.Job, error) {
	return nil, registry.ErrConflict
}

// instants returns the scheduled instants of the jobs made, in order.
func (f *fakeJobs) instants(t *testing.T, scheduleID string) []time.Time {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []time.Time
	for key := range f.keys {
		rest, ok := strings.CutPrefix(key, "schedule/"+scheduleID+"/")
		if !ok {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, rest)
		if err != nil {
			t.Fatalf("key %q: %v", key, err)
		}
		out = append(out, at)
	}
	slices.SortFunc(out, func(a, b time.Time) int { return a.Compare(b) })
	return out
}

func openRegistry(t *testing.T) *registry.Registry {
	t.Helper()
	r, err := registry.Open(context.Background(), registry.Options{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	if _, err := r.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestMisfirePolicies: a scheduler back after ten minutes away, with a
// fixed clock, makes up for the fires missed as each schedule's policy
// says, and goes on from the next fire after now.
func TestMisfirePolicies(t *testing.T) {
	t0 := utc("2026-12-07T10:00:00Z")
	now := t0.Add(10*time.Minute + 45*time.Second)
	tests := []struct {
		name   string
		policy string
		limit  int32
		want   []time.Time
		missed float64
	}{
		{"Skip", MisfireSkip, 0, nil, 11},
		{"RunOnce", MisfireRunOnce, 0, []time.Time{t0.Add(10 * time.Minute)}, 10},
		{"RunAllUpToTheLimit", MisfireRunAll, 3, []time.Time{t0.Add(8 * time.Minute), t0.Add(9 * time.Minute), t0.Add(10 * time.Minute)}, 8},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			reg := openRegistry(t)
			jobs := &fakeJobs{keys: map[string]*registry.Job{}}
			s := New(Options{Registry: reg, Jobs: jobs, MisfireGrace: 30 * time.Second, Now: func() time.Time { return now }})
			sch := &registry.Schedule{
				ID: registry.NewID(), Name: "minutely", WorkflowName: "tick", Cron: "0 * * * * *",
				Inputs: "{}", Requires: "{}", OverlapPolicy: OverlapAllow, MisfirePolicy: tt.policy, MisfireLimit: tt.limit,
				NextFireTime: &t0,
			}
			if err := reg.CreateSchedule(ctx, sch, nil); err != nil {
				t.Fatal(err)
			}
			s.fireDue(ctx)
			if got := jobs.instants(t, sch.ID); !slices.EqualFunc(got, tt.want, time.Time.Equal) {
				t.Errorf("jobs for %v, want %v", got, tt.want)
			}
			if got := testutil.ToFloat64(s.fires.WithLabelValues(OutcomeMissed)); got != tt.missed {
				t.Errorf("missed fires = %v, want %v", got, tt.missed)
			}
			stored, err := reg.GetSchedule(ctx, "minutely")
			if err != nil {
				t.Fatal(err)
			}
			if want := t0.Add(11 * time.Minute); !stored.NextFireTime.Equal(want) {
				t.Errorf("next fire = %v, want %v", stored.NextFireTime, want)
			}
			if len(tt.want) > 0 && !stored.LastFireTime.Equal(tt.want[len(tt.want)-1]) {
				t.Errorf("last fire = %v, want %v", stored.LastFireTime, tt.want[len(tt.want)-1])
			}
		})
	}
}

// TestFireAgainMakesNoSecondJob: a pass that made its jobs but stored
// nothing (the replica died, or lost the lead) is done again by the next
// leader with the same keys, so each instant keeps one job.
func TestFireAgainMakesNoSecondJob(t *testing.T) {
	ctx := context.Background()
	reg := openRegistry(t)
	jobs := &fakeJobs{keys: map[string]*registry.Job{}}
	t0 := utc("2026-12-07T10:00:00Z")
	now := t0.Add(5 * time.Second)
	sch := &registry.Schedule{
		ID: registry.NewID(), Name: "often", WorkflowName: "tick", Cron: "@every 1s",
		Inputs: "{}", Requires: "{}", OverlapPolicy: OverlapAllow, MisfirePolicy: MisfireSkip, NextFireTime: &t0,
	}
	if err := reg.CreateSchedule(ctx, sch, nil); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		s := New(Options{Registry: reg, Jobs: jobs, Now: func() time.Time { return now }})
		s.fireDue(ctx)
		// Undo what the pass stored, as if it never got to.
		if _, err := reg.RecordScheduleFired(ctx, registry.ScheduleFired{ID: sch.ID, UpdatedAt: sch.UpdatedAt, NextFireTime: &t0}); err != nil {
			t.Fatal(err)
		}
	}
	if got := jobs.instants(t, sch.ID); len(got) != 6 {
		t.Errorf("two passes over 10:00:00 to 10:00:05 made jobs for %v; want one for each of the 6 seconds", got)
	}
}
