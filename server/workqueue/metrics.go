package workqueue

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/casarerpa/casare/server/registry"
)

// Metrics are the work queues' metrics. The counts and breaches are read
// from the registry's counters at scrape time, so every replica reports
// the same figures whoever changed the items; the durations are of the
// items whose end this replica heard from a robot.
type Metrics struct {
	reg         *registry.Registry
	logger      *slog.Logger
	environment string
	duration    *prometheus.HistogramVec
	items       *prometheus.Desc
	breaches    *prometheus.Desc
	waiting     *prometheus.Desc
}

// NewMetrics returns the work queues' metrics; environment labels the
// waiting items as it labels casare_queue_depth.
func NewMetrics(reg *registry.Registry, environment string, logger *slog.Logger) *Metrics {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Metrics{
		reg: reg, logger: logger, environment: environment,
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "casare_workqueue_item_duration_seconds",
			Help:    "Time from an item being taken to its end, by queue.",
			Buckets: []float64{0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600},
		}, []string{"queue"}),
		items: prometheus.NewDesc("casare_workqueue_items",
			"Work items by queue and status, from the queues' counters.", []string{"queue", "status"}, nil),
		breaches: prometheus.NewDesc("casare_workqueue_sla_breaches_total",
			"Work items that ended, or are still open, past their queue's SLA or their deadline.", []string{"queue"}, nil),
		waiting: prometheus.NewDesc("casare_workqueue_depth",
			"NEW work items waiting to be taken, by queue: for autoscaling robots beside casare_queue_depth.",
			[]string{"environment", "queue"}, nil),
	}
}

// Collectors returns what to register.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.duration, countsCollector{m}}
}

func (m *Metrics) ended(item *registry.WorkItem) {
	if m == nil || item == nil {
		return
	}
	if d, ok := since(item); ok {
		m.duration.WithLabelValues(item.Queue).Observe(d.Seconds())
	}
}

type countsCollector struct{ m *Metrics }

func (c countsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.m.items
	ch <- c.m.breaches
	ch <- c.m.waiting
}

func (c countsCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	stats, err := c.m.reg.WorkQueueCounts(ctx)
	if err != nil {
		// A scrape without the metric says more than a made-up zero.
		c.m.logger.Debug("collect work queue counts", "err", err)
		return
	}
	for queue, s := range stats {
		for _, st := range registry.WorkItemStatuses {
			ch <- prometheus.MustNewConstMetric(c.m.items, prometheus.GaugeValue, float64(s.Counts[st]), queue, string(st))
		}
		ch <- prometheus.MustNewConstMetric(c.m.breaches, prometheus.CounterValue, float64(s.SLABreaches), queue)
		ch <- prometheus.MustNewConstMetric(c.m.waiting, prometheus.GaugeValue, float64(s.Counts[registry.ItemNew]), c.m.environment, queue)
	}
}
