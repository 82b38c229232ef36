package queue

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

var queueDepthDesc = prometheus.NewDesc(
	"casare_queue_depth",
	"Jobs waiting in the dispatch queue, by priority.",
	[]string{"environment", "priority"}, nil,
)

// Collector returns a collector of casare_queue_depth, read from Redis at
// scrape time so it is never stale.
func (q *Queue) Collector() prometheus.Collector {
	return depthCollector{q}
}

type depthCollector struct{ q *Queue }

func (c depthCollector) Describe(ch chan<- *prometheus.Desc) { ch <- queueDepthDesc }

func (c depthCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	depth, err := c.q.Depth(ctx)
	if err != nil {
		// A scrape without the metric says more than a made-up zero.
		c.q.logger.Debug("collect queue depth", "err", err)
		return
	}
	for p, n := range depth {
		ch <- prometheus.MustNewConstMetric(queueDepthDesc, prometheus.GaugeValue, float64(n), c.q.environment, QueueName(p))
	}
}
