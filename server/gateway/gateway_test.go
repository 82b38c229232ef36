package gateway

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"

	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	agentv1 "github.com/casarerpa/casare/rpc/casare/agent/v1"
	"github.com/casarerpa/casare/server/logtest"
	"github.com/casarerpa/casare/server/pki"
	"github.com/casarerpa/casare/server/registry"
)

// store refuses every enrollment token; the gateway needs nothing else
// of it here.
type store struct{}

func (store) EnrollRobot(context.Context, string, *registry.Robot, time.Time) error {
	return registry.ErrNotFound
}
func (store) GetRobot(context.Context, string) (*registry.Robot, error) {
	return nil, registry.ErrNotFound
}
func (store) RobotConnected(context.Context, *registry.Robot) error                 { return nil }
func (store) RobotsOffline(context.Context, map[string]registry.RobotSession) error { return nil }
func (store) TouchRobots(context.Context, map[string]time.Time) error               { return nil }
func (store) RevokedSerials(context.Context) ([]string, error)                      { return nil, nil }
func (store) SetRobotStatus(context.Context, string, registry.RobotStatus) error    { return nil }
func (store) SetRobotCertificate(context.Context, string, string, time.Time) error  { return nil }
func (store) RobotProtocolRefused(context.Context, string, string, int32, string) error {
	return nil
}

func startGateway(t *testing.T, opts Options) (*Gateway, *logtest.Buffer) {
	t.Helper()
	ca, _, err := pki.Init(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	logs := &logtest.Buffer{}
	opts.Addr = "127.0.0.1:0"
	opts.CA = ca
	opts.Store = store{}
	opts.HeartbeatInterval = time.Second
	opts.Logger = slog.New(slog.NewTextHandler(logs, nil))
	g, err := New(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { g.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return g, logs
}

// dialEnroll opens an enrolment connection without a certificate that
// keeps itself alive with pings for as long as the server lets it.
func dialEnroll(t *testing.T, addr string) *quic.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := quic.DialAddr(ctx, addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{agentv1.ALPNEnroll}},
		&quic.Config{KeepAlivePeriod: 50 * time.Millisecond, MaxIdleTimeout: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.CloseWithError(0, "") })
	return conn
}

// enroll sends a request with an unknown token and returns the answer.
func enroll(t *testing.T, conn *quic.Conn) *agentv1.EnrollResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := agentv1.WriteFrame(stream, &agentv1.EnrollRequest{Secret: []byte("guess"), Csr: csr}); err != nil {
		t.Fatal(err)
	}
	res := &agentv1.EnrollResponse{}
	if err := agentv1.NewFrameReader(stream).Read(res); err != nil {
		t.Fatal(err)
	}
	return res
}

// closedWithin waits for the server to close conn and returns how.
func closedWithin(t *testing.T, conn *quic.Conn, within time.Duration) error {
	t.Helper()
	select {
	case <-conn.Context().Done():
		return context.Cause(conn.Context())
	case <-time.After(within):
		t.Fatalf("the connection is still open after %s", within)
		return nil
	}
}

func TestEnrolmentConnectionsCannotBeHeldOpen(t *testing.T) {
	t.Parallel()
	g, _ := startGateway(t, Options{EnrollTimeout: time.Second})

	// Silent after the handshake: closed at the deadline.
	silent := dialEnroll(t, g.Addr())
	start := time.Now()
	closedWithin(t, silent, 5*time.Second)
	if d := time.Since(start); d < 500*time.Millisecond {
		t.Errorf("closed after %s, before the deadline", d)
	}

	// Answered, then kept alive instead of hanging up: closed soon after
	// the answer.
	held := dialEnroll(t, g.Addr())
	if res := enroll(t, held); !strings.Contains(res.GetError(), "unknown enrollment token") {
		t.Fatalf("answer %v, want a refusal of the token", res)
	}
	var app *quic.ApplicationError
	if err := closedWithin(t, held, 5*time.Second); !errors.As(err, &app) || !app.Remote {
		t.Fatalf("closed by %v, want the server's close", err)
	}
}

func TestEnrolmentConnectionsAreBounded(t *testing.T) {
	t.Parallel()
	g, logs := startGateway(t, Options{MaxEnrollConns: 2, EnrollTimeout: time.Minute})
	first, second := dialEnroll(t, g.Addr()), dialEnroll(t, g.Addr())
	// Both are counted once the gateway serves them: the handshakes
	// finish before that.
	deadline := time.Now().Add(10 * time.Second)
	for g.enrolling.Load() != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("%d enrolment connections served, want 2", g.enrolling.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}

	extra := dialEnroll(t, g.Addr())
	var app *quic.ApplicationError
	if err := closedWithin(t, extra, 5*time.Second); !errors.As(err, &app) || app.ErrorCode != codeBusy || !strings.Contains(app.ErrorMessage, "the limit is 2") {
		t.Fatalf("the connection over the limit ended with %v, want code %d naming the limit", err, codeBusy)
	}
	if n := logs.Count("too many enrolments at once"); n != 1 {
		t.Errorf("%d log lines for the refusal, want 1", n)
	}
	// The two within the limit go on.
	for _, conn := range []*quic.Conn{first, second} {
		if res := enroll(t, conn); !strings.Contains(res.GetError(), "unknown enrollment token") {
			t.Fatalf("answer %v, want a refusal of the token", res)
		}
	}
}

func TestRepeatedRefusalsLogOnce(t *testing.T) {
	t.Parallel()
	g, logs := startGateway(t, Options{})
	for range 5 {
		conn := dialEnroll(t, g.Addr())
		enroll(t, conn)
		conn.CloseWithError(0, "")
	}
	// An attacker without a certificate, over and over.
	for range 5 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		conn, err := quic.DialAddr(ctx, g.Addr(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{agentv1.ALPN}}, nil)
		if err == nil {
			stream, err := conn.OpenStreamSync(ctx)
			if err == nil {
				agentv1.WriteFrame(stream, &agentv1.AgentMessage{})
				err = agentv1.NewFrameReader(stream).Read(&agentv1.ServerMessage{})
			}
			var transport *quic.TransportError
			if !errors.As(err, &transport) || transport.ErrorCode != 0x100+quic.TransportErrorCode(alertCertRequired) {
				t.Errorf("a robot connection without a certificate ended with %v, want the alert certificate_required", err)
			}
		}
		cancel()
	}
	deadline := time.Now().Add(5 * time.Second)
	for logs.Count("robot refused at the handshake") == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := logs.Count("enrolment refused"); n != 1 {
		t.Errorf("%d log lines for 5 refused enrolments from one peer, want 1", n)
	}
	if n := logs.Count("robot refused at the handshake"); n != 1 {
		t.Errorf("%d log lines for 5 refused handshakes from one peer, want 1", n)
	}
}

func TestPeerLogIsBounded(t *testing.T) {
	t.Parallel()
	p := newPeerLog(time.Minute, 100)
	now := time.Now()
	logged := 0
	for i := range 10_000 {
		if ok, _ := p.allow(fmt.Sprintf("10.%d.%d.%d:%d", i>>16&255, i>>8&255, i&255, 1000+i), "bad", now); ok {
			logged++
		}
	}
	if len(p.seen) > 100 {
		t.Fatalf("%d peers remembered, the bound is 100", len(p.seen))
	}
	// 100 peers, then one line for all the others.
	if logged != 101 {
		t.Errorf("%d lines logged, want 101", logged)
	}
	// A minute on, the flood's entries make room again.
	later := now.Add(time.Minute)
	if ok, _ := p.allow("192.0.2.1:1", "bad", later); !ok {
		t.Error("a new peer a minute later is not logged")
	}
	if ok, repeats := p.allow("10.0.0.0:9", "bad", later); !ok || repeats != 0 {
		t.Errorf("allow = %v, %d", ok, repeats)
	}
	// Another port, or another address of one IPv6 /64, is the same peer.
	p = newPeerLog(time.Minute, 100)
	for _, peer := range []string{"[2001:db8::1]:1", "[2001:db8::2]:2", "[2001:db8::ffff:1]:3"} {
		p.allow(peer, "bad", now)
	}
	if ok, repeats := p.allow("[2001:db8::9]:4", "bad", now.Add(time.Minute)); !ok || repeats != 2 {
		t.Errorf("allow = %v, %d; want true, 2", ok, repeats)
	}
	if len(p.seen) != 1 {
		t.Errorf("%d entries for one /64", len(p.seen))
	}
}

func TestLease(t *testing.T) {
	for _, c := range []struct {
		heartbeat, grace, orphanAfter, want time.Duration
	}{
		// Three missed heartbeats come first; one interval off for what
		// the robot heard after the last heartbeat, half one to stop.
		{30 * time.Second, 90 * time.Second, StaleAfter(30 * time.Second), 45 * time.Second},
		{time.Second, 3 * time.Second, StaleAfter(time.Second), 1500 * time.Millisecond},
		// A short grace period comes first.
		{30 * time.Second, 60 * time.Second, StaleAfter(30 * time.Second), 15 * time.Second},
		// Too short to hold on a healthy connection: none.
		{500 * time.Millisecond, 5 * time.Second, StaleAfter(500 * time.Millisecond), 0},
		{time.Second, time.Second, StaleAfter(time.Second), 0},
	} {
		if got := Lease(c.heartbeat, c.grace, c.orphanAfter); got != c.want {
			t.Errorf("Lease(%s, %s, %s) = %s, want %s", c.heartbeat, c.grace, c.orphanAfter, got, c.want)
		}
	}
}
