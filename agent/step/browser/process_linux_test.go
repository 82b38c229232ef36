package browser

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// running is the job's browser as the operating system sees it.
type running struct {
	pid int
	dir string // its --user-data-dir
}

// browserOf finds the job's browser process and its profile directory.
func (b *bundle) browserOf(t *testing.T) running {
	t.Helper()
	r, err := b.env.Resource(resourceKey, func() (io.Closer, error) { return nil, errNotOpen })
	if err != nil {
		t.Fatalf("the job has no browser: %v", err)
	}
	p := r.(*session).process()
	if p == nil {
		t.Fatal("the browser has no process")
	}
	for _, arg := range cmdline(p.Pid) {
		if dir, ok := strings.CutPrefix(arg, "--user-data-dir="); ok {
			return running{pid: p.Pid, dir: dir}
		}
	}
	t.Fatalf("browser %d has no --user-data-dir in %q", p.Pid, cmdline(p.Pid))
	return running{}
}

func cmdline(pid int) []string {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return nil
	}
	return strings.Split(strings.TrimRight(string(data), "\x00"), "\x00")
}

// alive reports whether pid runs (a zombie has stopped running).
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses.
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	return len(fields) > 0 && fields[0] != "Z"
}

// using lists the processes started with dir as their profile: the
// browser and every helper it forked.
func using(dir string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !alive(pid) {
			continue
		}
		for _, arg := range cmdline(pid) {
			if arg == "--user-data-dir="+dir {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// wantGone checks that the browser and its helpers have exited and its
// profile directory is removed.
func wantGone(t *testing.T, r running) {
	t.Helper()
	if alive(r.pid) {
		t.Errorf("browser process %d still runs", r.pid)
	}
	if pids := using(r.dir); len(pids) > 0 {
		t.Errorf("processes %v still use the profile %s", pids, r.dir)
	}
	if _, err := os.Stat(r.dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the profile directory %s is still there (stat: %v)", r.dir, err)
	}
}

func wantRunning(t *testing.T, r running) {
	t.Helper()
	if !alive(r.pid) || len(using(r.dir)) == 0 {
		t.Fatalf("browser %d is not running", r.pid)
	}
	if !strings.HasPrefix(r.dir, os.TempDir()) || filepath.Dir(r.dir) == r.dir {
		t.Errorf("profile %s is not a temporary directory", r.dir)
	}
}

func TestCancelKillsTheBrowser(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.must(t, "browser.open", map[string]any{"url": "data:text/html,<p>waiting</p>"})
	r := b.browserOf(t)
	wantRunning(t, r)

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	start := time.Now()
	_, err := b.run(t, ctx, "browser.wait_for", map[string]any{"selector": "#never", "timeout": "20s"})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want the cancel", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("the cancelled wait took %s", took)
	}
	wantGone(t, r)

	// The job's next browser step, if it had one, gets a new browser.
	b.must(t, "browser.navigate", map[string]any{"url": "data:text/html,<p>again</p>"})
	if again := b.browserOf(t); again.pid == r.pid || again.dir == r.dir {
		t.Errorf("the old browser %+v came back", r)
	}
}

func TestCloseKillsTheBrowser(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.must(t, "browser.open", nil)
	first := b.browserOf(t)
	wantRunning(t, first)

	t.Run("CloseStep", func(t *testing.T) {
		b.must(t, "browser.close", nil)
		wantGone(t, first)
		// Closing what is closed does nothing.
		b.must(t, "browser.close", nil)
	})

	t.Run("EnvClose", func(t *testing.T) {
		out := b.must(t, "browser.navigate", map[string]any{"url": "data:text/html,<title>second</title>"})
		if out["title"] != "second" {
			t.Errorf("title = %v", out["title"])
		}
		second := b.browserOf(t)
		wantRunning(t, second)
		if err := b.env.Close(); err != nil {
			t.Fatal(err)
		}
		wantGone(t, second)
		_, err := b.run(t, context.Background(), "browser.navigate", map[string]any{"url": "data:text/html,x"})
		if err == nil || !strings.Contains(err.Error(), "the job has ended") {
			t.Errorf("a step after the job ended: err = %v", err)
		}
	})
}
