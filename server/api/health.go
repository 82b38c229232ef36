package api

import (
	"context"
	"time"

	"connectrpc.com/connect/v2"

	healthv1 "github.com/casarerpa/casare/rpc/grpc/health/v1"
	"github.com/casarerpa/casare/rpc/grpc/health/v1/healthv1connect"
)

// Health serves the gRPC health protocol. The control plane is SERVING when
// ready answers nil: the database and Redis respond and the schema is
// current.
type Health struct {
	ready    func(context.Context) error
	services map[string]bool
	// watchInterval is how often Watch re-checks readiness.
	watchInterval time.Duration
}

var _ healthv1connect.HealthHandler = (*Health)(nil)

// NewHealth returns the health service for the named services ("" is the
// server as a whole).
func NewHealth(ready func(context.Context) error, services ...string) *Health {
	h := &Health{ready: ready, services: map[string]bool{"": true}, watchInterval: 5 * time.Second}
	for _, s := range services {
		h.services[s] = true
	}
	return h
}

func (h *Health) status(ctx context.Context, service string) healthv1.HealthCheckResponse_ServingStatus {
	if !h.services[service] {
		return healthv1.HealthCheckResponse_SERVICE_UNKNOWN
	}
	checkCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if h.ready(checkCtx) != nil {
		return healthv1.HealthCheckResponse_NOT_SERVING
	}
	return healthv1.HealthCheckResponse_SERVING
}

// Check answers with the current status; an unknown service is NotFound as
// the protocol requires.
func (h *Health) Check(ctx context.Context, req *healthv1.HealthCheckRequest) (*healthv1.HealthCheckResponse, error) {
	st := h.status(ctx, req.GetService())
	if st == healthv1.HealthCheckResponse_SERVICE_UNKNOWN {
		return nil, connect.Errorf(connect.CodeNotFound, "unknown service %q", req.GetService())
	}
	return &healthv1.HealthCheckResponse{Status: st}, nil
}

// Watch sends the status now and then each time it changes.
func (h *Health) Watch(ctx context.Context, req *healthv1.HealthCheckRequest, stream healthv1connect.HealthWatchServerStream) error {
	last := healthv1.HealthCheckResponse_ServingStatus(-1)
	ticker := time.NewTicker(h.watchInterval)
	defer ticker.Stop()
	for {
		if st := h.status(ctx, req.GetService()); st != last {
			if err := stream.Send(&healthv1.HealthCheckResponse{Status: st}); err != nil {
				return err
			}
			last = st
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
	}
}
