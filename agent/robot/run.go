package robot

import (
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
}

// Run holds the robot's connection to the control plane and runs the jobs
// it is given, reconnecting with capped exponential backoff and jitter
// whenever the connection is lost. When ctx is done (SIGTERM) or the
// control plane says so, the robot drains: no new jobs, running ones
// finish within the drain timeout or are handed back; then Run returns
// nil. It returns an error only when the robot cannot run at all (not
// enrolled, unreadable certificate).
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
	// The connection outlives ctx: a robot told to stop first drains over
	// it, and only then hangs up.
	life, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	jobsCtx, stopJobs := context.WithCancel(context.Background())
	defer stopJobs()
	r := &runner{
		stop:        stop,
		jobs:        map[string]*job{},
		jobsCtx:     jobsCtx,
		linkChanged: make(chan struct{}),
		idle:        make(chan struct{}, 1),
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
	go func() {
		select {
		case <-ctx.Done():
			r.drain("the robot is stopping")
		case <-life.Done():
		}
	}()
	r.set(Disconnected)
	backoff := opts.MinBackoff
	for {
		registered, err := r.session(life)
		if life.Err() != nil {
			r.set(Disconnected, "reason", "stopping")
			return nil
		}
		if registered {
			backoff = opts.MinBackoff
		}
		wait := jitter(backoff)
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

// jitter spreads reconnects over ±20%, so robots that lost the control
// plane together do not return in one wave.
func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

type runner struct {
	opts Options
	id   *Identity
	log  *slog.Logger
	// servers are the replicas to dial, one after the other as they fail.
	servers *servers
	tls     *tls.Config
	state   State
	// stop ends the robot once it has drained.
	stop func()

	mu          sync.Mutex
	link        *link         // the current connection, nil between them
	linkChanged chan struct{} // closed when link changes
	jobs        map[string]*job
	jobsCtx     context.Context
	jobsWG      sync.WaitGroup
	idle        chan struct{} // a job ended
	// draining outlives a connection: a draining robot that reconnects
	// still takes no new work.
	draining     bool
	drainStarted bool
	uploads      uploads // artifacts waiting for the control plane's answer
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
	server := r.servers.pick(ctx)
	r.set(Connecting, "server", server.addr)
	tlsConf := r.tls.Clone()
	tlsConf.ServerName = server.serverName
	dialCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
	conn, err := quic.DialAddr(dialCtx, server.addr, tlsConf, &quic.Config{
		MaxIdleTimeout:  time.Minute,
		KeepAlivePeriod: 15 * time.Second,
	})
	cancel()
	if err != nil {
		return false, err
	}
	defer conn.CloseWithError(0, "robot stopping")
	r.set(Connected)
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
	}}}
	if err := agentv1.WriteFrame(stream, hello); err != nil {
		return false, err
	}
	frames := agentv1.NewFrameReader(stream)
	msg := &agentv1.ServerMessage{}
	if err := frames.Read(msg); err != nil {
		return false, fmt.Errorf("no welcome: %w", err)
	}
	if refused := msg.GetRefused(); refused != nil {
		return false, fmt.Errorf("refused: %s", refused.GetReason())
	}
	welcome := msg.GetWelcome()
	if welcome == nil {
		return false, errors.New("no welcome: the control plane answered something else")
	}
	interval := welcome.GetHeartbeatInterval().AsDuration()
	if interval <= 0 {
		interval = 30 * time.Second
	}
	r.set(Registered, "name", welcome.GetRobotName(), "heartbeat", interval)
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
	go func() {
		for {
			msg := &agentv1.ServerMessage{}
			if err := frames.Read(msg); err != nil {
				lost <- err
				return
			}
			switch m := msg.GetMsg().(type) {
			case *agentv1.ServerMessage_Refused:
				lost <- fmt.Errorf("refused: %s", m.Refused.GetReason())
				return
			case *agentv1.ServerMessage_Drain:
				go r.drain(m.Drain.GetReason())
			case *agentv1.ServerMessage_Renew:
				renewals <- m.Renew
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
	}()
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
