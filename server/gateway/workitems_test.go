package gateway

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"google.golang.org/protobuf/encoding/protowire"

	agentv1 "github.com/casarerpa/casare/rpc/casare/agent/v1"
	"github.com/casarerpa/casare/server/logtest"
	"github.com/casarerpa/casare/server/pki"
	"github.com/casarerpa/casare/server/registry"
)

// robotStore knows every robot it is asked for, as enrolled.
type robotStore struct{ store }

func (robotStore) GetRobot(_ context.Context, id string) (*registry.Robot, error) {
	return &registry.Robot{ID: id, Name: id}, nil
}

// fakeWorkItems answers a next call with an item and the others with
// nothing; while hold is open, every call waits for it.
type fakeWorkItems struct {
	mu       sync.Mutex
	calls    []*agentv1.WorkItemCall
	robots   []string
	inFlight int
	hold     chan struct{}
}

func (f *fakeWorkItems) Call(ctx context.Context, robotID string, call *agentv1.WorkItemCall) *agentv1.WorkItemResult {
	f.mu.Lock()
	f.calls = append(f.calls, call)
	f.robots = append(f.robots, robotID)
	f.inFlight++
	hold := f.hold
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.inFlight--
		f.mu.Unlock()
	}()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return &agentv1.WorkItemResult{Code: "unavailable", Error: "cancelled"}
		}
	}
	if call.GetNext() != nil {
		return &agentv1.WorkItemResult{Item: &agentv1.HeldWorkItem{Id: "item-1", Queue: call.GetNext().GetQueue(), Reference: "inv-1"}}
	}
	return &agentv1.WorkItemResult{}
}

func (f *fakeWorkItems) running() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.inFlight
}

// startRobotGateway starts a gateway that knows every robot and returns it
// with a registered robot's connection.
func startRobotGateway(t *testing.T, opts Options) (*Gateway, *quic.Conn, *logtest.Buffer) {
	t.Helper()
	ca, _, err := pki.Init(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	logs := &logtest.Buffer{}
	opts.Addr = "127.0.0.1:0"
	opts.CA = ca
	opts.Store = robotStore{}
	opts.HeartbeatInterval = time.Second
	opts.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	g, err := New(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { g.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return g, registerRobot(t, g, ca, "r1"), logs
}

// registerRobot dials the gateway as robot id, says hello and reads the
// welcome; it keeps sending heartbeats until the test ends.
func registerRobot(t *testing.T, g *Gateway, ca *pki.CA, id string) *quic.Conn {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.SignRobot(csr, id, id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := quic.DialAddr(ctx, g.Addr(), &tls.Config{
		InsecureSkipVerify: true, NextProtos: []string{agentv1.ALPN},
		Certificates: []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: key}},
	}, &quic.Config{KeepAlivePeriod: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.CloseWithError(0, "") })
	control, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := agentv1.WriteFrame(control, &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_Hello{Hello: &agentv1.Hello{RobotId: id, ProtocolVersion: agentv1.ProtocolVersion}}}); err != nil {
		t.Fatal(err)
	}
	welcome := &agentv1.ServerMessage{}
	if err := agentv1.NewFrameReader(control).Read(welcome); err != nil || welcome.GetWelcome() == nil {
		t.Fatalf("no welcome: %v %v", welcome, err)
	}
	beat := time.NewTicker(200 * time.Millisecond)
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop); beat.Stop() })
	go func() {
		for {
			select {
			case <-beat.C:
				if agentv1.WriteFrame(control, &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_Heartbeat{Heartbeat: &agentv1.Heartbeat{}}}) != nil {
					return
				}
			case <-stop:
				return
			}
		}
	}()
	return conn
}

// rawCall opens a stream, writes frame as it is and reads the answer.
func rawCall(t *testing.T, conn *quic.Conn, frame []byte) *agentv1.WorkItemResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write(frame); err != nil {
		t.Fatal(err)
	}
	s.SetReadDeadline(time.Now().Add(20 * time.Second))
	res := &agentv1.WorkItemResult{}
	if err := agentv1.NewFrameReader(s).Read(res); err != nil {
		t.Fatalf("read the answer: %v", err)
	}
	return res
}

func frameOf(t *testing.T, call *agentv1.WorkItemCall) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := agentv1.WriteFrame(&b, call); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

var nextCall = &agentv1.WorkItemCall{JobId: "j1", Attempt: 2, Op: &agentv1.WorkItemCall_Next{Next: &agentv1.NextWorkItem{Queue: "invoices"}}}

func TestWorkItemCallsReachWorkItemsWithTheCertificatesRobot(t *testing.T) {
	t.Parallel()
	items := &fakeWorkItems{}
	_, conn, _ := startRobotGateway(t, Options{WorkItems: items})
	res := rawCall(t, conn, frameOf(t, nextCall))
	if res.GetError() != "" || res.GetItem().GetId() != "item-1" || res.GetItem().GetQueue() != "invoices" {
		t.Fatalf("answer %v, want item-1 of invoices", res)
	}
	items.mu.Lock()
	defer items.mu.Unlock()
	if len(items.calls) != 1 || items.robots[0] != "r1" || items.calls[0].GetJobId() != "j1" || items.calls[0].GetAttempt() != 2 {
		t.Fatalf("WorkItems got %v from %v, want one call of job j1 attempt 2 from r1", items.calls, items.robots)
	}
}

func TestWorkItemCallsWithoutWorkItemsAreUnimplemented(t *testing.T) {
	t.Parallel()
	_, conn, _ := startRobotGateway(t, Options{})
	if res := rawCall(t, conn, frameOf(t, nextCall)); res.GetCode() != "unimplemented" || res.GetError() == "" {
		t.Fatalf("answer %v, want unimplemented", res)
	}
}

func TestWorkItemCallsRefuseBadInput(t *testing.T) {
	t.Parallel()
	items := &fakeWorkItems{}
	_, conn, _ := startRobotGateway(t, Options{WorkItems: items, WorkItemReadTimeout: 500 * time.Millisecond})
	overLimit := protowire.AppendVarint(nil, agentv1.MaxFrameSize+1)
	overLimit = append(overLimit, make([]byte, 1024)...)
	partial := binary.AppendUvarint(nil, 100)
	for _, c := range []struct {
		name, code, says string
		frame            []byte
	}{
		{"ErrFrameOverLimit", "invalid_argument", "at most 4194304 bytes", overLimit},
		// A stream the gateway hears of only when a byte arrives: half a
		// length, then nothing.
		{"ErrStallsInTheLength", "invalid_argument", "no work-queue call arrived within 500ms", []byte{0x80}},
		{"ErrFrameCutShort", "invalid_argument", "no work-queue call arrived within 500ms", append(partial, 1, 2, 3)},
		{"ErrNoJob", "invalid_argument", "job_id: required", frameOf(t, &agentv1.WorkItemCall{Attempt: 1, Op: nextCall.Op})},
		{"ErrNoAttempt", "invalid_argument", "attempt: must be 1 or more", frameOf(t, &agentv1.WorkItemCall{JobId: "j1", Op: nextCall.Op})},
		{"ErrNoOperation", "invalid_argument", "names no operation", frameOf(t, &agentv1.WorkItemCall{JobId: "j1", Attempt: 1})},
	} {
		t.Run(c.name, func(t *testing.T) {
			res := rawCall(t, conn, c.frame)
			if res.GetCode() != c.code || !strings.Contains(res.GetError(), c.says) {
				t.Fatalf("answer %v, want %s saying %q", res, c.code, c.says)
			}
		})
	}
	if n := items.running(); n != 0 || len(items.calls) != 0 {
		t.Fatalf("WorkItems saw %d calls, want none", len(items.calls))
	}
	// The connection is still good for a proper call.
	if res := rawCall(t, conn, frameOf(t, nextCall)); res.GetItem().GetId() != "item-1" {
		t.Fatalf("answer %v after the bad calls", res)
	}
}

// A robot flooding the gateway with calls gets the excess refused at once;
// the calls within the bound, its heartbeats and other robots go on.
func TestWorkItemCallsAreBoundedPerRobot(t *testing.T) {
	t.Parallel()
	hold := make(chan struct{})
	items := &fakeWorkItems{hold: hold}
	g, conn, _ := startRobotGateway(t, Options{WorkItems: items})

	answers := make(chan *agentv1.WorkItemResult, MaxWorkItemCalls)
	for range MaxWorkItemCalls {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			s, err := conn.OpenStreamSync(ctx)
			if err != nil {
				answers <- &agentv1.WorkItemResult{Error: err.Error()}
				return
			}
			agentv1.WriteFrame(s, nextCall)
			res := &agentv1.WorkItemResult{}
			if err := agentv1.NewFrameReader(s).Read(res); err != nil {
				res.Error = err.Error()
			}
			answers <- res
		}()
	}
	deadline := time.Now().Add(20 * time.Second)
	for items.running() < MaxWorkItemCalls {
		if time.Now().After(deadline) {
			t.Fatalf("%d calls running, want %d", items.running(), MaxWorkItemCalls)
		}
		time.Sleep(10 * time.Millisecond)
	}

	for range 3 {
		res := rawCall(t, conn, frameOf(t, nextCall))
		if res.GetCode() != "resource_exhausted" || !strings.Contains(res.GetError(), "the limit is 16") {
			t.Fatalf("a call over the bound got %v, want resource_exhausted naming the limit", res)
		}
	}
	if n := items.running(); n != MaxWorkItemCalls {
		t.Fatalf("%d calls running, want %d", n, MaxWorkItemCalls)
	}
	// Heartbeats still arrive on the control stream.
	g.mu.Lock()
	delete(g.seen, "r1")
	g.mu.Unlock()
	deadline = time.Now().Add(10 * time.Second)
	for {
		g.mu.Lock()
		_, seen := g.seen["r1"]
		g.mu.Unlock()
		if seen {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no heartbeat read while the calls are held")
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Another robot's calls are not bounded by this one's.
	other := registerRobot(t, g, g.opts.CA, "r2")
	items.mu.Lock()
	items.hold = nil
	items.mu.Unlock()
	if res := rawCall(t, other, frameOf(t, nextCall)); res.GetItem().GetId() != "item-1" {
		t.Fatalf("another robot's call got %v", res)
	}

	close(hold)
	for range MaxWorkItemCalls {
		if res := <-answers; res.GetItem().GetId() != "item-1" {
			t.Fatalf("a held call got %v", res)
		}
	}
	if res := rawCall(t, conn, frameOf(t, nextCall)); res.GetItem().GetId() != "item-1" {
		t.Fatalf("a call after the flood got %v", res)
	}
}
