package gateway

import (
	"context"
	"errors"
	"time"

	"github.com/quic-go/quic-go"

	agentv1 "github.com/casarerpa/casare/rpc/casare/agent/v1"
	"github.com/casarerpa/casare/server/pki"
	"github.com/casarerpa/casare/server/registry"
)

// enrollTimeout bounds an enrolment from connection to answer.
const enrollTimeout = 15 * time.Second

// serveEnroll signs a new robot's certificate request in exchange for an
// unused, unexpired enrollment token, and registers the robot.
func (g *Gateway) serveEnroll(ctx context.Context, conn *quic.Conn) {
	ctx, cancel := context.WithTimeout(ctx, enrollTimeout)
	defer cancel()
	stream, err := conn.AcceptStream(ctx)
	if err != nil {
		conn.CloseWithError(codeTimeout, "no enrollment request")
		return
	}
	stream.SetDeadline(time.Now().Add(enrollTimeout))
	req := &agentv1.EnrollRequest{}
	if err := agentv1.NewFrameReader(stream).Read(req); err != nil {
		conn.CloseWithError(codeRefused, "unreadable enrollment request")
		return
	}
	res := g.enroll(ctx, req, conn.RemoteAddr().String())
	if err := agentv1.WriteFrame(stream, res); err != nil {
		g.opts.Logger.Warn("answer an enrolling robot", "err", err)
	}
	stream.Close()
	// Wait for the robot to hang up once it has read the answer.
	<-conn.Context().Done()
}

func (g *Gateway) enroll(ctx context.Context, req *agentv1.EnrollRequest, peer string) *agentv1.EnrollResponse {
	refuse := func(reason string, err error) *agentv1.EnrollResponse {
		g.opts.Logger.Warn("enrolment refused", "peer", peer, "hostname", req.GetHostname(), "reason", reason, "err", err)
		return &agentv1.EnrollResponse{Error: reason}
	}
	id := registry.NewID()
	cert, err := g.opts.CA.SignRobot(req.GetCsr(), id, id, g.opts.CertValidity)
	if err != nil {
		return refuse(err.Error(), err)
	}
	expires := cert.NotAfter
	robot := &registry.Robot{
		ID:            id,
		Capabilities:  "[]",
		Version:       req.GetVersion(),
		OS:            req.GetOs(),
		Hostname:      req.GetHostname(),
		Status:        "offline",
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
