package workqueue

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/casarerpa/casare/server/registry"
)

// Sweeper lets go of the items that slipped past their job's end (an item
// taken while the transition that ended its attempt was being written),
// counts the open items past their SLA or deadline, and drops old
// per-minute counts. Every replica may run it: each change is fenced in
// the registry.
type Sweeper struct {
	reg      *registry.Registry
	logger   *slog.Logger
	interval time.Duration
	cancel   context.CancelFunc
	done     sync.WaitGroup
}

// NewSweeper returns a sweeper that sweeps every interval (0 means 5s).
func NewSweeper(reg *registry.Registry, interval time.Duration, logger *slog.Logger) *Sweeper {
	if interval <= 0 {
		interval = 5 * time.Second
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Sweeper{reg: reg, logger: logger, interval: interval}
}

// Start sweeps until Stop.
func (s *Sweeper) Start(ctx context.Context) {
	ctx, s.cancel = context.WithCancel(ctx)
	s.done.Go(func() {
		ticker := time.NewTicker(s.interval)
		defer ticker.Stop()
		for {
			s.Sweep(ctx)
			select {
			case <-ctx.Done():
				return
			case <-ticker.C:
			}
		}
	})
}

// Stop stops sweeping; once it returns, the sweeper writes nothing more.
func (s *Sweeper) Stop() {
	if s.cancel != nil {
		s.cancel()
	}
	s.done.Wait()
}

// Sweep makes one pass.
func (s *Sweeper) Sweep(ctx context.Context) {
	if n, err := s.reg.SweepHeldWorkItems(ctx, 1000); err != nil && ctx.Err() == nil {
		s.logger.Warn("work queue sweeper: abandon items of ended jobs", "err", err)
	} else if n > 0 {
		s.logger.Info("work queue sweeper: abandoned items whose job had ended", "items", n)
	}
	if _, err := s.reg.MarkBreachedWorkItems(ctx, 10000); err != nil && ctx.Err() == nil {
		s.logger.Warn("work queue sweeper: count SLA breaches", "err", err)
	}
	if err := s.reg.PruneWorkQueueMinutes(ctx, time.Now().Add(-time.Hour)); err != nil && ctx.Err() == nil {
		s.logger.Warn("work queue sweeper: prune per-minute counts", "err", err)
	}
}
