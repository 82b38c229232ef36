package e2e

import (
	"crypto/rand"
	"encoding/base64"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// What the deployments in deploy/ rely on: a HEALTHCHECK without a shell,
// an admin token from a mounted secret, and robots that enrol themselves.

func TestHealthCommandChecksTheRunningServer(t *testing.T) {
	t.Parallel()
	s := startServer(t, t.TempDir())
	// The server listens on 127.0.0.1; the check reaches a wildcard
	// --http-addr (what containers use) on loopback too.
	_, port, _ := net.SplitHostPort(s.addr)
	for _, args := range [][]string{
		{"health", "--http-addr", s.addr},
		{"health", "--http-addr", s.addr, "--ready"},
		{"health", "--http-addr", "0.0.0.0:" + port},
	} {
		out, err := exec.Command(filepath.Join(bin, "casare-server"), args...).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "ok" {
			t.Errorf("casare-server %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}

	// Nothing listening: exit 1 and say where it looked.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	out, err := exec.Command(filepath.Join(bin, "casare-server"), "health", "--http-addr", closed).CombinedOutput()
	if exit, ok := err.(*exec.ExitError); !ok || exit.ExitCode() != 1 || !strings.Contains(string(out), closed+"/health/live") {
		t.Errorf("health of a closed port: %v\n%s", err, out)
	}
}

func TestAdminTokenFromFile(t *testing.T) {
	t.Parallel()
	var b [32]byte
	_, _ = rand.Read(b[:])
	token := "csr_" + base64.RawURLEncoding.EncodeToString(b[:])
	secrets := t.TempDir()
	file := filepath.Join(secrets, "admin-token")
	if err := os.WriteFile(file, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dataDir := t.TempDir()
	s := startServer(t, dataDir, "--admin-token-file", file)
	var who struct {
		Role string `json:"role"`
	}
	callOK(t, s.url(), token, whoAmI, `{}`, &who)
	if who.Role != "ROLE_ADMIN" {
		t.Errorf("WhoAmI with the file's token: role %q, want ROLE_ADMIN", who.Role)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "admin.token")); !os.IsNotExist(err) {
		t.Errorf("admin.token written although --admin-token-file was given: %v", err)
	}
	// A restart finds the token stored and keeps it working.
	s.restart()
	callOK(t, s.url(), token, whoAmI, `{}`, &who)

	// A file that holds no token stops the server, naming the flag.
	bad := filepath.Join(secrets, "bad")
	if err := os.WriteFile(bad, []byte("hunter2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(bin, "casare-server"), "--data-dir", t.TempDir(), "--http-addr", "127.0.0.1:0", "--quic-addr", "127.0.0.1:0", "--admin-token-file", bad)
	cmd.Env = filterEnv(os.Environ(), "CASARE_")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--admin-token-file") || strings.Contains(string(out), "hunter2") {
		t.Errorf("a malformed admin token file: %v\n%s", err, out)
	}
}

func TestAgentEnrolsItselfFromTokenFile(t *testing.T) {
	t.Parallel()
	quicAddr := freeUDPAddr(t)
	s := startServer(t, t.TempDir(), "--quic-addr", quicAddr, "--heartbeat-interval", "200ms")
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(enrollmentToken(t, s, "pool-1")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "robot")
	// Enrolment dials --server, as the run does.
	a := startAgent(t, dir, "--enroll-token-file", file, "--server", quicAddr)
	waitStatuses(t, s, map[string]string{"pool-1": "IDLE"}, 15*time.Second)
	if !strings.Contains(a.log.String(), "enrolled with the token of --enroll-token-file") {
		t.Errorf("the agent does not say it enrolled:\n%s", a.log.String())
	}
	id := robotID(t, dir)

	// Started again with the spent token, it keeps its identity.
	a.cmd.Process.Signal(syscall.SIGKILL)
	a.cmd.Wait()
	waitStatuses(t, s, map[string]string{"pool-1": "OFFLINE"}, 10*time.Second)
	again := startAgent(t, dir, "--enroll-token-file", file)
	waitStatuses(t, s, map[string]string{"pool-1": "IDLE"}, 15*time.Second)
	if strings.Contains(again.log.String(), "enrolled") || robotID(t, dir) != id {
		t.Errorf("a restarted robot enrolled again:\n%s", again.log.String())
	}

	// Not enrolled and no token: it stops and names the flag.
	out, err := agentCmd("run", "--dir", filepath.Join(t.TempDir(), "none"), "--no-browser", "--enroll-token-file", filepath.Join(t.TempDir(), "missing"))
	if err == nil || !strings.Contains(out, "--enroll-token-file") {
		t.Errorf("run with a missing token file: %v\n%s", err, out)
	}
}
