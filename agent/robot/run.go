package robot

import (
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/casarerpa/casare/agent/engine"
	"github.com/casarerpa/casare/agent/step"
	agentv1 "github.com/casarerpa/casare/rpc/casare/agent/v1"
)

// State is where the robot is in its connection's life.
type State string

// States, as the agent logs them.
const (
	Disconnected   State = "DISCONNECTED"
	Connecting     State = "CONNECTING"
	Connected      State = "CONNECTED"
	Authenticating State = "AUTHENTICATING"
	Registered     State = "REGISTERED"
	Reconnecting   State = "RECONNECTING"
)

// Options configures Run.
type Options struct {
	Dir          string
	Labels       map[string]string
	Capabilities []string
	MaxJobs      int32
	Version      string
	// ProtocolVersion is the robot protocol version the hello claims; zero
	// means the one this code speaks. Only tests set it.
	ProtocolVersion int32
	// Server overrides the address saved at enrolment: host:port, or
	// several separated by commas, dialled in turn as they fail.
	Server string
	Logger *slog.Logger
	// Backoff bounds the wait between reconnects; zero means 500ms to 30s.
	MinBackoff, MaxBackoff time.Duration
	// RenewBefore is how long before its certificate expires the robot
	// gets a new one over the tunnel; zero means 30 days.
	RenewBefore time.Duration
	// Abilities say which step families the robot may run.
	Abilities Abilities
	// Engine runs the workflows; nil means the engine with every step
	// family the robot's abilities allow.
	Engine engine.Engine
	// DrainTimeout is how long running jobs may take to finish when the
	// robot drains before they are handed back; zero means 5 minutes.
	DrainTimeout time.Duration
	// MaxRefusals is how many times in a row the control plane may refuse
	// the robot (its certificate revoked, expired or of another CA, or the
	// robot deleted) before Run gives up with a *RefusedError; zero means
	// 5, negative never.
	MaxRefusals int
	// Liveness is how often a quiet connection is checked: a control
	// plane that stops answering is probed this often, so one that
	// restarted is noticed (by its stateless reset) within about twice
	// this, and one that answers nothing for three times this is given
	// up for another replica. Zero means a second.
	Liveness time.Duration
}

// After a registered connection is lost, reconnects are tried at least
// this often for a while, so a control plane back after a short restart
// is found at once; then the backoff grows to MaxBackoff.
const (
	fastRetryFor = time.Minute
	fastRetryMax = time.Second
	resetSpread  = 200 * time.Millisecond
	// abandonAfter is how many liveness periods of silence, keep-alives
	// unanswered, make the robot give up a connection and race the
	// replicas again.
	abandonAfter = 3
)

// RefusedError is why Run gave up: the control plane refuses this robot
// for good, which retrying cannot mend.
type RefusedError struct {
	Reason   string
	Refusals int
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("%s (refused %d times in a row)", e.Reason, e.Refusals)
}

// Run holds the robot's connection to the control plane and runs the jobs
// it is given, reconnecting with capped exponential backoff and jitter
// whenever the connection is lost. When ctx is done (SIGTERM) or the
// control plane says so, the robot drains: no new jobs, running ones
// finish within the drain timeout or are handed back; then Run returns
// nil. Whatever it returns, the jobs and everything else the robot started
// have stopped by then: nothing of the robot runs or writes afterwards. It returns an error only when the robot cannot run at all (not
// enrolled, unreadable certificate) or, as a *RefusedError, when the
// control plane refused it MaxRefusals times in a row. Network errors and
// timeouts are retried for ever.
func Run(ctx context.Context, opts Options) error {
	id, cert, roots, err := LoadIdentity(opts.Dir)
	if err != nil {
		return err
	}
	if opts.Server != "" {
		id.Server = opts.Server
	}
	addrs, err := parseServers(id.Server)
	if err != nil {
		return err
	}
	// Robots started together spread over the replicas rather than all
	// going to the first.
	addrs.next = rand.IntN(len(addrs.entries))
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 500 * time.Millisecond
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 30 * time.Second
	}
	if opts.RenewBefore <= 0 {
		opts.RenewBefore = 30 * 24 * time.Hour
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Engine == nil {
		var cat step.Catalogue
		cat, opts.Capabilities = equip(opts.Abilities, opts.Capabilities, opts.Logger)
		opts.Engine = engine.New(cat, engine.Options{Capabilities: opts.Capabilities})
	}
	if opts.DrainTimeout <= 0 {
		opts.DrainTimeout = 5 * time.Minute
	}
	if opts.MaxRefusals == 0 {
		opts.MaxRefusals = 5
	}
	if opts.Liveness <= 0 {
		opts.Liveness = time.Second
	}
	// The connection outlives ctx: a robot told to stop first drains over
	// it, and only then hangs up.
	life, stop := context.WithCancel(context.WithoutCancel(ctx))
	jobsCtx, stopJobs := context.WithCancel(context.Background())
	r := &runner{
		life:        life,
		stop:        stop,
		jobs:        map[string]*job{},
		jobsCtx:     jobsCtx,
		linkChanged: make(chan struct{}),
		workSlots:   make(chan struct{}, maxWorkItemCalls),
		idle:        make(chan struct{}, 1),
		drainAsked:  make(chan string, 1),
		opts:        opts,
		id:          id,
		servers:     addrs,
		log:         opts.Logger.With("robot", id.RobotID),
		tls: &tls.Config{
			MinVersion:   tls.VersionTLS13,
			Certificates: []tls.Certificate{cert},
			RootCAs:      roots,
			NextProtos:   []string{agentv1.ALPN},
		},
	}
	// Run owns every goroutine the robot starts: when it returns, the
	// connection is over, the jobs are stopped and nothing of the robot
	// runs or writes any more.
	defer func() {
		stop()
		stopJobs()
		r.waitStopped()
	}()
	r.wg.Go(func() { r.watchLease(life) })
	r.wg.Go(func() { r.drainWhenAsked(ctx, life) })
	r.set(Disconnected)
	backoff := opts.MinBackoff
	var lostAt time.Time // when a registered connection was last lost
	refusals := 0        // since the robot was last registered
	for {
		registered, err := r.session(life)
		if life.Err() != nil {
			r.set(Disconnected, "reason", "stopping")
			return nil
		}
		if registered {
			backoff = opts.MinBackoff
			lostAt = time.Now()
			refusals = 0
		}
		if reason, ok := refusal(err); ok {
			refusals++
			r.log.Warn("the control plane refused the robot", "reason", reason, "refusals", refusals, "limit", opts.MaxRefusals)
			if opts.MaxRefusals > 0 && refusals >= opts.MaxRefusals {
				r.set(Disconnected, "reason", reason)
				return &RefusedError{Reason: reason, Refusals: refusals}
			}
		}
		wait := backoff
		if !lostAt.IsZero() && time.Since(lostAt) < fastRetryFor {
			wait = min(wait, fastRetryMax)
		}
		wait = jitter(wait)
		var reset *quic.StatelessResetError
		if errors.As(err, &reset) {
			// A stateless reset comes from a control plane that is up
			// again: go back at once, spread a little so a fleet does
			// not arrive in one burst.
			wait = time.Duration(rand.Int64N(int64(resetSpread)))
		}
		r.set(Reconnecting, "after", wait.Round(time.Millisecond), "reason", err)
		select {
		case <-life.Done():
			r.set(Disconnected, "reason", "stopping")
			return nil
		case <-time.After(wait):
		}
		backoff = min(backoff*2, opts.MaxBackoff)
	}
}

// stopWait is how long Run waits for what the robot started to stop
// before it says what it is waiting for: a step that ignores its cancel
// holds the robot's exit.
const stopWait = 10 * time.Second

// waitStopped waits for every goroutine the robot started.
func (r *runner) waitStopped() {
	warned := make(chan struct{})
	warn := time.AfterFunc(stopWait, func() {
		defer close(warned)
		r.log.Warn("waiting for the robot's jobs to stop", "jobs", len(r.runningJobs()))
	})
	r.wg.Wait()
	if !warn.Stop() {
		<-warned
	}
}

// jitter spreads reconnects over ±20%, so robots that lost the control
// plane together do not return in one wave.
func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

type runner struct {
	opts Options
	id   *Identity
	log  *slog.Logger
	// servers are the replicas to dial, raced (see race).
	servers *servers
	// lastRTT is the last connection's round trip time, which sets how
	// long the next dial waits before racing another replica.
	lastRTT time.Duration
	tls     *tls.Config
	state   State
	// life is the robot's connection's life: its end stops what ships
	// to the control plane. stop ends it once the robot has drained.
	life context.Context
	stop func()

	// wg holds every goroutine the robot starts (jobs, their shipping,
	// the drain, the lease watch, dials that lost a race): Run waits for
	// it before it returns.
	wg sync.WaitGroup
	// drainAsked carries the control plane's request to drain to the
	// goroutine that drains (see drainWhenAsked).
	drainAsked chan string

	mu          sync.Mutex
	link        *link         // the current connection, nil between them
	linkChanged chan struct{} // closed when link changes
	jobs        map[string]*job
	jobsCtx     context.Context
	idle        chan struct{} // a job ended
	// draining outlives a connection: a draining robot that reconnects
	// still takes no new work.
	draining bool
	uploads  uploads // artifacts waiting for the control plane's answer
	// workSlots bounds the work-queue calls the jobs make at once.
	workSlots  chan struct{}
	leaseClock leaseClock
}

func (r *runner) isDraining() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.draining
}

func (r *runner) set(s State, attrs ...any) {
	r.state = s
	r.log.Info("robot state", append([]any{"state", string(s)}, attrs...)...)
}

// session runs one connection; registered says it got as far as the
// control plane's welcome.
func (r *runner) session(ctx context.Context) (registered bool, err error) {
	round := r.servers.round(ctx)
	addrs := make([]string, len(round))
	for i, t := range round {
		addrs[i] = t.addr
	}
	r.set(Connecting, "servers", strings.Join(addrs, ","))
	won, err := race(ctx, &r.wg, round, stagger(r.lastRTT), quicDial(r.tls, &quic.Config{
		MaxIdleTimeout: time.Minute,
		// A quiet connection is pinged this often, so the robot knows
		// when the control plane stops answering (see liveness).
		KeepAlivePeriod: r.opts.Liveness,
	}))
	if err != nil {
		return false, err
	}
	conn := won.conn
	r.servers.dialled(won.index)
	// The reader of the control plane's messages (below) ends with the
	// connection, and the session with it: nothing it hands on (a job, a
	// renewal) arrives after the session.
	var reader sync.WaitGroup
	over := make(chan struct{})
	defer func() {
		r.lastRTT = conn.ConnectionStats().SmoothedRTT
		conn.CloseWithError(0, "robot stopping")
		close(over)
		reader.Wait()
	}()
	r.set(Connected, "server", round[won.index].addr)
	stream, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return false, err
	}
	r.set(Authenticating)
	hostname, _ := os.Hostname()
	hello := &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_Hello{Hello: &agentv1.Hello{
		RobotId:      r.id.RobotID,
		Version:      r.opts.Version,
		Os:           runtime.GOOS,
		Hostname:     hostname,
		Capabilities: r.opts.Capabilities,
		Labels:       r.opts.Labels,
		MaxJobs:      max(r.opts.MaxJobs, 1),
		Draining:     r.isDraining(),
		RunningJobs:  r.runningJobs(),
		// A test may claim another version to see the control plane refuse it.
		ProtocolVersion: cmp.Or(r.opts.ProtocolVersion, agentv1.ProtocolVersion),
	}}}
	if err := agentv1.WriteFrame(stream, hello); err != nil {
		return false, err
	}
	frames := agentv1.NewFrameReader(stream)
	msg := &agentv1.ServerMessage{}
	// A replica that dies or freezes between the handshake and its
	// welcome would hold the robot until the idle timeout: the same
	// silence that gives up a registered connection gives up this one.
	silent := r.abandonWhenSilent(conn)
	err = frames.Read(msg)
	if silence := silent(); silence > 0 {
		return false, fmt.Errorf("no welcome: the control plane has sent nothing for %s", silence.Round(10*time.Millisecond))
	}
	if err != nil {
		return false, fmt.Errorf("no welcome: %w", err)
	}
	if refused := msg.GetRefused(); refused != nil {
		return false, &refusedMessage{refused.GetReason()}
	}
	welcome := msg.GetWelcome()
	if welcome == nil {
		return false, errors.New("no welcome: the control plane answered something else")
	}
	interval := welcome.GetHeartbeatInterval().AsDuration()
	if interval <= 0 {
		interval = 30 * time.Second
	}
	lease := welcome.GetLease().AsDuration()
	if welcome.GetLease() == nil || lease < 0 {
		lease = 0
	}
	r.mu.Lock()
	r.leaseClock.welcome(lease, time.Now())
	r.mu.Unlock()
	r.set(Registered, "name", welcome.GetRobotName(), "heartbeat", interval, "lease", lease)
	l := &link{conn: conn, stream: stream}
	// Jobs' log shippers and unreported ends go on over this connection.
	r.setLink(l)
	defer r.setLink(nil)
	if r.isDraining() {
		// A robot that reconnects while draining says so again, in case
		// this is another control plane replica.
		_ = l.send(&agentv1.AgentMessage{Msg: &agentv1.AgentMessage_Draining{Draining: &agentv1.Draining{Reason: "draining"}}})
	}

	// The control plane's messages arrive on their own goroutine.
	lost := make(chan error, 1)
	renewals := make(chan *agentv1.RenewResponse, 1)
	reader.Go(func() {
		for {
			msg := &agentv1.ServerMessage{}
			if err := frames.Read(msg); err != nil {
				lost <- err
				return
			}
			r.hear(time.Now())
			switch m := msg.GetMsg().(type) {
			case *agentv1.ServerMessage_Refused:
				lost <- &refusedMessage{m.Refused.GetReason()}
				return
			case *agentv1.ServerMessage_Drain:
				r.askDrain(m.Drain.GetReason())
			case *agentv1.ServerMessage_Renew:
				select {
				case renewals <- m.Renew:
				case <-over:
					return
				}
			case *agentv1.ServerMessage_JobAssign:
				r.startJob(m.JobAssign)
			case *agentv1.ServerMessage_JobCancel:
				r.cancelJob(m.JobCancel)
			case *agentv1.ServerMessage_JobAck:
				r.jobAcked(m.JobAck)
			case *agentv1.ServerMessage_ArtifactStored:
				r.uploads.deliver(m.ArtifactStored)
			}
		}
	})
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	// The certificate is checked now and then hourly; a renewal in flight
	// holds its new key until the answer comes.
	renewCheck := time.NewTicker(time.Hour)
	defer renewCheck.Stop()
	var pendingKey *ecdsa.PrivateKey
	checkRenewal := func() error {
		if pendingKey != nil || !r.needsRenewal() {
			return nil
		}
		key, req, err := renewalRequest()
		if err != nil {
			return err
		}
		r.log.Info("renewing the robot certificate", "expires", r.leaf().NotAfter)
		pendingKey = key
		return l.send(&agentv1.AgentMessage{Msg: &agentv1.AgentMessage_Renew{Renew: req}})
	}
	if err := checkRenewal(); err != nil {
		return true, fmt.Errorf("connection lost: %w", err)
	}
	liveness := time.NewTicker(r.opts.Liveness / 2)
	defer liveness.Stop()
	quiet := newQuietWatch(conn)
	for {
		select {
		case <-ctx.Done():
			// Closing the connection drops what is not yet delivered (the
			// last job ends, drained): end the stream and let the control
			// plane hang up once it has read everything.
			l.mu.Lock()
			stream.Close()
			l.mu.Unlock()
			select {
			case <-conn.Context().Done():
			case <-time.After(2 * time.Second):
			}
			return true, nil
		case <-renewCheck.C:
			if err := checkRenewal(); err != nil {
				return true, fmt.Errorf("connection lost: %w", err)
			}
		case res := <-renewals:
			key := pendingKey
			pendingKey = nil
			if err := r.installCertificate(key, res); err != nil {
				r.log.Warn("certificate renewal failed; will try again", "err", err)
			}
		case err := <-lost:
			return true, fmt.Errorf("connection lost: %w", err)
		case now := <-liveness.C:
			silence, grace := quiet.silence(now)
			if silence <= r.opts.Liveness+grace {
				continue
			}
			if r.tooSilent(silence, grace) {
				// Not even the keep-alives are answered: the replica is dead,
				// frozen or cut off. Another may answer at once; waiting for
				// the idle timeout would outlast the jobs' lease.
				return true, fmt.Errorf("connection lost: the control plane has sent nothing for %s", silence.Round(10*time.Millisecond))
			}
			// Keep-alive pings are too small to draw a stateless reset
			// from a restarted control plane, and quic-go backs their
			// retransmissions off exponentially: a heartbeat now and every
			// tick while the control plane says nothing reaches a
			// restarted one within a tick.
			beat := &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_Heartbeat{Heartbeat: &agentv1.Heartbeat{
				Time: timestamppb.Now(), RunningJobs: r.runningJobs(),
			}}}
			if err := l.send(beat); err != nil {
				return true, fmt.Errorf("connection lost: %w", err)
			}
		case <-ticker.C:
			beat := &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_Heartbeat{Heartbeat: &agentv1.Heartbeat{
				Time: timestamppb.Now(), RunningJobs: r.runningJobs(),
			}}}
			if err := l.send(beat); err != nil {
				return true, fmt.Errorf("connection lost: %w", err)
			}
		}
	}
}

// tooSilent says a connection that has heard nothing for silence, not even
// its keep-alives' answers, is to be given up: the replica is dead, frozen
// or cut off.
func (r *runner) tooSilent(silence, grace time.Duration) bool {
	return silence > abandonAfter*r.opts.Liveness+grace
}

// abandonWhenSilent closes conn if it goes too silent (see tooSilent)
// before the returned stop is called; stop says how long the silence was
// when it did, zero if it did not.
func (r *runner) abandonWhenSilent(conn *quic.Conn) (stop func() time.Duration) {
	done := make(chan struct{})
	silence := make(chan time.Duration, 1)
	go func() {
		tick := time.NewTicker(r.opts.Liveness / 2)
		defer tick.Stop()
		quiet := newQuietWatch(conn)
		for {
			select {
			case <-done:
				silence <- 0
				return
			case now := <-tick.C:
				if s, grace := quiet.silence(now); r.tooSilent(s, grace) {
					conn.CloseWithError(0, "the control plane sent nothing")
					silence <- s
					return
				}
			}
		}
	}()
	return func() time.Duration {
		close(done)
		return <-silence
	}
}

// quietWatch tells how long the control plane has sent nothing.
type quietWatch struct {
	conn     *quic.Conn
	received uint64
	at       time.Time
}

func newQuietWatch(conn *quic.Conn) *quietWatch {
	return &quietWatch{conn: conn, received: conn.ConnectionStats().PacketsReceived, at: time.Now()}
}

// silence is how long no packet has come at now, and the allowance for
// the round trips a keep-alive's answer takes: a healthy idle connection
// hears one every liveness period, give or take that.
func (q *quietWatch) silence(now time.Time) (silence, grace time.Duration) {
	stats := q.conn.ConnectionStats()
	if stats.PacketsReceived != q.received {
		q.received, q.at = stats.PacketsReceived, now
	}
	return now.Sub(q.at), max(500*time.Millisecond, 4*stats.SmoothedRTT)
}

// refusedMessage is the control plane's explicit refusal of the robot.
type refusedMessage struct{ reason string }

func (e *refusedMessage) Error() string { return "refused: " + e.reason }

// refusal says whether err is the control plane refusing this robot for
// good, and why: its certificate (a TLS alert at the handshake), the
// control plane's certificate not from the robot's CA, or an explicit
// refusal. Network errors and timeouts are not.
func refusal(err error) (string, bool) {
	if err == nil {
		return "", false
	}
	var refused *refusedMessage
	if errors.As(err, &refused) {
		return "the control plane refuses this robot: " + refused.reason, true
	}
	var verify *tls.CertificateVerificationError
	if errors.As(err, &verify) {
		return fmt.Sprintf("the control plane's certificate is not from this robot's CA (%v): is --server another control plane? enrol the robot with this one", verify.Err), true
	}
	var transport *quic.TransportError
	if !errors.As(err, &transport) || !transport.Remote || transport.ErrorCode < 0x100 || transport.ErrorCode > 0x1ff {
		return "", false
	}
	var why string
	switch tls.AlertError(transport.ErrorCode - 0x100) {
	case 44: // certificate_revoked
		why = "revoked (the robot was deleted)"
	case 45: // certificate_expired
		why = "expired"
	case 48: // unknown_ca
		why = "not signed by its CA"
	case 116: // certificate_required
		why = "missing"
	case 42, 43, 46: // bad, unsupported, unknown certificate
		why = "not accepted"
	default:
		return "", false
	}
	return "the control plane refuses this robot's certificate: " + why + "; enrol it again", true
}

// leaf returns the robot's current certificate.
func (r *runner) leaf() *x509.Certificate {
	leaf, err := x509.ParseCertificate(r.tls.Certificates[0].Certificate[0])
	if err != nil {
		return &x509.Certificate{}
	}
	return leaf
}

func (r *runner) needsRenewal() bool {
	return time.Until(r.leaf().NotAfter) < r.opts.RenewBefore
}

func renewalRequest() (*ecdsa.PrivateKey, *agentv1.RenewRequest, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	if err != nil {
		return nil, nil, err
	}
	csr, err := x509.CreateCertificateRequest(crand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, nil, err
	}
	return key, &agentv1.RenewRequest{Csr: csr}, nil
}

// installCertificate saves the renewed certificate with its key and uses it
// for every connection from now on, without a restart.
func (r *runner) installCertificate(key *ecdsa.PrivateKey, res *agentv1.RenewResponse) error {
	if res.GetError() != "" {
		return errors.New(res.GetError())
	}
	if key == nil {
		return errors.New("a renewal answer nobody asked for")
	}
	cert, err := x509.ParseCertificate(res.GetCertificate())
	if err != nil {
		return err
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return errors.New("the renewed certificate is not for the key sent")
	}
	if err := saveCertificate(r.opts.Dir, key, cert.Raw); err != nil {
		return err
	}
	r.tls.Certificates = []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}}
	r.log.Info("robot certificate renewed", "serial", cert.SerialNumber.Text(16), "expires", cert.NotAfter)
	return nil
}
