package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"slices"
	"time"

	"connectrpc.com/connect/v2"

	"google.golang.org/protobuf/types/known/timestamppb"

	agentv1 "github.com/casarerpa/casare/rpc/casare/agent/v1"
	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/rpc/casare/v1/casarev1connect"
	"github.com/casarerpa/casare/server/auth"
	"github.com/casarerpa/casare/server/gateway"
	"github.com/casarerpa/casare/server/registry"
)

// robotService serves the robot registry and acts on robots through the
// gateway.
type robotService struct {
	*Services
	casarev1connect.UnimplementedRobotServiceHandler
}

func (s *robotService) ListRobots(ctx context.Context, req *casarev1.ListRobotsRequest) (*casarev1.ListRobotsResponse, error) {
	var statuses []registry.RobotStatus
	for _, st := range req.GetStatuses() {
		statuses = append(statuses, robotStatusFromProto(st))
	}
	robots, next, err := s.reg.ListRobots(ctx, statuses, registry.Page{Size: int(req.GetPageSize()), Token: req.GetPageToken()})
	if err != nil {
		return nil, toConnect(err)
	}
	held, err := s.heldJobs(ctx, robots)
	if err != nil {
		return nil, toConnect(err)
	}
	res := &casarev1.ListRobotsResponse{Robots: make([]*casarev1.Robot, len(robots)), NextPageToken: next}
	for i := range robots {
		res.Robots[i] = s.robot(&robots[i], held[robots[i].ID])
	}
	return res, nil
}

func (s *robotService) GetRobot(ctx context.Context, req *casarev1.GetRobotRequest) (*casarev1.GetRobotResponse, error) {
	robot, err := s.reg.GetRobot(ctx, req.GetId())
	if errors.Is(err, registry.ErrNotFound) {
		return nil, connect.Errorf(connect.CodeNotFound, "robot %q not found", req.GetId())
	}
	if err != nil {
		return nil, toConnect(err)
	}
	held, err := s.reg.ActiveJobIDs(ctx, robot.ID)
	if err != nil {
		return nil, toConnect(err)
	}
	return &casarev1.GetRobotResponse{Robot: s.robot(robot, held[robot.ID])}, nil
}

// heldJobs returns the jobs each of robots holds now.
func (s *robotService) heldJobs(ctx context.Context, robots []registry.Robot) (map[string][]string, error) {
	if len(robots) == 0 {
		return nil, nil
	}
	ids := make([]string, len(robots))
	for i := range robots {
		ids[i] = robots[i].ID
	}
	return s.reg.ActiveJobIDs(ctx, ids...)
}

// robot converts a robot row with the jobs it holds (the jobs table says
// which, on whichever replica they were assigned), showing it offline when
// it has not been seen for longer than the stale limit whatever the row
// says.
func (s *robotService) robot(r *registry.Robot, running []string) *casarev1.Robot {
	out := robotToProto(r)
	out.RunningJobIds = running
	if s.robotStaleAfter > 0 && r.LastSeen != nil && time.Since(*r.LastSeen) > s.robotStaleAfter {
		out.Status = casarev1.RobotStatus_ROBOT_STATUS_OFFLINE
	}
	return out
}

// enrollmentTTL is how long an enrollment token lasts unless asked.
const enrollmentTTL = time.Hour

// CreateEnrollmentToken makes a one-time token a new robot enrols with. The
// token carries the gateway's address and CA fingerprint, so the robot
// needs nothing else; only the secret's hash is kept.
func (s *robotService) CreateEnrollmentToken(ctx context.Context, req *casarev1.CreateEnrollmentTokenRequest) (*casarev1.CreateEnrollmentTokenResponse, error) {
	auth.SetAuditTarget(ctx, "robot/"+req.GetName())
	ttl := enrollmentTTL
	if req.GetTtl().AsDuration() > 0 {
		ttl = req.GetTtl().AsDuration()
	}
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	sum := sha256.Sum256(secret)
	now := time.Now().UTC()
	token := &registry.EnrollmentToken{
		ID:        registry.NewID(),
		Hash:      hex.EncodeToString(sum[:]),
		Name:      req.GetName(),
		Labels:    registry.EncodeLabels(req.GetLabels()),
		CreatedBy: actor(ctx),
		CreatedAt: now,
		ExpiresAt: now.Add(ttl),
	}
	audit := auth.AuditEvent(ctx, "robot/"+req.GetName(), map[string]any{"enrollment_token": token.ID, "expires_at": token.ExpiresAt})
	if err := s.reg.CreateEnrollmentToken(ctx, token, audit); err != nil {
		return nil, toConnect(err)
	}
	addr, fingerprint := s.enrollment.Target()
	str := agentv1.EncodeToken(&agentv1.EnrollmentToken{Server: addr, CaFingerprint: fingerprint, Secret: secret})
	return &casarev1.CreateEnrollmentTokenResponse{
		Token:     str,
		ExpiresAt: timestamppb.New(token.ExpiresAt),
		Command:   "casare-agent enroll --token " + str + " --dir /var/lib/casare-agent",
	}, nil
}

// DrainRobot tells a connected robot to take no new work.
func (s *robotService) DrainRobot(ctx context.Context, req *casarev1.DrainRobotRequest) (*casarev1.DrainRobotResponse, error) {
	auth.SetAuditTarget(ctx, "robot/"+req.GetId())
	robot, err := s.reg.GetRobot(ctx, req.GetId())
	if errors.Is(err, registry.ErrNotFound) {
		return nil, connect.Errorf(connect.CodeNotFound, "robot %q not found", req.GetId())
	}
	if err != nil {
		return nil, toConnect(err)
	}
	err = s.robots.Drain(ctx, robot.ID, "drained by "+actor(ctx))
	if errors.Is(err, gateway.ErrNotConnected) {
		return nil, connect.Errorf(connect.CodeFailedPrecondition, "robot %s is not connected to this control plane; it takes no work while offline", robot.Name)
	}
	if err != nil {
		return nil, toConnect(err)
	}
	robot.Status = registry.RobotDraining
	held, err := s.reg.ActiveJobIDs(ctx, robot.ID)
	if err != nil {
		return nil, toConnect(err)
	}
	return &casarev1.DrainRobotResponse{Robot: s.robot(robot, held[robot.ID])}, nil
}

// DeleteRobot removes a robot and revokes its certificate: its live
// connection closes at once and its certificate is refused from then on.
func (s *robotService) DeleteRobot(ctx context.Context, req *casarev1.DeleteRobotRequest) (*casarev1.DeleteRobotResponse, error) {
	auth.SetAuditTarget(ctx, "robot/"+req.GetId())
	robot, err := s.reg.DeleteRobot(ctx, req.GetId(), auth.AuditEvent(ctx, "robot/"+req.GetId(), nil))
	if errors.Is(err, registry.ErrNotFound) {
		return nil, connect.Errorf(connect.CodeNotFound, "robot %q not found", req.GetId())
	}
	if err != nil {
		return nil, toConnect(err)
	}
	s.robots.Revoke(robot.ID, robot.CertSerial)
	return &casarev1.DeleteRobotResponse{}, nil
}

// watchBatch is how many robots one snapshot message carries.
const watchBatch = 500

// WatchRobots sends every robot, then SYNCED, then each robot that changes
// (DELETE for one deleted) until the client goes away.
func (s *robotService) WatchRobots(ctx context.Context, _ *casarev1.WatchRobotsRequest, stream casarev1connect.RobotServiceWatchRobotsServerStream) error {
	ctx, endStream := s.streamContext(ctx)
	defer endStream()
	// Subscribe first: a change between the snapshot and the subscription
	// would otherwise be lost.
	changed, cancel := s.robots.Subscribe()
	defer cancel()
	// A robot's jobs change with every job it takes or ends, which no
	// robot change says: job changes are followed too, and the jobs
	// robots hold read again at most every heldRefresh, so a busy fleet
	// costs a watcher a few reads a second rather than one per job.
	var jobChanged <-chan string
	if s.jobChanges != nil {
		var cancelJobs func()
		jobChanged, cancelJobs = s.jobChanges.Subscribe()
		defer cancelJobs()
	}
	held, err := s.reg.ActiveJobIDs(ctx)
	if err != nil {
		return toConnect(err)
	}
	page := registry.Page{Size: watchBatch}
	for {
		robots, next, err := s.reg.ListRobots(ctx, nil, page)
		if err != nil {
			return toConnect(err)
		}
		msg := &casarev1.WatchRobotsResponse{Type: casarev1.WatchEventType_WATCH_EVENT_TYPE_SNAPSHOT}
		for i := range robots {
			msg.Robots = append(msg.Robots, s.robot(&robots[i], held[robots[i].ID]))
		}
		if err := stream.Send(msg); err != nil {
			return err
		}
		if next == "" {
			break
		}
		page.Token = next
	}
	if err := stream.Send(&casarev1.WatchRobotsResponse{Type: casarev1.WatchEventType_WATCH_EVENT_TYPE_SYNCED}); err != nil {
		return err
	}
	send := func(id string, running []string) error {
		msg := &casarev1.WatchRobotsResponse{Type: casarev1.WatchEventType_WATCH_EVENT_TYPE_UPSERT}
		robot, err := s.reg.GetRobot(ctx, id)
		switch {
		case errors.Is(err, registry.ErrNotFound):
			msg.Type = casarev1.WatchEventType_WATCH_EVENT_TYPE_DELETE
			msg.Robots = []*casarev1.Robot{{Id: id}}
		case err != nil:
			return toConnect(err)
		default:
			msg.Robots = []*casarev1.Robot{s.robot(robot, running)}
		}
		return stream.Send(msg)
	}
	refresh := time.NewTimer(time.Hour)
	refresh.Stop()
	defer refresh.Stop()
	armed := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case id := <-changed:
			now, err := s.reg.ActiveJobIDs(ctx, id)
			if err != nil {
				return toConnect(err)
			}
			held[id] = now[id]
			if err := send(id, now[id]); err != nil {
				return err
			}
		case <-jobChanged:
			if !armed {
				armed = true
				refresh.Reset(heldRefresh)
			}
		case <-refresh.C:
			armed = false
			now, err := s.reg.ActiveJobIDs(ctx)
			if err != nil {
				return toConnect(err)
			}
			for id := range mergedKeys(held, now) {
				if slices.Equal(held[id], now[id]) {
					continue
				}
				if err := send(id, now[id]); err != nil {
					return err
				}
			}
			held = now
		}
	}
}

// heldRefresh is how long a robots watch gathers job changes before it
// reads again which jobs the robots hold.
const heldRefresh = 250 * time.Millisecond

// mergedKeys is the set of the keys of a and b.
func mergedKeys(a, b map[string][]string) map[string]struct{} {
	out := make(map[string]struct{}, len(a)+len(b))
	for k := range a {
		out[k] = struct{}{}
	}
	for k := range b {
		out[k] = struct{}{}
	}
	return out
}
