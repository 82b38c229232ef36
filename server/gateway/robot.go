package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"google.golang.org/protobuf/types/known/durationpb"

	agentv1 "github.com/casarerpa/casare/rpc/casare/agent/v1"
	"github.com/casarerpa/casare/server/pki"
	"github.com/casarerpa/casare/server/registry"
)

// session is a registered robot's live connection.
type session struct {
	robotID        string
	serial         string
	conn           *quic.Conn
	connectedSince time.Time

	mu       sync.Mutex // guards the stream's write side and the state below
	stream   *quic.Stream
	draining bool
}

// send writes a frame to the robot; frames from several goroutines never
// interleave.
func (s *session) send(msg *agentv1.ServerMessage) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return agentv1.WriteFrame(s.stream, msg)
}

func (s *session) status() registry.RobotStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return registry.RobotDraining
	}
	return registry.RobotIdle
}

// helloTimeout bounds the wait for a robot's hello.
const helloTimeout = 10 * time.Second

// serveRobot runs one robot connection: hello, welcome, then heartbeats
// until the robot goes away or misses missedHeartbeats of them.
func (g *Gateway) serveRobot(ctx context.Context, conn *quic.Conn) {
	log := g.opts.Logger.With("peer", conn.RemoteAddr().String())
	certs := conn.ConnectionState().TLS.PeerCertificates
	if len(certs) == 0 {
		conn.CloseWithError(codeRefused, "no client certificate")
		return
	}
	// The handshake verified the certificate; the robot is who it names.
	id, err := pki.RobotID(certs[0])
	if err != nil {
		conn.CloseWithError(codeRefused, err.Error())
		return
	}
	log = log.With("robot", id)
	helloCtx, cancel := context.WithTimeout(ctx, helloTimeout)
	stream, err := conn.AcceptStream(helloCtx)
	cancel()
	if err != nil {
		conn.CloseWithError(codeTimeout, "no control stream")
		return
	}
	refuse := func(reason string) {
		log.Warn("robot refused", "reason", reason)
		agentv1.WriteFrame(stream, &agentv1.ServerMessage{Msg: &agentv1.ServerMessage_Refused{Refused: &agentv1.Refused{Reason: reason}}})
		stream.Close()
		// Closing the connection drops data not yet delivered; give the
		// robot a moment to read why, and to hang up itself.
		select {
		case <-conn.Context().Done():
		case <-time.After(2 * time.Second):
		}
		conn.CloseWithError(codeRefused, reason)
	}
	frames := agentv1.NewFrameReader(stream)
	stream.SetReadDeadline(time.Now().Add(helloTimeout))
	msg := &agentv1.AgentMessage{}
	if err := frames.Read(msg); err != nil || msg.GetHello() == nil {
		refuse("the first message must be hello")
		return
	}
	hello := msg.GetHello()
	if hello.GetRobotId() != id {
		refuse(fmt.Sprintf("hello claims robot %q but the certificate is robot %q", hello.GetRobotId(), id))
		return
	}
	robot, err := g.opts.Store.GetRobot(ctx, id)
	if errors.Is(err, registry.ErrNotFound) {
		refuse("this robot was deleted; enrol it again")
		return
	}
	if err != nil {
		log.Error("look up robot", "err", err)
		conn.CloseWithError(codeRefused, "the control plane cannot serve now")
		return
	}
	if problem := protocolProblem(agentv1.HelloProtocol(hello)); problem != "" {
		log.Warn("robot speaks a protocol version this control plane cannot serve",
			"name", robot.Name, "version", hello.GetVersion(), "protocol", agentv1.HelloProtocol(hello),
			"serves_min", agentv1.MinProtocolVersion, "serves_max", agentv1.ProtocolVersion)
		if err := g.opts.Store.RobotProtocolRefused(ctx, id, hello.GetVersion(), agentv1.HelloProtocol(hello), problem); err != nil {
			log.Error("record robot protocol", "err", err)
		}
		g.Changed(id)
		refuse(problem)
		return
	}
	now := time.Now()
	labels, err := g.register(ctx, robot, hello, now)
	if err != nil {
		log.Error("register robot", "err", err)
		conn.CloseWithError(codeRefused, "the control plane cannot serve now")
		return
	}
	// The session is known by its registration time as stored.
	sess := &session{robotID: id, serial: pki.Serial(certs[0]), conn: conn, stream: stream, connectedSince: *robot.ConnectedSince, draining: hello.GetDraining()}
	g.attach(sess, log)
	welcome := &agentv1.ServerMessage{Msg: &agentv1.ServerMessage_Welcome{Welcome: &agentv1.Welcome{
		RobotId:           id,
		RobotName:         robot.Name,
		HeartbeatInterval: durationpb.New(g.opts.HeartbeatInterval),
	}}}
	if g.opts.Lease > 0 {
		welcome.GetWelcome().Lease = durationpb.New(g.opts.Lease)
	}
	if err := sess.send(welcome); err != nil {
		g.detach(ctx, sess, now, log, "the welcome could not be sent", false)
		return
	}
	log.Info("robot registered", "name", robot.Name, "version", hello.GetVersion(), "os", hello.GetOs())
	g.Changed(id)
	// The goroutines serving the robot's other streams, waited for below.
	var streams sync.WaitGroup
	if g.opts.Jobs != nil {
		g.opts.Jobs.RobotUp(ctx, Robot{
			ID: id, Name: robot.Name, Capabilities: hello.GetCapabilities(), Labels: labels,
			MaxJobs: robot.MaxJobs, Draining: hello.GetDraining(), Running: hello.GetRunningJobs(),
			Send: sess.send, ConnectedSince: sess.connectedSince,
		})
		streams.Go(func() { g.acceptUniStreams(ctx, sess, log) })
	}
	// Without WorkItems the calls are still read and refused, so a robot
	// learns why its queue steps fail instead of waiting.
	streams.Go(func() { g.acceptCalls(ctx, sess, log) })

	lastSeen := now
	reason := "disconnected"
	lost := false
	for {
		stream.SetReadDeadline(time.Now().Add(missedHeartbeats * g.opts.HeartbeatInterval))
		msg.Reset()
		if err := frames.Read(msg); err != nil {
			var netErr interface{ Timeout() bool }
			if errors.As(err, &netErr) && netErr.Timeout() {
				reason = fmt.Sprintf("missed %d heartbeats", missedHeartbeats)
				lost = true
				conn.CloseWithError(codeTimeout, reason)
			}
			break
		}
		switch {
		case msg.GetHeartbeat() != nil:
			lastSeen = time.Now()
			g.sawRobot(id, lastSeen)
			if g.opts.Jobs != nil {
				g.opts.Jobs.Handle(ctx, id, msg)
			}
		case msg.GetDrained() != nil:
			log.Info("robot drained: it runs nothing and takes no new work")
		case msg.GetDraining() != nil:
			log.Info("robot draining on its own", "reason", msg.GetDraining().GetReason())
			g.markDraining(ctx, sess)
		case msg.GetRenew() != nil:
			sess.send(&agentv1.ServerMessage{Msg: &agentv1.ServerMessage_Renew{Renew: g.renew(ctx, robot, msg.GetRenew(), log)}})
		default:
			if g.opts.Jobs != nil {
				g.opts.Jobs.Handle(ctx, id, msg)
			}
		}
	}
	if !lost {
		// The robot ended its stream: it has said all it will.
		conn.CloseWithError(codeOK, "goodbye")
	}
	// The connection is closed: its streams end, and what they were
	// writing is written before the robot is let go, and before Run,
	// which waits for this, returns.
	streams.Wait()
	g.detach(ctx, sess, lastSeen, log, reason, lost)
}

// acceptUniStreams reads the unidirectional streams the robot opens (job
// logs, artifacts), each on its own goroutine, until the connection ends.
func (g *Gateway) acceptUniStreams(ctx context.Context, sess *session, log *slog.Logger) {
	var readers sync.WaitGroup
	defer readers.Wait()
	for {
		stream, err := sess.conn.AcceptUniStream(ctx)
		if err != nil {
			return
		}
		readers.Go(func() {
			defer stream.CancelRead(0)
			frames := agentv1.NewFrameReader(stream)
			hdr := &agentv1.UniStreamHeader{}
			stream.SetReadDeadline(time.Now().Add(helloTimeout))
			if err := frames.Read(hdr); err != nil {
				log.Warn("a stream without a header", "err", err)
				return
			}
			stream.SetReadDeadline(time.Time{})
			switch kind := hdr.GetKind().(type) {
			case *agentv1.UniStreamHeader_Log:
				g.opts.Jobs.Logs(ctx, sess.robotID, kind.Log, frames)
			case *agentv1.UniStreamHeader_Artifact:
				answer := g.opts.Jobs.Artifact(ctx, sess.robotID, kind.Artifact, frames)
				// Lost with the connection, the answer is made good by the
				// robot sending the artifact again on its next one.
				if err := sess.send(&agentv1.ServerMessage{Msg: &agentv1.ServerMessage_ArtifactStored{ArtifactStored: answer}}); err != nil {
					log.Debug("answer an artifact", "job", kind.Artifact.GetJobId(), "name", kind.Artifact.GetName(), "err", err)
				}
			default:
				log.Warn("a stream of a kind this control plane does not know; ignored")
			}
		})
	}
}

// register records the robot's own description and that it is online, and
// returns its labels: the operator's and the robot's own.
func (g *Gateway) register(ctx context.Context, robot *registry.Robot, hello *agentv1.Hello, now time.Time) (map[string]string, error) {
	labels, err := robot.DecodeLabels()
	if err != nil {
		// The operator's labels are part of what routes jobs here; a
		// robot registered without them would take jobs meant for others.
		return nil, err
	}
	// The operator's labels from enrolment stand; the robot adds its own.
	for k, v := range hello.GetLabels() {
		if _, ok := labels[k]; !ok {
			labels[k] = v
		}
	}
	robot.Labels = registry.EncodeLabels(labels)
	robot.Capabilities = registry.EncodeCapabilities(hello.GetCapabilities())
	robot.Version, robot.OS, robot.Hostname = hello.GetVersion(), hello.GetOs(), hello.GetHostname()
	robot.MaxJobs = max(hello.GetMaxJobs(), 1)
	robot.ProtocolVersion, robot.ProtocolProblem = agentv1.HelloProtocol(hello), ""
	robot.Status = registry.RobotIdle
	if hello.GetDraining() {
		robot.Status = registry.RobotDraining
	}
	robot.ConnectedSince, robot.LastSeen = &now, &now
	return labels, g.opts.Store.RobotConnected(ctx, robot)
}

// protocolProblem says why a robot that speaks protocol version v cannot be
// served, and what to do, or "" when it can.
func protocolProblem(v int32) string {
	switch {
	case v > agentv1.ProtocolVersion:
		return fmt.Sprintf("the robot speaks protocol version %d but this control plane serves %d to %d: upgrade the control plane or install an older agent",
			v, agentv1.MinProtocolVersion, agentv1.ProtocolVersion)
	case v < agentv1.MinProtocolVersion:
		return fmt.Sprintf("the robot speaks protocol version %d but this control plane serves %d to %d: upgrade the agent",
			v, agentv1.MinProtocolVersion, agentv1.ProtocolVersion)
	}
	return ""
}

// attach makes s the robot's session, closing an older one: a robot that
// reconnects before its old connection timed out replaces it.
func (g *Gateway) attach(s *session, log *slog.Logger) {
	g.mu.Lock()
	old := g.sessions[s.robotID]
	g.sessions[s.robotID] = s
	g.mu.Unlock()
	if old != nil {
		log.Info("robot reconnected; closing its previous connection")
		old.conn.CloseWithError(codeReplaced, "replaced by a new connection")
	}
}

// detach ends the robot's session and, unless a newer connection replaced
// it, records it offline.
func (g *Gateway) detach(ctx context.Context, s *session, lastSeen time.Time, log *slog.Logger, reason string, lost bool) {
	id := s.robotID
	g.mu.Lock()
	current := g.sessions[id]
	replaced := current != nil && current != s
	if !replaced {
		delete(g.sessions, id)
		delete(g.seen, id)
	}
	closing := g.closing
	g.mu.Unlock()
	if replaced || closing {
		// A replaced connection's robot is here on the newer one; at
		// shutdown robots come back to this or another replica with
		// their running jobs, so neither case loses the robot's jobs.
		return
	}
	log.Info("robot offline", "reason", reason)
	if g.opts.Jobs != nil {
		g.opts.Jobs.RobotDown(id, lost, reason)
	}
	if err := g.opts.Store.RobotsOffline(context.WithoutCancel(ctx), map[string]registry.RobotSession{id: {ConnectedSince: s.connectedSince, LastSeen: lastSeen, Lost: true}}); err != nil {
		g.opts.Logger.Warn("record robot offline", "robot", id, "err", err)
	}
	g.Changed(id)
}

func (g *Gateway) sawRobot(id string, at time.Time) {
	g.mu.Lock()
	g.seen[id] = at
	g.mu.Unlock()
}

// renew signs a new certificate for a connected robot, for a key it made
// anew; the old certificate stays valid until it expires.
func (g *Gateway) renew(ctx context.Context, robot *registry.Robot, req *agentv1.RenewRequest, log *slog.Logger) *agentv1.RenewResponse {
	cert, err := g.opts.CA.SignRobot(req.GetCsr(), robot.ID, robot.Name, g.opts.CertValidity)
	if err != nil {
		log.Warn("certificate renewal refused", "err", err)
		return &agentv1.RenewResponse{Error: err.Error()}
	}
	if err := g.opts.Store.SetRobotCertificate(ctx, robot.ID, pki.Serial(cert), cert.NotAfter); err != nil {
		log.Error("record renewed certificate", "err", err)
		return &agentv1.RenewResponse{Error: "the control plane could not renew the certificate; it will be tried again"}
	}
	log.Info("robot certificate renewed", "serial", pki.Serial(cert), "expires", cert.NotAfter)
	return &agentv1.RenewResponse{Certificate: cert.Raw}
}
