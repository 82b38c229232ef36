package gateway

import (
	"github.com/casarerpa/casare/server/registry"

	"context"
	"errors"
	"time"

	agentv1 "github.com/casarerpa/casare/rpc/casare/agent/v1"
)

// ErrNotConnected is returned for a robot with no live connection here.
var ErrNotConnected = errors.New("the robot is not connected")

// Drain tells a connected robot to take no new work and records it
// draining.
func (g *Gateway) Drain(ctx context.Context, robotID, reason string) error {
	sess := g.session(robotID)
	if sess == nil {
		return ErrNotConnected
	}
	if err := sess.send(&agentv1.ServerMessage{Msg: &agentv1.ServerMessage_Drain{Drain: &agentv1.Drain{Reason: reason}}}); err != nil {
		return err
	}
	return g.markDraining(ctx, sess)
}

// markDraining records that a robot takes no new work.
func (g *Gateway) markDraining(ctx context.Context, sess *session) error {
	sess.mu.Lock()
	sess.draining = true
	sess.mu.Unlock()
	if g.opts.Jobs != nil {
		g.opts.Jobs.RobotDraining(sess.robotID)
	}
	if err := g.opts.Store.SetRobotStatus(ctx, sess.robotID, registry.RobotDraining); err != nil {
		return err
	}
	g.Changed(sess.robotID)
	return nil
}

// Revoke refuses the certificate from now on and closes the robot's live
// connection at once.
func (g *Gateway) Revoke(robotID, serial string) {
	if serial != "" {
		g.revoked.Store(serial, struct{}{})
	}
	if sess := g.session(robotID); sess != nil {
		sess.send(&agentv1.ServerMessage{Msg: &agentv1.ServerMessage_Refused{Refused: &agentv1.Refused{Reason: "this robot was deleted"}}})
		sess.conn.CloseWithError(codeRefused, "this robot was deleted")
	}
	g.Changed(robotID)
}

// reloadRevoked picks up revocations made through other replicas and closes
// the connections they concern.
func (g *Gateway) reloadRevoked(ctx context.Context) {
	serials, err := g.opts.Store.RevokedSerials(ctx)
	if err != nil {
		g.opts.Logger.Warn("reload revoked certificates", "err", err)
		return
	}
	for _, s := range serials {
		g.revoked.Store(s, struct{}{})
	}
	g.mu.Lock()
	var doomed []*session
	for _, sess := range g.sessions {
		if g.isRevoked(sess.serial) {
			doomed = append(doomed, sess)
		}
	}
	g.mu.Unlock()
	for _, sess := range doomed {
		g.Revoke(sess.robotID, "")
	}
}

func (g *Gateway) session(robotID string) *session {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.sessions[robotID]
}

// LiveRobot is a robot's state as its live connection shows it.
type LiveRobot struct {
	Status         registry.RobotStatus
	ConnectedSince time.Time
}

// Live returns the robots connected here.
func (g *Gateway) Live() map[string]LiveRobot {
	g.mu.Lock()
	sessions := make([]*session, 0, len(g.sessions))
	for _, s := range g.sessions {
		sessions = append(sessions, s)
	}
	g.mu.Unlock()
	out := make(map[string]LiveRobot, len(sessions))
	for _, s := range sessions {
		out[s.robotID] = LiveRobot{Status: s.status(), ConnectedSince: s.connectedSince}
	}
	return out
}
