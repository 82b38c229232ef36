package dispatch

import "time"

// The dispatcher's timers (accept waits, deadlines, grace periods,
// progress writes) and the goroutines it starts to talk to the registry
// are its own: each runs only while the dispatcher has not stopped, and Run
// returns only once those running are done, so nothing of the dispatcher
// writes a job after Run returns.

// spawn runs f on a goroutine of the dispatcher's own; it does nothing
// once the dispatcher has stopped.
func (d *Dispatcher) spawn(f func()) {
	if !d.enter() {
		return
	}
	go func() {
		defer d.owned.Done()
		f()
	}()
}

// after runs f after dur on a goroutine of the dispatcher's own, unless the
// dispatcher has stopped by then or the deadline is stopped first.
func (d *Dispatcher) after(dur time.Duration, f func()) *deadline {
	return d.timers.add(dur, f)
}

// enter counts a goroutine of the dispatcher's own in; false once stopped.
func (d *Dispatcher) enter() bool {
	d.ownMu.Lock()
	defer d.ownMu.Unlock()
	if d.stopped {
		return false
	}
	d.owned.Add(1)
	return true
}

// stopOwned lets no more of the dispatcher's own goroutines start and
// waits for those running.
func (d *Dispatcher) stopOwned() {
	d.ownMu.Lock()
	d.stopped = true
	d.ownMu.Unlock()
	d.owned.Wait()
}
