package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	agentv1 "github.com/casarerpa/casare/rpc/casare/agent/v1"
)

// freeUDPAddr returns a loopback UDP address nobody listens on. The gateway
// keeps its port across a restart, so robots find it again.
func freeUDPAddr(t testing.TB) string {
	t.Helper()
	return fmt.Sprintf("127.0.0.1:%d", stablePort(t))
}

// ctl runs casarectl against s and returns its stdout; it fails the test
// on a non-zero exit.
func ctl(t *testing.T, s *serverProc, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin, "casarectl"), args...)
	cmd.Env = append(filterEnv(os.Environ(), "CASARE_"), "CASARE_SERVER="+s.url(), "CASARE_TOKEN="+s.adminToken())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("casarectl %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out
}

// agentCmd runs casare-agent to completion and returns its combined output
// and error.
func agentCmd(args ...string) (string, error) {
	out, err := exec.Command(filepath.Join(bin, "casare-agent"), args...).CombinedOutput()
	return string(out), err
}

type agentProc struct {
	cmd *exec.Cmd
	log *syncBuffer
}

func startAgent(t *testing.T, dir string, args ...string) *agentProc {
	t.Helper()
	// An agent checks its Chromium by starting it, which takes seconds
	// when many tests run at once; agents of tests that run no browser
	// steps skip it. A test that wants a browser passes withBrowser.
	if !slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--chromium") || a == "--no-browser" }) {
		args = append(args, "--no-browser")
	}
	a := &agentProc{log: &syncBuffer{}}
	a.cmd = exec.Command(filepath.Join(bin, "casare-agent"), append([]string{"run", "--dir", dir}, args...)...)
	a.cmd.Stdout, a.cmd.Stderr = a.log, a.log
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.cmd.Process.Kill(); a.cmd.Wait() })
	return a
}

// withBrowser is the agent flag that lets a test's robot run browser
// steps with the Chromium it finds.
const withBrowser = "--chromium="

func enrollmentToken(t *testing.T, s *serverProc, name string, extra ...string) string {
	t.Helper()
	var res struct {
		Token string `json:"token"`
	}
	out := ctl(t, s, append([]string{"robots", "token", "create", "--name", name, "-o", "json"}, extra...)...)
	if err := json.Unmarshal(out, &res); err != nil || !strings.HasPrefix(res.Token, agentv1.TokenPrefix) {
		t.Fatalf("robots token create: %s, %v", out, err)
	}
	return res.Token
}

// robotStatuses maps robot names to their status, as casarectl shows them.
func robotStatuses(t *testing.T, s *serverProc) map[string]string {
	t.Helper()
	var res struct {
		Robots []struct {
			Name   string            `json:"name"`
			Status string            `json:"status"`
			Labels map[string]string `json:"labels"`
		} `json:"robots"`
	}
	if err := json.Unmarshal(ctl(t, s, "robots", "list", "-o", "json"), &res); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, r := range res.Robots {
		out[r.Name] = strings.TrimPrefix(r.Status, "ROBOT_STATUS_")
	}
	return out
}

// waitStatuses polls until the robots have the statuses wanted.
func waitStatuses(t *testing.T, s *serverProc, want map[string]string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got := robotStatuses(t, s)
		ok := true
		for name, st := range want {
			if got[name] != st {
				ok = false
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("robots %v after %s, want %v\n%s", got, within, want, s.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestRobotsEnrolConnectAndComeBack(t *testing.T) {
	t.Parallel()
	quicAddr := freeUDPAddr(t)
	s := startServer(t, t.TempDir(), "--quic-addr", quicAddr, "--heartbeat-interval", "200ms")
	work := t.TempDir()

	agents := map[string]*agentProc{}
	for _, name := range []string{"r1", "r2", "r3"} {
		token := enrollmentToken(t, s, name, "--labels", "site=hq")
		dir := filepath.Join(work, name)
		if out, err := agentCmd("enroll", "--token", token, "--dir", dir); err != nil || !strings.Contains(out, "enrolled robot "+name) {
			t.Fatalf("enrol %s: %v\n%s", name, err, out)
		}
		if info, err := os.Stat(filepath.Join(dir, "robot.key")); err != nil || info.Mode().Perm() != 0o600 {
			t.Fatalf("robot key: %v %v; want mode 0600", err, info.Mode())
		}
		agents[name] = startAgent(t, dir, "--labels", "os=linux", "--capabilities", "browser")

		// A token enrols one robot only; the second try writes nothing.
		again := filepath.Join(work, name+"-again")
		if out, err := agentCmd("enroll", "--token", token, "--dir", again); err == nil || !strings.Contains(out, "already used") {
			t.Fatalf("reusing a token: %v\n%s", err, out)
		}
		if _, err := os.Stat(again); !os.IsNotExist(err) {
			t.Fatalf("a refused enrolment left %s behind", again)
		}
	}
	waitStatuses(t, s, map[string]string{"r1": "IDLE", "r2": "IDLE", "r3": "IDLE"}, 15*time.Second)
	for _, a := range agents {
		if !strings.Contains(a.log.String(), "state=REGISTERED") {
			t.Fatalf("agent log lacks REGISTERED:\n%s", a.log.String())
		}
	}

	// A robot killed outright is offline after three missed heartbeats.
	agents["r1"].cmd.Process.Signal(syscall.SIGKILL)
	waitStatuses(t, s, map[string]string{"r1": "OFFLINE", "r2": "IDLE"}, 10*time.Second)
	if !strings.Contains(s.log.String(), `reason="missed 3 heartbeats"`) {
		t.Errorf("the server does not say why r1 went offline:\n%s", s.log.String())
	}

	// The others come back on their own after a control plane restart.
	s.restart()
	waitStatuses(t, s, map[string]string{"r1": "OFFLINE", "r2": "IDLE", "r3": "IDLE"}, 20*time.Second)
	if !strings.Contains(agents["r2"].log.String(), "state=RECONNECTING") {
		t.Errorf("r2 did not log RECONNECTING:\n%s", agents["r2"].log.String())
	}

	if v := metricValue(t, s, "casare_robot_count", `environment="default",status="idle"`); v != 2 {
		t.Errorf("casare_robot_count{idle} = %v, want 2", v)
	}
	if v := metricValue(t, s, "casare_robot_count", `environment="default",status="offline"`); v != 1 {
		t.Errorf("casare_robot_count{offline} = %v, want 1", v)
	}
	r2id := robotID(t, filepath.Join(work, "r2"))
	if v := metricValue(t, s, "casare_robot_status", `robot_id="`+r2id+`",status="idle"`); v != 1 {
		t.Errorf("casare_robot_status{r2,idle} = %v, want 1", v)
	}
	if v := metricValue(t, s, "casare_robot_connected_seconds", `robot_id="`+r2id+`"`); v < 0 {
		t.Errorf("casare_robot_connected_seconds{r2} is missing")
	}

	// Watching shows the robots, then each change as it happens.
	watcher := exec.Command(filepath.Join(bin, "casarectl"), "robots", "list", "--watch")
	watcher.Env = append(filterEnv(os.Environ(), "CASARE_"), "CASARE_SERVER="+s.url(), "CASARE_TOKEN="+s.adminToken())
	watched := &syncBuffer{}
	watcher.Stdout, watcher.Stderr = watched, watched
	if err := watcher.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { watcher.Process.Kill(); watcher.Wait() })
	waitLog(t, watched, "r2 ", 1)

	// Draining tells the robot to take no new work; with nothing running
	// it is drained at once and exits 0.
	if out := ctl(t, s, "robots", "drain", "r2"); !strings.Contains(string(out), "robot r2 is DRAINING") {
		t.Fatalf("robots drain: %s", out)
	}
	waitLog(t, agents["r2"].log, "draining: taking no new work", 1)
	waitExit(t, agents["r2"], 10*time.Second)
	waitLog(t, agents["r2"].log, "msg=drained", 1)
	waitStatuses(t, s, map[string]string{"r2": "OFFLINE"}, 10*time.Second)

	// Deleting a robot revokes its certificate: the connection closes at
	// once and its reconnects are refused at the handshake.
	ctl(t, s, "robots", "delete", "r3")
	waitLog(t, agents["r3"].log, "this robot was deleted", 1)
	waitLog(t, s.log, "is revoked", 1)
	if _, ok := robotStatuses(t, s)["r3"]; ok {
		t.Fatal("r3 is still listed after delete")
	}
	waitLog(t, watched, "DELETED", 1)

	// SIGTERM stops an agent cleanly.
	agents["r2"] = startAgent(t, filepath.Join(work, "r2"))
	waitStatuses(t, s, map[string]string{"r2": "IDLE"}, 10*time.Second)
	if v := metricValue(t, s, "casare_robot_status", `robot_id="`+r2id+`",status="idle"`); v != 1 {
		t.Errorf("casare_robot_status{r2,idle} = %v, want 1", v)
	}
	agents["r2"].cmd.Process.Signal(syscall.SIGTERM)
	waitExit(t, agents["r2"], 10*time.Second)
	waitStatuses(t, s, map[string]string{"r2": "OFFLINE"}, 10*time.Second)

	out, err := agentCmd("cert", "status", "--dir", filepath.Join(work, "r2"))
	if err != nil || !strings.Contains(out, "days left") {
		t.Errorf("cert status: %v\n%s", err, out)
	}

	// A robot may speak only for itself: a hello naming another robot is
	// refused, and so is a certificate past its expiry.
	addr := quicListening.FindStringSubmatch(s.log.String())[1]
	r2cert, err := tls.LoadX509KeyPair(filepath.Join(work, "r2", "robot.crt"), filepath.Join(work, "r2", "robot.key"))
	if err != nil {
		t.Fatal(err)
	}
	if reply := rawHello(t, addr, r2cert, "someone-else"); !strings.Contains(reply, "claims robot") {
		t.Errorf("a hello for another robot: %q", reply)
	}
	expired := expiredCertificate(t, s.dataDir, r2cert)
	if reply := rawHello(t, addr, expired, ""); reply != "" {
		t.Errorf("an expired certificate was answered: %q", reply)
	}
	waitLog(t, s.log, "certificate has expired", 1)

	// A robot whose certificate is due renews it over the tunnel and goes
	// on with the new one, without a restart.
	before, _ := agentCmd("cert", "status", "--dir", filepath.Join(work, "r2"))
	renewing := startAgent(t, filepath.Join(work, "r2"), "--renew-before", "9000h")
	waitLog(t, renewing.log, "robot certificate renewed", 1)
	after, _ := agentCmd("cert", "status", "--dir", filepath.Join(work, "r2"))
	if serial(before) == "" || serial(before) == serial(after) {
		t.Fatalf("the certificate did not change:\n%s\n%s", before, after)
	}
	renewing.cmd.Process.Signal(syscall.SIGTERM)
	renewing.cmd.Wait()
	again := startAgent(t, filepath.Join(work, "r2"))
	waitLog(t, again.log, "state=REGISTERED", 1)
}

func serial(certStatus string) string {
	for _, line := range strings.Split(certStatus, "\n") {
		if v, ok := strings.CutPrefix(line, "serial:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func TestEnrolmentRefusals(t *testing.T) {
	t.Parallel()
	s := startServer(t, t.TempDir(), "--quic-addr", "127.0.0.1:0")
	work := t.TempDir()

	expired := enrollmentToken(t, s, "late", "--ttl", "1ms")
	time.Sleep(50 * time.Millisecond)
	if out, err := agentCmd("enroll", "--token", expired, "--dir", filepath.Join(work, "late")); err == nil || !strings.Contains(out, "expired") {
		t.Errorf("expired token: %v\n%s", err, out)
	}

	// A token whose fingerprint names another CA: the robot must not talk
	// to this server at all.
	tok, err := agentv1.ParseToken(enrollmentToken(t, s, "forged"))
	if err != nil {
		t.Fatal(err)
	}
	tok.CaFingerprint[0] ^= 0xff
	if out, err := agentCmd("enroll", "--token", agentv1.EncodeToken(tok), "--dir", filepath.Join(work, "forged")); err == nil || !strings.Contains(out, "fingerprint") {
		t.Errorf("forged fingerprint: %v\n%s", err, out)
	}
	if out, err := agentCmd("enroll", "--token", "cet1_garbage", "--dir", filepath.Join(work, "garbage")); err == nil || !strings.Contains(out, "enrollment token") {
		t.Errorf("garbage token: %v\n%s", err, out)
	}
	for _, name := range []string{"late", "forged", "garbage"} {
		if _, err := os.Stat(filepath.Join(work, name)); !os.IsNotExist(err) {
			t.Errorf("a refused enrolment wrote %s", name)
		}
	}
	if robots := robotStatuses(t, s); len(robots) != 0 {
		t.Errorf("refused enrolments registered robots: %v", robots)
	}

	// The robot protocol needs a certificate from this CA.
	addr := quicListening.FindStringSubmatch(s.log.String())[1]
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// In TLS 1.3 the server checks the client's certificate after the
	// client has finished, so the refusal shows on first use.
	conn, err := quic.DialAddr(ctx, addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{agentv1.ALPN}}, nil)
	if err == nil {
		stream, serr := conn.OpenStreamSync(ctx)
		if serr == nil {
			agentv1.WriteFrame(stream, &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_Hello{Hello: &agentv1.Hello{RobotId: "intruder"}}})
			serr = agentv1.NewFrameReader(stream).Read(&agentv1.ServerMessage{})
		}
		if serr == nil {
			t.Fatal("a robot connection without a certificate was served")
		}
	}
	waitLog(t, s.log, "robot refused at the handshake", 1)

	// A robot enrolled with another control plane's CA is refused too (it
	// gives up after a few tries: TestAgentExitsWhenRefused).
	other := startServer(t, t.TempDir(), "--quic-addr", "127.0.0.1:0", "--robot-cert-validity", "48h")
	foreign := filepath.Join(work, "foreign")
	if out, err := agentCmd("enroll", "--token", enrollmentToken(t, other, "foreign"), "--dir", foreign); err != nil {
		t.Fatalf("enrol with the other control plane: %v\n%s", err, out)
	}
	if out, _ := agentCmd("cert", "status", "--dir", foreign); !strings.Contains(out, "valid, 1 days left") {
		t.Errorf("--robot-cert-validity 48h: %s", out)
	}
	// The robot itself refuses a server its CA did not sign...
	agent := startAgent(t, foreign, "--server", addr)
	waitLog(t, agent.log, "state=RECONNECTING", 1)
	if !strings.Contains(agent.log.String(), "certificate signed by unknown authority") || strings.Contains(agent.log.String(), "state=REGISTERED") {
		t.Fatalf("a robot of another CA was not refused:\n%s", agent.log.String())
	}
	// ...and the server refuses its certificate even from a client that
	// trusts any server.
	cert, err := tls.LoadX509KeyPair(filepath.Join(foreign, "robot.crt"), filepath.Join(foreign, "robot.key"))
	if err != nil {
		t.Fatal(err)
	}
	// A context of its own: the first one's time went on the steps above.
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err = quic.DialAddr(ctx, addr, &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{cert}, NextProtos: []string{agentv1.ALPN}}, nil)
	if err == nil {
		if stream, err := conn.OpenStreamSync(ctx); err == nil {
			agentv1.WriteFrame(stream, &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_Hello{Hello: &agentv1.Hello{}}})
			agentv1.NewFrameReader(stream).Read(&agentv1.ServerMessage{})
		}
	}
	waitLog(t, s.log, "robot refused at the handshake", 2)
	if !strings.Contains(s.log.String(), "unknown authority") {
		t.Errorf("the server does not say why it refused the foreign certificate:\n%s", s.log.String())
	}
	if _, ok := robotStatuses(t, s)["foreign"]; ok {
		t.Fatal("a robot of another CA is in the registry")
	}
}

// waitExit waits for the agent to exit 0.
func waitExit(t *testing.T, a *agentProc, within time.Duration) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- a.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("agent exit: %v, want 0\n%s", err, a.log.String())
		}
	case <-time.After(within):
		t.Fatalf("agent still running after %s\n%s", within, a.log.String())
	}
}

// waitLog waits until text appears n times in log.
func waitLog(t *testing.T, log *syncBuffer, text string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(log.String(), text) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%q does not appear %d times in:\n%s", text, n, log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// rawHello connects with cert, says hello as robotID (the certificate's own
// id when empty), and returns the refusal's reason, or "" when the
// connection was refused before any answer.
func rawHello(t *testing.T, addr string, cert tls.Certificate, robotID string) string {
	t.Helper()
	if robotID == "" {
		leaf, _ := x509.ParseCertificate(cert.Certificate[0])
		robotID = strings.TrimPrefix(leaf.URIs[0].String(), "casare://robot/")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := quic.DialAddr(ctx, addr, &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{cert}, NextProtos: []string{agentv1.ALPN}}, nil)
	if err != nil {
		return ""
	}
	defer conn.CloseWithError(0, "")
	stream, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return ""
	}
	agentv1.WriteFrame(stream, &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_Hello{Hello: &agentv1.Hello{RobotId: robotID}}})
	reply := &agentv1.ServerMessage{}
	if err := agentv1.NewFrameReader(stream).Read(reply); err != nil {
		return ""
	}
	if reply.GetRefused() == nil {
		t.Fatalf("the gateway answered %v, want a refusal", reply)
	}
	return reply.GetRefused().GetReason()
}

// expiredCertificate signs, with the control plane's own CA, a certificate
// for cert's robot and key that expired an hour ago.
func expiredCertificate(t *testing.T, dataDir string, cert tls.Certificate) tls.Certificate {
	t.Helper()
	caPair, err := tls.LoadX509KeyPair(filepath.Join(dataDir, "ca.crt"), filepath.Join(dataDir, "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caPair.Certificate[0])
	leaf, _ := x509.ParseCertificate(cert.Certificate[0])
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		URIs:         leaf.URIs,
		NotBefore:    time.Now().Add(-48 * time.Hour),
		NotAfter:     time.Now().Add(-time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, leaf.PublicKey, caPair.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: cert.PrivateKey}
}

func robotID(t *testing.T, dir string) string {
	t.Helper()
	var id struct {
		RobotID string `json:"robot_id"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "robot.json"))
	if err != nil || json.Unmarshal(b, &id) != nil || id.RobotID == "" {
		t.Fatalf("robot.json in %s: %v", dir, err)
	}
	return id.RobotID
}
