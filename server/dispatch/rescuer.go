package dispatch

import (
	"context"
	"sync"
	"time"

	"github.com/casarerpa/casare/server/jobs"
)

// rescuer gets jobs out of holds that ended without a word: the accept
// waits, job timeouts, grace periods, progress writes and retries of the
// dispatcher, all in one deadline heap served by one goroutine, and the
// sweep for the jobs of robots no replica serves any more. A deadline that
// falls due runs on a goroutine of the dispatcher's own (spawn), so a slow
// database holds up no other deadline.
type rescuer struct {
	d      *Dispatcher
	timers *deadlines
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newRescuer(d *Dispatcher) *rescuer {
	return &rescuer{d: d, timers: newDeadlines(), cancel: func() {}}
}

// Start serves the deadlines and sweeps for orphans until Stop.
func (r *rescuer) Start(ctx context.Context) {
	ctx, r.cancel = context.WithCancel(ctx)
	r.wg.Go(func() { r.timers.run(ctx, r.d.spawn) })
	r.wg.Go(func() { r.sweepOrphans(ctx) })
}

// Stop ends both loops and waits for them. Deadlines not yet due never
// fire; those that fell due before run on the dispatcher's goroutines,
// which the dispatcher waits for after.
func (r *rescuer) Stop() {
	r.cancel()
	r.wg.Wait()
}

// after runs f after dur on a goroutine of the dispatcher's own, unless the
// rescuer has stopped by then or the deadline is stopped first.
func (d *Dispatcher) after(dur time.Duration, f func()) *deadline {
	return d.rescue.timers.add(dur, f)
}

// sweepOrphans sends back the jobs of robots that no replica serves any
// more: a replica that died leaves its robots' jobs behind, and they come
// back only if the robots reconnect.
func (r *rescuer) sweepOrphans(ctx context.Context) {
	d := r.d
	if d.opts.OrphanAfter <= 0 {
		return
	}
	ticker := time.NewTicker(max(d.opts.OrphanAfter/2, time.Second))
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		orphans, err := d.opts.Store.OrphanedJobs(ctx, time.Now().Add(-d.opts.OrphanAfter), 500)
		if err != nil {
			d.log.Warn("look for jobs of lost robots", "err", err)
			continue
		}
		here := map[string]bool{}
		if !d.match.do(func() {
			for i := range orphans {
				if _, ok := d.match.robots[orphans[i].RobotID]; ok {
					here[orphans[i].RobotID] = true
				}
			}
		}) {
			return
		}
		for i := range orphans {
			job := &orphans[i]
			if here[job.RobotID] {
				continue
			}
			d.requeue(ctx, jobs.Back{
				JobID: job.ID, Attempt: job.Attempt, RobotID: job.RobotID, How: jobs.Retry,
				Reason: "robot lost: not seen for " + d.opts.OrphanAfter.String(),
			}, nil)
		}
	}
}
