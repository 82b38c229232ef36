// Package service runs the robot as a Windows service: installed with the
// run command's flags, started by the Service Control Manager at boot,
// restarted by it after a failure, logging to the Windows event log, and
// drained on stop like a SIGTERM. On other systems its commands say to
// use the service manager there (deploy/systemd).
package service

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
)

// DefaultName is the service's name when none is given.
const DefaultName = "casare-agent"

// Config is what install registers.
type Config struct {
	// Name is the service's name (sc.exe, Get-Service); DefaultName when
	// empty.
	Name string
	// DisplayName shows in services.msc.
	DisplayName string
	// Exe is the agent binary, an absolute path.
	Exe string
	// RunArgs are the flags of `casare-agent run` the service starts with.
	RunArgs []string
	// Dir is the robot's directory from those flags, checked to exist.
	Dir string
}

// ErrNotWindows is what the service commands answer elsewhere.
var ErrNotWindows = errors.New("Windows services exist only on Windows; on Linux install deploy/systemd/casare-agent.service")

// Check refuses a configuration the service manager would start and the
// agent then fail on, with the reason: the service starts in
// C:\Windows\System32, so relative paths would point there.
func (c *Config) Check() error {
	if c.Name == "" {
		c.Name = DefaultName
	}
	if strings.ContainsAny(c.Name, `/\`) || len(c.Name) > 256 {
		return fmt.Errorf("--name: %q: at most 256 characters, no slashes", c.Name)
	}
	if c.DisplayName == "" {
		c.DisplayName = "CasareRPA Robot (" + c.Name + ")"
	}
	if !filepath.IsAbs(c.Exe) {
		return fmt.Errorf("the agent binary %q is not an absolute path", c.Exe)
	}
	if c.Dir == "" {
		return errors.New("--dir: the robot's directory from casare-agent enroll is required")
	}
	if !filepath.IsAbs(c.Dir) {
		return fmt.Errorf("--dir %q: a service starts in the system directory, so give an absolute path", c.Dir)
	}
	return nil
}

// CommandLine is the agent's arguments as the service starts it: the run
// command, the service's own name (so it reports under it and logs as
// it) and the run flags.
func (c Config) CommandLine() []string {
	return append([]string{"run", "--service-name", c.Name}, c.RunArgs...)
}
