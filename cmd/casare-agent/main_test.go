package main

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"testing"

	"github.com/casarerpa/casare/agent/robot"
)

func TestExitCode(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want int
	}{
		{nil, 0},
		{errors.New("boom"), 1},
		{fmt.Errorf("run: %w", &robot.RefusedError{}), exitRefused},
		{fmt.Errorf("run: %w", &robot.ExitError{Code: 7}), 7},
	} {
		if got := exitCode(tc.err); got != tc.want {
			t.Errorf("exitCode(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}

// TestInstallScriptFlags: every flag deploy/windows/install-robot.ps1
// passes to casare-agent is one of the command it passes it to, so a
// renamed flag cannot break the installer unseen (nothing here runs
// PowerShell).
func TestInstallScriptFlags(t *testing.T) {
	script, err := os.ReadFile("../../deploy/windows/install-robot.ps1")
	if err != nil {
		t.Fatal(err)
	}
	root := newRootCommand()
	commands := map[string][]string{
		"enroll":  {"enroll"},
		"run":     {"run"},
		"service": {"service", "install"},
	}
	// Each array of arguments the script builds, and the command it is for.
	uses := map[string]*regexp.Regexp{
		"enroll":  regexp.MustCompile(`\$enroll \+?= @\(([^)]*)\)`),
		"run":     regexp.MustCompile(`\$run \+?= @?\(?("--[^)\n]*)`),
		"service": regexp.MustCompile(`& \$exe (service [a-z]+ [^\n]*)`),
	}
	flag := regexp.MustCompile(`--([a-z][a-z-]*)`)
	seen := 0
	for name, re := range uses {
		cmd, _, err := root.Find(commands[name])
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllStringSubmatch(string(script), -1) {
			for _, f := range flag.FindAllStringSubmatch(m[1], -1) {
				seen++
				if cmd.Flags().Lookup(f[1]) == nil && cmd.InheritedFlags().Lookup(f[1]) == nil {
					t.Errorf("install-robot.ps1 passes --%s to casare-agent %s, which has no such flag", f[1], cmd.Name())
				}
			}
		}
	}
	if seen < 10 {
		t.Fatalf("found only %d flags in install-robot.ps1; the patterns no longer match the script", seen)
	}
}
