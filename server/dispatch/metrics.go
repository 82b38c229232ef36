package dispatch

import "github.com/prometheus/client_golang/prometheus"

func (d *Dispatcher) newMetrics() {
	env := prometheus.Labels{"environment": d.opts.Environment}
	d.jobsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "casare_robot_jobs_total",
		Help: "Jobs that ended on a robot, by how: succeeded, failed, cancelled, or returned to the queue.",
	}, []string{"robot_id", "status"})
	wait := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "casare_job_wait_seconds",
		Help:    "How long jobs waited for a robot to start them.",
		Buckets: []float64{1, 5, 10, 30, 60, 120, 300, 600},
	}, []string{"environment"})
	d.waitSeconds = wait.With(env)
	// casare_robot_utilization covers the whole fleet, so the server
	// reads it from the registry rather than from the robots here.
	d.collectors = []prometheus.Collector{d.jobsTotal, wait}
}

// Collectors returns the dispatcher's metrics.
func (d *Dispatcher) Collectors() []prometheus.Collector { return d.collectors }

func (d *Dispatcher) countEnd(robotID, status string) {
	d.jobsTotal.WithLabelValues(robotID, status).Inc()
}
