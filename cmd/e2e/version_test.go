package e2e

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"
)

// The version and revision TestMain links into the binaries.
const (
	e2eVersion  = "v9.8.7-e2e"
	e2eRevision = "0123456789ab"
)

func TestEveryBinaryTellsItsVersion(t *testing.T) {
	t.Parallel()
	want := e2eVersion + " (revision " + e2eRevision + ", " + runtime.Version() + ")"
	for _, name := range []string{"casare-server", "casare-agent", "casarectl"} {
		for _, args := range [][]string{{"--version"}, {"version"}} {
			if name == "casarectl" && args[0] == "version" {
				args = append(args, "--client")
			}
			out, err := exec.Command(filepath.Join(bin, name), args...).CombinedOutput()
			if err != nil {
				t.Fatalf("%s %s: %v\n%s", name, args[0], err, out)
			}
			got := strings.TrimSpace(string(out))
			if name == "casarectl" && args[0] == "version" {
				// The subcommand labels the client's line, as beside the server's.
				got = strings.Join(strings.Fields(strings.TrimPrefix(got, "Client:")), " ")
			}
			if got != name+" "+want {
				t.Errorf("%s %s = %q, want %q", name, strings.Join(args, " "), got, name+" "+want)
			}
		}
	}
}

func TestCasarectlVersionWithoutAServerStillShowsItsOwn(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(filepath.Join(bin, "casarectl"), "version", "--server", "http://"+freeTCPAddr(t))
	cmd.Env = filterEnv(os.Environ(), "CASARE_")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
		t.Fatalf("casarectl version with no server: %v, want exit 2\n%s", err, stderr.String())
	}
	if !strings.Contains(string(out), "casarectl "+e2eVersion) || stderr.Len() == 0 {
		t.Errorf("casarectl version with no server printed %q, error %q; want its own version and why the server's is missing", out, stderr.String())
	}
}

// freeTCPAddr returns a loopback TCP address nobody listens on.
func freeTCPAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func TestVersionsReachMetricsTheAPIAndTheRobotList(t *testing.T) {
	t.Parallel()
	s := startServer(t, t.TempDir(), "--heartbeat-interval", "200ms")

	labels := `goversion="` + runtime.Version() + `",revision="` + e2eRevision + `",version="` + e2eVersion + `"`
	if v := metricValue(t, s, "casare_build_info", labels); v != 1 {
		t.Errorf("casare_build_info{%s} = %v, want 1", labels, v)
	}

	out := string(ctl(t, s, "version"))
	for _, line := range []string{
		"casarectl " + e2eVersion,
		"casare-server " + e2eVersion + " (revision " + e2eRevision,
		"at " + s.url(),
		"Robot protocol:",
	} {
		if !strings.Contains(out, line) {
			t.Errorf("casarectl version lacks %q:\n%s", line, out)
		}
	}
	var js struct {
		Client struct{ Version string }
		Server struct {
			Version            string
			MaxProtocolVersion int
		}
	}
	if err := json.Unmarshal(ctl(t, s, "version", "-o", "json"), &js); err != nil {
		t.Fatal(err)
	}
	if js.Client.Version != e2eVersion || js.Server.Version != e2eVersion || js.Server.MaxProtocolVersion < 1 {
		t.Errorf("casarectl version -o json = %+v", js)
	}

	// A robot sends the version of its agent; the list shows it.
	dir := filepath.Join(t.TempDir(), "v1")
	if out, err := agentCmd("enroll", "--token", enrollmentToken(t, s, "v1"), "--dir", dir); err != nil {
		t.Fatalf("enrol: %v\n%s", err, out)
	}
	startAgent(t, dir)
	waitStatuses(t, s, map[string]string{"v1": "IDLE"}, 15*time.Second)
	list := string(ctl(t, s, "robots", "list"))
	header, row, _ := strings.Cut(list, "\n")
	if !strings.Contains(header, "VERSION") || !strings.Contains(row, e2eVersion) {
		t.Errorf("robots list does not show the agent's version:\n%s", list)
	}
	if got := string(ctl(t, s, "robots", "get", "v1")); !strings.Contains(got, "Protocol:") || strings.Contains(got, "Problem:") {
		t.Errorf("robots get v1 of a robot served:\n%s", got)
	}
}

func TestARobotOfAProtocolTheServerCannotServeIsRefusedAndShown(t *testing.T) {
	t.Parallel()
	s := startServer(t, t.TempDir(), "--heartbeat-interval", "200ms")
	dir := filepath.Join(t.TempDir(), "future")
	if out, err := agentCmd("enroll", "--token", enrollmentToken(t, s, "future"), "--dir", dir); err != nil {
		t.Fatalf("enrol: %v\n%s", err, out)
	}
	agent := startAgent(t, dir, "--protocol-version", "99", "--max-refusals", "1")

	deadline := time.Now().Add(30 * time.Second)
	var got string
	for time.Now().Before(deadline) {
		got = string(ctl(t, s, "robots", "get", "future"))
		if strings.Contains(got, "Problem:") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, want := range []string{`Protocol:\s+99\n`, `Problem:.*protocol version 99.*upgrade the control plane`, `Version:\s+` + regexp.QuoteMeta(e2eVersion)} {
		if !regexp.MustCompile(want).MatchString(got) {
			t.Errorf("robots get future lacks %q:\n%s", want, got)
		}
	}
	if log := s.log.String(); !strings.Contains(log, "robot speaks a protocol version this control plane cannot serve") || !strings.Contains(log, "protocol=99") {
		t.Errorf("the server does not log the refused protocol:\n%s", log)
	}
	// Refused for good, the agent gives up with its own exit code rather
	// than redialling forever.
	done := make(chan error, 1)
	go func() { done <- agent.cmd.Wait() }()
	select {
	case err := <-done:
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 {
			t.Errorf("agent exit: %v, want code 3\n%s", err, agent.log.String())
		}
	case <-time.After(60 * time.Second):
		t.Errorf("the refused agent still runs after 60s\n%s", agent.log.String())
	}
}
