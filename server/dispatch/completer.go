package dispatch

import (
	"context"
	"sync"

	"github.com/casarerpa/casare/server/jobs"
)

// completer records the ends of jobs: the ends robots report and those of
// jobs that could not be sent. Several are recorded at once, so that the
// registry commits the ends of many jobs in one transaction (group
// commit) rather than one robot's end after another's.
//
// Whoever hands it an end waits until it is recorded, as a robot's stream
// did when it recorded ends itself: the robot's next message on that
// stream is read only once its end is recorded and acknowledged, and an
// end the database could not take has been left unacknowledged, for the
// robot to send again, by the time the stream goes on.
type completer struct {
	d    *Dispatcher
	ends chan jobEnd
	quit chan struct{}
	once sync.Once
	wg   sync.WaitGroup
}

// jobEnd is a job's end to record. unsent is the hold of a job that never
// reached its robot: its slot is freed first, and no robot is told.
type jobEnd struct {
	end      jobs.End
	unsent   *assignment
	recorded chan struct{} // closed once recorded, or given up on
}

// completerWorkers is how many ends are recorded at once. A worker holds
// no database connection while it waits: its end joins the registry's next
// group commit. So there are enough for two full batches of it (256
// transitions each): the one being committed and the one filling.
const completerWorkers = 512

func newCompleter(d *Dispatcher) *completer {
	return &completer{d: d, ends: make(chan jobEnd, 1024), quit: make(chan struct{})}
}

// Start records the ends taken in until Stop. An end being recorded is
// recorded to its end, ctx's cancellation aside: once read from a robot it
// is worth keeping.
func (c *completer) Start(ctx context.Context) {
	ctx = context.WithoutCancel(ctx)
	for range completerWorkers {
		c.wg.Go(func() {
			for {
				select {
				case <-c.quit:
					return
				case e := <-c.ends:
					c.record(ctx, e)
					close(e.recorded)
				}
			}
		})
	}
}

// Stop takes in no more ends, lets those being recorded finish and drops
// those queued. Dropping one is safe: a robot sends a job's end again until
// it is acknowledged, on this connection or its next one, and an unsent
// job still held by its robot in the database goes back to the queue when
// the robot registers again (RobotUp) or, should it never, with the orphan
// sweep.
func (c *completer) Stop() {
	c.once.Do(func() { close(c.quit) })
	c.wg.Wait()
}

// take records an end and returns once it is recorded. Once the
// completer has stopped it drops the end and returns at once.
func (c *completer) take(e jobEnd) {
	e.recorded = make(chan struct{})
	select {
	case c.ends <- e:
	case <-c.quit:
		return
	}
	select {
	case <-e.recorded:
	case <-c.quit:
	}
}

func (c *completer) record(ctx context.Context, e jobEnd) {
	if e.unsent != nil {
		c.d.recordUnsent(ctx, e.unsent, e.end)
		return
	}
	c.d.recordEnd(ctx, e.end)
}
