package e2e

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestAgentFindsRestartedServer: a control plane killed outright and
// started again on its ports and data dir answers the robots' next packets
// with stateless resets (its key is kept in the data dir), so they
// reconnect at once instead of waiting for their idle timeout: with
// 60 s heartbeats that timeout is a minute away.
func TestAgentFindsRestartedServer(t *testing.T) {
	t.Parallel()
	quicAddr := freeUDPAddr(t)
	s := startServer(t, t.TempDir(), "--quic-addr", quicAddr, "--heartbeat-interval", "60s")
	info, err := os.Stat(filepath.Join(s.dataDir, "quic-reset.key"))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("quic-reset.key: %v; want mode 0600", err)
	}
	dir := filepath.Join(t.TempDir(), "r1")
	if out, err := agentCmd("enroll", "--token", enrollmentToken(t, s, "r1"), "--dir", dir); err != nil {
		t.Fatalf("enrol: %v\n%s", err, out)
	}
	a := startAgent(t, dir)
	waitLog(t, a.log, "state=REGISTERED", 1)

	for i := range 3 {
		s.kill()
		s.start()
		back := time.Now()
		waitLogWithin(t, a.log, "state=REGISTERED", i+2, 30*time.Second)
		t.Logf("restart %d: the robot registered again %s after the control plane was ready", i+1, time.Since(back).Round(time.Millisecond))
	}
	if got := strings.Count(a.log.String(), "received a stateless reset"); got != 3 {
		t.Errorf("the agent saw %d stateless resets, want 3:\n%s", got, a.log.String())
	}
	if strings.Contains(a.log.String(), "no recent network activity") {
		t.Errorf("the agent waited for its idle timeout:\n%s", a.log.String())
	}
	// A graceful restart says goodbye; the robot retries while the
	// control plane is away and finds it soon after it is back.
	for i := range 2 {
		s.stop()
		s.start()
		back := time.Now()
		waitLogWithin(t, a.log, "state=REGISTERED", i+5, 30*time.Second)
		t.Logf("graceful restart %d: the robot registered again %s after the control plane was ready", i+1, time.Since(back).Round(time.Millisecond))
	}
	waitStatuses(t, s, map[string]string{"r1": "IDLE"}, 10*time.Second)
	var sub submitResponse
	callOK(t, s.url(), s.adminToken(), submitJob, `{"workflow": `+helloWorkflow+`}`, &sub)
	waitJob(t, s, sub.Job.ID, "JOB_STATUS_SUCCEEDED", 30*time.Second)
}

// TestAgentExitsWhenRefused: a robot the control plane refuses for good
// (deleted, so its certificate is revoked; or enrolled with another
// control plane's CA) exits with code 3 and the reason after a few
// refusals, while one whose control plane is merely down keeps trying.
func TestAgentExitsWhenRefused(t *testing.T) {
	t.Parallel()
	work := t.TempDir()
	s := startServer(t, t.TempDir())
	addr := quicListening.FindStringSubmatch(s.log.String())[1]

	// The control plane of this one goes away for good.
	gone := startServer(t, t.TempDir())
	patient := filepath.Join(work, "patient")
	if out, err := agentCmd("enroll", "--token", enrollmentToken(t, gone, "patient"), "--dir", patient); err != nil {
		t.Fatalf("enrol: %v\n%s", err, out)
	}
	gone.kill()
	waiting := startAgent(t, patient)
	started := time.Now()

	deleted := filepath.Join(work, "deleted")
	if out, err := agentCmd("enroll", "--token", enrollmentToken(t, s, "deleted"), "--dir", deleted); err != nil {
		t.Fatalf("enrol: %v\n%s", err, out)
	}
	a := startAgent(t, deleted)
	waitLog(t, a.log, "state=REGISTERED", 1)
	ctl(t, s, "robots", "delete", "deleted")
	requireRefusedExit(t, a, "the control plane refuses this robot", 60*time.Second)
	if !strings.Contains(a.log.String(), "revoked") {
		t.Errorf("the agent does not say its certificate was revoked:\n%s", a.log.String())
	}

	other := startServer(t, t.TempDir())
	foreign := filepath.Join(work, "foreign")
	if out, err := agentCmd("enroll", "--token", enrollmentToken(t, other, "foreign"), "--dir", foreign); err != nil {
		t.Fatalf("enrol: %v\n%s", err, out)
	}
	f := startAgent(t, foreign, "--server", addr)
	requireRefusedExit(t, f, "not from this robot's CA", 60*time.Second)

	// The robot whose control plane is down has been trying for longer
	// than either refused one took, and goes on.
	time.Sleep(time.Until(started.Add(2 * time.Since(started))))
	if waiting.cmd.ProcessState != nil {
		t.Fatalf("an agent whose control plane is down exited:\n%s", waiting.log.String())
	}
	if err := waiting.cmd.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("an agent whose control plane is down is gone: %v\n%s", err, waiting.log.String())
	}
	if strings.Contains(waiting.log.String(), "refused") {
		t.Errorf("a control plane that is down was taken for a refusal:\n%s", waiting.log.String())
	}
	if !strings.Contains(waiting.log.String(), "state=RECONNECTING") {
		t.Errorf("the agent whose control plane is down does not retry:\n%s", waiting.log.String())
	}
}

// requireRefusedExit waits for the agent to exit with code 3, the reason
// containing text on its stderr.
func requireRefusedExit(t *testing.T, a *agentProc, text string, within time.Duration) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- a.cmd.Wait() }()
	select {
	case err := <-done:
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 3 {
			t.Fatalf("agent exit: %v, want code 3\n%s", err, a.log.String())
		}
	case <-time.After(within):
		// The cleanup must not wait for the process a second time.
		a.cmd.Process.Kill()
		<-done
		t.Fatalf("a refused agent still runs after %s\n%s", within, a.log.String())
	}
	lines := strings.Split(strings.TrimSpace(a.log.String()), "\n")
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, "casare-agent: ") || !strings.Contains(last, text) {
		t.Fatalf("the agent's last words are %q, want the reason (%q)", last, text)
	}
}

// waitLogWithin waits until text appears n times in log.
func waitLogWithin(t *testing.T, log *syncBuffer, text string, n int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for strings.Count(log.String(), text) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%q does not appear %d times within %s in:\n%s", text, n, within, log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitJob polls until the job has the status wanted.
func waitJob(t *testing.T, s *serverProc, id, status string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		var got getResponse
		callOK(t, s.url(), s.adminToken(), getJob, `{"id": "`+id+`"}`, &got)
		if got.Job.Status == status {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s is %s after %s, want %s\n%s", id, got.Job.Status, within, status, s.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
