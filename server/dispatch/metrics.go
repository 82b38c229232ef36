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
	utilization := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "casare_robot_utilization",
		Help:        "Share of the job slots of the robots connected here that hold a job (0 to 1).",
		ConstLabels: env,
	}, d.utilization)
	d.collectors = []prometheus.Collector{d.jobsTotal, wait, utilization}
}

// Collectors returns the dispatcher's metrics.
func (d *Dispatcher) Collectors() []prometheus.Collector { return d.collectors }

func (d *Dispatcher) utilization() float64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	slots, used := 0, 0
	for _, r := range d.robots {
		if r.connected {
			slots += r.maxJobs
			used += len(r.jobs)
		}
	}
	if slots == 0 {
		return 0
	}
	return float64(used) / float64(slots)
}

func (d *Dispatcher) countEnd(robotID, status string) {
	d.jobsTotal.WithLabelValues(robotID, status).Inc()
}
