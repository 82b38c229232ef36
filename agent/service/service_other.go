//go:build !windows

package service

import (
	"context"
	"io"
	"log/slog"
)

// Install is only on Windows.
func Install(Config) error { return ErrNotWindows }

// Uninstall is only on Windows.
func Uninstall(string) error { return ErrNotWindows }

// Start is only on Windows.
func Start(string) error { return ErrNotWindows }

// Stop is only on Windows.
func Stop(context.Context, string) error { return ErrNotWindows }

// Status is only on Windows.
func Status(io.Writer, string) error { return ErrNotWindows }

// Running says whether the process was started by the Service Control
// Manager: never here.
func Running() bool { return false }

// Run is only on Windows.
func Run(string, func(error) int, func(context.Context, *slog.Logger) error) error {
	return ErrNotWindows
}
