package gateway

import (
	"github.com/casarerpa/casare/server/registry"

	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

var (
	robotStatusDesc = prometheus.NewDesc("casare_robot_status",
		"1 for the status of each robot connected to this control plane.", []string{"robot_id", "status"}, nil)
	robotConnectedDesc = prometheus.NewDesc("casare_robot_connected_seconds",
		"How long each robot connected to this control plane has been connected.", []string{"robot_id"}, nil)
	robotCountDesc = prometheus.NewDesc("casare_robot_count",
		"Robots in the registry by status, across all control planes.", []string{"environment", "status"}, nil)
)

// Collector returns the robot metrics, read at scrape time: per-robot
// series from the live connections here, counts from the registry.
func (g *Gateway) Collector(environment string) prometheus.Collector {
	return collector{g: g, environment: environment}
}

type collector struct {
	g           *Gateway
	environment string
}

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- robotStatusDesc
	ch <- robotConnectedDesc
	ch <- robotCountDesc
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	for id, r := range c.g.Live() {
		ch <- prometheus.MustNewConstMetric(robotStatusDesc, prometheus.GaugeValue, 1, id, string(r.Status))
		ch <- prometheus.MustNewConstMetric(robotConnectedDesc, prometheus.GaugeValue, now.Sub(r.ConnectedSince).Seconds(), id)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	counts, err := c.g.opts.Store.RobotCounts(ctx, now.Add(-StaleAfter(c.g.opts.HeartbeatInterval)))
	if err != nil {
		c.g.opts.Logger.Debug("collect robot counts", "err", err)
		return
	}
	for _, status := range registry.RobotStatuses {
		ch <- prometheus.MustNewConstMetric(robotCountDesc, prometheus.GaugeValue, float64(counts[status]), c.environment, string(status))
	}
}
