// Package server assembles the control plane: registry, queue, API, and the
// HTTP port that serves Connect, gRPC, gRPC-Web, health and metrics.
package server

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"reflect"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"

	"github.com/casarerpa/casare/server/registry"
)

// Config is the control plane's configuration. Every field has an
// environment variable; cmd/casare-server adds a flag for each.
type Config struct {
	// HTTPAddr serves Connect, gRPC, gRPC-Web, /metrics and /health/*.
	HTTPAddr string `env:"CASARE_HTTP_ADDR" envDefault:"127.0.0.1:8080"`
	// QUICAddr is the UDP address of the gateway robots dial.
	QUICAddr string `env:"CASARE_QUIC_ADDR" envDefault:"127.0.0.1:8443"`
	// QUICAdvertise is the address enrollment tokens tell robots to dial,
	// when it differs from QUICAddr (behind NAT, a load balancer, 0.0.0.0).
	QUICAdvertise string `env:"CASARE_QUIC_ADVERTISE"`
	// QUICResetKeyFile holds the key of the gateway's stateless resets, by
	// which robots learn at once that a restarted control plane lost
	// their connection; replicas behind one address share one. Empty
	// means quic-reset.key in DataDir, created on first start.
	QUICResetKeyFile string `env:"CASARE_QUIC_RESET_KEY_FILE"`
	// MaxEnrollConns bounds the enrolment connections open at once.
	MaxEnrollConns int `env:"CASARE_MAX_ENROLL_CONNS" envDefault:"64"`
	// HeartbeatInterval is how often robots send heartbeats; three missed
	// make a robot offline.
	HeartbeatInterval time.Duration `env:"CASARE_HEARTBEAT_INTERVAL" envDefault:"30s"`
	// CACert and CAKey load the CA from files; empty means the CA in
	// DataDir, created on first start.
	CACert string `env:"CASARE_CA_CERT"`
	CAKey  string `env:"CASARE_CA_KEY"`
	// RobotCertValidity is how long the robot certificates it signs last.
	RobotCertValidity time.Duration `env:"CASARE_ROBOT_CERT_VALIDITY" envDefault:"8760h"`
	// AdminTokenFile holds an admin API token the operator chose (a
	// Kubernetes Secret, a systemd credential): it is stored on start if
	// the database does not know it, and no admin.token is written. Empty
	// means the first start writes a new one to DataDir.
	AdminTokenFile string `env:"CASARE_ADMIN_TOKEN_FILE"`
	// SecretKeyFile holds the key-encryption keys of the vault that seals
	// credentials, secret assets and secret job inputs: base64 keys, one
	// a line, the one to seal with first (see README, "Assets and
	// credentials", for rotation). Empty means SecretKey, or else
	// secret.key in DataDir, created on first start.
	SecretKeyFile string `env:"CASARE_SECRET_KEY_FILE"`
	// SecretKey holds the same keys as text, for platforms that pass
	// secrets in the environment; it has no flag, which would show it in
	// the process list.
	SecretKey string `env:"CASARE_SECRET_KEY"`
	// DataDir holds the SQLite database, the admin token and, later, the CA.
	DataDir string `env:"CASARE_DATA_DIR" envDefault:"./casare-data"`
	// DatabaseURL is postgres://…; empty means SQLite in DataDir.
	DatabaseURL string `env:"CASARE_DATABASE_URL"`
	// RedisURL is redis://…; empty means an embedded Redis in-process.
	RedisURL string `env:"CASARE_REDIS_URL"`
	// TLSCert and TLSKey are PEM files of the API port's certificate
	// (its chain first) and key: the port serves HTTPS, HTTP/2 and
	// HTTP/1.1, and reads the files again when they change.
	TLSCert string `env:"CASARE_TLS_CERT"`
	TLSKey  string `env:"CASARE_TLS_KEY"`
	// TLSSelfSigned serves HTTPS with a certificate the control plane's
	// CA issues on start, for localhost, loopback, the host of HTTPAddr
	// and TLSSANs; clients trust it with the CA file (ca.crt).
	TLSSelfSigned bool `env:"CASARE_TLS_SELF_SIGNED"`
	// TLSSANs are more names for the self-signed certificate.
	TLSSANs []string `env:"CASARE_TLS_SAN" envSeparator:","`
	// CORSOrigins are the browser origins allowed to call the API.
	CORSOrigins []string `env:"CASARE_CORS_ORIGINS" envSeparator:","`
	// Environment labels the metrics (production, staging, …).
	Environment string `env:"CASARE_ENVIRONMENT" envDefault:"default"`
	// RobotPools are the pools of robots (NAME=SELECTOR, see
	// ParseRobotPool) the pool metrics count the jobs of, for autoscalers.
	RobotPools []string `env:"CASARE_ROBOT_POOLS" envSeparator:","`
	// ReconcileInterval is how often pending jobs that Redis lost are
	// queued again.
	ReconcileInterval time.Duration `env:"CASARE_RECONCILE_INTERVAL" envDefault:"30s"`
	// MaxRequestBytes limits one request message.
	MaxRequestBytes int `env:"CASARE_MAX_REQUEST_BYTES" envDefault:"4194304"`
	// TriggerRate is the requests a second a webhook trigger without a
	// rate of its own accepts on each replica.
	TriggerRate float64 `env:"CASARE_TRIGGER_RATE" envDefault:"10"`
	// TriggerMaxBodyBytes limits the body of a request to a webhook
	// trigger; 0 means 1 MiB, or --max-request-bytes when that is less.
	TriggerMaxBodyBytes int64 `env:"CASARE_TRIGGER_MAX_BODY_BYTES" envDefault:"0"`
	// ShutdownTimeout bounds the graceful shutdown on SIGTERM.
	ShutdownTimeout time.Duration `env:"CASARE_SHUTDOWN_TIMEOUT" envDefault:"20s"`
	// DefaultMaxAttempts applies to jobs submitted without max_attempts.
	DefaultMaxAttempts int32 `env:"CASARE_DEFAULT_MAX_ATTEMPTS" envDefault:"3"`
	// AcceptTimeout is how long a robot has to accept a job before the job
	// goes to another robot.
	AcceptTimeout time.Duration `env:"CASARE_ACCEPT_TIMEOUT" envDefault:"10s"`
	// RobotGracePeriod is how long a robot whose connection closed keeps
	// its running jobs, waiting for it to reconnect; zero means three
	// heartbeat intervals.
	RobotGracePeriod time.Duration `env:"CASARE_ROBOT_GRACE_PERIOD"`
	// RetainJobs removes finished jobs, with their events, log lines and
	// artifacts, this long after they finished; zero keeps them.
	RetainJobs Age `env:"CASARE_RETAIN_JOBS"`
	// RetainLogs removes the log lines of finished jobs this long after
	// they finished, keeping the jobs; zero keeps them.
	RetainLogs Age `env:"CASARE_RETAIN_LOGS"`
	// RetainArtifacts removes the artifacts of finished jobs this long
	// after they finished, keeping the jobs; zero keeps them.
	RetainArtifacts Age `env:"CASARE_RETAIN_ARTIFACTS"`
	// SchedulerTick is how often a replica that does not run the scheduler
	// tries to take it over, and the longest the one that runs it waits
	// between looks at the due schedules.
	SchedulerTick time.Duration `env:"CASARE_SCHEDULER_TICK" envDefault:"1s"`
	// MisfireGrace is how late a schedule's fire may be and still run as
	// on time; older fires follow the schedule's misfire policy.
	MisfireGrace time.Duration `env:"CASARE_MISFIRE_GRACE" envDefault:"1m"`
	// PruneInterval is how often what retention lets go is removed.
	PruneInterval time.Duration `env:"CASARE_PRUNE_INTERVAL" envDefault:"10m"`
	// EventJobWaitingAfter is how long a job waits pending before a
	// job.waiting event goes to the subscriptions that want it; 0 sends
	// none.
	EventJobWaitingAfter time.Duration `env:"CASARE_EVENT_JOB_WAITING_AFTER" envDefault:"10m"`
	// WebhookAttemptTimeout bounds one try of an event delivery.
	WebhookAttemptTimeout time.Duration `env:"CASARE_WEBHOOK_ATTEMPT_TIMEOUT" envDefault:"10s"`
	// WebhookMaxFailures disables a subscription after that many failed
	// tries in a row.
	WebhookMaxFailures int32 `env:"CASARE_WEBHOOK_MAX_FAILURES" envDefault:"50"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `env:"CASARE_LOG_LEVEL" envDefault:"info"`
	// LogFormat is text or json.
	LogFormat string `env:"CASARE_LOG_FORMAT" envDefault:"text"`
	// Build is the binary's version, for casare_build_info and the
	// version RPC; cmd/casare-server sets it, not the environment.
	Build Build
}

// Build says which build of the control plane runs.
type Build struct {
	// Version is from git describe; empty reads as "dev".
	Version string
	// Revision is the VCS revision; empty reads as "unknown".
	Revision string
}

func (b Build) version() string {
	if b.Version == "" {
		return "dev"
	}
	return b.Version
}

func (b Build) revision() string {
	if b.Revision == "" {
		return "unknown"
	}
	return b.Revision
}

// ConfigFromEnv returns the configuration from the environment and defaults.
func ConfigFromEnv() (Config, error) {
	var cfg Config
	if err := env.Parse(&cfg); err != nil {
		return Config{}, fmt.Errorf("read configuration from the environment: %w", envErrors(err))
	}
	return cfg, nil
}

// envErrors names the environment variable of each value that did not
// parse, where the env package names the Go field.
func envErrors(err error) error {
	var agg env.AggregateError
	if !errors.As(err, &agg) {
		return err
	}
	t := reflect.TypeFor[Config]()
	var out []error
	for _, e := range agg.Errors {
		var pe env.ParseError
		if errors.As(e, &pe) {
			if f, ok := t.FieldByName(pe.Name); ok {
				name, _, _ := strings.Cut(f.Tag.Get("env"), ",")
				out = append(out, fmt.Errorf("%s: %w", name, pe.Err))
				continue
			}
		}
		out = append(out, e)
	}
	return errors.Join(out...)
}

// Check reports the first setting that cannot work, naming it.
func (c Config) Check() error {
	if c.DataDir == "" {
		return fmt.Errorf("--data-dir: must not be empty")
	}
	if c.SecretKeyFile != "" && c.SecretKey != "" {
		return fmt.Errorf("--secret-key-file and CASARE_SECRET_KEY: set one, not both")
	}
	if c.DatabaseURL != "" && !strings.HasPrefix(c.DatabaseURL, "postgres://") && !strings.HasPrefix(c.DatabaseURL, "postgresql://") {
		return fmt.Errorf("--database-url: want postgres://…, got %q", redact(c.DatabaseURL))
	}
	if c.RedisURL != "" && !strings.HasPrefix(c.RedisURL, "redis://") && !strings.HasPrefix(c.RedisURL, "rediss://") {
		return fmt.Errorf("--redis-url: want redis://… or rediss://…, got %q", redact(c.RedisURL))
	}
	if c.HeartbeatInterval < 10*time.Millisecond {
		return fmt.Errorf("--heartbeat-interval: at least 10ms, got %s", c.HeartbeatInterval)
	}
	if c.RobotCertValidity < time.Hour {
		return fmt.Errorf("--robot-cert-validity: at least 1h, got %s", c.RobotCertValidity)
	}
	if (c.CACert == "") != (c.CAKey == "") {
		return fmt.Errorf("--ca-cert and --ca-key: give both or neither")
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return fmt.Errorf("--tls-cert and --tls-key: give both or neither")
	}
	if c.TLSSelfSigned && c.TLSCert != "" {
		return fmt.Errorf("--tls-self-signed: give it or --tls-cert, not both")
	}
	if len(c.TLSSANs) > 0 && !c.TLSSelfSigned {
		return fmt.Errorf("--tls-san: names go into the certificate of --tls-self-signed, which is not set")
	}
	for _, san := range c.TLSSANs {
		if san == "" || len(san) > 253 || strings.ContainsFunc(san, func(r rune) bool { return r <= ' ' || r == 0x7f || r == ',' || r == '/' }) {
			return fmt.Errorf("--tls-san: %q is not a host name or IP address", san)
		}
	}
	if c.MaxEnrollConns < 1 || c.MaxEnrollConns > 100000 {
		return fmt.Errorf("--max-enroll-conns: 1 to 100000, got %d", c.MaxEnrollConns)
	}
	if c.MaxRequestBytes < 1024 {
		return fmt.Errorf("--max-request-bytes: at least 1024, got %d", c.MaxRequestBytes)
	}
	if c.TriggerRate <= 0 || c.TriggerRate > 10000 {
		return fmt.Errorf("--trigger-rate: between 0 and 10000 requests a second, got %g", c.TriggerRate)
	}
	if c.TriggerMaxBodyBytes != 0 && (c.TriggerMaxBodyBytes < 1024 || c.TriggerMaxBodyBytes > int64(c.MaxRequestBytes)*2) {
		return fmt.Errorf("--trigger-max-body-bytes: at least 1024 and at most twice --max-request-bytes, got %d", c.TriggerMaxBodyBytes)
	}
	if c.AcceptTimeout <= 0 {
		return fmt.Errorf("--accept-timeout: must be positive, got %s", c.AcceptTimeout)
	}
	if c.RobotGracePeriod < 0 {
		return fmt.Errorf("--robot-grace-period: must not be negative, got %s", c.RobotGracePeriod)
	}
	if c.ReconcileInterval <= 0 {
		return fmt.Errorf("--reconcile-interval: must be positive, got %s", c.ReconcileInterval)
	}
	if c.DefaultMaxAttempts < 1 || c.DefaultMaxAttempts > 100 {
		return fmt.Errorf("--default-max-attempts: 1 to 100, got %d", c.DefaultMaxAttempts)
	}
	for _, o := range c.CORSOrigins {
		if o != "*" && !strings.HasPrefix(o, "http://") && !strings.HasPrefix(o, "https://") {
			return fmt.Errorf("--cors-origins: %q is not an origin like https://app.example.com", o)
		}
	}
	if _, err := ParseRobotPools(c.RobotPools); err != nil {
		return err
	}
	if c.SchedulerTick < 10*time.Millisecond || c.SchedulerTick > time.Minute {
		return fmt.Errorf("--scheduler-tick: between 10ms and 1m, got %s", c.SchedulerTick)
	}
	if c.MisfireGrace < time.Second {
		return fmt.Errorf("--misfire-grace: at least 1s, got %s", c.MisfireGrace)
	}
	if c.PruneInterval < time.Second {
		return fmt.Errorf("--prune-interval: at least 1s, got %s", c.PruneInterval)
	}
	if c.EventJobWaitingAfter < 0 {
		return fmt.Errorf("--event-job-waiting-after: must not be negative, got %s", c.EventJobWaitingAfter)
	}
	if c.WebhookAttemptTimeout < 100*time.Millisecond || c.WebhookAttemptTimeout > 5*time.Minute {
		return fmt.Errorf("--webhook-attempt-timeout: 100ms to 5m, got %s", c.WebhookAttemptTimeout)
	}
	if c.WebhookMaxFailures < 1 || c.WebhookMaxFailures > 100000 {
		return fmt.Errorf("--webhook-max-failures: 1 to 100000, got %d", c.WebhookMaxFailures)
	}
	if _, err := c.logLevel(); err != nil {
		return err
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return fmt.Errorf("--log-format: text or json, got %q", c.LogFormat)
	}
	return nil
}

func (c Config) logLevel() (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return 0, fmt.Errorf("--log-level: debug, info, warn or error, got %q", c.LogLevel)
	}
	return l, nil
}

// NewLogger returns the logger the configuration asks for, writing to stderr.
func (c Config) NewLogger() *slog.Logger {
	level, _ := c.logLevel()
	opts := &slog.HandlerOptions{Level: level}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

// redact hides the password of a URL so it can be logged.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// Retention is what the --retain-* flags keep.
func (c Config) Retention() registry.Retention {
	return registry.Retention{Jobs: time.Duration(c.RetainJobs), Logs: time.Duration(c.RetainLogs), Artifacts: time.Duration(c.RetainArtifacts)}
}

// GracePeriod is how long a robot whose connection closed keeps its jobs.
func (c Config) GracePeriod() time.Duration {
	if c.RobotGracePeriod > 0 {
		return c.RobotGracePeriod
	}
	return 3 * c.HeartbeatInterval
}

// TriggerBodyLimit is the largest body a webhook trigger reads: the
// operator's --trigger-max-body-bytes, else 1 MiB or the API's own
// request limit when that is less, so a server whose operator lowered
// --max-request-bytes need not lower this too.
func (c Config) TriggerBodyLimit() int64 {
	if c.TriggerMaxBodyBytes > 0 {
		return c.TriggerMaxBodyBytes
	}
	return min(1<<20, int64(c.MaxRequestBytes))
}
