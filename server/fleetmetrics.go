package server

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/casarerpa/casare/server/dispatch"
	"github.com/casarerpa/casare/server/registry"
)

// The robot metrics describe the whole fleet, read from the registry at
// scrape time: every replica reports the same values, whichever robots are
// connected to it, so dashboards take max (not sum) across replicas.
var (
	robotStatusDesc = prometheus.NewDesc("casare_robot_status",
		"1 for the status of each robot in the registry (idle, busy, draining, offline), across all control planes.",
		[]string{"robot_id", "status"}, nil)
	robotConnectedDesc = prometheus.NewDesc("casare_robot_connected_seconds",
		"How long each online robot has held its connection to a control plane.", []string{"robot_id"}, nil)
	robotCountDesc = prometheus.NewDesc("casare_robot_count",
		"Robots in the registry by status, across all control planes.", []string{"environment", "status"}, nil)
	robotUtilizationDesc = prometheus.NewDesc("casare_robot_utilization",
		"Share of the job slots of the online robots (all control planes) that hold a job, 0 to 1.", []string{"environment"}, nil)
	robotCertExpiryDesc = prometheus.NewDesc("casare_robot_certificate_expiry_timestamp_seconds",
		"When each robot's certificate expires, in Unix seconds; robots renew it 30 days before.", []string{"robot_id"}, nil)
	jobsUnrunnableDesc = prometheus.NewDesc("casare_jobs_unrunnable",
		"Pending jobs that no registered robot can run (no robot has the capabilities and labels they need).", []string{"environment"}, nil)
	poolPendingDesc = prometheus.NewDesc("casare_pool_pending_jobs",
		"Pending jobs that a robot of the pool (--robot-pool) could run: it has the capabilities and labels they need. What the pool's autoscaler scales on.",
		[]string{"environment", "pool"}, nil)
	poolRunningDesc = prometheus.NewDesc("casare_pool_running_jobs",
		"Jobs assigned to or running on robots that have the pool's capabilities and labels (--robot-pool), across all control planes.",
		[]string{"environment", "pool"}, nil)
	robotInfoDesc = prometheus.NewDesc("casare_robot_info",
		"Always 1; its labels name each robot and the agent version and OS it last reported.",
		[]string{"robot_id", "name", "version", "os"}, nil)
)

// robotStatuses are the statuses casare_robot_count always reports, zero or not.
var robotStatuses = []string{"idle", "busy", "draining", "offline"}

// fleetCache is how long one read of the fleet serves scrapes: several
// Prometheus servers scraping every replica cost the database one query
// pair per replica per interval.
const fleetCache = 2 * time.Second

// fleetCollector reports the robot metrics from the registry.
type fleetCollector struct {
	read            func(ctx context.Context, staleBefore time.Time) ([]registry.FleetRobot, error)
	countUnrunnable func(ctx context.Context) (int, error)
	readShapes      func(ctx context.Context) ([]registry.PendingShape, error)
	pools           []RobotPool
	staleAfter      time.Duration
	environment     string
	logger          *slog.Logger

	mu         sync.Mutex // serialises scrapes so that one reads for all
	at         time.Time
	fleet      []registry.FleetRobot
	unrunnable int
	poolJobs   []poolJobs
}

// poolJobs is what the pool metrics report for one pool.
type poolJobs struct {
	name             string
	pending, running int
}

func newFleetCollector(reg *registry.Registry, pools []RobotPool, staleAfter time.Duration, environment string, logger *slog.Logger) *fleetCollector {
	return &fleetCollector{
		read:       reg.Fleet,
		readShapes: reg.PendingShapes,
		pools:      pools,
		countUnrunnable: func(ctx context.Context) (int, error) {
			return reg.CountPendingWithMessage(ctx, dispatch.UnrunnablePrefixes)
		},
		staleAfter: staleAfter, environment: environment, logger: logger,
	}
}

func (c *fleetCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{robotStatusDesc, robotConnectedDesc, robotCountDesc, robotUtilizationDesc, robotCertExpiryDesc, robotInfoDesc, jobsUnrunnableDesc, poolPendingDesc, poolRunningDesc} {
		ch <- d
	}
}

func (c *fleetCollector) snapshot(now time.Time) ([]registry.FleetRobot, int, []poolJobs, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fleet != nil && now.Sub(c.at) < fleetCache {
		return c.fleet, c.unrunnable, c.poolJobs, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	fleet, err := c.read(ctx, now.Add(-c.staleAfter))
	if err != nil {
		return nil, 0, nil, err
	}
	unrunnable, err := c.countUnrunnable(ctx)
	if err != nil {
		return nil, 0, nil, err
	}
	var pools []poolJobs
	if len(c.pools) > 0 {
		shapes, err := c.readShapes(ctx)
		if err != nil {
			return nil, 0, nil, err
		}
		pools = countPoolJobs(c.pools, shapes, fleet)
	}
	if fleet == nil {
		fleet = []registry.FleetRobot{}
	}
	c.at, c.fleet, c.unrunnable, c.poolJobs = now, fleet, unrunnable, pools
	return fleet, unrunnable, pools, nil
}

// countPoolJobs judges each shape of pending requirements once per pool,
// by the dispatcher's own rule, however many jobs share it; and counts the
// jobs held by each robot that has all a pool's capabilities and labels.
func countPoolJobs(pools []RobotPool, shapes []registry.PendingShape, fleet []registry.FleetRobot) []poolJobs {
	reqs := make([]dispatch.Requirements, 0, len(shapes))
	counts := make([]int, 0, len(shapes))
	for _, sh := range shapes {
		req, err := dispatch.JobRequirements(&registry.Job{Requires: sh.Requires})
		if err != nil {
			// The dispatcher runs such a job nowhere: no pool could.
			continue
		}
		reqs, counts = append(reqs, req), append(counts, sh.N)
	}
	out := make([]poolJobs, len(pools))
	asked := make([]dispatch.Requirements, len(pools))
	for i, p := range pools {
		out[i].name = p.Name
		asked[i] = dispatch.Requirements{Capabilities: slices.Sorted(maps.Keys(p.Capabilities)), Labels: p.Labels}
		for j, req := range reqs {
			if req.Fits(p.Capabilities, p.Labels) {
				out[i].pending += counts[j]
			}
		}
	}
	for k := range fleet {
		if fleet[k].Running == 0 {
			continue
		}
		caps, labels := dispatch.RobotSets(&registry.Robot{ID: fleet[k].ID, Capabilities: fleet[k].Capabilities, Labels: fleet[k].Labels})
		for i := range pools {
			// A robot is as able as the pool's when it fits a job that
			// asks for all the pool has.
			if asked[i].Fits(caps, labels) {
				out[i].running += fleet[k].Running
			}
		}
	}
	return out
}

func (c *fleetCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	fleet, unrunnable, pools, err := c.snapshot(now)
	if err != nil {
		// A scrape without the series says more than made-up zeros; the
		// database's own gauge says why.
		c.logger.Debug("collect robot metrics", "err", err)
		return
	}
	counts := map[string]int{}
	slots, used := 0, 0
	for _, r := range fleet {
		counts[r.Status]++
		ch <- prometheus.MustNewConstMetric(robotStatusDesc, prometheus.GaugeValue, 1, r.ID, r.Status)
		ch <- prometheus.MustNewConstMetric(robotInfoDesc, prometheus.GaugeValue, 1, r.ID, r.Name, r.Version, r.OS)
		if r.CertExpiresAt != nil {
			ch <- prometheus.MustNewConstMetric(robotCertExpiryDesc, prometheus.GaugeValue, float64(r.CertExpiresAt.Unix()), r.ID)
		}
		if r.Status == "offline" {
			continue
		}
		if r.ConnectedSince != nil {
			ch <- prometheus.MustNewConstMetric(robotConnectedDesc, prometheus.GaugeValue, max(now.Sub(*r.ConnectedSince).Seconds(), 0), r.ID)
		}
		n := int(max(r.MaxJobs, 1))
		slots += n
		used += min(r.Running, n)
	}
	for _, status := range robotStatuses {
		ch <- prometheus.MustNewConstMetric(robotCountDesc, prometheus.GaugeValue, float64(counts[status]), c.environment, status)
	}
	utilization := 0.0
	if slots > 0 {
		utilization = float64(used) / float64(slots)
	}
	ch <- prometheus.MustNewConstMetric(robotUtilizationDesc, prometheus.GaugeValue, utilization, c.environment)
	ch <- prometheus.MustNewConstMetric(jobsUnrunnableDesc, prometheus.GaugeValue, float64(unrunnable), c.environment)
	for _, p := range pools {
		ch <- prometheus.MustNewConstMetric(poolPendingDesc, prometheus.GaugeValue, float64(p.pending), c.environment, p.name)
		ch <- prometheus.MustNewConstMetric(poolRunningDesc, prometheus.GaugeValue, float64(p.running), c.environment, p.name)
	}
}

var dependencyUpDesc = prometheus.NewDesc("casare_dependency_up",
	"1 when this replica reaches the dependency (database, redis), 0 when it does not.", []string{"dependency"}, nil)

// dependencyCollector pings the database and Redis at scrape time, so an
// alert sees an outage even when nothing probes /health/ready.
type dependencyCollector struct {
	pings map[string]func(context.Context) error
}

func (c dependencyCollector) Describe(ch chan<- *prometheus.Desc) { ch <- dependencyUpDesc }

func (c dependencyCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for name, ping := range c.pings {
		wg.Go(func() {
			up := 1.0
			if ping(ctx) != nil {
				up = 0
			}
			ch <- prometheus.MustNewConstMetric(dependencyUpDesc, prometheus.GaugeValue, up, name)
		})
	}
	wg.Wait()
}
