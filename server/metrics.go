package server

import (
	"context"
	"runtime"
	"time"

	"connectrpc.com/connect/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/casarerpa/casare/server/gateway"
	"github.com/casarerpa/casare/server/registry"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// newMetrics returns the registry /metrics serves. It is the server's own,
// not the global one, so two servers in one test process do not collide.
func (s *Server) newMetrics() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	// New checked the configuration: every pool parses.
	pools, _ := ParseRobotPools(s.cfg.RobotPools)
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		s.queue.Collector(s.pendingCounts),
		newFleetCollector(s.reg, pools, gateway.StaleAfter(s.cfg.HeartbeatInterval), s.cfg.Environment, s.logger),
		dependencyCollector{pings: map[string]func(context.Context) error{"database": s.reg.Ping, "redis": s.queue.Ping}},
	)
	reg.MustRegister(s.dispatcher.Collectors()...)
	reg.MustRegister(s.events.Collectors()...)
	reg.MustRegister(s.auth.Collector())
	reg.MustRegister(s.assigner.Collectors()...)
	reg.MustRegister(newAssetsGauge(s.reg, s.logger))
	reg.MustRegister(s.queueMetrics.Collectors()...)
	reg.MustRegister(s.queueTriggers.Collectors()...)
	s.countFinishedJobs(reg)
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "casare_build_info",
		Help: "Always 1; its labels say which build of casare-server this replica runs.",
		ConstLabels: prometheus.Labels{
			"version":   s.cfg.Build.version(),
			"revision":  s.cfg.Build.revision(),
			"goversion": runtime.Version(),
		},
	}, func() float64 { return 1 }))
	return reg
}

// countFinishedJobs counts the jobs that end, whichever replica or path
// ended them (a robot, a timeout, a cancel, the last attempt lost), by
// workflow: the jobs dashboard's throughput, failures and attempts.
func (s *Server) countFinishedJobs(reg *prometheus.Registry) {
	env := prometheus.Labels{"environment": s.cfg.Environment}
	finished := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name:        "casare_jobs_finished_total",
		Help:        "Jobs that reached an end (succeeded, failed, cancelled), by workflow.",
		ConstLabels: env,
	}, []string{"workflow", "status"})
	attempts := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:        "casare_job_attempts",
		Help:        "Attempts a finished job took, by workflow.",
		ConstLabels: env,
		Buckets:     []float64{1, 2, 3, 5, 10},
	}, []string{"workflow"})
	reg.MustRegister(finished, attempts)
	s.reg.OnJobFinished(func(job *registry.Job) {
		finished.WithLabelValues(job.WorkflowName, string(job.Status)).Inc()
		attempts.WithLabelValues(job.WorkflowName).Observe(float64(job.Attempt))
	})
}

// rpcMetrics counts API calls by procedure and code and times them.
func (s *Server) rpcMetrics() connect.ServerInterceptor {
	calls := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "casare_api_requests_total",
		Help: "API calls by procedure and result code.",
	}, []string{"procedure", "code"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "casare_api_request_duration_seconds",
		Help:    "Time to serve an API call, by procedure.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	}, []string{"procedure"})
	s.metrics.MustRegister(calls, duration)
	return func(next connect.ServerFunc) connect.ServerFunc {
		return func(ctx context.Context, spec connect.Spec, stream connect.ServerStream) error {
			start := time.Now()
			err := next(ctx, spec, stream)
			code := "ok"
			if err != nil {
				code = connect.CodeOf(err).String()
			}
			calls.WithLabelValues(spec.Procedure, code).Inc()
			if spec.StreamType == connect.StreamTypeUnary {
				duration.WithLabelValues(spec.Procedure).Observe(time.Since(start).Seconds())
			}
			return err
		}
	}
}

// pendingCounts counts the jobs waiting for a robot, by priority.
func (s *Server) pendingCounts(ctx context.Context) (map[registry.Priority]int, error) {
	return s.reg.PendingCounts(ctx)
}
