package server

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// newPrunedCounter counts the rows retention removed, by table.
func newPrunedCounter() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "casare_retention_pruned_rows_total",
		Help: "Rows removed because their finished job is older than the --retain-* flags keep, by table.",
	}, []string{"table"})
}

// runRetention removes what the --retain-* flags let go, at start and
// every --prune-interval, until ctx ends. Each pass runs in batches; on
// PostgreSQL one replica at a time does it, the others skip their turn.
func (s *Server) runRetention(ctx context.Context) {
	keep := s.cfg.Retention()
	if !keep.Any() {
		return
	}
	s.logger.Info("retention", "jobs", s.cfg.RetainJobs, "logs", s.cfg.RetainLogs, "artifacts", s.cfg.RetainArtifacts, "every", s.cfg.PruneInterval)
	tick := time.NewTicker(s.cfg.PruneInterval)
	defer tick.Stop()
	for {
		// A pass that cannot finish in an interval stops there; the next
		// one goes on where it left off.
		pass, cancel := context.WithTimeout(ctx, s.cfg.PruneInterval)
		pruned, ran, err := s.reg.Prune(pass, keep, time.Now())
		cancel()
		for table, n := range map[string]int64{"jobs": pruned.Jobs, "job_events": pruned.JobEvents, "job_logs": pruned.JobLogs, "job_artifacts": pruned.JobArtifacts} {
			s.pruned.WithLabelValues(table).Add(float64(n))
		}
		switch {
		case err != nil && ctx.Err() == nil:
			s.logger.Warn("retention: prune stopped", "err", err, "jobs", pruned.Jobs, "log_lines", pruned.JobLogs, "artifacts", pruned.JobArtifacts)
		case !ran:
			s.logger.Debug("retention: another replica is pruning")
		case pruned.Total() > 0:
			s.logger.Info("retention: pruned", "jobs", pruned.Jobs, "events", pruned.JobEvents, "log_lines", pruned.JobLogs, "artifacts", pruned.JobArtifacts)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
