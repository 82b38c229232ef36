// Package cli is casarectl's command tree. It takes its input and output as
// an Env, so tests run it in-process and read what it prints.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	dashboard "github.com/casarerpa/casare/tui/dash"
)

// Exit codes fixed by the design: scripts rely on them.
const (
	ExitOK     = 0
	ExitFailed = 1 // the job failed or was cancelled
	ExitError  = 2 // usage, connection or API error
)

// Env is the world casarectl runs in.
type Env struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Getenv reads the environment; nil means os.Getenv.
	Getenv func(string) string
	// HTTPClient talks to the server; nil means a client with sane timeouts.
	HTTPClient *http.Client
	// Build is casarectl's own version, for --version and version.
	Build Build
}

// exitError carries the exit code a command wants.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// usageError marks a mistake in how casarectl was called.
func usageError(format string, args ...any) error {
	return &exitError{code: ExitError, err: fmt.Errorf(format, args...)}
}

// Run runs casarectl with args and returns its exit code.
func Run(ctx context.Context, args []string, env Env) int {
	if env.Getenv == nil {
		env.Getenv = os.Getenv
	}
	if env.Stdin == nil {
		env.Stdin = os.Stdin
	}
	if env.HTTPClient == nil {
		env.HTTPClient = &http.Client{Transport: http.DefaultTransport}
	}
	app := &app{env: env}
	root := app.rootCommand()
	root.SetArgs(args)
	root.SetIn(env.Stdin)
	root.SetOut(env.Stdout)
	root.SetErr(env.Stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	var exit *exitError
	if errors.As(err, &exit) {
		if exit.err != nil && exit.err.Error() != "" {
			fmt.Fprintln(env.Stderr, "casarectl:", exit.err)
		}
		return exit.code
	}
	// Errors cobra reports itself (unknown command, bad flag) are usage.
	fmt.Fprintln(env.Stderr, "casarectl:", err)
	return ExitError
}

// app holds what the commands share.
type app struct {
	env Env

	serverFlag   string
	tokenFlag    string
	outputFlag   string
	contextFlag  string
	configFlag   string
	caFileFlag   string
	insecureFlag bool

	conn connection
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "casarectl",
		Short: "Operate a CasareRPA control plane",
		Long: "casarectl submits and follows jobs, manages workflows, robots and tokens.\n\n" +
			"Exit codes: 0 success (with --wait: the job succeeded), 1 the job failed or\n" +
			"was cancelled, 2 usage, connection or API error.",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			switch a.outputFlag {
			case "table", "json", "yaml":
			default:
				return usageError("-o: want table, json or yaml, got %q", a.outputFlag)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			// On a terminal the operator wants the dashboard; in a pipe or
			// a script, help is more use than a screen nobody sees.
			if a.onTerminal() {
				return a.runDashboard(cmd.Context())
			}
			return cmd.Help()
		},
	}
	root.Version = "casarectl " + a.env.Build.String()
	root.SetVersionTemplate("{{.Version}}\n")
	flags := root.PersistentFlags()
	flags.StringVar(&a.serverFlag, "server", "", "control plane URL (CASARE_SERVER; default http://127.0.0.1:8080)")
	flags.StringVar(&a.tokenFlag, "token", "", "API token (CASARE_TOKEN; the flag shows in the process list, the variable and a context do not)")
	flags.StringVarP(&a.outputFlag, "output", "o", "table", "output format: table, json or yaml")
	flags.StringVar(&a.contextFlag, "context", "", "named context from the config file")
	flags.StringVar(&a.caFileFlag, "ca-file", "", "PEM file of the CA that signed an https server's certificate (CASARE_CA_FILE)")
	flags.BoolVar(&a.insecureFlag, "insecure-skip-tls-verify", false, "trust any certificate an https server shows (testing only)")
	flags.StringVar(&a.configFlag, "config", "", "config file (CASARE_CONFIG; default ~/.config/casare/config.yaml)")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return usageError("%v", err)
	})
	root.AddCommand(
		a.jobsCommand(),
		a.workflowsCommand(),
		a.robotsCommand(),
		a.tokensCommand(),
		a.triggersCommand(),
		a.schedulesCommand(),
		a.calendarsCommand(),
		a.webhooksCommand(),
		a.assetsCommand(),
		a.workqueuesCommand(),
		a.whoamiCommand(),
		a.configCommand(),
		a.versionCommand(),
		&cobra.Command{
			Use:   "tui",
			Short: "Open the live dashboard of robots, jobs, queues and workflows",
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				return a.runDashboard(cmd.Context())
			},
		},
	)
	return root
}

// onTerminal reports whether both stdin and stdout are a terminal.
func (a *app) onTerminal() bool {
	in, ok := a.env.Stdin.(*os.File)
	if !ok || !term.IsTerminal(int(in.Fd())) {
		return false
	}
	out, ok := a.env.Stdout.(*os.File)
	return ok && term.IsTerminal(int(out.Fd()))
}

// runDashboard shows the dashboard until the operator quits.
func (a *app) runDashboard(ctx context.Context) error {
	conn, err := a.connect()
	if err != nil {
		return err
	}
	err = dashboard.Run(ctx, dashboard.Options{
		Server: conn.server,
		Clients: dashboard.Clients{
			Jobs: conn.jobs, Robots: conn.robots, Workflows: conn.workflows, Admin: conn.admin,
			Schedules:  conn.schedules,
			Assets:     conn.assets,
			WorkQueues: conn.workqueues,
		},
		NoColor: a.env.Getenv("NO_COLOR") != "",
	}, a.env.Stdin, a.env.Stdout)
	if err != nil {
		return &exitError{code: ExitError, err: fmt.Errorf("dashboard: %w", err)}
	}
	return nil
}

// isExit reports whether err carries the exit code.
func isExit(err error, code int) bool {
	var e *exitError
	return errors.As(err, &e) && e.code == code
}
