// Command casare-server is the CasareRPA control plane. With nothing
// configured it runs on SQLite and an embedded Redis in ./casare-data.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/casarerpa/casare/cmd/internal/buildinfo"
	"github.com/casarerpa/casare/server"
	"github.com/casarerpa/casare/server/pki"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCommand().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "casare-server:", err)
		os.Exit(1)
	}
}

func newRootCommand() *cobra.Command {
	cfg, envErr := server.ConfigFromEnv()
	build := buildinfo.Get()
	cfg.Build = server.Build{Version: build.Version, Revision: build.Revision}
	root := &cobra.Command{
		Use:   "casare-server",
		Short: "The CasareRPA control plane",
		Long: "casare-server runs the CasareRPA control plane: the API on --http-addr, the job\n" +
			"registry (PostgreSQL, or SQLite in --data-dir) and the dispatch queue (Redis, or an\n" +
			"embedded one). Every flag can also be set by its CASARE_* environment variable.",
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		PersistentPreRunE: func(*cobra.Command, []string) error {
			if envErr != nil {
				return envErr
			}
			return cfg.Check()
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger := cfg.NewLogger()
			srv, err := server.New(cmd.Context(), cfg, logger)
			if err != nil {
				return err
			}
			defer srv.Close()
			return srv.Run(cmd.Context())
		},
	}
	flags := root.PersistentFlags()
	flags.StringVar(&cfg.HTTPAddr, "http-addr", cfg.HTTPAddr, "address for the API, /metrics and /health/* (CASARE_HTTP_ADDR)")
	flags.StringVar(&cfg.QUICAddr, "quic-addr", cfg.QUICAddr, "UDP address of the gateway robots dial (CASARE_QUIC_ADDR)")
	flags.StringVar(&cfg.QUICAdvertise, "quic-advertise", cfg.QUICAdvertise, "address robots are told to dial, if not --quic-addr (CASARE_QUIC_ADVERTISE)")
	flags.StringVar(&cfg.QUICResetKeyFile, "quic-reset-key-file", cfg.QUICResetKeyFile, "key of the gateway's stateless resets (64 hex digits), shared by replicas behind one address; default quic-reset.key in the data dir, created on first start (CASARE_QUIC_RESET_KEY_FILE)")
	flags.IntVar(&cfg.MaxEnrollConns, "max-enroll-conns", cfg.MaxEnrollConns, "enrolment connections open at once; more are refused (CASARE_MAX_ENROLL_CONNS)")
	flags.DurationVar(&cfg.HeartbeatInterval, "heartbeat-interval", cfg.HeartbeatInterval, "how often robots send heartbeats; 3 missed make a robot offline (CASARE_HEARTBEAT_INTERVAL)")
	flags.StringVar(&cfg.CACert, "ca-cert", cfg.CACert, "CA certificate (PEM); default the CA in the data dir (CASARE_CA_CERT)")
	flags.StringVar(&cfg.CAKey, "ca-key", cfg.CAKey, "CA private key (PEM), with --ca-cert (CASARE_CA_KEY)")
	flags.DurationVar(&cfg.RobotCertValidity, "robot-cert-validity", cfg.RobotCertValidity, "how long robot certificates last (CASARE_ROBOT_CERT_VALIDITY)")
	flags.StringVar(&cfg.AdminTokenFile, "admin-token-file", cfg.AdminTokenFile, "file holding an admin API token to accept (csr_…), stored on start; no admin.token is written (CASARE_ADMIN_TOKEN_FILE)")
	flags.StringVar(&cfg.SecretKeyFile, "secret-key-file", cfg.SecretKeyFile, "key-encryption keys of the vault that seals credentials, secret assets and secret job inputs: base64 32-byte keys, one a line, the one to seal with first; the keys may also come as text in CASARE_SECRET_KEY; default secret.key in the data dir, created on first start (CASARE_SECRET_KEY_FILE)")
	flags.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "directory for the SQLite database and the admin token (CASARE_DATA_DIR)")
	flags.StringVar(&cfg.DatabaseURL, "database-url", cfg.DatabaseURL, "PostgreSQL URL postgres://…; empty uses SQLite in the data dir (CASARE_DATABASE_URL)")
	flags.StringVar(&cfg.RedisURL, "redis-url", cfg.RedisURL, "Redis URL redis://…; empty runs an embedded Redis (CASARE_REDIS_URL)")
	flags.StringVar(&cfg.TLSCert, "tls-cert", cfg.TLSCert, "serve the API over HTTPS with this certificate (PEM, chain first), read again when it changes (CASARE_TLS_CERT)")
	flags.StringVar(&cfg.TLSKey, "tls-key", cfg.TLSKey, "private key (PEM) of --tls-cert (CASARE_TLS_KEY)")
	flags.BoolVar(&cfg.TLSSelfSigned, "tls-self-signed", cfg.TLSSelfSigned, "serve the API over HTTPS with a certificate from the control plane's CA, for localhost, 127.0.0.1, the host of --http-addr and --tls-san; clients trust ca.crt of the data dir (CASARE_TLS_SELF_SIGNED)")
	flags.StringSliceVar(&cfg.TLSSANs, "tls-san", cfg.TLSSANs, "more host names or addresses for the --tls-self-signed certificate, comma separated (CASARE_TLS_SAN)")
	flags.StringSliceVar(&cfg.CORSOrigins, "cors-origins", cfg.CORSOrigins, "browser origins allowed to call the API, comma separated (CASARE_CORS_ORIGINS)")
	flags.StringVar(&cfg.Environment, "environment", cfg.Environment, "environment label on metrics (CASARE_ENVIRONMENT)")
	flags.StringSliceVar(&cfg.RobotPools, "robot-pool", cfg.RobotPools, "a pool of robots alike whose runnable pending jobs casare_pool_pending_jobs{pool} counts, for an autoscaler: "+server.RobotPoolSyntax+
		", e.g. cloud=capabilities=browser;labels=pool=cloud+site=eu (what every robot of the pool has; lists joined by +); repeatable or comma separated (CASARE_ROBOT_POOLS)")
	flags.DurationVar(&cfg.ReconcileInterval, "reconcile-interval", cfg.ReconcileInterval, "how often pending jobs missing from Redis are queued again (CASARE_RECONCILE_INTERVAL)")
	flags.IntVar(&cfg.MaxRequestBytes, "max-request-bytes", cfg.MaxRequestBytes, "largest request message accepted (CASARE_MAX_REQUEST_BYTES)")
	flags.Float64Var(&cfg.TriggerRate, "trigger-rate", cfg.TriggerRate, "requests a second a webhook trigger without a rate of its own accepts on each replica (CASARE_TRIGGER_RATE)")
	flags.Int64Var(&cfg.TriggerMaxBodyBytes, "trigger-max-body-bytes", cfg.TriggerMaxBodyBytes, "largest body of a request to a webhook trigger, POST /hooks/ID; 0 means 1 MiB or --max-request-bytes if less (CASARE_TRIGGER_MAX_BODY_BYTES)")
	flags.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", cfg.ShutdownTimeout, "how long calls in flight may run after SIGTERM (CASARE_SHUTDOWN_TIMEOUT)")
	flags.Int32Var(&cfg.DefaultMaxAttempts, "default-max-attempts", cfg.DefaultMaxAttempts, "attempts for jobs submitted without max_attempts (CASARE_DEFAULT_MAX_ATTEMPTS)")
	flags.DurationVar(&cfg.AcceptTimeout, "accept-timeout", cfg.AcceptTimeout, "how long a robot has to accept a job before it goes to another (CASARE_ACCEPT_TIMEOUT)")
	flags.DurationVar(&cfg.RobotGracePeriod, "robot-grace-period", cfg.RobotGracePeriod, "how long a robot whose connection closed keeps its jobs; 0 means 3 heartbeats (CASARE_ROBOT_GRACE_PERIOD)")
	flags.Var(&cfg.RetainJobs, "retain-jobs", "remove finished jobs with their events, logs and artifacts this long after they finished, e.g. 30d; 0 keeps them (CASARE_RETAIN_JOBS)")
	flags.Var(&cfg.RetainLogs, "retain-logs", "remove finished jobs' log lines this long after they finished, e.g. 7d; 0 keeps them (CASARE_RETAIN_LOGS)")
	flags.Var(&cfg.RetainArtifacts, "retain-artifacts", "remove finished jobs' artifacts this long after they finished, e.g. 14d; 0 keeps them (CASARE_RETAIN_ARTIFACTS)")
	flags.DurationVar(&cfg.SchedulerTick, "scheduler-tick", cfg.SchedulerTick, "how often a replica tries to take over the scheduler, and the longest the scheduler waits between looks at due schedules (CASARE_SCHEDULER_TICK)")
	flags.DurationVar(&cfg.MisfireGrace, "misfire-grace", cfg.MisfireGrace, "how late a schedule's fire may be and still run as on time; older ones follow the schedule's misfire policy (CASARE_MISFIRE_GRACE)")
	flags.DurationVar(&cfg.PruneInterval, "prune-interval", cfg.PruneInterval, "how often what the --retain-* flags let go is removed (CASARE_PRUNE_INTERVAL)")
	flags.DurationVar(&cfg.EventJobWaitingAfter, "event-job-waiting-after", cfg.EventJobWaitingAfter, "send a job.waiting event for a job pending this long; 0 sends none (CASARE_EVENT_JOB_WAITING_AFTER)")
	flags.DurationVar(&cfg.WebhookAttemptTimeout, "webhook-attempt-timeout", cfg.WebhookAttemptTimeout, "how long one try of an event delivery may take (CASARE_WEBHOOK_ATTEMPT_TIMEOUT)")
	flags.Int32Var(&cfg.WebhookMaxFailures, "webhook-max-failures", cfg.WebhookMaxFailures, "disable a webhook subscription after this many failed deliveries in a row (CASARE_WEBHOOK_MAX_FAILURES)")
	flags.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "debug, info, warn or error (CASARE_LOG_LEVEL)")
	flags.StringVar(&cfg.LogFormat, "log-format", cfg.LogFormat, "text or json (CASARE_LOG_FORMAT)")

	root.AddCommand(&cobra.Command{
		Use:   "migrate",
		Short: "Apply database migrations and exit",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			applied, err := server.Migrate(cmd.Context(), cfg, cfg.NewLogger())
			if err != nil {
				return err
			}
			if len(applied) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "database is up to date")
				return nil
			}
			for _, name := range applied {
				fmt.Fprintln(cmd.OutOrStdout(), "applied", name)
			}
			return nil
		},
	})
	root.AddCommand(newTokenCommand(&cfg), newCACommand(&cfg), newHealthCommand(&cfg), newSecretsCommand(&cfg))
	buildinfo.AddTo(root)
	return root
}

func newCACommand(cfg *server.Config) *cobra.Command {
	ca := &cobra.Command{Use: "ca", Short: "Manage the certificate authority that signs robot certificates"}
	ca.AddCommand(&cobra.Command{
		Use:   "init",
		Short: "Create the CA in the data dir (or show the one there) and print its fingerprint",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			authority, created, err := pki.Init(cfg.DataDir)
			if err != nil {
				return err
			}
			state := "existing CA"
			if created {
				state = "created CA"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s in %s\nfingerprint (SHA-256): %s\n", state, cfg.DataDir, authority.FingerprintHex())
			return nil
		},
	})
	return ca
}

func newTokenCommand(cfg *server.Config) *cobra.Command {
	token := &cobra.Command{Use: "token", Short: "Manage API tokens on the control plane's host"}
	var name, role string
	var ttl time.Duration
	create := &cobra.Command{
		Use:   "create --role admin|operator|viewer --name NAME",
		Short: "Create an API token and print it (it is shown only once)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			secret, err := server.CreateToken(cmd.Context(), *cfg, cfg.NewLogger(), name, role, ttl)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), secret)
			return nil
		},
	}
	create.Flags().StringVar(&name, "name", "", "name of the token (required)")
	create.Flags().StringVar(&role, "role", "", "admin, operator or viewer (required)")
	create.Flags().DurationVar(&ttl, "ttl", 0, "lifetime; 0 means it does not expire")
	_ = create.MarkFlagRequired("name")
	_ = create.MarkFlagRequired("role")
	token.AddCommand(create)
	return token
}

func newSecretsCommand(cfg *server.Config) *cobra.Command {
	secrets := &cobra.Command{Use: "secrets", Short: "Manage the keys of the vault that seals credentials, secret assets and secret inputs"}
	secrets.AddCommand(&cobra.Command{
		Use:   "rotate",
		Short: "Re-seal every data key under the first key of the key file and every sealed value under a new data key",
		Long: "rotate re-seals every data key under the first key of --secret-key-file (or\n" +
			"CASARE_SECRET_KEY), makes a new data key and re-seals every credential, secret asset\n" +
			"and secret job input under it. Running servers keep working: list the new key first\n" +
			"and the old one after it, restart the servers, run rotate, then remove the old key\n" +
			"and restart them again.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			res, err := server.RotateSecrets(cmd.Context(), *cfg, cfg.NewLogger())
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "data keys re-sealed under %s: %d\nnew data key: %s\nvalues re-sealed: %d\n", res.KEK, res.DataKeys, res.DataKey, res.Values)
			return nil
		},
	})
	return secrets
}
