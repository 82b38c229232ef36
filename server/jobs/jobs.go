package jobs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/casarerpa/casare/server/registry"
)

// Store is what the service needs from the registry.
type Store interface {
	GetJob(ctx context.Context, id string) (*registry.Job, error)
	CreateJob(ctx context.Context, job *registry.Job, audit *registry.AuditEvent) (*registry.Job, bool, error)
	TransitionJob(ctx context.Context, t registry.Transition, audit *registry.AuditEvent) (*registry.Job, error)
	SetJobProgress(ctx context.Context, p registry.ProgressNote) (bool, error)
	SetPendingMessage(ctx context.Context, jobID string, attempt int32, message string) (bool, error)
}

// Service changes jobs, each change one row of Table.
type Service struct {
	store Store
}

// New returns a service that applies its changes to store.
func New(store Store) *Service {
	return &Service{store: store}
}

// System is the actor of the changes the control plane makes on its own.
const System = "system"

// ErrFence says a change that must name the attempt (and robot) it is
// about did not: a caller's mistake, never news from a robot.
var ErrFence = errors.New("the change does not name the attempt and robot it is about")

// change is an event applied to one job; see apply.
type change struct {
	event   Event
	jobID   string
	attempt int32
	robot   string
	// assignTo becomes the job's robot.
	assignTo *string
	message  string
	reason   string
	actor    string
	result   *string
	now      time.Time
}

// apply makes the transition the table gives for c.event, fenced as the
// table says. The registry refuses it, with an error wrapping
// registry.ErrConflict and the job as it is, unless the job is in one of
// the statuses the table lists for the event (and on the attempt and robot
// named, when fenced).
func (s *Service) apply(ctx context.Context, c change, audit *registry.AuditEvent) (*registry.Job, error) {
	t, err := c.transition()
	if err != nil {
		return nil, err
	}
	if ruleOf(c.event).OutOfAttempts != "" {
		job, err := s.store.GetJob(ctx, c.jobID)
		if err != nil {
			return nil, err
		}
		if job.Attempt >= job.MaxAttempts {
			t.To, t.NextAttempt = ruleOf(c.event).OutOfAttempts, false
			t.Message = fmt.Sprintf("%s; gave up after %d of %d attempts", c.message, job.Attempt, job.MaxAttempts)
		}
	}
	return s.store.TransitionJob(ctx, t, audit)
}

// transition is the registry's form of c, from the table.
func (c change) transition() (registry.Transition, error) {
	rule := ruleOf(c.event)
	t := registry.Transition{
		JobID: c.jobID, From: From(c.event), To: rule.To, NextAttempt: rule.NextAttempt,
		RobotID: c.assignTo, Message: c.message, Reason: c.reason, Actor: c.actor, Result: c.result, Now: c.now,
	}
	switch rule.Fence {
	case FenceRobot:
		if c.robot == "" {
			return t, fmt.Errorf("%s job %s: %w", c.event, c.jobID, ErrFence)
		}
		t.Robot = c.robot
		fallthrough
	case FenceAttempt:
		if c.attempt <= 0 {
			return t, fmt.Errorf("%s job %s: %w", c.event, c.jobID, ErrFence)
		}
		t.Attempt = c.attempt
	}
	return t, nil
}

// Submit creates the job, PENDING on its first attempt, with its first
// event and the audit event (when not nil). With an idempotency key that a
// job has already, it returns that job and existing true.
func (s *Service) Submit(ctx context.Context, job *registry.Job, audit *registry.AuditEvent) (saved *registry.Job, existing bool, err error) {
	job.Status = ruleOf(Submit).To
	if job.Attempt == 0 {
		job.Attempt = 1
	}
	return s.store.CreateJob(ctx, job, audit)
}

// Assign records that the attempt was given to the robot.
func (s *Service) Assign(ctx context.Context, jobID string, attempt int32, robotID, robotName string) (*registry.Job, error) {
	return s.apply(ctx, change{
		event: Assign, jobID: jobID, attempt: attempt, assignTo: &robotID,
		message: "assigned to robot " + robotName, reason: "assigned", actor: System,
	}, nil)
}

// Accept records that the robot started the attempt.
func (s *Service) Accept(ctx context.Context, jobID string, attempt int32, robotID string) (*registry.Job, error) {
	return s.apply(ctx, change{
		event: Accept, jobID: jobID, attempt: attempt, robot: robotID,
		message: "running", reason: "accepted", actor: System,
	}, nil)
}

// Progress records how far the robot's attempt got; false when the job
// moved on from that attempt on that robot, or is not running.
func (s *Service) Progress(ctx context.Context, jobID string, attempt int32, robotID string, percent int32, step string) (bool, error) {
	if attempt <= 0 || robotID == "" {
		return false, fmt.Errorf("%s job %s: %w", Progress, jobID, ErrFence)
	}
	return s.store.SetJobProgress(ctx, registry.ProgressNote{
		JobID: jobID, Attempt: attempt, RobotID: robotID, From: From(Progress),
		Percent: min(max(percent, 0), 100), Step: step,
	})
}

// End is how a robot says an attempt ended.
type End struct {
	JobID   string
	Attempt int32
	RobotID string
	// Failed ends the job FAILED with Error; otherwise it SUCCEEDED with
	// Outputs as its result.
	Failed  bool
	Error   string
	Outputs *structpb.Struct
	// Stopped says the robot stopped the job because it was told to.
	Stopped bool
}

// Finish records the end of the robot's attempt.
func (s *Service) Finish(ctx context.Context, e End) (*registry.Job, error) {
	c := change{jobID: e.JobID, attempt: e.Attempt, robot: e.RobotID, actor: System}
	if e.Failed {
		c.event, c.message, c.reason = Fail, e.Error, "failed"
		if e.Stopped {
			c.reason = "stopped"
		}
		return s.apply(ctx, c, nil)
	}
	result := "{}"
	if e.Outputs != nil {
		b, err := protojson.Marshal(e.Outputs)
		if err != nil {
			// Outputs arrived as a valid message; one that cannot be
			// written back is a bug to hear about, not a job to fail.
			return nil, fmt.Errorf("finish job %s: encode outputs: %w", e.JobID, err)
		}
		result = string(b)
	}
	c.event, c.reason, c.result = Succeed, "completed", &result
	return s.apply(ctx, c, nil)
}

// Back is a robot's hold on a job ending without an end of the job.
type Back struct {
	JobID   string
	Attempt int32
	RobotID string
	// How is HandBack (it never ran there: same attempt), Retry (it may
	// have: next attempt) or Expire (not accepted in time: next attempt,
	// only while the job still waits for the accept).
	How    Event
	Reason string
}

// HandBack puts the job back in PENDING for another robot, or ends it
// FAILED when it needs a next attempt and has none left.
func (s *Service) HandBack(ctx context.Context, b Back) (*registry.Job, error) {
	switch b.How {
	case HandBack, Retry, Expire:
	default:
		return nil, fmt.Errorf("hand back job %s: %q is not a way to hand a job back", b.JobID, b.How)
	}
	return s.apply(ctx, change{
		event: b.How, jobID: b.JobID, attempt: b.Attempt, robot: b.RobotID,
		message: b.Reason, reason: b.Reason, actor: System,
	}, nil)
}

// Cancel ends a job that has not ended, whatever its attempt, writing the
// audit event in the same transaction.
func (s *Service) Cancel(ctx context.Context, jobID, reason, actor string, audit *registry.AuditEvent) (*registry.Job, error) {
	return s.apply(ctx, change{
		event: Cancel, jobID: jobID, message: reason, reason: reason, actor: actor, now: time.Now(),
	}, audit)
}

// TimeOut fails the robot's attempt that ran longer than timeout.
func (s *Service) TimeOut(ctx context.Context, jobID string, attempt int32, robotID string, timeout time.Duration) (*registry.Job, error) {
	return s.apply(ctx, change{
		event: TimeOut, jobID: jobID, attempt: attempt, robot: robotID,
		message: fmt.Sprintf("timed out after %s", timeout), reason: "timeout", actor: System,
	}, nil)
}

// SayWaiting sets a pending attempt's status message to what it waits
// for; false when it said so already or the job moved on.
func (s *Service) SayWaiting(ctx context.Context, jobID string, attempt int32, message string) (bool, error) {
	return s.store.SetPendingMessage(ctx, jobID, attempt, message)
}
