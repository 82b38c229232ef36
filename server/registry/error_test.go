package registry

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/casarerpa/casare/server/registry/registrytest"
)

func TestUnavailable(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"Nil", nil, false},
		{"Sentinel", fmt.Errorf("get job: %w", ErrUnavailable), true},
		{"AdminShutdown", fmt.Errorf("get job: %w", &pgconn.PgError{Code: "57P01"}), true},
		{"CrashShutdown", &pgconn.PgError{Code: "57P02"}, true},
		{"StartingUp", &pgconn.PgError{Code: "57P03"}, true},
		{"ConnectionFailure", &pgconn.PgError{Code: "08006"}, true},
		{"TooManyConnections", &pgconn.PgError{Code: "53300"}, true},
		{"SyntaxError", &pgconn.PgError{Code: "42601"}, false},
		{"UniqueViolation", &pgconn.PgError{Code: "23505"}, false},
		{"SQLiteBusy", errors.New("database is locked (5) (SQLITE_BUSY)"), true},
		{"SQLiteLocked", errors.New("database table is locked (6) (SQLITE_LOCKED)"), true},
		{"CallerDeadline", fmt.Errorf("get job: %w", context.DeadlineExceeded), false},
		{"NotFound", ErrNotFound, false},
		{"Bug", errors.New("sql: Scan error on column index 0"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Unavailable(tt.err); got != tt.want {
				t.Fatalf("Unavailable(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

// TestOutageIsUnavailable takes a database away under a registry, with
// connections open in its pool, and checks that what its calls return is
// told apart as unavailable, and that they work again once it is back.
func TestOutageIsUnavailable(t *testing.T) {
	t.Parallel()
	c := registrytest.NewCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := Open(ctx, Options{DatabaseURL: c.URL(), MaxOpenConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	if _, err := r.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	job := newJob("outage")
	if _, _, err := r.CreateJob(ctx, job, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	// The first calls find the pool's connections dead, the later ones
	// find nothing listening: both are the outage.
	for i := range 5 {
		_, err := r.GetJob(ctx, job.ID)
		if err == nil || !Unavailable(err) {
			t.Fatalf("GetJob %d with the database stopped: err %v, want one Unavailable recognises", i, err)
		}
		err = r.AppendJobLogs(ctx, []JobLog{{JobID: job.ID, Attempt: 1, Line: int64(i + 1), Level: "info", Message: "m"}})
		if err == nil || !Unavailable(err) {
			t.Fatalf("AppendJobLogs %d with the database stopped: err %v, want one Unavailable recognises", i, err)
		}
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.GetJob(ctx, job.ID); err != nil {
		t.Fatalf("GetJob once the database is back: %v", err)
	}
}

// TestQuotingHoldsWithoutStandardConformingStrings opens the registry with
// standard_conforming_strings turned off in the URL: bun writes values into
// the statement, doubling quotes only, so a backslash before a quote would
// then end the literal and run what follows (and pgx refuses to run
// queries with arguments at all). Values with backslashes and quotes must
// read back as written.
func TestQuotingHoldsWithoutStandardConformingStrings(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r, err := Open(ctx, Options{DatabaseURL: registrytest.DatabaseURL(t) + "&standard_conforming_strings=off"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	if _, err := r.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	job := newJob(`it\'s`)
	key := `k\'); DELETE FROM jobs; --`
	job.IdempotencyKey = &key
	if _, _, err := r.CreateJob(ctx, job, nil); err != nil {
		t.Fatal(err)
	}
	got, err := r.GetJob(ctx, job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.WorkflowName != `it\'s` || got.IdempotencyKey == nil || *got.IdempotencyKey != key {
		t.Fatalf("read back workflow %q key %v, want %q and %q", got.WorkflowName, got.IdempotencyKey, `it\'s`, key)
	}
}

// TestAbandonedTransactionEnds: a transaction left open by a replica that
// stopped mid-way (here, one that begins and never ends) must not hold
// its row locks for ever: PostgreSQL ends it, and another writer of the
// row goes on. The URL's own setting wins over ours.
func TestAbandonedTransactionEnds(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var got string
	r := openPostgresWith(t, "&idle_in_transaction_session_timeout=300ms")
	if err := r.DB().QueryRowContext(ctx, "SHOW idle_in_transaction_session_timeout").Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != "300ms" {
		t.Fatalf("idle_in_transaction_session_timeout is %s, want the URL's 300ms", got)
	}
	job := newJob("held")
	if _, _, err := r.CreateJob(ctx, job, nil); err != nil {
		t.Fatal(err)
	}
	tx, err := r.DB().BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, "UPDATE jobs SET priority = priority WHERE id = ?", job.ID); err != nil {
		t.Fatal(err)
	}
	// The holder stops here. Another writer waits for at most the timeout.
	waitCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if _, err := r.DB().ExecContext(waitCtx, "UPDATE jobs SET priority = priority WHERE id = ?", job.ID); err != nil {
		t.Fatalf("a row locked by an abandoned transaction stays locked: %v", err)
	}

	def := openPostgres(t)
	if err := def.DB().QueryRowContext(ctx, "SHOW idle_in_transaction_session_timeout").Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != idleInTransactionTimeout {
		t.Fatalf("idle_in_transaction_session_timeout is %s by default, want %s", got, idleInTransactionTimeout)
	}
}
