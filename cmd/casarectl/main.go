// Command casarectl is the operator's tool for a CasareRPA control plane.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/casarerpa/casare/cmd/internal/buildinfo"
	"github.com/casarerpa/casare/tui/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], cli.Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Build: cli.Build(buildinfo.Get())})
	stop()
	os.Exit(code)
}
