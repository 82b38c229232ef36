package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"github.com/casarerpa/casare/server/logtest"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// bin is the directory holding the binaries TestMain builds.
var bin string

func TestMain(m *testing.M) {
	os.Exit(func() int {
		dir, err := os.MkdirTemp("", "casare-e2e-bin")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		// The version the Makefile would set, so the tests see it reach
		// --version, /metrics, the API and the robots.
		ldflags := "-X github.com/casarerpa/casare/cmd/internal/buildinfo.version=" + e2eVersion +
			" -X github.com/casarerpa/casare/cmd/internal/buildinfo.revision=" + e2eRevision
		build := exec.Command("go", "build", "-ldflags", ldflags, "-o", dir+string(filepath.Separator), "../casare-server", "../casarectl", "../casare-agent")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build binaries:", err)
			return 1
		}
		bin = dir
		return m.Run()
	}())
}

// syncBuffer collects a process's output while it runs.
type syncBuffer = logtest.Buffer

// serverProc is a casare-server process.
type serverProc struct {
	t       testing.TB
	addr    string
	scheme  string // http, or https when it serves TLS
	dataDir string
	args    []string
	cmd     *exec.Cmd
	log     *syncBuffer
	exited  chan error
}

// startServer runs casare-server on a random port with dataDir and extra
// flags, and waits until /health/ready answers 200.
func startServer(t testing.TB, dataDir string, extra ...string) *serverProc {
	t.Helper()
	s := &serverProc{t: t, dataDir: dataDir}
	s.args = append([]string{"--data-dir", dataDir}, extra...)
	s.start()
	t.Cleanup(func() { s.kill() })
	return s
}

func (s *serverProc) start() {
	s.t.Helper()
	s.log = &syncBuffer{}
	// Port 0: the kernel picks a free port and the log says which, so
	// tests running in parallel never race for one.
	// A test that needs a fixed gateway port passes its own --quic-addr,
	// which comes later and wins.
	args := append([]string{"--http-addr", "127.0.0.1:0", "--quic-addr", "127.0.0.1:0"}, s.args...)
	s.cmd = exec.Command(filepath.Join(bin, "casare-server"), args...)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	// The tests choose the backends with flags; the environment must not.
	s.cmd.Env = filterEnv(os.Environ(), "CASARE_")
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.exited = make(chan error, 1)
	go func() { s.exited <- s.cmd.Wait() }()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-s.exited:
			s.t.Fatalf("casare-server exited before it was ready: %v\n%s", err, s.log.String())
		default:
		}
		if s.addr, s.scheme = listenAddr(s.log.String()); s.addr == "" {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		res, err := probe.Get(s.url() + "/health/ready")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.t.Fatalf("casare-server not ready within 60s\n%s", s.log.String())
}

func (s *serverProc) url() string { return s.scheme + "://" + s.addr }

var (
	listening     = regexp.MustCompile(`msg="control plane listening" addr=(\S+) connect=(https?)://`)
	quicListening = regexp.MustCompile(`msg="robot gateway listening" quic=(\S+)`)
)

// listenAddr finds the address the server logged it listens on, and
// whether it serves http or https there.
func listenAddr(log string) (addr, scheme string) {
	if m := listening.FindStringSubmatch(log); m != nil {
		return m[1], m[2]
	}
	return "", ""
}

// probe asks whether a server is ready, over HTTP or HTTPS: it checks the
// process the test started, not the certificate, which the tests of TLS
// check themselves.
var probe = &http.Client{Timeout: 5 * time.Second, Transport: func() *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
	return tr
}()}

// adminToken reads the token the server wrote on first start.
func (s *serverProc) adminToken() string {
	s.t.Helper()
	b, err := os.ReadFile(filepath.Join(s.dataDir, "admin.token"))
	if err != nil {
		s.t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// stop sends SIGTERM and requires a clean exit.
func (s *serverProc) stop() {
	s.t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		s.t.Fatal(err)
	}
	select {
	case err := <-s.exited:
		if err != nil {
			s.t.Fatalf("casare-server did not exit cleanly on SIGTERM: %v\n%s", err, s.log.String())
		}
	case <-time.After(30 * time.Second):
		s.t.Fatalf("casare-server still running 30s after SIGTERM\n%s", s.log.String())
	}
	s.cmd = nil
}

// restart stops the server and starts it again with the same flags.
func (s *serverProc) restart() {
	s.t.Helper()
	s.stop()
	s.start()
}

func (s *serverProc) kill() {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Kill()
		<-s.exited
		s.cmd = nil
	}
}

func filterEnv(env []string, prefix string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, prefix) {
			out = append(out, kv)
		}
	}
	return out
}

// http1 is a client that speaks only HTTP/1.1, as curl and browsers' fetch
// to a plain-HTTP server do.
var http1 = &http.Client{
	Timeout: 30 * time.Second,
	Transport: func() *http.Transport {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.ForceAttemptHTTP2 = false
		tr.Protocols = new(http.Protocols)
		tr.Protocols.SetHTTP1(true)
		return tr
	}(),
}

// connectError is the JSON body of a Connect unary error.
type connectError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// call posts a Connect JSON request and returns the HTTP status and body.
func call(t testing.TB, base, token, procedure string, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, base+procedure, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http1.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.ProtoMajor != 1 {
		t.Fatalf("%s answered over %s, want HTTP/1.1", procedure, res.Proto)
	}
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, b
}

// callOK calls and decodes a successful answer into out.
func callOK(t testing.TB, base, token, procedure, body string, out any) {
	t.Helper()
	status, b := call(t, base, token, procedure, body)
	if status != http.StatusOK {
		t.Fatalf("%s: HTTP %d: %s", procedure, status, b)
	}
	if out != nil {
		// JSON leaves out empty fields; start from zero so none linger
		// from an earlier answer.
		reflect.ValueOf(out).Elem().SetZero()
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s: decode %s: %v", procedure, b, err)
		}
	}
}

// callErr calls and returns the Connect error the server answered with.
func callErr(t testing.TB, base, token, procedure, body string) connectError {
	t.Helper()
	status, b := call(t, base, token, procedure, body)
	if status == http.StatusOK {
		t.Fatalf("%s %s: succeeded, want an error: %s", procedure, body, b)
	}
	var e connectError
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("%s: HTTP %d, body is not a Connect error: %s", procedure, status, b)
	}
	return e
}
