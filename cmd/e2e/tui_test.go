package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

// tui is casarectl's dashboard running in a real terminal: a detached tmux
// session on its own socket, read with capture-pane.
type tui struct {
	t      *testing.T
	socket string
}

func startTUI(t *testing.T, args ...string) *tui {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Fatalf("the dashboard test needs tmux: %v", err)
	}
	u := &tui{t: t, socket: fmt.Sprintf("casare-e2e-%d-%d", os.Getpid(), time.Now().UnixNano())}
	command := filepath.Join(bin, "casarectl") + " " + strings.Join(args, " ")
	// TERM is what tmux gives its panes; the environment must not pick
	// the server for casarectl.
	cmd := exec.Command("tmux", "-L", u.socket, "-f", "/dev/null", "new-session", "-d", "-x", "120", "-y", "40", "-s", "tui", command)
	cmd.Env = filterEnv(os.Environ(), "CASARE_")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tmux new-session: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("tmux", "-L", u.socket, "kill-server").Run() })
	return u
}

func (u *tui) tmux(args ...string) string {
	u.t.Helper()
	out, err := exec.Command("tmux", append([]string{"-L", u.socket}, args...)...).CombinedOutput()
	if err != nil {
		u.t.Fatalf("tmux %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (u *tui) screen() string { return u.tmux("capture-pane", "-p", "-t", "tui") }

// keys types text literally, then presses Enter if enter is set.
func (u *tui) keys(text string, enter bool) {
	u.t.Helper()
	if text != "" {
		u.tmux("send-keys", "-t", "tui", "-l", text)
	}
	if enter {
		u.tmux("send-keys", "-t", "tui", "Enter")
	}
}

// waitFor polls the screen until ok says yes, and fails with the last
// screen after within.
func (u *tui) waitFor(what string, within time.Duration, ok func(screen string) bool) string {
	u.t.Helper()
	deadline := time.Now().Add(within)
	for {
		screen := u.screen()
		if ok(screen) {
			return screen
		}
		if time.Now().After(deadline) {
			u.t.Fatalf("dashboard: %s not on screen within %s; screen:\n%s", what, within, screen)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (u *tui) waitText(within time.Duration, texts ...string) string {
	u.t.Helper()
	return u.waitFor(strings.Join(texts, " and "), within, func(screen string) bool {
		for _, s := range texts {
			if !strings.Contains(screen, s) {
				return false
			}
		}
		return true
	})
}

// row finds the table row holding text: rows start with the selection
// marker or its space, so the title's filter text is not one.
func row(screen, text string) string {
	for _, l := range strings.Split(screen, "\n") {
		if (strings.HasPrefix(l, "> ") || strings.HasPrefix(l, "  ")) && strings.Contains(l, text) {
			return l
		}
	}
	return ""
}

// TestDashboard drives casarectl's dashboard from the keyboard in a real
// terminal against a control plane with two robots: robots, a job to its
// end and its log, a cancel, a drain, and the server going away and back.
func TestDashboard(t *testing.T) {
	t.Parallel()
	s := startServer(t, t.TempDir(), "--quic-addr", freeUDPAddr(t), "--heartbeat-interval", "500ms")
	// The restarted server must answer where the dashboard and the robots
	// look for it.
	s.args = append(s.args, "--http-addr", s.addr)
	f := newFleet(t, s)
	f.enrol("r1", "--max-jobs", "2")
	f.enrol("r2", "--max-jobs", "2")
	waitStatuses(t, s, map[string]string{"r1": "IDLE", "r2": "IDLE"}, 15*time.Second)

	u := startTUI(t, "--server", s.url(), "--token", s.adminToken())
	robotRow := regexp.MustCompile(`(?m)^[ >] r[12] +IDLE `)
	u.waitFor("both robots IDLE", 15*time.Second, func(screen string) bool {
		return strings.Contains(screen, "● CONNECTED") && len(robotRow.FindAllString(screen, -1)) == 2
	})

	// A job appears and runs to its end; its log shows its lines.
	quick := f.submit(workflow("tui-quick",
		step("hello", "log", map[string]any{"message": "hello from the dashboard test"}),
		step("pause", "delay", map[string]any{"duration": "500ms"})))
	tail := quick.GetId()[len(quick.GetId())-12:]
	u.keys(":jobs", true)
	u.waitFor("the job SUCCEEDED", 20*time.Second, func(screen string) bool {
		return strings.Contains(row(screen, tail), "SUCCEEDED")
	})
	u.keys("/"+tail, true)
	u.waitText(5*time.Second, "Jobs 1 of")
	u.keys("l", false)
	u.waitText(10*time.Second, "Log "+quick.GetId(), "hello from the dashboard test", "ended")

	// Three long jobs on two robots of two slots each: one robot BUSY
	// with 2/2, the other with 1/2; the counts go back to 0/2 when the
	// jobs end.
	var held []string
	for range 3 {
		job := f.submit(sleeper("120s"))
		held = append(held, job.GetId())
	}
	for _, id := range held {
		f.wait(id, casarev1.JobStatus_JOB_STATUS_RUNNING, 20*time.Second)
	}
	u.keys(":robots", true)
	busyRow := regexp.MustCompile(`(?m)^[ >] r[12] +BUSY +\S+ +2/2 `)
	halfRow := regexp.MustCompile(`(?m)^[ >] r[12] +IDLE +\S+ +1/2 `)
	u.waitFor("a BUSY robot at 2/2 and the other at 1/2", 15*time.Second, func(screen string) bool {
		return busyRow.MatchString(screen) && halfRow.MatchString(screen)
	})
	// casarectl says the same.
	list := string(ctl(t, s, "robots", "list"))
	busyLine := regexp.MustCompile(`(?m)^r[12] +\S+ +BUSY +2/2 `)
	halfLine := regexp.MustCompile(`(?m)^r[12] +\S+ +IDLE +1/2 `)
	if !busyLine.MatchString(list) || !halfLine.MatchString(list) || !strings.HasPrefix(list, "NAME") || !strings.Contains(strings.SplitN(list, "\n", 2)[0], "JOBS") {
		t.Fatalf("robots list while one robot is busy and the other half busy:\n%s", list)
	}
	for _, id := range held {
		if _, err := f.jobs.CancelJob(context.Background(), &casarev1.CancelJobRequest{Id: id}); err != nil {
			t.Fatal(err)
		}
	}
	idleRow := regexp.MustCompile(`(?m)^[ >] r[12] +IDLE +\S+ +0/2 `)
	u.waitFor("both robots back at 0/2", 20*time.Second, func(screen string) bool {
		return len(idleRow.FindAllString(screen, -1)) == 2
	})

	// Cancel a long job from the keyboard.
	long := f.submit(sleeper("120s"))
	f.wait(long.GetId(), casarev1.JobStatus_JOB_STATUS_RUNNING, 20*time.Second)
	longTail := long.GetId()[len(long.GetId())-12:]
	u.keys(":jobs", true)
	u.keys("/", false)
	u.tmux("send-keys", "-t", "tui", "C-u")
	u.keys(longTail, true)
	u.waitFor("the long job RUNNING", 10*time.Second, func(screen string) bool {
		return strings.Contains(row(screen, longTail), "RUNNING") && strings.Contains(screen, "Jobs 1 of")
	})
	u.keys("c", false)
	u.waitText(5*time.Second, "Cancel job "+long.GetId())
	u.keys("y", false)
	u.waitFor("the cancel", 15*time.Second, func(screen string) bool {
		return strings.Contains(screen, "cancelled job "+long.GetId()) && strings.Contains(row(screen, longTail), "CANCELLED")
	})
	f.wait(long.GetId(), casarev1.JobStatus_JOB_STATUS_CANCELLED, 10*time.Second)

	// Drain r2 from the keyboard.
	u.keys(":robots", true)
	u.keys("/name:r2", true)
	u.waitText(5*time.Second, "Robots 1 of 2")
	u.keys("d", false)
	u.waitText(5*time.Second, "Drain robot r2?")
	u.keys("y", false)
	u.waitText(10*time.Second, "draining robot r2")
	// A drained robot with nothing to finish exits at once, so the screen
	// shows it DRAINING or, a moment later, OFFLINE.
	u.waitFor("r2 draining", 15*time.Second, func(screen string) bool {
		r := row(screen, "> r2")
		return strings.Contains(r, "DRAINING") || strings.Contains(r, "OFFLINE")
	})
	waitExit(t, f.agents["r2"], 20*time.Second)

	// The server goes away: the dashboard says so and keeps what it shows.
	s.kill()
	u.waitFor("the disconnect", 15*time.Second, func(screen string) bool {
		return strings.Contains(screen, "DISCONNECTED") && strings.Contains(row(screen, "> r2"), "r2")
	})
	// It comes back on the same address and data: the dashboard
	// reconnects by itself and shows the new snapshot.
	s.start()
	u.waitFor("the reconnect", 30*time.Second, func(screen string) bool {
		return strings.Contains(screen, "● CONNECTED") && !strings.Contains(screen, "DISCONNECTED") && strings.Contains(screen, "r2")
	})
	// q quits, and the session ends with casarectl.
	u.keys("q", false)
	deadline := time.Now().Add(10 * time.Second)
	for exec.Command("tmux", "-L", u.socket, "has-session", "-t", "tui").Run() == nil {
		if time.Now().After(deadline) {
			t.Fatalf("casarectl still running 10s after q; screen:\n%s", u.screen())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
