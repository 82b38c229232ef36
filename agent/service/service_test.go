package service

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

func TestConfigCheck(t *testing.T) {
	exe, dir := filepath.Join(t.TempDir(), "casare-agent.exe"), t.TempDir()
	c := Config{Exe: exe, Dir: dir, RunArgs: []string{"--dir", dir, "--labels", "site=berlin"}}
	if err := c.Check(); err != nil {
		t.Fatal(err)
	}
	if c.Name != DefaultName || c.DisplayName != "CasareRPA Robot (casare-agent)" {
		t.Errorf("defaults: name %q, display name %q", c.Name, c.DisplayName)
	}
	want := []string{"run", "--service-name", "casare-agent", "--dir", dir, "--labels", "site=berlin"}
	if got := c.CommandLine(); !slices.Equal(got, want) {
		t.Errorf("CommandLine() = %q, want %q", got, want)
	}
	for _, tc := range []struct {
		c    Config
		says string
	}{
		{Config{Exe: exe}, "--dir: the robot's directory"},
		{Config{Exe: exe, Dir: "robot"}, `--dir "robot": a service starts in the system directory`},
		{Config{Exe: "casare-agent.exe", Dir: dir}, "is not an absolute path"},
		{Config{Name: `a\b`, Exe: exe, Dir: dir}, "no slashes"},
		{Config{Name: strings.Repeat("n", 257), Exe: exe, Dir: dir}, "at most 256 characters"},
	} {
		if err := tc.c.Check(); err == nil || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("Check(%+v) = %v, want an error saying %q", tc.c, err, tc.says)
		}
	}
}

// TestWindowsBuild builds and vets for Windows what runs there, the robot
// and casarectl: nothing here can run the service, but it must compile
// and pass vet there. (The control plane runs on Linux.)
func TestWindowsBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("cross-compiles the module; skipped with -short")
	}
	t.Parallel()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"vet", "./agent/...", "./cmd/casare-agent", "./cmd/casarectl", "./tui/..."},
		{"build", "-o", t.TempDir(), "./cmd/casare-agent", "./cmd/casarectl"},
	} {
		cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), args...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "GOOS=windows", "GOARCH=amd64")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("GOOS=windows go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}
