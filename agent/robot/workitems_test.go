package robot

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/casarerpa/casare/agent/step"
	agentv1 "github.com/casarerpa/casare/rpc/casare/agent/v1"
	"github.com/casarerpa/casare/server/gateway"
	"github.com/casarerpa/casare/server/pki"
	"github.com/casarerpa/casare/server/registry"
)

// gatewayStore is the registry as the gateway needs it to welcome robots:
// it knows every robot it is asked for.
type gatewayStore struct{}

func (gatewayStore) EnrollRobot(context.Context, string, *registry.Robot, time.Time) error {
	return registry.ErrNotFound
}
func (gatewayStore) GetRobot(_ context.Context, id string) (*registry.Robot, error) {
	return &registry.Robot{ID: id, Name: id}, nil
}
func (gatewayStore) RobotConnected(context.Context, *registry.Robot) error { return nil }
func (gatewayStore) RobotsOffline(context.Context, map[string]registry.RobotSession) error {
	return nil
}
func (gatewayStore) TouchRobots(context.Context, map[string]time.Time) error              { return nil }
func (gatewayStore) RevokedSerials(context.Context) ([]string, error)                     { return nil, nil }
func (gatewayStore) SetRobotStatus(context.Context, string, registry.RobotStatus) error   { return nil }
func (gatewayStore) SetRobotCertificate(context.Context, string, string, time.Time) error { return nil }
func (gatewayStore) RobotProtocolRefused(context.Context, string, string, int32, string) error {
	return nil
}

// serverItems is the control plane's side of the calls, in memory: it
// answers with scripted refusals first, then as a queue would.
type serverItems struct {
	mu      sync.Mutex
	calls   []*agentv1.WorkItemCall
	robots  []string
	refuse  []*agentv1.WorkItemResult // answered first, one a call
	blocked chan struct{}             // when set, calls wait for it
	// limited makes a next give stock items, then none.
	limited bool
	stock   int
}

func (s *serverItems) Call(ctx context.Context, robotID string, call *agentv1.WorkItemCall) *agentv1.WorkItemResult {
	s.mu.Lock()
	s.calls = append(s.calls, call)
	s.robots = append(s.robots, robotID)
	blocked := s.blocked
	var refusal *agentv1.WorkItemResult
	if len(s.refuse) > 0 {
		refusal, s.refuse = s.refuse[0], s.refuse[1:]
	}
	s.mu.Unlock()
	if blocked != nil {
		select {
		case <-blocked:
		case <-ctx.Done():
			return &agentv1.WorkItemResult{Code: "unavailable", Error: "cancelled"}
		}
	}
	if refusal != nil {
		return refusal
	}
	switch op := call.GetOp().(type) {
	case *agentv1.WorkItemCall_Add:
		ids := make([]string, len(op.Add.GetItems()))
		for i, it := range op.Add.GetItems() {
			ids[i] = "id-" + it.GetReference()
		}
		return &agentv1.WorkItemResult{AddedIds: ids}
	case *agentv1.WorkItemCall_Next:
		s.mu.Lock()
		empty := op.Next.GetQueue() == "empty" || (s.limited && s.stock == 0)
		if s.limited && !empty {
			s.stock--
		}
		s.mu.Unlock()
		if empty {
			return &agentv1.WorkItemResult{}
		}
		data, _ := structpb.NewStruct(map[string]any{"invoice": "A-1"})
		return &agentv1.WorkItemResult{Item: &agentv1.HeldWorkItem{
			Id: "id-1", Queue: op.Next.GetQueue(), Reference: "inv-1", Priority: "high", Data: data, Retry: 2,
			Deadline: timestamppb.New(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)),
		}}
	}
	return &agentv1.WorkItemResult{}
}

func (s *serverItems) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.calls)
}

// gatewayFor starts a real gateway on loopback serving items (nil: none).
func gatewayFor(t *testing.T, items gateway.WorkItems) (*gateway.Gateway, *pki.CA) {
	t.Helper()
	ca, _, err := pki.Init(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	opts := gateway.Options{
		Addr: "127.0.0.1:0", CA: ca, Store: gatewayStore{}, HeartbeatInterval: time.Second,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if items != nil {
		opts.WorkItems = items
	}
	g, err := gateway.New(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { g.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return g, ca
}

// robotConn dials the gateway as robot id, with a certificate its CA
// signed, and registers: hello, welcome, heartbeats until the test ends.
func robotConn(t *testing.T, g *gateway.Gateway, ca *pki.CA, id string) *quic.Conn {
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
	roots := x509.NewCertPool()
	roots.AddCert(ca.Certificate())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := quic.DialAddr(ctx, g.Addr(), &tls.Config{
		RootCAs: roots, ServerName: "127.0.0.1", NextProtos: []string{agentv1.ALPN},
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
	go func() {
		beat := time.NewTicker(200 * time.Millisecond)
		defer beat.Stop()
		for {
			select {
			case <-beat.C:
				if agentv1.WriteFrame(control, &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_Heartbeat{Heartbeat: &agentv1.Heartbeat{}}}) != nil {
					return
				}
			case <-conn.Context().Done():
				return
			}
		}
	}()
	return conn
}

// switchable is a connSource whose connection a test replaces, as the
// robot's reconnect does.
type switchable struct {
	mu      sync.Mutex
	conn    *quic.Conn
	changed chan struct{}
}

func newSwitchable(conn *quic.Conn) *switchable {
	return &switchable{conn: conn, changed: make(chan struct{})}
}

func (s *switchable) current() (*quic.Conn, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conn, s.changed
}

func (s *switchable) set(conn *quic.Conn) {
	s.mu.Lock()
	s.conn = conn
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

func clientOn(conns connSource) *workItemClient {
	return &workItemClient{
		jobID: "j1", attempt: 3, conns: conns, slots: make(chan struct{}, maxWorkItemCalls),
		log: slog.New(slog.NewTextHandler(io.Discard, nil)), retryFor: 20 * time.Second,
	}
}

func TestWorkItemClientThroughTheGateway(t *testing.T) {
	t.Parallel()
	items := &serverItems{}
	g, ca := gatewayFor(t, items)
	c := clientOn(newSwitchable(robotConn(t, g, ca, "r1")).current)
	ctx := context.Background()

	ids, err := c.Add(ctx, "invoices", []step.NewWorkItem{
		{Reference: "a", Data: map[string]any{"n": 1}, Deadline: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)},
		{Reference: "b", Priority: "low"},
	})
	if err != nil || strings.Join(ids, ",") != "id-a,id-b" {
		t.Fatalf("Add = %v, %v", ids, err)
	}
	it, err := c.Next(ctx, "invoices")
	if err != nil || it == nil {
		t.Fatalf("Next = %v, %v", it, err)
	}
	if it.ID != "id-1" || it.Reference != "inv-1" || it.Priority != "high" || it.Retry != 2 || it.Data["invoice"] != "A-1" || it.Deadline.Year() != 2030 {
		t.Errorf("item %+v", it)
	}
	if it, err := c.Next(ctx, "empty"); it != nil || err != nil {
		t.Errorf("Next on an empty queue = %v, %v; want nil, nil", it, err)
	}
	if err := c.Progress(ctx, "id-1", "half"); err != nil {
		t.Fatal(err)
	}
	if err := c.Complete(ctx, "id-1", map[string]any{"paid": true}); err != nil {
		t.Fatal(err)
	}
	if err := c.Fail(ctx, "id-2", step.BusinessException, "no such customer"); err != nil {
		t.Fatal(err)
	}

	items.mu.Lock()
	defer items.mu.Unlock()
	if len(items.calls) != 6 {
		t.Fatalf("%d calls reached the control plane, want 6", len(items.calls))
	}
	for i, call := range items.calls {
		if call.GetJobId() != "j1" || call.GetAttempt() != 3 || items.robots[i] != "r1" {
			t.Errorf("call %d: job %q attempt %d from %q, want j1, 3, r1", i, call.GetJobId(), call.GetAttempt(), items.robots[i])
		}
	}
	add := items.calls[0].GetAdd()
	if add.GetQueue() != "invoices" || add.GetItems()[0].GetData().AsMap()["n"] != float64(1) || add.GetItems()[0].GetDeadline().AsTime().Year() != 2030 || add.GetItems()[1].GetPriority() != "low" || add.GetItems()[1].GetData() != nil {
		t.Errorf("add sent as %v", add)
	}
	if done := items.calls[4].GetComplete(); done.GetItemId() != "id-1" || done.GetOutput().AsMap()["paid"] != true {
		t.Errorf("complete sent as %v", done)
	}
	if failed := items.calls[5].GetFail(); failed.GetException() != "business" || failed.GetReason() != "no such customer" {
		t.Errorf("fail sent as %v", failed)
	}
}

func TestWorkItemClientRefusals(t *testing.T) {
	t.Parallel()
	t.Run("BusinessRefusalsAreNotRetried", func(t *testing.T) {
		t.Parallel()
		items := &serverItems{refuse: []*agentv1.WorkItemResult{{Code: "already_exists", Error: `reference "a" already exists in queue invoices`}}}
		g, ca := gatewayFor(t, items)
		c := clientOn(newSwitchable(robotConn(t, g, ca, "r1")).current)
		_, err := c.Add(context.Background(), "invoices", []step.NewWorkItem{{Reference: "a"}})
		if err == nil || !step.IsBusiness(err) || err.Error() != `reference "a" already exists in queue invoices` {
			t.Fatalf("err = %v, want the refusal as a business error", err)
		}
		if n := items.count(); n != 1 {
			t.Errorf("%d calls, want 1", n)
		}
	})
	t.Run("UnavailableIsRetried", func(t *testing.T) {
		t.Parallel()
		busy := &agentv1.WorkItemResult{Code: "unavailable", Error: "the database is restarting"}
		items := &serverItems{refuse: []*agentv1.WorkItemResult{busy, busy, {Code: "resource_exhausted", Error: "too many"}}}
		g, ca := gatewayFor(t, items)
		c := clientOn(newSwitchable(robotConn(t, g, ca, "r1")).current)
		if it, err := c.Next(context.Background(), "invoices"); err != nil || idOf(it) != "id-1" {
			t.Fatalf("Next = %v, %v; want the item after the retries", it, err)
		}
		if n := items.count(); n != 4 {
			t.Errorf("%d calls, want 4", n)
		}
	})
	t.Run("UnavailableForTooLongIsAnApplicationError", func(t *testing.T) {
		t.Parallel()
		busy := &agentv1.WorkItemResult{Code: "unavailable", Error: "the database is down"}
		items := &serverItems{refuse: []*agentv1.WorkItemResult{busy, busy, busy, busy, busy, busy, busy, busy, busy, busy, busy, busy, busy, busy, busy, busy}}
		g, ca := gatewayFor(t, items)
		c := clientOn(newSwitchable(robotConn(t, g, ca, "r1")).current)
		c.retryFor = time.Second
		err := c.Complete(context.Background(), "id-1", nil)
		if err == nil || step.IsBusiness(err) || !strings.Contains(err.Error(), "the database is down") {
			t.Fatalf("err = %v, want an application error saying why", err)
		}
	})
	t.Run("InternalErrorsAreApplicationErrors", func(t *testing.T) {
		t.Parallel()
		items := &serverItems{refuse: []*agentv1.WorkItemResult{{Code: "internal", Error: "internal error"}}}
		g, ca := gatewayFor(t, items)
		c := clientOn(newSwitchable(robotConn(t, g, ca, "r1")).current)
		err := c.Progress(context.Background(), "id-1", "x")
		if err == nil || step.IsBusiness(err) || err.Error() != "internal error" {
			t.Fatalf("err = %v, want an application error", err)
		}
		if n := items.count(); n != 1 {
			t.Errorf("%d calls, want 1: the engine's retry, not the client's, applies", n)
		}
	})
	t.Run("AControlPlaneWithoutWorkQueues", func(t *testing.T) {
		t.Parallel()
		g, ca := gatewayFor(t, nil)
		c := clientOn(newSwitchable(robotConn(t, g, ca, "r1")).current)
		_, err := c.Next(context.Background(), "invoices")
		if err == nil || !step.IsBusiness(err) || !strings.Contains(err.Error(), "serves no work queues") {
			t.Fatalf("err = %v, want a business error", err)
		}
	})
	t.Run("TheJobEnds", func(t *testing.T) {
		t.Parallel()
		items := &serverItems{blocked: make(chan struct{})}
		g, ca := gatewayFor(t, items)
		c := clientOn(newSwitchable(robotConn(t, g, ca, "r1")).current)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { _, err := c.Next(ctx, "invoices"); done <- err }()
		deadline := time.Now().Add(10 * time.Second)
		for items.count() == 0 {
			if time.Now().After(deadline) {
				t.Fatal("the call never reached the control plane")
			}
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
		select {
		case err := <-done:
			if err == nil || step.IsBusiness(err) || !strings.Contains(err.Error(), "the job ended") {
				t.Fatalf("err = %v, want an application error saying the job ended", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the call did not end with the job")
		}
		close(items.blocked)
	})
}

// A call whose connection is lost is made again on the robot's next
// connection, which may be to another replica.
func TestWorkItemClientRetriesOnTheNextConnection(t *testing.T) {
	t.Parallel()
	first := &serverItems{blocked: make(chan struct{})}
	g1, ca1 := gatewayFor(t, first)
	second := &serverItems{}
	g2, ca2 := gatewayFor(t, second)
	conns := newSwitchable(robotConn(t, g1, ca1, "r1"))
	c := clientOn(conns.current)

	done := make(chan error, 1)
	var got *step.WorkItem
	go func() {
		var err error
		got, err = c.Next(context.Background(), "invoices")
		done <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for first.count() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the call never reached the first replica")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The first replica's connection dies mid-call; for a moment the
	// robot has none, then it is registered with the second.
	old, _ := conns.current()
	conns.set(nil)
	old.CloseWithError(0, "replica gone")
	conns.set(robotConn(t, g2, ca2, "r1"))
	select {
	case err := <-done:
		if err != nil || idOf(got) != "id-1" {
			t.Fatalf("Next = %v, %v; want the item from the second replica", got, err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the call was not made again on the new connection")
	}
	if n := second.count(); n != 1 {
		t.Errorf("%d calls reached the second replica, want 1", n)
	}
	close(first.blocked)
}

// idOf reads a possibly nil item's id, for test messages.
func idOf(it *step.WorkItem) string {
	if it == nil {
		return ""
	}
	return it.ID
}

// A job the robot runs reaches the work queues through its connection.
func TestJobsProcessQueueItems(t *testing.T) {
	const wf = `
steps:
  - id: loop
    uses: queue.process
    with: {queue: invoices}
    steps:
      - {id: pay, uses: log, with: {message: "paying ${{ item.data.invoice }}"}}
outputs: {done: "${{ steps.loop.outputs.succeeded }}"}
`
	p, _, _ := runRobotWith(t, wf, time.Second, &serverItems{limited: true, stock: 2})
	p.waitFor(t, "job_complete", func(m *agentv1.AgentMessage) bool { return m.GetJobComplete() != nil || m.GetJobFail() != nil })
	for _, m := range p.received() {
		if f := m.GetJobFail(); f != nil {
			t.Fatalf("the job failed: %v", f)
		}
		if c := m.GetJobComplete(); c != nil && c.GetOutputs().AsMap()["done"] != float64(2) {
			t.Errorf("outputs %v, want done 2", c.GetOutputs())
		}
	}
	p.items.mu.Lock()
	defer p.items.mu.Unlock()
	var ops []string
	for _, c := range p.items.calls {
		ops = append(ops, strings.TrimPrefix(fmt.Sprintf("%T", c.GetOp()), "*agentv1.WorkItemCall_"))
		if c.GetJobId() != "j1" || c.GetAttempt() != 1 {
			t.Errorf("a call of job %q attempt %d, want j1 attempt 1", c.GetJobId(), c.GetAttempt())
		}
	}
	if got := strings.Join(ops, " "); got != "Next Complete Next Complete Next" {
		t.Errorf("calls %s, want two items taken and completed, then none", got)
	}
}
