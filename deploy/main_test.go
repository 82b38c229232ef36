package deploy

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// bin holds casare-server, casare-agent and casarectl built from this
// checkout: the units need real executables, and the flags that the
// deployments pass are checked against the binaries' own --help.
var bin string

func TestMain(m *testing.M) {
	os.Exit(func() int {
		dir, err := os.MkdirTemp("", "casare-deploy-bin")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		build := exec.Command("go", "build", "-o", dir+string(filepath.Separator), "./cmd/casare-server", "./cmd/casare-agent", "./cmd/casarectl")
		build.Dir = ".." // the product's module
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build binaries:", err)
			return 1
		}
		bin = dir
		return m.Run()
	}())
}

var (
	helpMu    sync.Mutex
	helpCache = map[string]string{}
	flagWord  = regexp.MustCompile(`--[a-z][a-z0-9-]*`)
)

// help returns the --help of a binary's subcommand ("casare-agent run").
func help(t *testing.T, command string) string {
	t.Helper()
	helpMu.Lock()
	defer helpMu.Unlock()
	if h, ok := helpCache[command]; ok {
		return h
	}
	words := strings.Fields(command)
	out, err := exec.Command(filepath.Join(bin, words[0]), append(words[1:], "--help")...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s --help: %v\n%s", command, err, out)
	}
	helpCache[command] = string(out)
	return string(out)
}

// checkFlags fails the test for each --flag in args that command does not
// know: a deployment must not pass a flag the binary would refuse.
func checkFlags(t *testing.T, where, command string, args []string) {
	t.Helper()
	h := help(t, command)
	for _, a := range args {
		if !strings.HasPrefix(a, "--") {
			continue
		}
		name, _, _ := strings.Cut(a, "=")
		if !regexp.MustCompile(`(?m)^\s+(-\w, )?` + regexp.QuoteMeta(name) + `\s`).MatchString(h) {
			t.Errorf("%s: %s has no flag %s", where, command, name)
		}
	}
}

// checkEnv fails the test for each CASARE_* variable that command does
// not read, by its --help.
func checkEnv(t *testing.T, where, command string, names []string) {
	t.Helper()
	h := help(t, command)
	for _, n := range names {
		if strings.HasPrefix(n, "CASARE_") && !regexp.MustCompile(`\b`+n+`\b`).MatchString(h) {
			t.Errorf("%s: %s reads no %s", where, command, n)
		}
	}
}
