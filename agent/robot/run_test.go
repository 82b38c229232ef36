package robot

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/casarerpa/casare/agent/workflow"
	agentv1 "github.com/casarerpa/casare/rpc/casare/agent/v1"
)

// plane is a control plane on loopback for Run: it welcomes the robot,
// gives it one job, acknowledges the job's end and records what the robot
// sends.
type plane struct {
	addr string

	mu     sync.Mutex
	got    []*agentv1.AgentMessage
	stream *quic.Stream
	more   chan struct{} // a message arrived
	// items answers the robot's work-queue calls.
	items  *serverItems
	closed chan struct{} // the robot's connection is over
}

// newPlane starts a control plane and enrols a robot with it in dir; the
// robot is assigned job "j1" running the workflow doc.
func newPlane(t *testing.T, dir, doc string, items *serverItems) *plane {
	t.Helper()
	wfJSON := workflowJSON(t, doc)
	caKey, caCert, caDER := newCA(t)
	serverCert := leafCert(t, caKey, caCert, &x509.Certificate{IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	robotCert := leafCert(t, caKey, caCert, &x509.Certificate{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})

	ln, err := quic.ListenAddr("127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{serverCert}, NextProtos: []string{agentv1.ALPN}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	p := &plane{addr: ln.Addr().String(), more: make(chan struct{}, 1), closed: make(chan struct{}), items: items}
	if err := save(dir, &Identity{Server: p.addr, RobotID: "r1", Name: "r1"}, robotCert.PrivateKey.(*ecdsa.PrivateKey),
		&agentv1.EnrollResponse{RobotId: "r1", Certificate: robotCert.Certificate[0], Ca: caDER}); err != nil {
		t.Fatal(err)
	}
	go func() {
		conn, err := ln.Accept(context.Background())
		if err != nil {
			return
		}
		defer close(p.closed)
		go func() {
			// Log lines come on streams of their own; read and drop them.
			for {
				s, err := conn.AcceptUniStream(context.Background())
				if err != nil {
					return
				}
				go io.Copy(io.Discard, s)
			}
		}()
		stream, err := conn.AcceptStream(context.Background())
		if err != nil {
			return
		}
		frames := agentv1.NewFrameReader(stream)
		if err := frames.Read(&agentv1.AgentMessage{}); err != nil {
			return
		}
		p.mu.Lock()
		p.stream = stream
		p.mu.Unlock()
		go p.serveCalls(conn)
		p.send(t, &agentv1.ServerMessage{Msg: &agentv1.ServerMessage_Welcome{Welcome: &agentv1.Welcome{
			RobotId: "r1", RobotName: "r1", HeartbeatInterval: durationpb.New(30 * time.Second),
		}}})
		p.send(t, &agentv1.ServerMessage{Msg: &agentv1.ServerMessage_JobAssign{JobAssign: &agentv1.JobAssign{
			JobId: "j1", Attempt: 1, Workflow: wfJSON,
		}}})
		for {
			msg := &agentv1.AgentMessage{}
			if err := frames.Read(msg); err != nil {
				// The robot ended its stream: it has said everything.
				conn.CloseWithError(0, "")
				<-conn.Context().Done()
				return
			}
			p.mu.Lock()
			p.got = append(p.got, msg)
			p.mu.Unlock()
			select {
			case p.more <- struct{}{}:
			default:
			}
			var end interface {
				GetJobId() string
				GetAttempt() int32
			}
			switch m := msg.GetMsg().(type) {
			case *agentv1.AgentMessage_JobComplete:
				end = m.JobComplete
			case *agentv1.AgentMessage_JobFail:
				end = m.JobFail
			case *agentv1.AgentMessage_JobReject:
				end = m.JobReject
			}
			if end != nil {
				p.send(t, &agentv1.ServerMessage{Msg: &agentv1.ServerMessage_JobAck{JobAck: &agentv1.JobAck{JobId: end.GetJobId(), Attempt: end.GetAttempt()}}})
			}
		}
	}()
	return p
}

// serveCalls answers the work-queue calls the robot makes on streams of
// their own, as the gateway does.
func (p *plane) serveCalls(conn *quic.Conn) {
	for {
		s, err := conn.AcceptStream(context.Background())
		if err != nil {
			return
		}
		go func() {
			call := &agentv1.WorkItemCall{}
			if err := agentv1.NewFrameReader(s).Read(call); err != nil {
				s.CancelWrite(0)
				return
			}
			agentv1.WriteFrame(s, p.items.Call(context.Background(), "r1", call))
			s.Close()
		}()
	}
}

// workflowJSON is the workflow doc as a job_assign carries it.
func workflowJSON(t *testing.T, doc string) []byte {
	t.Helper()
	wf, err := workflow.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	b, err := protojson.Marshal(wf)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (p *plane) send(t *testing.T, msg *agentv1.ServerMessage) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := agentv1.WriteFrame(p.stream, msg); err != nil {
		t.Logf("control plane: send %T: %v", msg.GetMsg(), err)
	}
}

// received returns what the robot has sent so far, heartbeats and
// progress left out.
func (p *plane) received() []*agentv1.AgentMessage {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*agentv1.AgentMessage
	for _, m := range p.got {
		if m.GetHeartbeat() == nil && m.GetJobProgress() == nil {
			out = append(out, m)
		}
	}
	return out
}

// waitFor waits until the robot has sent a message that ok accepts.
func (p *plane) waitFor(t *testing.T, what string, ok func(*agentv1.AgentMessage) bool) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		for _, m := range p.received() {
			if ok(m) {
				return
			}
		}
		select {
		case <-p.more:
		case <-deadline:
			t.Fatalf("the robot never sent %s; it sent %v", what, p.received())
		}
	}
}

// kinds names the messages in the order they came, e.g. "JobAccept".
func kinds(msgs []*agentv1.AgentMessage) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = strings.TrimPrefix(fmt.Sprintf("%T", m.GetMsg()), "*agentv1.AgentMessage_")
	}
	return out
}

func newCA(t *testing.T) (*ecdsa.PrivateKey, *x509.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return key, cert, der
}

func leafCert(t *testing.T, caKey *ecdsa.PrivateKey, ca *x509.Certificate, tmpl *x509.Certificate) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour*400)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// robotGoroutines lists the goroutines running code of the robot (any
// package under agent/, tests aside) by id, with their stacks.
func robotGoroutines() map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	_, here, _, _ := runtime.Caller(0)
	agentDir := filepath.Dir(filepath.Dir(here)) + string(filepath.Separator)
	out := map[string]string{}
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		stack := string(g)
		header, _, _ := strings.Cut(stack, "\n")
		for _, line := range strings.Split(stack, "\n") {
			if strings.HasPrefix(line, "\t"+agentDir) && !strings.Contains(line, "_test.go") {
				out[header[:strings.IndexByte(header, '[')]] = stack
				break
			}
		}
	}
	return out
}

// runRobot starts Run against a plane and returns its context's cancel and
// Run's answer.
func runRobot(t *testing.T, doc string, drainTimeout time.Duration) (*plane, context.CancelFunc, <-chan error) {
	t.Helper()
	return runRobotWith(t, doc, drainTimeout, &serverItems{})
}

// runRobotWith is runRobot with the plane's answers to work-queue calls.
func runRobotWith(t *testing.T, doc string, drainTimeout time.Duration, items *serverItems) (*plane, context.CancelFunc, <-chan error) {
	t.Helper()
	dir := t.TempDir()
	p := newPlane(t, dir, doc, items)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{
			Dir:          dir,
			Abilities:    Abilities{NoBrowser: true},
			Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
			DrainTimeout: drainTimeout,
			MinBackoff:   50 * time.Millisecond,
			MaxRefusals:  1,
		})
	}()
	return p, cancel, done
}

// waitRun returns Run's answer.
func waitRun(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(time.Minute):
		t.Fatal("Run did not return")
		return nil
	}
}

func accepted(m *agentv1.AgentMessage) bool { return m.GetJobAccept() != nil }

// TestRunOwnsItsGoroutines: once Run returns, nothing the robot started
// still runs, so nothing of it can write any more: not the job, its log
// shipping or its report, not the lease watch, the drain or a dial.
func TestRunOwnsItsGoroutines(t *testing.T) {
	const longJob = `
steps:
  - {id: hello, uses: log, with: {message: "a line to ship"}}
  - {id: wait, uses: delay, with: {duration: 1h}}
`
	started := func(before map[string]string) map[string]string {
		out := map[string]string{}
		for id, stack := range robotGoroutines() {
			if _, ok := before[id]; !ok {
				out[id] = stack
			}
		}
		return out
	}
	noneLeft := func(t *testing.T, before map[string]string) {
		t.Helper()
		for _, stack := range started(before) {
			t.Errorf("still running after Run returned:\n%s", stack)
		}
	}
	t.Run("Drained", func(t *testing.T) {
		before := robotGoroutines()
		p, cancel, done := runRobot(t, longJob, 200*time.Millisecond)
		p.waitFor(t, "job_accept", accepted)
		// The check sees the robot's goroutines while it runs.
		if len(started(before)) == 0 {
			t.Fatal("no goroutine of the robot seen while it runs a job")
		}
		cancel()
		if err := waitRun(t, done); err != nil {
			t.Fatalf("Run: %v", err)
		}
		noneLeft(t, before)
		got := p.received()
		want := []string{"JobAccept", "Draining", "JobReject", "Drained"}
		if diff := strings.Join(kinds(got), " "); diff != strings.Join(want, " ") {
			t.Fatalf("the robot sent %s, want %s", diff, strings.Join(want, " "))
		}
		if reason := got[2].GetJobReject().GetReason(); !strings.Contains(reason, "drained before the job finished") {
			t.Errorf("job handed back with %q", reason)
		}
		select {
		case <-p.closed:
		case <-time.After(30 * time.Second):
			t.Fatal("the robot's connection is still open after Run returned")
		}
	})
	// A robot refused mid-job gives up at once: its job is stopped and its
	// shipping too, though the job's end never reached the control plane.
	t.Run("Refused", func(t *testing.T) {
		before := robotGoroutines()
		p, _, done := runRobot(t, longJob, time.Hour)
		p.waitFor(t, "job_accept", accepted)
		p.send(t, &agentv1.ServerMessage{Msg: &agentv1.ServerMessage_Refused{Refused: &agentv1.Refused{Reason: "deleted"}}})
		var refused *RefusedError
		if err := waitRun(t, done); !errors.As(err, &refused) {
			t.Fatalf("Run: %v, want a *RefusedError", err)
		}
		noneLeft(t, before)
	})
}

// TestRunWaitsForRunningJobsOnDrain: a robot told to stop lets its running
// job finish and report before Run returns.
func TestRunWaitsForRunningJobsOnDrain(t *testing.T) {
	p, cancel, done := runRobot(t, `
steps:
  - {id: wait, uses: delay, with: {duration: 1s}}
outputs: {done: "yes"}
`, time.Minute)
	p.waitFor(t, "job_accept", accepted)
	cancel()
	if err := waitRun(t, done); err != nil {
		t.Fatalf("Run: %v", err)
	}
	got := p.received()
	want := []string{"JobAccept", "Draining", "JobComplete", "Drained"}
	if diff := strings.Join(kinds(got), " "); diff != strings.Join(want, " ") {
		t.Fatalf("the robot sent %s, want %s", diff, strings.Join(want, " "))
	}
	if out := got[2].GetJobComplete().GetOutputs().AsMap(); out["done"] != "yes" {
		t.Errorf("outputs %v", out)
	}
}

// TestRunDrainsWhenTheControlPlaneAsks: a drain the control plane asks for
// is Run's too: the job finishes, and Run returns without its context
// being cancelled.
func TestRunDrainsWhenTheControlPlaneAsks(t *testing.T) {
	p, _, done := runRobot(t, `
steps:
  - {id: wait, uses: delay, with: {duration: 1s}}
`, time.Minute)
	p.waitFor(t, "job_accept", accepted)
	p.send(t, &agentv1.ServerMessage{Msg: &agentv1.ServerMessage_Drain{Drain: &agentv1.Drain{Reason: "rollout"}}})
	if err := waitRun(t, done); err != nil {
		t.Fatalf("Run: %v", err)
	}
	got := p.received()
	want := []string{"JobAccept", "Draining", "JobComplete", "Drained"}
	if diff := strings.Join(kinds(got), " "); diff != strings.Join(want, " ") {
		t.Fatalf("the robot sent %s, want %s", diff, strings.Join(want, " "))
	}
	if reason := got[1].GetDraining().GetReason(); reason != "rollout" {
		t.Errorf("draining for %q, want the control plane's reason", reason)
	}
}

// TestNewerAttemptStopsTheOlder: offered a later attempt of a job it
// still runs, the robot stops the earlier one (the control plane has
// fenced it) and turns the new one down until that one's end is
// acknowledged; offered again, it takes it.
func TestNewerAttemptStopsTheOlder(t *testing.T) {
	const doc = `
steps:
  - {id: wait, uses: delay, with: {duration: 1h}}
`
	wfJSON := workflowJSON(t, doc)
	p, _, _ := runRobot(t, doc, time.Minute)
	p.waitFor(t, "job_accept", accepted)
	assign := func(attempt int32) {
		p.send(t, &agentv1.ServerMessage{Msg: &agentv1.ServerMessage_JobAssign{JobAssign: &agentv1.JobAssign{JobId: "j1", Attempt: attempt, Workflow: wfJSON}}})
	}
	assign(2)
	p.waitFor(t, "job_reject of attempt 2", func(m *agentv1.AgentMessage) bool {
		r := m.GetJobReject()
		return r.GetAttempt() == 2 && strings.Contains(r.GetReason(), "still stopping attempt 1")
	})
	p.waitFor(t, "the end of attempt 1", func(m *agentv1.AgentMessage) bool {
		f := m.GetJobFail()
		return f.GetAttempt() == 1 && strings.Contains(f.GetError(), "gave the job to attempt 2")
	})
	// The plane acknowledged that end; the job is the robot's to take again.
	deadline := time.Now().Add(30 * time.Second)
	for {
		assign(2)
		ok := false
		for _, m := range p.received() {
			if a := m.GetJobAccept(); a.GetAttempt() == 2 {
				ok = true
			}
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("attempt 2 never accepted; the robot sent %v", kinds(p.received()))
		}
		time.Sleep(100 * time.Millisecond)
	}
}
