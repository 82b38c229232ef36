package queue

import (
	"github.com/casarerpa/casare/server/registry"

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
//
// pending, when not nil, counts the pending jobs by priority instead of the
// tasks in Redis: once the dispatcher holds the jobs that wait for a robot,
// the queue in Redis is near empty and the jobs still wait.
func (q *Queue) Collector(pending func(ctx context.Context) (map[registry.Priority]int, error)) prometheus.Collector {
	return depthCollector{q, pending}
}

type depthCollector struct {
	q       *Queue
	pending func(ctx context.Context) (map[registry.Priority]int, error)
}

func (c depthCollector) Describe(ch chan<- *prometheus.Desc) { ch <- queueDepthDesc }

func (c depthCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	count := c.q.Depth
	if c.pending != nil {
		count = func(ctx context.Context) (map[registry.Priority]int, error) {
			n, err := c.pending(ctx)
			if err != nil {
				return nil, err
			}
			for p := range queueNames {
				n[p] += 0 // every priority is reported, waiting or not
			}
			return n, nil
		}
	}
	depth, err := count(ctx)
	if err != nil {
		// A scrape without the metric says more than a made-up zero.
		c.q.logger.Debug("collect queue depth", "err", err)
		return
	}
	for p, n := range depth {
		ch <- prometheus.MustNewConstMetric(queueDepthDesc, prometheus.GaugeValue, float64(n), c.q.environment, QueueName(p))
	}
}
