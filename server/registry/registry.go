// Package registry is the control plane's record of jobs, workflows, tokens,
// audit events and robots, kept with bun in PostgreSQL or, on the embedded
// default, SQLite. It is the truth the queue and the robots are reconciled
// against.
package registry

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/pgdialect"
	"github.com/uptrace/bun/dialect/sqlitedialect"
	"github.com/uptrace/bun/driver/sqliteshim"
	"github.com/uptrace/bun/migrate"

	"github.com/casarerpa/casare/sql/migrations"
)

// Options configures Open.
type Options struct {
	// DatabaseURL is postgres://…; empty means SQLite in DataDir.
	DatabaseURL string
	DataDir     string
	Logger      *slog.Logger
	// MaxOpenConns bounds the PostgreSQL pool; 0 means 20.
	MaxOpenConns int
}

// Registry is the database.
type Registry struct {
	db      *bun.DB
	dialect string
	logger  *slog.Logger
	// inserter batches job submits on PostgreSQL; SQLite commits locally
	// and gains nothing from it.
	inserter *jobInserter
	// pruneBatches sizes Prune's batches; tests make them small.
	pruneBatches pruneBatches
	// transitions and progress commit the changes of many jobs together,
	// on both dialects.
	transitions *group[Transition, TransitionResult]
	progress    *group[ProgressNote, progressResult]
	// takes takes work items for many jobs together on PostgreSQL.
	takes *group[takeRequest, itemResult]
	// completes completes work items of many jobs together on PostgreSQL.
	completes *group[completeRequest, itemResult]
	// jobFinished, when set, hears of every job that reached an end.
	jobFinished func(*Job)
	// itemStatsAt is when work_items' statistics were last read again
	// (Unix nanoseconds; see refreshItemStatistics).
	itemStatsAt atomic.Int64
}

// OnJobFinished makes f hear of every job a transition finished, after it
// committed. Set it before the registry is used; f must not block.
func (r *Registry) OnJobFinished(f func(*Job)) { r.jobFinished = f }

// Open opens and pings the database. It does not migrate; see Migrate.
func Open(ctx context.Context, opts Options) (*Registry, error) {
	r := &Registry{logger: opts.Logger, pruneBatches: defaultPruneBatches}
	if r.logger == nil {
		r.logger = slog.Default()
	}
	if opts.DatabaseURL == "" {
		if err := os.MkdirAll(opts.DataDir, 0o700); err != nil {
			return nil, fmt.Errorf("create data dir: %w", err)
		}
		path := filepath.Join(opts.DataDir, "casare.db")
		// WAL lets readers run beside the writer; immediate transactions
		// take the write lock up front, so two writers queue on
		// busy_timeout instead of failing on a lock upgrade.
		dsn := "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)&_pragma=synchronous(NORMAL)&_txlock=immediate"
		sqldb, err := sql.Open(sqliteshim.ShimName, dsn)
		if err != nil {
			return nil, fmt.Errorf("open sqlite %s: %w", path, err)
		}
		// One connection: SQLite has one writer anyway, and a single
		// connection never sees "database is locked".
		sqldb.SetMaxOpenConns(1)
		r.db = bun.NewDB(sqldb, sqlitedialect.New())
		r.dialect = "sqlite"
	} else {
		cfg, err := pgx.ParseConfig(opts.DatabaseURL)
		if err != nil {
			return nil, fmt.Errorf("--database-url: %w", err)
		}
		// bun writes the values into the SQL text itself, so every query
		// string is new: preparing and caching each one would cost a round
		// trip and churn the statement cache for nothing. The batch insert
		// and the batch of transitions, whose text never changes, ask for
		// the cache themselves.
		cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
		// bun quotes a string by doubling its quotes and leaves backslashes
		// as they are, which is right only with standard conforming
		// strings. With them off (in the server's, the database's or the
		// URL's settings) \' would end a literal early and run what
		// follows, and pgx refuses simple-protocol queries with arguments
		// outright; the session always has them on, whatever is set.
		cfg.RuntimeParams["standard_conforming_strings"] = "on"
		// A PostgreSQL that accepts connections and answers nothing (a
		// frozen host, a half-open proxy) would hold each new connection
		// for as long as its caller waits, and background work waits
		// long; connect_timeout in the URL still wins.
		if cfg.ConnectTimeout == 0 {
			cfg.ConnectTimeout = defaultConnectTimeout
		}
		// A replica frozen inside a transaction (a stopped process, a VM
		// paused by its host) would hold that transaction's row locks
		// until it woke, and every other replica writing those rows (a
		// robot moving over, a job's next transition) would wait for it.
		// Our transactions are a few statements long: one idle this long
		// belongs to such a replica, and PostgreSQL ends it. The URL's
		// setting wins.
		if _, set := cfg.RuntimeParams["idle_in_transaction_session_timeout"]; !set {
			cfg.RuntimeParams["idle_in_transaction_session_timeout"] = idleInTransactionTimeout
		}
		sqldb := stdlib.OpenDB(*cfg)
		conns := opts.MaxOpenConns
		if conns <= 0 {
			conns = 20
		}
		sqldb.SetMaxOpenConns(conns)
		sqldb.SetMaxIdleConns(conns)
		sqldb.SetConnMaxIdleTime(5 * time.Minute)
		r.db = bun.NewDB(sqldb, pgdialect.New())
		r.dialect = "postgres"
		r.inserter = newJobInserter(r.db)
	}
	if err := r.Ping(ctx); err != nil {
		r.Close()
		return nil, err
	}
	workers := 1 // SQLite has one connection
	if r.dialect == "postgres" {
		workers = inserterWorkers
	}
	r.transitions = newGroup(workers, func(t Transition) string { return t.JobID }, r.transitionBatch,
		func(err error) TransitionResult { return TransitionResult{Err: err} })
	r.takes = newGroup(workers, func(t takeRequest) string { return t.holder.JobID }, r.takeBatch,
		func(err error) itemResult { return itemResult{err: err} })
	r.completes = newGroup(workers, func(c completeRequest) string { return c.id }, r.completeBatch,
		func(err error) itemResult { return itemResult{err: err} })
	r.progress = newGroup(workers, func(p ProgressNote) string { return p.JobID }, r.progressBatch,
		func(err error) progressResult { return progressResult{err: err} })
	return r, nil
}

// defaultConnectTimeout bounds a connection attempt to PostgreSQL when
// the URL sets no connect_timeout.
const defaultConnectTimeout = 10 * time.Second

// idleInTransactionTimeout ends a transaction left idle this long (see Open).
const idleInTransactionTimeout = "30s"

// Dialect returns "postgres" or "sqlite".
func (r *Registry) Dialect() string { return r.dialect }

// DB returns the database handle.
func (r *Registry) DB() *bun.DB { return r.db }

// Ping checks that the database answers.
func (r *Registry) Ping(ctx context.Context) error {
	if err := r.db.PingContext(ctx); err != nil {
		return fmt.Errorf("ping %s: %w", r.dialect, err)
	}
	return nil
}

// Close stops the batch inserter and closes the database.
func (r *Registry) Close() error {
	if r.transitions != nil {
		r.transitions.close()
		r.progress.close()
		r.takes.close()
		r.completes.close()
	}
	if r.inserter != nil {
		r.inserter.close()
	}
	return r.db.Close()
}

// migrationLockKey is the PostgreSQL advisory lock that serialises
// migrations when several control planes start at once.
const migrationLockKey = 0x6361736172650001

func (r *Registry) migrator() (*migrate.Migrator, error) {
	ms, err := migrations.For(r.dialect)
	if err != nil {
		return nil, err
	}
	return migrate.NewMigrator(r.db, ms, migrate.WithMarkAppliedOnSuccess(true)), nil
}

// Migrate applies the migrations not yet applied and returns their names.
// On PostgreSQL it holds an advisory lock meanwhile, so replicas starting
// together wait for each other instead of racing.
func (r *Registry) Migrate(ctx context.Context) ([]string, error) {
	m, err := r.migrator()
	if err != nil {
		return nil, err
	}
	if r.dialect == "postgres" {
		conn, err := r.db.Conn(ctx)
		if err != nil {
			return nil, fmt.Errorf("migrate: %w", err)
		}
		defer conn.Close()
		if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_lock(?)", int64(migrationLockKey)); err != nil {
			return nil, fmt.Errorf("migrate: lock: %w", err)
		}
		defer conn.ExecContext(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock(?)", int64(migrationLockKey))
	}
	if err := m.Init(ctx); err != nil {
		return nil, fmt.Errorf("migrate: init: %w", err)
	}
	group, err := m.Migrate(ctx)
	if err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	var names []string
	for _, mg := range group.Migrations {
		names = append(names, mg.String())
	}
	return names, nil
}

// PendingMigrations returns the migrations not applied yet; readiness
// requires none.
func (r *Registry) PendingMigrations(ctx context.Context) ([]string, error) {
	m, err := r.migrator()
	if err != nil {
		return nil, err
	}
	all, err := m.MigrationsWithStatus(ctx)
	if err != nil {
		return nil, fmt.Errorf("migration status: %w", err)
	}
	var names []string
	for _, mg := range all.Unapplied() {
		names = append(names, mg.String())
	}
	return names, nil
}

// NewID returns a new time-ordered identifier (UUIDv7), so ids sort by
// creation and pagination can use them as keys.
func NewID() string {
	return uuid.Must(uuid.NewV7()).String()
}

// now returns the current time as stored: UTC, to the microsecond, so a
// value reads back equal on both dialects.
func now() time.Time {
	return time.Now().UTC().Truncate(time.Microsecond)
}

func normalize(t time.Time) time.Time {
	if t.IsZero() {
		return now()
	}
	return t.UTC().Truncate(time.Microsecond)
}

// insertAudit writes e within tx when it is not nil.
func insertAudit(ctx context.Context, tx bun.IDB, e *AuditEvent) error {
	if e == nil {
		return nil
	}
	e.Time = normalize(e.Time)
	if _, err := tx.NewInsert().Model(e).Exec(ctx); err != nil {
		return fmt.Errorf("write audit event: %w", err)
	}
	return nil
}
