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
	"net"
	"os"
	"runtime"
	"time"

	"github.com/quic-go/quic-go"

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
	// Server overrides the address saved at enrolment.
	Server string
	Logger *slog.Logger
	// Backoff bounds the wait between reconnects; zero means 500ms to 30s.
	MinBackoff, MaxBackoff time.Duration
	// RenewBefore is how long before its certificate expires the robot
	// gets a new one over the tunnel; zero means 30 days.
	RenewBefore time.Duration
}

// Run holds the robot's connection to the control plane until ctx is done,
// reconnecting with capped exponential backoff and jitter whenever it is
// lost. It returns nil when ctx ends it, an error only when the robot
// cannot run at all (not enrolled, unreadable certificate).
func Run(ctx context.Context, opts Options) error {
	id, cert, roots, err := LoadIdentity(opts.Dir)
	if err != nil {
		return err
	}
	if opts.Server != "" {
		id.Server = opts.Server
	}
	host, _, err := net.SplitHostPort(id.Server)
	if err != nil {
		return fmt.Errorf("server address %q: %w", id.Server, err)
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
	r := &runner{
		opts: opts,
		id:   id,
		log:  opts.Logger.With("robot", id.RobotID),
		tls: &tls.Config{
			MinVersion:   tls.VersionTLS13,
			Certificates: []tls.Certificate{cert},
			RootCAs:      roots,
			ServerName:   host,
			NextProtos:   []string{agentv1.ALPN},
		},
	}
	r.set(Disconnected)
	backoff := opts.MinBackoff
	for {
		registered, err := r.session(ctx)
		if ctx.Err() != nil {
			r.set(Disconnected, "reason", "stopping")
			return nil
		}
		if registered {
			backoff = opts.MinBackoff
		}
		wait := jitter(backoff)
		r.set(Reconnecting, "after", wait.Round(time.Millisecond), "reason", err)
		select {
		case <-ctx.Done():
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
	opts  Options
	id    *Identity
	log   *slog.Logger
	tls   *tls.Config
	state State
	// draining outlives a connection: a drained robot that reconnects
	// still takes no new work.
	draining bool
}

func (r *runner) set(s State, attrs ...any) {
	r.state = s
	r.log.Info("robot state", append([]any{"state", string(s)}, attrs...)...)
}

// session runs one connection; registered says it got as far as the
// control plane's welcome.
func (r *runner) session(ctx context.Context) (registered bool, err error) {
	r.set(Connecting, "server", r.id.Server)
	dialCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
	conn, err := quic.DialAddr(dialCtx, r.id.Server, r.tls, &quic.Config{
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
		Draining:     r.draining,
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

	// The control plane's messages arrive on their own goroutine; the
	// loop below does all the writing.
	lost := make(chan error, 1)
	drains := make(chan *agentv1.Drain, 1)
	renewals := make(chan *agentv1.RenewResponse, 1)
	go func() {
		for {
			msg := &agentv1.ServerMessage{}
			if err := frames.Read(msg); err != nil {
				lost <- err
				return
			}
			switch {
			case msg.GetRefused() != nil:
				lost <- fmt.Errorf("refused: %s", msg.GetRefused().GetReason())
				return
			case msg.GetDrain() != nil:
				select {
				case drains <- msg.GetDrain():
				default:
				}
			case msg.GetRenew() != nil:
				renewals <- msg.GetRenew()
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
		return agentv1.WriteFrame(stream, &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_Renew{Renew: req}})
	}
	if err := checkRenewal(); err != nil {
		return true, fmt.Errorf("connection lost: %w", err)
	}
	for {
		select {
		case <-ctx.Done():
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
		case drain := <-drains:
			// Nothing runs here yet, so the robot is drained at once.
			r.log.Info("draining: taking no new work", "reason", drain.GetReason())
			r.draining = true
			done := &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_Drained{Drained: &agentv1.Drained{}}}
			if err := agentv1.WriteFrame(stream, done); err != nil {
				return true, fmt.Errorf("connection lost: %w", err)
			}
		case <-ticker.C:
			beat := &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_Heartbeat{Heartbeat: &agentv1.Heartbeat{}}}
			if err := agentv1.WriteFrame(stream, beat); err != nil {
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
