// Package gateway is the control plane's QUIC endpoint for robots. Robots
// dial it (they sit behind firewalls and never accept connections), enrol
// once with a one-time token, and then hold a mutually authenticated
// connection over which they say hello and send heartbeats; the gateway
// keeps who is online in memory and tells the registry in batches.
package gateway

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	agentv1 "github.com/casarerpa/casare/rpc/casare/agent/v1"
	"github.com/casarerpa/casare/server/pki"
	"github.com/casarerpa/casare/server/registry"
)

// Store is what the gateway needs from the registry.
type Store interface {
	EnrollRobot(ctx context.Context, hash string, robot *registry.Robot, at time.Time) error
	GetRobot(ctx context.Context, idOrName string) (*registry.Robot, error)
	RobotConnected(ctx context.Context, rb *registry.Robot) error
	RobotsOffline(ctx context.Context, sessions map[string]registry.RobotSession) error
	TouchRobots(ctx context.Context, lastSeen map[string]time.Time) error
	RevokedSerials(ctx context.Context) ([]string, error)
	SetRobotStatus(ctx context.Context, id string, status registry.RobotStatus) error
	SetRobotCertificate(ctx context.Context, id, serial string, expires time.Time) error
	RobotProtocolRefused(ctx context.Context, id, version string, protocol int32, problem string) error
}

// Options configures New.
type Options struct {
	// Addr is the UDP address to listen on.
	Addr string
	// Advertise is the address robots dial, put in enrollment tokens;
	// empty means the address listened on.
	Advertise         string
	CA                *pki.CA
	Store             Store
	HeartbeatInterval time.Duration
	// Lease is how long a robot cut off from every replica may keep
	// running its jobs (see Lease); zero sends none.
	Lease time.Duration
	// CertValidity is how long robot certificates last; zero means a year.
	CertValidity time.Duration
	Logger       *slog.Logger
	// Jobs takes the robots' job traffic; nil drops it.
	Jobs Jobs
	// WorkItems serves the work-queue calls of the robots' jobs; nil
	// refuses them.
	WorkItems WorkItems
	// WorkItemReadTimeout bounds the wait for a work-queue call's frame
	// once its stream is open; zero means DefaultWorkItemReadTimeout.
	WorkItemReadTimeout time.Duration
	// ResetKey derives the stateless resets the gateway answers packets
	// of connections it does not know with. Kept across restarts (and
	// shared by replicas behind one address), it lets a robot whose
	// connection died with a previous process learn so from the first
	// packet it sends; nil means a key of this process only.
	ResetKey *quic.StatelessResetKey
	// MaxEnrollConns bounds the enrolment connections open at once; zero
	// means DefaultMaxEnrollConns.
	MaxEnrollConns int
	// EnrollTimeout bounds an enrolment connection from its handshake to
	// its close; zero means DefaultEnrollTimeout.
	EnrollTimeout time.Duration
}

// WorkItems serves the work-queue steps of the jobs robots run: one
// WorkItemCall from the robot robotID, answered by one WorkItemResult
// (with Error and Code set when refused). It must fence the call by the
// job's attempt and robot.
type WorkItems interface {
	Call(ctx context.Context, robotID string, call *agentv1.WorkItemCall) *agentv1.WorkItemResult
}

// Defaults for Options.
const (
	DefaultMaxEnrollConns = 64
	DefaultEnrollTimeout  = 10 * time.Second
	// DefaultWorkItemReadTimeout is ample for a frame of a few MiB.
	DefaultWorkItemReadTimeout = 10 * time.Second
)

// Jobs is what runs jobs on the robots: the gateway tells it which robots
// come and go and hands it their job messages and log streams.
type Jobs interface {
	// RobotUp is called once a robot is welcomed, before any of its
	// messages is handed on.
	RobotUp(ctx context.Context, robot Robot)
	// RobotDown is called when a robot's connection ends and no newer one
	// replaced it. lost says it stopped answering (missed heartbeats), as
	// opposed to a connection that closed and may come back.
	RobotDown(robotID string, lost bool, reason string)
	// RobotDraining is called when a robot takes no new work any more.
	RobotDraining(robotID string)
	// Handle takes a job message from the robot, in the order sent.
	Handle(ctx context.Context, robotID string, msg *agentv1.AgentMessage)
	// Logs reads one job log stream, after its header, to its end.
	Logs(ctx context.Context, robotID string, hdr *agentv1.LogStreamHeader, frames *agentv1.FrameReader)
	// Artifact reads one artifact stream, after its header, stores the
	// artifact and returns the answer for the robot.
	Artifact(ctx context.Context, robotID string, hdr *agentv1.ArtifactHeader, frames *agentv1.FrameReader) *agentv1.ArtifactStored
}

// Robot is a welcomed robot as the job runner sees it.
type Robot struct {
	ID           string
	Name         string
	Capabilities []string
	Labels       map[string]string
	MaxJobs      int32
	Draining     bool
	// Running lists the jobs the robot says it still runs (or finished
	// without having reported it yet).
	Running []*agentv1.RunningJob
	// Send writes a frame on the robot's control stream.
	Send func(*agentv1.ServerMessage) error
	// ConnectedSince names this session in the registry: once the robot's
	// row holds another, the robot has registered with another replica.
	ConnectedSince time.Time
}

// Gateway is the QUIC endpoint for robots.
type Gateway struct {
	opts      Options
	udp       *net.UDPConn
	transport *quic.Transport
	listener  *quic.Listener
	revoked   sync.Map // certificate serial -> struct{}
	// enrolling counts the enrolment connections open, against
	// MaxEnrollConns.
	enrolling atomic.Int64
	// refusals keeps a flood of failed handshakes and enrolments from
	// flooding the log.
	refusals *peerLog

	mu       sync.Mutex
	sessions map[string]*session     // robot id -> its live connection
	seen     map[string]time.Time    // last heartbeats not yet written
	conns    map[*quic.Conn]struct{} // every open connection, to close on shutdown
	closing  bool                    // shutting down: robots were recorded offline already

	changes changes
}

// Connection close codes robots see.
const (
	codeOK       quic.ApplicationErrorCode = 0
	codeRefused  quic.ApplicationErrorCode = 1
	codeReplaced quic.ApplicationErrorCode = 2
	codeTimeout  quic.ApplicationErrorCode = 3
	// codeBusy: too many connections of the kind at once; try again.
	codeBusy quic.ApplicationErrorCode = 4
)

// missedHeartbeats is how many heartbeats a robot may miss before it is
// offline.
const missedHeartbeats = 3

// New binds the gateway's UDP port. Run serves.
func New(ctx context.Context, opts Options) (*Gateway, error) {
	if opts.HeartbeatInterval <= 0 {
		return nil, errors.New("--heartbeat-interval: must be positive")
	}
	if opts.MaxEnrollConns <= 0 {
		opts.MaxEnrollConns = DefaultMaxEnrollConns
	}
	if opts.EnrollTimeout <= 0 {
		opts.EnrollTimeout = DefaultEnrollTimeout
	}
	if opts.WorkItemReadTimeout <= 0 {
		opts.WorkItemReadTimeout = DefaultWorkItemReadTimeout
	}
	g := &Gateway{
		opts:     opts,
		sessions: map[string]*session{},
		seen:     map[string]time.Time{},
		conns:    map[*quic.Conn]struct{}{},
		refusals: newPeerLog(time.Minute, maxLoggedPeers),
	}
	serials, err := opts.Store.RevokedSerials(ctx)
	if err != nil {
		return nil, err
	}
	for _, s := range serials {
		g.revoked.Store(s, struct{}{})
	}
	host, _, err := net.SplitHostPort(opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("--quic-addr: %w", err)
	}
	hosts := []string{"localhost", "127.0.0.1", "::1", host}
	if opts.Advertise != "" {
		if ahost, _, err := net.SplitHostPort(opts.Advertise); err == nil {
			hosts = append(hosts, ahost)
		}
	}
	serverCert, err := opts.CA.ServerCertificate(hosts, 365*24*time.Hour)
	if err != nil {
		return nil, err
	}
	base := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{serverCert},
		NextProtos:   []string{agentv1.ALPN, agentv1.ALPNEnroll},
		// Enrolling robots have no certificate yet, so the handshake asks
		// for one and VerifyConnection requires it on the robot protocol.
		ClientAuth: tls.RequestClientCert,
		// Robots hold one long connection; resumption tickets would cost
		// every connection memory and a message for a rare reconnect, and
		// a restarted server cannot honour them anyway.
		SessionTicketsDisabled: true,
	}
	tlsConf := &tls.Config{
		MinVersion: tls.VersionTLS13,
		// VerifyConnection is not told the peer; a config per handshake
		// is, so refusals can be logged per peer.
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			peer := ""
			if hello.Conn != nil {
				peer = hello.Conn.RemoteAddr().String()
			}
			c := base.Clone()
			c.VerifyConnection = func(cs tls.ConnectionState) error { return g.verifyConnection(cs, peer) }
			return c, nil
		},
	}
	udpAddr, err := net.ResolveUDPAddr("udp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("--quic-addr: %w", err)
	}
	if g.udp, err = net.ListenUDP("udp", udpAddr); err != nil {
		return nil, fmt.Errorf("--quic-addr: %w", err)
	}
	g.transport = &quic.Transport{Conn: g.udp, StatelessResetKey: opts.ResetKey}
	if g.listener, err = g.transport.Listen(tlsConf, quicConfig(opts.HeartbeatInterval)); err != nil {
		g.udp.Close()
		return nil, fmt.Errorf("--quic-addr: %w", err)
	}
	return g, nil
}

// quicConfig keeps an idle robot cheap: small flow-control windows (a
// control stream carries small frames; job traffic raises them as needed)
// and few streams, so 10,000 idle robots fit in memory.
func quicConfig(heartbeat time.Duration) *quic.Config {
	return &quic.Config{
		MaxIdleTimeout:                 missedHeartbeats*heartbeat + 5*time.Second,
		InitialStreamReceiveWindow:     32 << 10,
		MaxStreamReceiveWindow:         1 << 20,
		InitialConnectionReceiveWindow: 64 << 10,
		MaxConnectionReceiveWindow:     4 << 20,
		MaxIncomingStreams:             64,
		// One log stream per running job.
		MaxIncomingUniStreams: 256,
	}
}

// verifyConnection refuses a robot-protocol handshake whose certificate
// this CA did not sign, that expired, or that was revoked. The TLS alert
// says which, so the robot can tell its operator why and stop trying.
func (g *Gateway) verifyConnection(cs tls.ConnectionState, peer string) error {
	if cs.NegotiatedProtocol != agentv1.ALPN {
		return nil
	}
	raw := make([][]byte, len(cs.PeerCertificates))
	for i, c := range cs.PeerCertificates {
		raw[i] = c.Raw
	}
	_, _, err := g.opts.CA.VerifyRobot(raw, g.isRevoked)
	if err == nil {
		return nil
	}
	alert := refusalAlert(err)
	g.logRefusal(peer, alert.Error(), "robot refused at the handshake", "reason", err)
	// crypto/tls sends bad_certificate for any error of VerifyConnection,
	// but quic-go closes the connection with the first TLS alert the
	// error wraps: this one.
	return fmt.Errorf("%w%.0w", err, alert)
}

// TLS alerts (RFC 8446, section 6) that say why a certificate was refused.
const (
	alertBadCertificate     tls.AlertError = 42
	alertCertificateRevoked tls.AlertError = 44
	alertCertificateExpired tls.AlertError = 45
	alertUnknownCA          tls.AlertError = 48
	alertCertRequired       tls.AlertError = 116
)

func refusalAlert(err error) tls.AlertError {
	var invalid x509.CertificateInvalidError
	var unknown x509.UnknownAuthorityError
	switch {
	case errors.Is(err, pki.ErrNoCertificate):
		return alertCertRequired
	case errors.Is(err, pki.ErrRevoked):
		return alertCertificateRevoked
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return alertCertificateExpired
	case errors.As(err, &unknown):
		return alertUnknownCA
	default:
		return alertBadCertificate
	}
}

// logRefusal logs a failed handshake or enrolment at most once a minute
// per peer and kind, saying how many were not logged since.
func (g *Gateway) logRefusal(peer, kind, msg string, attrs ...any) {
	ok, repeats := g.refusals.allow(peer, kind, time.Now())
	if !ok {
		return
	}
	attrs = append([]any{"peer", peer}, attrs...)
	if repeats > 0 {
		attrs = append(attrs, "repeats_not_logged", repeats)
	}
	g.opts.Logger.Warn(msg, attrs...)
}

func (g *Gateway) isRevoked(serial string) bool {
	_, ok := g.revoked.Load(serial)
	return ok
}

// Close stops listening; Run closes the connections.
func (g *Gateway) Close() error { return g.listener.Close() }

// closeTransport releases the UDP port, once every connection is closed.
func (g *Gateway) closeTransport() {
	g.listener.Close()
	g.transport.Close()
	g.udp.Close()
}

// Addr returns the UDP address the gateway listens on.
func (g *Gateway) Addr() string { return g.listener.Addr().String() }

// Target returns what an enrollment token carries: the address robots dial
// and the fingerprint of the CA they must find.
func (g *Gateway) Target() (string, []byte) {
	if g.opts.Advertise != "" {
		return g.opts.Advertise, g.opts.CA.Fingerprint()
	}
	return g.Addr(), g.opts.CA.Fingerprint()
}

// Run accepts connections until ctx is done, then closes them all and
// records every robot it served as offline.
func (g *Gateway) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { g.flushLoop(ctx) })
	for {
		// Accept and hand off at once: the work of a connection happens on
		// its own goroutine, so a reconnect storm never fills quic-go's
		// accept queue.
		conn, err := g.listener.Accept(ctx)
		if err != nil {
			break
		}
		g.track(conn, true)
		wg.Go(func() {
			defer g.track(conn, false)
			g.serve(ctx, conn)
		})
	}
	// Record every robot here offline in one batch before closing: a
	// write per robot would hold up a restart of a large fleet.
	g.mu.Lock()
	g.closing = true
	offline := make(map[string]registry.RobotSession, len(g.sessions))
	for id, s := range g.sessions {
		seen, ok := g.seen[id]
		if !ok {
			seen = time.Now()
		}
		offline[id] = registry.RobotSession{ConnectedSince: s.connectedSince, LastSeen: seen}
	}
	g.mu.Unlock()
	if err := g.opts.Store.RobotsOffline(context.WithoutCancel(ctx), offline); err != nil {
		g.opts.Logger.Warn("record robots offline at shutdown", "robots", len(offline), "err", err)
	}
	g.mu.Lock()
	for conn := range g.conns {
		conn.CloseWithError(codeOK, "control plane shutting down")
	}
	g.mu.Unlock()
	g.listener.Close()
	wg.Wait()
	g.closeTransport()
}

func (g *Gateway) track(conn *quic.Conn, open bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if open {
		g.conns[conn] = struct{}{}
	} else {
		delete(g.conns, conn)
	}
}

func (g *Gateway) serve(ctx context.Context, conn *quic.Conn) {
	switch conn.ConnectionState().TLS.NegotiatedProtocol {
	case agentv1.ALPNEnroll:
		g.serveEnroll(ctx, conn)
	case agentv1.ALPN:
		g.serveRobot(ctx, conn)
	default:
		conn.CloseWithError(codeRefused, "unknown protocol")
	}
}

// FlushPeriod is how long a heartbeat waits in memory before its time is
// written to the registry, for a heartbeat interval.
func FlushPeriod(heartbeat time.Duration) time.Duration {
	return min(max(2*heartbeat, time.Second), 30*time.Second)
}

// StaleAfter is how long after its last heartbeat a robot the registry
// says is online must be taken as offline: its replica may have died
// without saying so.
func StaleAfter(heartbeat time.Duration) time.Duration {
	return missedHeartbeats*heartbeat + FlushPeriod(heartbeat) + 5*time.Second
}

// minLease is the shortest lease worth sending: a robot hears its replica
// about once a second (its keep-alives' answers) or once a heartbeat
// interval, whichever is sooner, so a shorter lease would stop the jobs of
// robots whose connection is healthy.
const minLease = time.Second

// Lease is how long a robot may keep running its jobs while it hears
// nothing from the control plane, for the heartbeat interval, the grace
// period a robot whose connection closed keeps its jobs, and the time
// after which another replica's sweep takes the jobs of a robot nobody
// has seen. It is less than the shortest of the times after which a
// replica may give the robot's jobs away, counted from the last heartbeat
// it read: missedHeartbeats intervals (the robot's replica), the grace
// period (the same after a close), orphanAfter less a flush period (the
// registry's last-seen time lags the last heartbeat by up to one). The
// robot counts from the last packet it heard, which may answer a
// keep-alive up to an interval after that heartbeat: one interval comes
// off, and half an interval (at least 500ms) more to stop a step. Zero
// when that leaves less than minLease: the robot then keeps its jobs for
// as long as it is cut off.
func Lease(heartbeat, grace, orphanAfter time.Duration) time.Duration {
	giveAway := missedHeartbeats * heartbeat
	if grace > 0 {
		giveAway = min(giveAway, grace)
	}
	if orphanAfter > 0 {
		giveAway = min(giveAway, orphanAfter-FlushPeriod(heartbeat))
	}
	lease := giveAway - heartbeat - max(heartbeat/2, 500*time.Millisecond)
	if lease < minLease {
		return 0
	}
	return lease
}

// flushLoop writes last-seen times in batches, never once per heartbeat.
func (g *Gateway) flushLoop(ctx context.Context) {
	ticker := time.NewTicker(FlushPeriod(g.opts.HeartbeatInterval))
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			g.flush(context.WithoutCancel(ctx))
			return
		case <-ticker.C:
			g.flush(ctx)
			g.reloadRevoked(ctx)
		}
	}
}

func (g *Gateway) flush(ctx context.Context) {
	g.mu.Lock()
	batch := g.seen
	g.seen = map[string]time.Time{}
	g.mu.Unlock()
	if err := g.opts.Store.TouchRobots(ctx, batch); err != nil {
		g.opts.Logger.Warn("record when robots were last seen", "robots", len(batch), "err", err)
	}
}

func secretHash(secret []byte) string {
	sum := sha256.Sum256(secret)
	return hex.EncodeToString(sum[:])
}
