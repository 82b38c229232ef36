package dispatch

// The goroutines the dispatcher starts to talk to the registry and the
// robots (assignments, hand-backs, log waits, the deadlines that fell
// due) are its own: each starts only while the dispatcher has not
// stopped, and Run returns only once those running are done, so nothing
// of the dispatcher writes a job after Run returns.

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
