//go:build unix

package shell

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/casarerpa/casare/agent/step"
)

type bundle struct {
	env    *step.Env
	mu     sync.Mutex
	logged []string
}

func setup(t *testing.T) *bundle {
	t.Helper()
	b := &bundle{}
	b.env = &step.Env{WorkDir: t.TempDir(), Log: func(level, msg string) {
		b.mu.Lock()
		defer b.mu.Unlock()
		b.logged = append(b.logged, level+": "+msg)
	}}
	return b
}

func (b *bundle) log() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.logged...)
}

func sh(script string, with map[string]any) map[string]any {
	out := map[string]any{"command": "/bin/sh", "args": []any{"-c", script}}
	for k, v := range with {
		out[k] = v
	}
	return out
}

// TestRun sets a variable of the test process, so it runs alone.
func TestRun(t *testing.T) {
	t.Setenv("CASARE_ROBOT_SECRET", "hunter2")
	for _, tc := range []struct {
		name       string
		with       map[string]any
		wantStdout string
		wantStderr string
		wantCode   float64
	}{
		{"Echo", map[string]any{"command": "echo", "args": []any{"hello", "a b"}}, "hello a b\n", "", 0},
		{"Stdin", sh("tr a-z A-Z", map[string]any{"stdin": "shout"}), "SHOUT", "", 0},
		{"NoStdinIsEmpty", sh("cat; echo end", nil), "end\n", "", 0},
		{"Stderr", sh("echo oops >&2", nil), "", "oops\n", 0},
		{"OkExitCode", sh("echo none; exit 1", map[string]any{"ok_exit_codes": []any{1.0}}), "none\n", "", 1},
		{"CleanEnvironment", sh(`echo "[$CASARE_ROBOT_SECRET][$GREETING][${PATH:+path}][${HOME:+home}]"`, map[string]any{"env": map[string]any{"GREETING": "hi"}}), "[][hi][path][home]\n", "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := setup(t)
			out, err := runAction.Run(context.Background(), b.env, tc.with)
			if err != nil {
				t.Fatal(err)
			}
			if out["stdout"] != tc.wantStdout || out["stderr"] != tc.wantStderr || out["exit_code"] != tc.wantCode {
				t.Fatalf("outputs = %q", out)
			}
		})
	}
}

func TestRunsInTheWorkDirectory(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if err := os.Mkdir(filepath.Join(b.env.WorkDir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b.env.WorkDir, "sub", "tool.sh"), []byte("#!/bin/sh\necho tool in $(pwd)\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := runAction.Run(context.Background(), b.env, map[string]any{"command": "pwd"})
	real, _ := filepath.EvalSymlinks(b.env.WorkDir)
	if err != nil || out["stdout"] != real+"\n" {
		t.Fatalf("pwd = %q, %v", out["stdout"], err)
	}
	out, err = runAction.Run(context.Background(), b.env, map[string]any{"command": "./tool.sh", "dir": "sub"})
	if err != nil || out["stdout"] != "tool in "+filepath.Join(real, "sub")+"\n" {
		t.Fatalf("tool = %q, %v", out["stdout"], err)
	}
}

func TestStreamsLinesToTheLog(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, err := runAction.Run(context.Background(), b.env, sh(`echo one; echo two >&2; printf 'no newline'`, nil))
	if err != nil {
		t.Fatal(err)
	}
	// stdout and stderr are read apart, so only the order within each
	// stream is certain.
	var info, warn []string
	for _, line := range b.log() {
		if text, ok := strings.CutPrefix(line, "info: "); ok {
			info = append(info, text)
		} else {
			warn = append(warn, line)
		}
	}
	if strings.Join(info, "|") != "one|no newline" || strings.Join(warn, "|") != "warn: two" {
		t.Fatalf("log = %q", b.log())
	}
}

func TestFailures(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		with     map[string]any
		business bool
		want     string
	}{
		{"ExitCode", sh("echo first >&2; echo 'disk full' >&2; exit 3", nil), false, "exited with code 3: first\ndisk full"},
		{"ExitCodeNotListed", sh("exit 2", map[string]any{"ok_exit_codes": []any{1.0}}), false, "exited with code 2"},
		{"NotFound", map[string]any{"command": "no-such-program-casare"}, true, `with.command: exec: "no-such-program-casare": executable file not found`},
		{"PathNotFound", map[string]any{"command": "./missing.sh"}, true, "with.command: ./missing.sh not found"},
		{"Required", map[string]any{"args": []any{"x"}}, true, "with.command: required"},
		{"DirOutside", map[string]any{"command": "pwd", "dir": "/etc"}, true, "with.dir: /etc is outside the job's work directory and the allowed roots"},
		{"DirMissing", map[string]any{"command": "pwd", "dir": "nope"}, true, "with.dir: nope is not a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := setup(t)
			_, err := runAction.Run(context.Background(), b.env, tc.with)
			if err == nil || step.IsBusiness(err) != tc.business || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v (business %v), want business %v containing %q", err, step.IsBusiness(err), tc.business, tc.want)
			}
		})
	}
}

func TestOutputIsCapped(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// 2 MiB in lines of 1 KiB.
	out, err := runAction.Run(context.Background(), b.env, sh(`yes "$(printf '%01023d' 0)" | head -c 2097152`, nil))
	if err != nil {
		t.Fatal(err)
	}
	stdout := out["stdout"].(string)
	if !strings.HasSuffix(stdout, "\n["+strconv.Itoa(1<<20)+" more bytes not kept]") || len(stdout) > MaxOutput+100 {
		t.Fatalf("stdout is %d bytes ending %q", len(stdout), stdout[len(stdout)-60:])
	}
	log := b.log()
	if len(log) > 1100 || !strings.Contains(log[len(log)-1], "the rest is not logged") {
		t.Fatalf("%d log lines, last %q", len(log), log[len(log)-1])
	}
}

// alive reports whether pid is a live process; a zombie nobody reaped
// yet counts as dead.
func alive(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	return len(fields) > 0 && fields[0] != "Z"
}

// startsChild runs a shell that starts a child sleep, writes its pid and
// waits, and returns how the step ended and the child's pid.
func startsChild(t *testing.T, ctx context.Context, b *bundle, with map[string]any) (error, int) {
	t.Helper()
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("needs /proc to see the child")
	}
	pidFile := filepath.Join(b.env.WorkDir, "child.pid")
	_, err := runAction.Run(ctx, b.env, sh(`sleep 300 & echo $! > child.pid; wait`, with))
	data, readErr := os.ReadFile(pidFile)
	if readErr != nil {
		t.Fatal(readErr)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	return err, pid
}

func waitDead(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("child sleep %d still running", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestTimeoutKillsTheChildren(t *testing.T) {
	t.Parallel()
	b := setup(t)
	start := time.Now()
	err, pid := startsChild(t, context.Background(), b, map[string]any{"timeout": "300ms"})
	if err == nil || step.IsBusiness(err) || !strings.Contains(err.Error(), "did not finish within 300ms; it was killed") {
		t.Fatalf("err = %v", err)
	}
	if elapsed := time.Since(start); elapsed > 4*time.Second {
		t.Fatalf("the step took %s to time out", elapsed)
	}
	waitDead(t, pid)
}

func TestCancelKillsTheChildren(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	err, pid := startsChild(t, ctx, b, nil)
	if err == nil || step.IsBusiness(err) || !strings.Contains(err.Error(), "stopped: context canceled") {
		t.Fatalf("err = %v", err)
	}
	waitDead(t, pid)
}

func TestCapability(t *testing.T) {
	t.Parallel()
	if runAction.Capability != "shell" {
		t.Fatalf("capability = %q", runAction.Capability)
	}
}
