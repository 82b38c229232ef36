package registry

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/pgdialect"
)

// The batch insert names the columns of jobs itself: a column added to
// Job must be added there too, or submitted jobs would lose it.
func TestInsertJobsNamesEveryColumn(t *testing.T) {
	table := bun.NewDB(nil, pgdialect.New()).Table(reflect.TypeFor[Job]())
	var want []string
	for _, f := range table.Fields {
		want = append(want, f.Name)
	}
	got := strings.Split(jobColumnNames, ", ")
	if !reflect.DeepEqual(got, want) {
		t.Errorf("jobColumnNames = %v\nJob's columns  = %v", got, want)
	}
	if n := len((&jobColumns{}).args()); n != len(want) {
		t.Errorf("jobColumns.args gives %d arrays for %d columns", n, len(want))
	}
}

func TestBatchInsertStoresEveryField(t *testing.T) {
	r := openPostgres(t)
	ctx := context.Background()
	at := time.Now().UTC().Truncate(time.Microsecond)
	started, finished, key := at.Add(time.Second), at.Add(2*time.Second), "key-1"
	// Every field differs from the others and from its zero value, so a
	// value stored in the wrong column shows.
	want := &Job{
		ID: NewID(), WorkflowName: "w", WorkflowVersion: 2, Workflow: `{"name":"w"}`, Status: JobPending,
		StatusMessage: "waiting", Priority: PriorityHigh, Attempt: 3, MaxAttempts: 4, RobotID: "robot-1",
		Inputs: `{"a":1}`, Requires: `{"capabilities":["browser"]}`, Result: `{"b":2}`, TimeoutMillis: 5000,
		IdempotencyKey: &key, CreatedBy: "tester", CreatedAt: at, UpdatedAt: at.Add(time.Millisecond),
		StartedAt: &started, FinishedAt: &finished, Progress: 50, CurrentStep: "step-1", SecretInputs: "v1.dk-1.sealed",
	}
	audit := &AuditEvent{Time: at, Actor: "tester", ActorTokenID: "t1", Action: "submit", Target: "job/" + want.ID, Outcome: "ok", Details: `{"c":3}`, Peer: "127.0.0.1"}
	if existing, err := r.inserter.insert(ctx, want, audit); err != nil || existing {
		t.Fatalf("insert = %v, %v", existing, err)
	}
	// The same key again writes nothing: no job, no event, no audit.
	again := *want
	again.ID = NewID()
	if existing, err := r.inserter.insert(ctx, &again, &AuditEvent{Actor: "tester", Action: "submit", Target: "job/" + again.ID, Outcome: "ok"}); err != nil || !existing {
		t.Fatalf("insert with a key used = %v, %v; want existing", existing, err)
	}
	if _, err := r.GetJob(ctx, again.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("the second job with the key was stored: %v", err)
	}
	if audits, _, err := r.ListAudit(ctx, AuditFilter{Target: "job/" + again.ID}, Page{}); err != nil || len(audits) != 0 {
		t.Errorf("audit of the submit that wrote nothing = %v, %v", audits, err)
	}
	got, err := r.GetJob(ctx, want.ID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("stored job (-want +got):\n%s", diff)
	}
	events, err := r.JobEvents(ctx, want.ID)
	if err != nil || len(events) != 1 {
		t.Fatalf("JobEvents = %v, %v; want the first event", events, err)
	}
	wantEvent := *firstEvent(want)
	wantEvent.ID = events[0].ID
	if diff := cmp.Diff(wantEvent, events[0]); diff != "" {
		t.Errorf("first event (-want +got):\n%s", diff)
	}
	audits, _, err := r.ListAudit(ctx, AuditFilter{Target: audit.Target}, Page{})
	if err != nil || len(audits) != 1 {
		t.Fatalf("ListAudit = %v, %v; want the audit event", audits, err)
	}
	audit.ID = audits[0].ID
	if diff := cmp.Diff(*audit, audits[0]); diff != "" {
		t.Errorf("audit event (-want +got):\n%s", diff)
	}
}
