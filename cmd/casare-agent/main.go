// Command casare-agent is a CasareRPA robot: it enrols once with a token,
// then holds a connection to the control plane and runs what it is given.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/casarerpa/casare/agent/robot"
	"github.com/casarerpa/casare/cmd/internal/buildinfo"
)

// exitRefused is the exit code of a robot the control plane refuses for
// good, so a service manager can tell it from a crash worth a restart.
const exitRefused = 3

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCommand().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "casare-agent:", err)
		os.Exit(exitCode(err))
	}
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "casare-agent",
		Short:         "A CasareRPA robot",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	version := buildinfo.Get().Version

	var enroll robot.EnrollOptions
	enrollCmd := &cobra.Command{
		Use:   "enroll --token T --dir D [--server HOST:PORT]",
		Short: "Enrol this robot with a one-time token from casarectl robots token create",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			enroll.Version = version
			id, err := robot.Enroll(cmd.Context(), enroll)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "enrolled robot %s (%s) with %s; start it with: casare-agent run --dir %s\n", id.Name, id.RobotID, id.Server, enroll.Dir)
			return nil
		},
	}
	enrollCmd.Flags().StringVar(&enroll.Token, "token", "", "enrollment token (required)")
	enrollCmd.Flags().StringVar(&enroll.Dir, "dir", "", "directory for the robot's certificate and key (required)")
	enrollCmd.Flags().StringVar(&enroll.Server, "server", "", "control plane QUIC address, if not the one in the token")
	_ = enrollCmd.MarkFlagRequired("token")
	_ = enrollCmd.MarkFlagRequired("dir")

	run := robot.Options{Logger: logger, Version: version}
	var serviceName string
	var labels []string
	var enrollTokenFile string
	runCmd := &cobra.Command{
		Use:   "run --dir D [--labels k=v,…] [--capabilities …] [--max-jobs N]",
		Short: "Connect to the control plane and run jobs until stopped (SIGTERM drains, then exits 0)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			run.Labels = map[string]string{}
			for _, kv := range labels {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return fmt.Errorf("--labels: want key=value, got %q", kv)
				}
				run.Labels[k] = v
			}
			if enrollTokenFile != "" {
				// Enrolment dials what the robot will: a pod in the cluster
				// reaches the tunnel by its Service, not the address outside
				// robots are given in the token.
				first, _, _ := strings.Cut(run.Server, ",")
				enrolled, err := robot.EnrollFromFile(cmd.Context(), robot.EnrollOptions{Dir: run.Dir, Server: strings.TrimSpace(first), Version: version}, enrollTokenFile)
				if err != nil {
					return err
				}
				if enrolled {
					logger.Info("enrolled with the token of --enroll-token-file", "dir", run.Dir)
				}
			}
			return runMaybeAsService(cmd.Context(), serviceName, run)
		},
	}
	runCmd.Flags().StringVar(&serviceName, "service-name", "", "the Windows service this runs as (set by service install)")
	_ = runCmd.Flags().MarkHidden("service-name")
	runCmd.Flags().StringVar(&run.Dir, "dir", "", "the robot's directory from enroll (required)")
	runCmd.Flags().StringSliceVar(&labels, "labels", nil, "labels k=v, comma separated")
	runCmd.Flags().StringVar(&enrollTokenFile, "enroll-token-file", "", "enrol first with the token in this file when --dir holds no robot yet (a mounted secret), dialling the first --server if given; ignored once enrolled")
	runCmd.Flags().StringSliceVar(&run.Capabilities, "capabilities", nil, "capabilities to advertise, comma separated")
	abilityFlags(runCmd, &run.Abilities)
	runCmd.Flags().Int32Var(&run.MaxJobs, "max-jobs", 1, "jobs to run at once")
	runCmd.Flags().StringVar(&run.Server, "server", "", "control plane QUIC address, if not the one from enrolment; several replicas comma separated (host:port,host:port), or a name with several DNS addresses: the robot dials the next when one fails")
	runCmd.Flags().DurationVar(&run.DrainTimeout, "drain-timeout", 5*time.Minute, "when draining, how long running jobs may take to finish before they are handed back")
	runCmd.Flags().DurationVar(&run.RenewBefore, "renew-before", 30*24*time.Hour, "renew the certificate over the tunnel when it expires sooner than this")
	runCmd.Flags().IntVar(&run.MaxRefusals, "max-refusals", 5, "exit (code 3) after the control plane refuses the robot this many times in a row (certificate revoked, expired or of another CA); -1 never")
	runCmd.Flags().DurationVar(&run.Liveness, "liveness-interval", time.Second, "how often a quiet connection is checked; a restarted control plane is noticed within about twice this")
	runCmd.Flags().DurationVar(&run.MinBackoff, "min-backoff", 500*time.Millisecond, "first wait before reconnecting")
	runCmd.Flags().DurationVar(&run.MaxBackoff, "max-backoff", 30*time.Second, "longest wait between reconnects (a lost connection is retried at least every second for a minute first)")
	runCmd.Flags().Int32Var(&run.ProtocolVersion, "protocol-version", 0, "robot protocol version to claim (tests of a control plane's answer to a newer robot)")
	_ = runCmd.Flags().MarkHidden("protocol-version")
	_ = runCmd.MarkFlagRequired("dir")

	var certDir string
	cert := &cobra.Command{Use: "cert", Short: "Inspect the robot's certificate"}
	status := &cobra.Command{
		Use:   "status --dir D",
		Short: "Print the certificate's validity; exit 1 when it has expired",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return robot.CertStatus(cmd.OutOrStdout(), certDir, time.Now())
		},
	}
	status.Flags().StringVar(&certDir, "dir", "", "the robot's directory (required)")
	_ = status.MarkFlagRequired("dir")
	cert.AddCommand(status)

	exec := robot.ExecOptions{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}
	execCmd := &cobra.Command{
		Use:   "exec FILE [--input k=v ...] [--allow-shell] [--workdir D]",
		Short: "Run a workflow here, without a control plane: the log on stderr, the outputs as JSON on stdout (exit 1 when it fails)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			exec.File = args[0]
			return robot.Exec(cmd.Context(), exec)
		},
	}
	execCmd.Flags().StringArrayVar(&exec.Inputs, "input", nil, "an input k=v; a value that parses as JSON is taken as JSON (repeatable)")
	abilityFlags(execCmd, &exec.Abilities)
	execCmd.Flags().StringVar(&exec.WorkDir, "workdir", "", "the job's directory, kept afterwards (default a temporary one, removed)")
	execCmd.Flags().BoolVar(&exec.Debug, "debug", false, "show debug lines of the log too")

	root.AddCommand(enrollCmd, runCmd, cert, execCmd, newServiceCommand(runCmd))
	buildinfo.AddTo(root)
	return root
}

// abilityFlags are the flags that say which step families may run, the same
// for a robot and a local run.
func abilityFlags(cmd *cobra.Command, a *robot.Abilities) {
	cmd.Flags().BoolVar(&a.AllowShell, "allow-shell", false, "let shell.run run commands (advertises the shell capability)")
	cmd.Flags().StringVar(&a.Chromium, "chromium", "", "the Chromium to drive for browser steps (default: search PATH and the usual places)")
	cmd.Flags().BoolVar(&a.NoBrowser, "no-browser", false, "run no browser steps even when a Chromium is found")
	cmd.Flags().StringArrayVar(&a.FileRoots, "file-root", nil, "a directory file steps may reach besides the job's work directory (repeatable)")
}
