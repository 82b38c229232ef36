package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/server/api"
	"github.com/casarerpa/casare/server/asset"
	"github.com/casarerpa/casare/server/auth"
	"github.com/casarerpa/casare/server/dispatch"
	"github.com/casarerpa/casare/server/event"
	"github.com/casarerpa/casare/server/gateway"
	"github.com/casarerpa/casare/server/jobs"
	"github.com/casarerpa/casare/server/pki"
	"github.com/casarerpa/casare/server/queue"
	"github.com/casarerpa/casare/server/registry"
	"github.com/casarerpa/casare/server/schedule"
	"github.com/casarerpa/casare/server/vault"
	"github.com/casarerpa/casare/server/workqueue"
)

// AdminTokenFile is the name, in the data dir, of the admin token written
// on first start.
const AdminTokenFile = "admin.token"

// Server is a running control plane.
type Server struct {
	cfg     Config
	logger  *slog.Logger
	reg     *registry.Registry
	queue   *queue.Queue
	auth    *auth.Authenticator
	gateway *gateway.Gateway
	// jobChanges tells this replica's WatchJobs streams about changes
	// published by any replica.
	jobChanges  *queue.Notices
	jobLogs     *queue.Notices
	jobStops    *queue.Notices
	jobsWaiting *queue.Notices
	jobs        *jobs.Service
	dispatcher  *dispatch.Dispatcher
	vault       *vault.Vault
	assigner    *asset.Assigner
	metrics     *prometheus.Registry
	pruned      *prometheus.CounterVec
	listener    net.Listener
	http        *http.Server
	// services are the API's; the scheduler makes its jobs through them
	// and the event deliveries render their resources with them.
	services  *api.Services
	scheduler *schedule.Scheduler
	// events delivers the outbox's events to webhook subscriptions.
	events *event.Service
	// queueTriggers start jobs while work queues hold items; sweeper lets
	// go of items no running job attempt holds.
	queueTriggers *workqueue.Triggers
	sweeper       *workqueue.Sweeper
	queueMetrics  *workqueue.Metrics
}

// New opens the registry (applying migrations) and the queue, creates the
// first admin token when there is none, and binds the HTTP port. Run serves.
func New(ctx context.Context, cfg Config, logger *slog.Logger) (_ *Server, err error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	s := &Server{cfg: cfg, logger: logger}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	// Before anything else writes: a server started with the wrong key
	// stops here having changed nothing.
	if s.reg, s.vault, err = openRegistryAndVault(ctx, cfg, logger); err != nil {
		return nil, err
	}
	s.assigner = asset.NewAssigner(asset.AssignerOptions{Store: s.reg, Vault: s.vault, Audit: s.reg.InsertAudit, Logger: logger})
	s.queue, err = queue.Open(ctx, queue.Options{RedisURL: cfg.RedisURL, Environment: cfg.Environment, Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("open queue: %w", err)
	}
	if cfg.RedisURL == "" {
		logger.Info("queue: embedded Redis in-process (set --redis-url for production)")
	} else {
		logger.Info("queue: Redis", "url", redact(cfg.RedisURL))
	}
	if err := s.bootstrapAdminToken(ctx); err != nil {
		return nil, err
	}
	ca, err := openCA(cfg, logger)
	if err != nil {
		return nil, err
	}
	s.jobs = jobs.New(s.reg)
	s.dispatcher = dispatch.New(dispatch.Options{
		Store:             s.reg,
		Jobs:              s.jobs,
		Queue:             s.queue,
		Logger:            logger,
		AcceptTimeout:     cfg.AcceptTimeout,
		GracePeriod:       cfg.GracePeriod(),
		OrphanAfter:       gateway.StaleAfter(cfg.HeartbeatInterval),
		HeartbeatInterval: cfg.HeartbeatInterval,
		RobotChanged:      func(id string) { s.gateway.Changed(id) },
		Environment:       cfg.Environment,
		Secrets:           s.assigner,
	})
	s.queue.KeepHeldOut(s.dispatcher.Holds)
	resetKey, err := openResetKey(cfg)
	if err != nil {
		return nil, err
	}
	s.queueMetrics = workqueue.NewMetrics(s.reg, cfg.Environment, logger)
	s.queueTriggers = workqueue.NewTriggers(workqueue.TriggerOptions{
		Registry: s.reg,
		Logger:   logger,
		// The API's services make the jobs; they are made with the HTTP
		// server below, before the triggers start.
		Jobs: workqueue.SubmitFunc(func(ctx context.Context, req *casarev1.SubmitJobRequest, createdBy string) (*registry.Job, bool, error) {
			return s.services.Submit(ctx, req, createdBy)
		}),
	})
	s.sweeper = workqueue.NewSweeper(s.reg, 0, logger)
	s.gateway, err = gateway.New(ctx, gateway.Options{
		WorkItems: workqueue.NewCalls(workqueue.CallsOptions{
			Registry: s.reg, Logger: logger, Wake: s.queueTriggers.Wake, Metrics: s.queueMetrics,
		}),
		ResetKey:          resetKey,
		MaxEnrollConns:    cfg.MaxEnrollConns,
		Addr:              cfg.QUICAddr,
		Advertise:         cfg.QUICAdvertise,
		CA:                ca,
		Store:             s.reg,
		HeartbeatInterval: cfg.HeartbeatInterval,
		Lease:             gateway.Lease(cfg.HeartbeatInterval, cfg.GracePeriod(), gateway.StaleAfter(cfg.HeartbeatInterval)),
		CertValidity:      cfg.RobotCertValidity,
		Logger:            logger,
		Jobs:              s.dispatcher,
	})
	if err != nil {
		return nil, err
	}
	s.auth = auth.NewAuthenticator(s.reg, logger)
	s.jobChanges = s.queue.JobChanges()
	s.jobLogs = s.queue.JobLogs()
	s.jobStops = s.queue.JobStops()
	s.jobsWaiting = s.queue.JobsWaiting()
	s.events = event.New(event.Options{
		Store:          s.reg,
		Logger:         logger,
		AttemptTimeout: cfg.WebhookAttemptTimeout,
		MaxFailures:    cfg.WebhookMaxFailures,
		WaitingAfter:   cfg.EventJobWaitingAfter,
		// The API's services render events; they are made with the HTTP
		// server below, before any event can be sent.
		Render: func(ctx context.Context, e *registry.Event) (json.RawMessage, error) {
			return s.services.RenderEvent(ctx, e)
		},
	})
	s.metrics = s.newMetrics()
	s.pruned = newPrunedCounter()
	s.metrics.MustRegister(s.pruned)
	s.http = s.newHTTPServer()
	s.scheduler = schedule.New(schedule.Options{
		Registry:     s.reg,
		Jobs:         s.services,
		Logger:       logger,
		Tick:         cfg.SchedulerTick,
		MisfireGrace: cfg.MisfireGrace,
	})
	s.metrics.MustRegister(s.scheduler.Collectors()...)
	if s.http.TLSConfig, err = apiTLSConfig(cfg, ca, logger); err != nil {
		return nil, err
	}
	if s.listener, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
		return nil, fmt.Errorf("--http-addr: %w", err)
	}
	return s, nil
}

// openResetKey loads the gateway's stateless-reset key from the file
// configured, or from the data dir, creating it there on first start.
func openResetKey(cfg Config) (*quic.StatelessResetKey, error) {
	if cfg.QUICResetKeyFile != "" {
		key, err := gateway.LoadResetKey(cfg.QUICResetKeyFile, false)
		if err != nil {
			return nil, fmt.Errorf("--quic-reset-key-file: %w", err)
		}
		return key, nil
	}
	key, err := gateway.LoadResetKey(filepath.Join(cfg.DataDir, gateway.ResetKeyFile), true)
	if err != nil {
		return nil, fmt.Errorf("--data-dir: stateless-reset key: %w", err)
	}
	return key, nil
}

// openCA loads the CA from the files configured, or from the data dir,
// creating it there on first start.
func openCA(cfg Config, logger *slog.Logger) (*pki.CA, error) {
	if cfg.CACert != "" {
		ca, err := pki.Load(cfg.CACert, cfg.CAKey)
		if err != nil {
			return nil, fmt.Errorf("--ca-cert: %w", err)
		}
		logger.Info("CA loaded", "cert", cfg.CACert, "fingerprint", ca.FingerprintHex())
		return ca, nil
	}
	ca, created, err := pki.Init(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("CA: %w", err)
	}
	if created {
		logger.Info("created a CA for robot certificates", "dir", cfg.DataDir, "fingerprint", ca.FingerprintHex())
	}
	return ca, nil
}

// openRegistry opens the database named by the configuration and brings its
// schema up to date.
func openRegistry(ctx context.Context, cfg Config, logger *slog.Logger) (*registry.Registry, error) {
	reg, err := openDatabase(ctx, cfg, logger)
	if err != nil {
		return nil, err
	}
	if err := migrate(ctx, reg, logger); err != nil {
		reg.Close()
		return nil, err
	}
	return reg, nil
}

// openDatabase opens the database named by the configuration as it is.
func openDatabase(ctx context.Context, cfg Config, logger *slog.Logger) (*registry.Registry, error) {
	reg, err := registry.Open(ctx, registry.Options{DatabaseURL: cfg.DatabaseURL, DataDir: cfg.DataDir, Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	if cfg.DatabaseURL == "" {
		logger.Info("database: embedded SQLite (set --database-url for production)", "path", filepath.Join(cfg.DataDir, "casare.db"))
	} else {
		logger.Info("database: PostgreSQL", "url", redact(cfg.DatabaseURL))
	}
	return reg, nil
}

// migrate brings the schema up to date.
func migrate(ctx context.Context, reg *registry.Registry, logger *slog.Logger) error {
	applied, err := reg.Migrate(ctx)
	if err != nil {
		return fmt.Errorf("migrate database: %w", err)
	}
	if len(applied) > 0 {
		logger.Info("database migrated", "applied", applied)
	}
	return nil
}

// vaultMigration is the name part of the migration that makes the vault's
// tables.
const vaultMigration = "_vault"

// openRegistryAndVault opens the database and the vault, and migrates. A
// database whose schema already has the vault's tables is checked against
// the keys before any migration runs, so that a start with the wrong keys
// changes nothing at all.
func openRegistryAndVault(ctx context.Context, cfg Config, logger *slog.Logger) (*registry.Registry, *vault.Vault, error) {
	reg, err := openDatabase(ctx, cfg, logger)
	if err != nil {
		return nil, nil, err
	}
	var v *vault.Vault
	// A database never migrated has no migration table to read: every
	// migration is pending then, the vault's among them.
	pending, err := reg.PendingMigrations(ctx)
	if err == nil && !slices.ContainsFunc(pending, func(name string) bool { return strings.Contains(name, vaultMigration) }) {
		if v, err = OpenVault(ctx, cfg, reg, logger, true); err != nil {
			reg.Close()
			return nil, nil, err
		}
	}
	if err := migrate(ctx, reg, logger); err != nil {
		reg.Close()
		return nil, nil, err
	}
	if v == nil {
		if v, err = OpenVault(ctx, cfg, reg, logger, true); err != nil {
			reg.Close()
			return nil, nil, err
		}
	}
	return reg, v, nil
}

// bootstrapAdminToken makes sure a fresh control plane can be used: it
// stores the token of --admin-token-file, or with no active token it
// creates an admin token and writes it, readable only by this user, to the
// data dir.
func (s *Server) bootstrapAdminToken(ctx context.Context) error {
	if s.cfg.AdminTokenFile != "" {
		return s.adoptAdminToken(ctx)
	}
	n, err := s.reg.CountActiveTokens(ctx)
	if err != nil {
		return fmt.Errorf("count tokens: %w", err)
	}
	if n > 0 {
		return nil
	}
	name := "admin-" + time.Now().UTC().Format("20060102-150405")
	secret, err := createToken(ctx, s.reg, name, registry.RoleAdmin, 0, "casare-server")
	if err != nil {
		return err
	}
	path := filepath.Join(s.cfg.DataDir, AdminTokenFile)
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		return fmt.Errorf("write admin token: %w", err)
	}
	// WriteFile keeps the mode of a file that exists; the token must not
	// stay readable by others.
	if err := os.Chmod(path, 0o600); err != nil {
		return fmt.Errorf("write admin token: %w", err)
	}
	s.logger.Info("no API token existed: created an admin token", "name", name, "file", path)
	return nil
}

// createToken stores a new token and returns its secret. actor is recorded
// as its creator and in the audit log.
func createToken(ctx context.Context, reg *registry.Registry, name, role string, ttl time.Duration, actor string) (string, error) {
	secret := auth.NewToken()
	err := storeToken(ctx, reg, secret, name, role, ttl, actor)
	if errors.Is(err, registry.ErrAlreadyExists) {
		return "", fmt.Errorf("--name: a token named %q exists; revoke it first or pick another name", name)
	}
	if err != nil {
		return "", fmt.Errorf("create token: %w", err)
	}
	return secret, nil
}

// adoptAdminToken stores the admin token of --admin-token-file unless the
// database knows it. Replicas starting together may race to store it; the
// loser finds it stored. A token that was revoked stays revoked: the file
// must not undo an operator's revocation.
func (s *Server) adoptAdminToken(ctx context.Context) error {
	b, err := os.ReadFile(s.cfg.AdminTokenFile)
	if err != nil {
		return fmt.Errorf("--admin-token-file: %w", err)
	}
	secret := strings.TrimSpace(string(b))
	if !auth.WellFormed(secret) {
		return fmt.Errorf("--admin-token-file: %s does not hold a token: want %s and 32 random bytes in unpadded base64url, e.g. %s$(openssl rand 32 | basenc --base64url | tr -d =)",
			s.cfg.AdminTokenFile, auth.TokenPrefix, auth.TokenPrefix)
	}
	hash := auth.HashToken(secret)
	for attempt := 0; ; attempt++ {
		t, err := s.reg.TokenByHash(ctx, hash)
		switch {
		case err == nil && t.RevokedAt != nil:
			s.logger.Warn("the token of --admin-token-file was revoked; it stays revoked", "name", t.Name)
			return nil
		case err == nil:
			return nil
		case !errors.Is(err, registry.ErrNotFound):
			return fmt.Errorf("--admin-token-file: %w", err)
		}
		// Named after its hash, so that every replica stores the same row.
		name := "admin-file-" + hash[:12]
		err = storeToken(ctx, s.reg, secret, name, registry.RoleAdmin, 0, "casare-server")
		if err == nil {
			s.logger.Info("stored the admin token of --admin-token-file", "name", name)
			return nil
		}
		if attempt > 0 || !errors.Is(err, registry.ErrAlreadyExists) {
			return fmt.Errorf("--admin-token-file: %w", err)
		}
	}
}

// storeToken stores the token secret under name with role and the audit
// event of its creation.
func storeToken(ctx context.Context, reg *registry.Registry, secret, name, role string, ttl time.Duration, actor string) error {
	now := time.Now().UTC()
	token := &registry.APIToken{
		ID:        registry.NewID(),
		Name:      name,
		Role:      role,
		Hash:      auth.HashToken(secret),
		CreatedBy: actor,
		CreatedAt: now,
	}
	if ttl > 0 {
		expires := now.Add(ttl)
		token.ExpiresAt = &expires
	}
	audit := &registry.AuditEvent{
		Time:    now,
		Actor:   actor,
		Action:  "token create",
		Target:  "token/" + token.ID,
		Outcome: "ok",
		Details: fmt.Sprintf(`{"name":%q,"role":%q}`, name, role),
	}
	return reg.CreateToken(ctx, token, audit)
}

// Addr returns the address the HTTP port listens on.
func (s *Server) Addr() string {
	return s.listener.Addr().String()
}

// Run serves until ctx is done, then shuts down gracefully. It stops its
// parts in this order, each waited for before the next, so that whatever
// sends to a part stops before it:
//
//  1. HTTP: no call is taken any more, and those in flight finish within
//     the shutdown timeout; no submit, cancel or drain reaches the
//     dispatcher after. With it the scheduler and the queue triggers, the
//     other makers of jobs: they give up the lead for another replica and
//     start no more.
//  2. The gateway: the robots here are recorded offline and their
//     connections closed; the dispatcher hears each robot go (its grace
//     period starts) and no robot's message after.
//  3. The dispatcher's intake: the asynq worker, and the reconciler that
//     feeds it through Redis and asks the dispatcher what it holds.
//  4. The dispatcher, in the order dispatch.Dispatcher.Run documents:
//     once it returns, nothing of it writes.
//  5. The rest: the notice fan-outs the dispatcher and the API published
//     into and listened on, token refresh, retention and the event
//     deliveries (a try in flight is cut off and records nothing; its
//     lease runs out and it is sent again, so none is lost).
//
// Close then releases the queue and the registry.
func (s *Server) Run(ctx context.Context) error {
	base := context.WithoutCancel(ctx)
	gatewayCtx, stopGateway := context.WithCancel(base)
	intakeCtx, stopIntake := context.WithCancel(base)
	dispatchCtx, stopDispatcher := context.WithCancel(base)
	restCtx, stopRest := context.WithCancel(base)
	schedulerCtx, stopScheduler := context.WithCancel(base)
	var scheduling, robots, intake, dispatching, rest sync.WaitGroup
	rest.Go(func() { s.auth.Run(restCtx, 30*time.Second) })
	rest.Go(func() { s.runRetention(restCtx) })
	rest.Go(func() {
		s.events.Start(restCtx)
		<-restCtx.Done()
		s.events.Stop()
	})
	rest.Go(func() { s.jobChanges.Run(restCtx) })
	rest.Go(func() { s.jobLogs.Run(restCtx) })
	rest.Go(func() { s.jobStops.Run(restCtx) })
	stops, unsubscribe := s.jobStops.Subscribe()
	rest.Go(func() { s.jobsWaiting.Run(restCtx) })
	waiting, unsubscribeWaiting := s.jobsWaiting.Subscribe()
	defer unsubscribeWaiting()
	defer unsubscribe()
	dispatching.Go(func() { s.dispatcher.Run(dispatchCtx, stops, waiting) })
	intake.Go(func() {
		s.queue.RunReconciler(intakeCtx, s.pendingTasks, s.dispatcher.Holds, s.cfg.ReconcileInterval)
	})
	intake.Go(func() {
		check := dispatch.TaskCheckInterval
		if s.queue.Embedded() {
			check = dispatch.EmbeddedTaskCheckInterval
		}
		if err := s.dispatcher.RunWorker(intakeCtx, s.queue.RedisConnOpt(), check); err != nil {
			s.logger.Error("dispatch worker", "err", err)
		}
	})
	robots.Go(func() { s.gateway.Run(gatewayCtx) })
	scheduling.Go(func() { s.scheduler.Run(schedulerCtx) })
	scheduling.Go(func() {
		s.queueTriggers.Start(schedulerCtx)
		<-schedulerCtx.Done()
		s.queueTriggers.Stop()
	})
	rest.Go(func() {
		s.sweeper.Start(restCtx)
		<-restCtx.Done()
		s.sweeper.Stop()
	})
	s.logger.Info("robot gateway listening", "quic", s.gateway.Addr())

	serveErr := make(chan error, 1)
	scheme := "http"
	if s.http.TLSConfig != nil {
		// ServeTLS offers h2 and http/1.1 by ALPN on the same port.
		scheme = "https"
		go func() { serveErr <- s.http.ServeTLS(s.listener, "", "") }()
	} else {
		go func() { serveErr <- s.http.Serve(s.listener) }()
	}
	s.logger.Info("control plane listening", "addr", s.Addr(), "connect", scheme+"://"+s.Addr())

	var err error
	select {
	case err = <-serveErr:
		err = fmt.Errorf("serve http: %w", err)
	case <-ctx.Done():
		s.logger.Info("shutting down", "timeout", s.cfg.ShutdownTimeout)
		shutdownCtx, cancel := context.WithTimeout(base, s.cfg.ShutdownTimeout)
		if serr := s.http.Shutdown(shutdownCtx); serr != nil {
			s.logger.Warn("calls still running at the shutdown timeout were cut off", "err", serr)
		}
		cancel()
	}
	for _, part := range []struct {
		stop context.CancelFunc
		wg   *sync.WaitGroup
	}{{stopScheduler, &scheduling}, {stopGateway, &robots}, {stopIntake, &intake}, {stopDispatcher, &dispatching}, {stopRest, &rest}} {
		part.stop()
		part.wg.Wait()
	}
	return err
}

// pendingTasks feeds the reconciler from the database, the truth about
// which jobs wait for dispatch.
func (s *Server) pendingTasks(ctx context.Context, afterID string, limit int) ([]queue.Task, error) {
	jobs, err := s.reg.PendingJobs(ctx, afterID, limit)
	if err != nil {
		return nil, err
	}
	tasks := make([]queue.Task, len(jobs))
	for i, j := range jobs {
		tasks[i] = queue.Task{JobID: j.ID, Attempt: j.Attempt, Priority: j.Priority}
	}
	return tasks, nil
}

// ready reports nil when the control plane can serve: the database and
// Redis answer and the schema is current.
func (s *Server) ready(ctx context.Context) error {
	if err := s.reg.Ping(ctx); err != nil {
		return fmt.Errorf("database: %w", err)
	}
	pending, err := s.reg.PendingMigrations(ctx)
	if err != nil {
		return fmt.Errorf("database: %w", err)
	}
	if len(pending) > 0 {
		return fmt.Errorf("database: %d migrations not applied", len(pending))
	}
	if err := s.queue.Ping(ctx); err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	return nil
}

// Close releases the database and the queue.
func (s *Server) Close() error {
	var errs []error
	if s.listener != nil {
		s.listener.Close()
	}
	if s.gateway != nil {
		s.gateway.Close()
	}
	if s.queue != nil {
		errs = append(errs, s.queue.Close())
	}
	if s.reg != nil {
		errs = append(errs, s.reg.Close())
	}
	return errors.Join(errs...)
}

// Migrate applies the database migrations and returns their names, for
// `casare-server migrate`.
func Migrate(ctx context.Context, cfg Config, logger *slog.Logger) ([]string, error) {
	reg, err := registry.Open(ctx, registry.Options{DatabaseURL: cfg.DatabaseURL, DataDir: cfg.DataDir, Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	defer reg.Close()
	return reg.Migrate(ctx)
}

// CreateToken creates an API token directly in the database and returns its
// secret, for `casare-server token create` on the control plane's host.
func CreateToken(ctx context.Context, cfg Config, logger *slog.Logger, name, role string, ttl time.Duration) (string, error) {
	role, err := auth.ParseRole(role)
	if err != nil {
		return "", fmt.Errorf("--role: %w", err)
	}
	if name == "" {
		return "", errors.New("--name: required")
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return "", fmt.Errorf("create data dir: %w", err)
	}
	reg, err := openRegistry(ctx, cfg, logger)
	if err != nil {
		return "", err
	}
	defer reg.Close()
	return createToken(ctx, reg, name, role, ttl, "casare-server token create")
}
