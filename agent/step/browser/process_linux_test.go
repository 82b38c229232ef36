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
	pid     int
	dir     string // its --user-data-dir
	helpers []int  // the processes it started: zygotes, renderers, GPU
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
			return running{pid: p.Pid, dir: dir, helpers: descendants(p.Pid)}
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

// descendants lists the running processes below pid.
func descendants(pid int) []int {
	children := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(fields) > 1 {
			if ppid, err := strconv.Atoi(fields[1]); err == nil {
				children[ppid] = append(children[ppid], p)
			}
		}
	}
	var out []int
	var walk func(int)
	walk = func(p int) {
		for _, c := range children[p] {
			if alive(c) {
				out = append(out, c)
			}
			walk(c)
		}
	}
	walk(pid)
	return out
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
	for _, pid := range r.helpers {
		if alive(pid) {
			t.Errorf("helper process %d (%q) of browser %d still runs", pid, cmdline(pid), r.pid)
		}
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
	if len(r.helpers) == 0 {
		t.Errorf("browser %d runs no helper processes; is it the browser?", r.pid)
	}
	if !strings.HasPrefix(r.dir, os.TempDir()) || filepath.Dir(r.dir) == r.dir {
		t.Errorf("profile %s is not a temporary directory", r.dir)
	}
}

// testLifecycle checks, on the browser TestSteps used, that the browser
// dies with a cancelled step, with browser.close and with the job, and
// that a later step starts a fresh one. It runs last, since it kills the
// browser the other subtests share, and it shares the browser to keep the
// package to one Chromium at a time on a small machine.
func testLifecycle(t *testing.T, b *bundle) {
	t.Run("CancelKillsTheBrowser", func(t *testing.T) {
		b.must(t, "browser.navigate", map[string]any{"url": "data:text/html,<p>waiting</p>"})
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
	})

	t.Run("CloseStepKillsTheBrowser", func(t *testing.T) {
		// The job's next browser step gets a new browser.
		b.must(t, "browser.open", nil)
		r := b.browserOf(t)
		wantRunning(t, r)
		b.must(t, "browser.close", nil)
		wantGone(t, r)
		// Closing what is closed does nothing.
		b.must(t, "browser.close", nil)
	})

	t.Run("CrashedBrowserIsReplaced", func(t *testing.T) {
		b.must(t, "browser.navigate", map[string]any{"url": "data:text/html,<p>first</p>"})
		r := b.browserOf(t)
		if err := syscall.Kill(r.pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		res, _ := b.env.Resource(resourceKey, func() (io.Closer, error) { return nil, errNotOpen })
		for deadline := time.Now().Add(10 * time.Second); res.(*session).alive(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("chromedp did not notice the browser died")
			}
		}
		b.must(t, "browser.navigate", map[string]any{"url": "data:text/html,<p>second</p>"})
		if again := b.browserOf(t); again.pid == r.pid {
			t.Errorf("the step ran on the dead browser %d", r.pid)
		}
		wantGone(t, r)
	})

	t.Run("EnvCloseKillsTheBrowser", func(t *testing.T) {
		out := b.must(t, "browser.navigate", map[string]any{"url": "data:text/html,<title>again</title>"})
		if out["title"] != "again" {
			t.Errorf("title = %v", out["title"])
		}
		r := b.browserOf(t)
		wantRunning(t, r)
		if err := b.env.Close(); err != nil {
			t.Fatal(err)
		}
		wantGone(t, r)
		_, err := b.run(t, context.Background(), "browser.navigate", map[string]any{"url": "data:text/html,x"})
		if err == nil || !strings.Contains(err.Error(), "the job has ended") {
			t.Errorf("a step after the job ended: err = %v", err)
		}
	})
}
