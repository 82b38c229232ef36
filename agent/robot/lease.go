package robot

import (
	"context"
	"fmt"
	"time"
)

// leaseTick is how often the robot looks at what it heard from the
// control plane: it bounds how late a lease is found spent.
const leaseTick = 100 * time.Millisecond

// leaseCut is the cause of a job stopped because the robot heard nothing
// from the control plane for longer than its lease: by then a replica may
// have given the job to another robot.
type leaseCut struct{ cut, lease time.Duration }

func (c leaseCut) Error() string {
	return fmt.Sprintf("cut off from the control plane for %s, longer than its lease of %s", c.cut.Round(10*time.Millisecond), c.lease)
}

// leaseClock tells when the robot has gone without a word from the control
// plane for longer than the lease its last welcome gave it.
type leaseClock struct {
	lease time.Duration // zero: no lease, jobs run however long the robot is cut off
	heard time.Time     // the last frame or packet from a replica that welcomed the robot
	spent bool          // the lease ran out since heard: the jobs are stopped
}

// welcome starts a lease: a welcome without one (an older control plane)
// means none.
func (c *leaseClock) welcome(lease time.Duration, at time.Time) {
	c.lease = lease
	c.hear(at)
}

func (c *leaseClock) hear(at time.Time) {
	if at.After(c.heard) {
		c.heard = at
		c.spent = false
	}
}

// expired says, once per silence, that the lease ran out at now, and for
// how long the robot has heard nothing.
func (c *leaseClock) expired(now time.Time) (leaseCut, bool) {
	if c.lease <= 0 || c.heard.IsZero() || c.spent {
		return leaseCut{}, false
	}
	cut := now.Sub(c.heard)
	if cut <= c.lease {
		return leaseCut{}, false
	}
	c.spent = true
	return leaseCut{cut: cut, lease: c.lease}, true
}

// hear records a word from the control plane on the current connection.
func (r *runner) hear(at time.Time) {
	r.mu.Lock()
	r.leaseClock.hear(at)
	r.mu.Unlock()
}

// watchLease stops every running job once the robot has heard nothing
// from the control plane for longer than its lease, connected or not: a
// replica cut off from the robot, or dead, may by then have given the
// jobs to another robot. Packets count as well as frames, so a quiet
// connection whose keep-alives are answered holds the lease.
func (r *runner) watchLease(ctx context.Context) {
	ticker := time.NewTicker(leaseTick)
	defer ticker.Stop()
	var on *link
	var packets uint64
	prev := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-ticker.C:
			r.mu.Lock()
			l := r.link
			if l != nil {
				n := l.conn.ConnectionStats().PacketsReceived
				// The packets arrived after the last look: count from it,
				// never later than they came.
				if l == on && n != packets {
					r.leaseClock.hear(prev)
				}
				on, packets = l, n
			} else {
				on = nil
			}
			prev = now
			cut, expired := r.leaseClock.expired(now)
			var running []*job
			if expired {
				for _, j := range r.jobs {
					j.mu.Lock()
					if j.final == nil {
						running = append(running, j)
					}
					j.mu.Unlock()
				}
			}
			r.mu.Unlock()
			if !expired || len(running) == 0 {
				continue
			}
			r.log.Warn("stopping the robot's jobs: "+cut.Error(), "jobs", len(running))
			for _, j := range running {
				j.cancel(cut)
			}
		}
	}
}
