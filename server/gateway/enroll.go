package gateway

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/quic-go/quic-go"

	agentv1 "github.com/casarerpa/casare/rpc/casare/agent/v1"
	"github.com/casarerpa/casare/server/pki"
	"github.com/casarerpa/casare/server/registry"
)

// enrollLinger is how long the gateway waits, after its answer, for the
// robot to read it and hang up before it closes the connection itself.
const enrollLinger = 3 * time.Second

// serveEnroll signs a new robot's certificate request in exchange for an
// unused, unexpired enrollment token, and registers the robot. These
// connections have no certificate, so anyone can open them: at most
// MaxEnrollConns are open at once, and each is closed soon after the
// answer and by EnrollTimeout at the latest, whatever keep-alives the
// client sends.
func (g *Gateway) serveEnroll(ctx context.Context, conn *quic.Conn) {
	peer := conn.RemoteAddr().String()
	if n := g.enrolling.Add(1); n > int64(g.opts.MaxEnrollConns) {
		g.enrolling.Add(-1)
		reason := fmt.Sprintf("too many enrolments at once (the limit is %d); try again shortly", g.opts.MaxEnrollConns)
		g.logRefusal(peer, "busy", "enrolment refused", "reason", reason)
		conn.CloseWithError(codeBusy, reason)
		return
	}
	defer g.enrolling.Add(-1)
	deadline := time.Now().Add(g.opts.EnrollTimeout)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	stream, err := conn.AcceptStream(ctx)
	if err != nil {
		g.logRefusal(peer, "no request", "enrolment refused", "reason", "no enrollment request within "+g.opts.EnrollTimeout.String())
		conn.CloseWithError(codeTimeout, "no enrollment request")
		return
	}
	stream.SetDeadline(deadline)
	req := &agentv1.EnrollRequest{}
	if err := agentv1.NewFrameReader(stream).Read(req); err != nil {
		g.logRefusal(peer, "unreadable", "enrolment refused", "reason", "unreadable enrollment request", "err", err)
		conn.CloseWithError(codeRefused, "unreadable enrollment request")
		return
	}
	res := g.enroll(ctx, req, peer)
	if err := agentv1.WriteFrame(stream, res); err != nil {
		g.opts.Logger.Warn("answer an enrolling robot", "peer", peer, "err", err)
	}
	stream.Close()
	// Closing at once could drop the answer in flight: let the robot
	// read it and hang up, but not for long.
	linger := time.NewTimer(min(enrollLinger, time.Until(deadline)))
	defer linger.Stop()
	select {
	case <-conn.Context().Done():
	case <-ctx.Done():
	case <-linger.C:
	}
	conn.CloseWithError(codeOK, "enrolment done")
}

func (g *Gateway) enroll(ctx context.Context, req *agentv1.EnrollRequest, peer string) *agentv1.EnrollResponse {
	// A refusal's reason is one of a few fixed texts, so it serves as
	// the kind its log lines are counted by.
	refuse := func(reason string, err error) *agentv1.EnrollResponse {
		g.logRefusal(peer, reason, "enrolment refused", "hostname", req.GetHostname(), "reason", reason, "err", err)
		return &agentv1.EnrollResponse{Error: reason}
	}
	id := registry.NewID()
	cert, err := g.opts.CA.SignRobot(req.GetCsr(), id, id, g.opts.CertValidity)
	if err != nil {
		g.logRefusal(peer, "certificate request", "enrolment refused", "hostname", req.GetHostname(), "reason", err)
		return &agentv1.EnrollResponse{Error: err.Error()}
	}
	expires := cert.NotAfter
	robot := &registry.Robot{
		ID:            id,
		Capabilities:  "[]",
		Version:       req.GetVersion(),
		OS:            req.GetOs(),
		Hostname:      req.GetHostname(),
		Status:        registry.RobotOffline,
		MaxJobs:       1,
		CertSerial:    pki.Serial(cert),
		CertExpiresAt: &expires,
	}
	err = g.opts.Store.EnrollRobot(ctx, secretHash(req.GetSecret()), robot, time.Now())
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return refuse("unknown enrollment token: create one with casarectl robots token create", err)
	case errors.Is(err, registry.ErrTokenUsed):
		return refuse("the enrollment token was already used: create a new one", err)
	case errors.Is(err, registry.ErrTokenExpired):
		return refuse("the enrollment token has expired: create a new one", err)
	case errors.Is(err, registry.ErrAlreadyExists):
		return refuse("a robot with this token's name exists: delete it or create a token with another name", err)
	case err != nil:
		g.opts.Logger.Error("enrol robot", "err", err)
		return &agentv1.EnrollResponse{Error: "the control plane could not enrol the robot; try again"}
	}
	g.opts.Logger.Info("robot enrolled", "robot", robot.ID, "name", robot.Name, "hostname", robot.Hostname, "serial", robot.CertSerial)
	return &agentv1.EnrollResponse{
		RobotId:     robot.ID,
		RobotName:   robot.Name,
		Certificate: cert.Raw,
		Ca:          g.opts.CA.Certificate().Raw,
	}
}
