package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/casarerpa/casare/agent/robot"
	"github.com/casarerpa/casare/agent/service"
)

// exitCode is the process's exit status for what run or another command
// returned: a robot refused for good exits 3, so a service manager can
// tell it from a crash.
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var exit *robot.ExitError
	if errors.As(err, &exit) {
		return exit.Code
	}
	var refused *robot.RefusedError
	if errors.As(err, &refused) {
		return exitRefused
	}
	return 1
}

// runMaybeAsService runs the robot, under the Windows Service Control
// Manager when it started this process.
func runMaybeAsService(ctx context.Context, name string, opts robot.Options) error {
	if !service.Running() {
		return robot.Run(ctx, opts)
	}
	if name == "" {
		name = service.DefaultName
	}
	return service.Run(name, exitCode, func(ctx context.Context, logger *slog.Logger) error {
		opts.Logger = logger
		return robot.Run(ctx, opts)
	})
}

// newServiceCommand is `casare-agent service …`: the robot as a Windows
// service. install takes the run command's flags after --, checked here
// so a typo fails now and not at the next boot.
func newServiceCommand(runCmd *cobra.Command) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "service install|uninstall|start|stop|status",
		Short: "Run the robot as a Windows service (on Linux use deploy/systemd)",
	}
	var name, display string
	cmd.PersistentFlags().StringVar(&name, "name", service.DefaultName, "the service's name")
	install := &cobra.Command{
		Use:   "install [--name N] [--display-name D] -- --dir D [run flags…]",
		Short: "Install the service to start at boot with these run flags, restart after failures and log to the event log",
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := runCmd.ParseFlags(args); err != nil {
				return fmt.Errorf("the run flags after --: %w", err)
			}
			if rest := runCmd.Flags().Args(); len(rest) > 0 {
				return fmt.Errorf("the run flags after --: unexpected %q", rest[0])
			}
			dir, _ := runCmd.Flags().GetString("dir")
			exe, err := os.Executable()
			if err != nil {
				return fmt.Errorf("find this binary: %w", err)
			}
			c := service.Config{Name: name, DisplayName: display, Exe: exe, RunArgs: args, Dir: dir}
			if err := c.Check(); err != nil {
				return err
			}
			if _, _, _, err := robot.LoadIdentity(dir); err != nil {
				return fmt.Errorf("--dir: %w", err)
			}
			if err := service.Install(c); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "installed service %s; start it with: casare-agent service start --name %s\n", c.Name, c.Name)
			return nil
		},
	}
	install.Flags().StringVar(&display, "display-name", "", "the name services.msc shows (default CasareRPA Robot (NAME))")
	var stopTimeout time.Duration
	stop := &cobra.Command{
		Use:   "stop [--name N]",
		Short: "Stop the service, waiting while its running jobs drain",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), stopTimeout)
			defer cancel()
			return service.Stop(ctx, name)
		},
	}
	stop.Flags().DurationVar(&stopTimeout, "timeout", 10*time.Minute, "how long to wait for the service to stop")
	cmd.AddCommand(install,
		&cobra.Command{
			Use:   "uninstall [--name N]",
			Short: "Stop and remove the service",
			Args:  cobra.NoArgs,
			RunE:  func(*cobra.Command, []string) error { return service.Uninstall(name) },
		},
		&cobra.Command{
			Use:   "start [--name N]",
			Short: "Start the service",
			Args:  cobra.NoArgs,
			RunE:  func(*cobra.Command, []string) error { return service.Start(name) },
		},
		stop,
		&cobra.Command{
			Use:   "status [--name N]",
			Short: "Print the service's state and command line",
			Args:  cobra.NoArgs,
			RunE:  func(cmd *cobra.Command, _ []string) error { return service.Status(cmd.OutOrStdout(), name) },
		},
	)
	return cmd
}
