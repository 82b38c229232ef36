// Package api implements the casare.v1 Connect services. Handlers stay thin:
// they check what protovalidate cannot, convert between the API and the
// registry in convert.go, and map errors in error.go.
package api

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"connectrpc.com/connect/v2"

	"github.com/casarerpa/casare/rpc/casare/v1/casarev1connect"
	"github.com/casarerpa/casare/server/auth"
	"github.com/casarerpa/casare/server/jobs"
	"github.com/casarerpa/casare/server/queue"
	"github.com/casarerpa/casare/server/registry"
)

// Queue is the dispatch queue as the API uses it.
type Queue interface {
	Enqueue(ctx context.Context, t queue.Task) error
	Remove(ctx context.Context, t queue.Task) error
	// PublishJobChange tells every replica's watchers that a job changed.
	PublishJobChange(ctx context.Context, jobID string)
	// PublishJobStop tells every replica to stop a job on its robot.
	PublishJobStop(jobID string)
}

// Dispatch takes jobs to run on robots.
type Dispatch interface {
	// Offer dispatches a job just submitted without waiting for the queue.
	Offer(job *registry.Job)
}

// ChangeFeed streams the ids of things that change, until cancelled.
type ChangeFeed interface {
	Subscribe() (<-chan string, func())
}

// Enrollment tells what an enrollment token must carry: the address robots
// dial and the fingerprint of the CA the gateway's certificate chains to.
type Enrollment interface {
	Target() (addr string, caFingerprint []byte)
}

// RobotControl acts on robots' live connections.
type RobotControl interface {
	// Drain tells a connected robot to take no new work.
	Drain(ctx context.Context, robotID, reason string) error
	// Revoke refuses a certificate and closes the robot's connection.
	Revoke(robotID, serial string)
	// Subscribe streams the ids of robots that change, until cancelled.
	Subscribe() (<-chan string, func())
}

// Deliveries sends the events of the outbox.
type Deliveries interface {
	// Wake looks for deliveries due now, after one was queued.
	Wake()
}

// Options configures the services.
type Options struct {
	Registry *registry.Registry
	// Jobs makes every change of a job; nil means one on Registry.
	Jobs   *jobs.Service
	Queue  Queue
	Auth   *auth.Authenticator
	Logger *slog.Logger
	// DefaultMaxAttempts applies to jobs submitted without max_attempts.
	DefaultMaxAttempts int32
	Enrollment         Enrollment
	Robots             RobotControl
	JobChanges         ChangeFeed
	// JobLogs carries the ids of jobs with new log lines stored.
	JobLogs ChangeFeed
	// Dispatch, when set, gets each new job at once.
	Dispatch Dispatch
	// RobotStaleAfter is how long after its last heartbeat a robot the
	// registry says is online is shown offline: the replica that served it
	// may have died without saying so.
	RobotStaleAfter time.Duration
	// Version and Revision say which build serves, for GetVersion.
	Version, Revision string
	// Deliveries, when set, hears of pings and redeliveries queued.
	Deliveries Deliveries
	// Vault seals secret assets, credentials and secret job inputs; nil
	// refuses them.
	Vault Vault
	// QueueTriggers, when set, hears of work items added.
	QueueTriggers QueueTriggers
}

// Services holds the implementations of the casare.v1 services.
type Services struct {
	reg    *registry.Registry
	jobs   *jobs.Service
	queue  Queue
	auth   *auth.Authenticator
	logger *slog.Logger

	defaultMaxAttempts int32
	enrollment         Enrollment
	robots             RobotControl
	jobChanges         ChangeFeed
	jobLogs            ChangeFeed
	dispatch           Dispatch
	robotStaleAfter    time.Duration
	// versions keeps the stored workflow versions jobs were submitted
	// with, decoded.
	versions          versionCache
	version, revision string
	deliveries        Deliveries
	vault             Vault
	queueTriggers     QueueTriggers

	// stopping closes when the server starts to shut down: watch and log
	// streams never go idle on their own, and a graceful shutdown waits
	// for every call to end.
	stopping chan struct{}
	stopOnce sync.Once
}

// EndStreams ends the open watch and log streams; clients reconnect to
// another replica or to this one once it is back. Unary calls in flight
// are left to finish.
func (s *Services) EndStreams() {
	s.stopOnce.Do(func() { close(s.stopping) })
}

// streamContext is ctx ended also when the server shuts down.
func (s *Services) streamContext(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-s.stopping:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// New returns the services.
func New(opts Options) *Services {
	if opts.DefaultMaxAttempts <= 0 {
		opts.DefaultMaxAttempts = 3
	}
	if opts.Jobs == nil {
		opts.Jobs = jobs.New(opts.Registry)
	}
	return &Services{
		stopping:           make(chan struct{}),
		reg:                opts.Registry,
		jobs:               opts.Jobs,
		queue:              opts.Queue,
		auth:               opts.Auth,
		logger:             opts.Logger,
		defaultMaxAttempts: opts.DefaultMaxAttempts,
		enrollment:         opts.Enrollment,
		robots:             opts.Robots,
		jobChanges:         opts.JobChanges,
		jobLogs:            opts.JobLogs,
		dispatch:           opts.Dispatch,
		robotStaleAfter:    opts.RobotStaleAfter,
		version:            opts.Version,
		revision:           opts.Revision,
		deliveries:         opts.Deliveries,
		vault:              opts.Vault,
		queueTriggers:      opts.QueueTriggers,
	}
}

// Register registers every casare.v1 service on server.
func (s *Services) Register(server *connect.Server) {
	casarev1connect.RegisterJobServiceHandler(server, &jobService{Services: s})
	casarev1connect.RegisterWorkflowServiceHandler(server, &workflowService{s})
	casarev1connect.RegisterRobotServiceHandler(server, &robotService{Services: s})
	casarev1connect.RegisterAdminServiceHandler(server, &adminService{s})
	casarev1connect.RegisterWebhookServiceHandler(server, &webhookService{Services: s})
	casarev1connect.RegisterScheduleServiceHandler(server, &scheduleService{Services: s})
	casarev1connect.RegisterAssetServiceHandler(server, &assetService{s})
	casarev1connect.RegisterWorkQueueServiceHandler(server, &workQueueService{s})
}

// actor names the caller for job events and created_by columns.
func actor(ctx context.Context) string {
	if p, ok := auth.PrincipalFrom(ctx); ok {
		return p.Name
	}
	return "system"
}
