package dispatch

import (
	"container/heap"
	"context"
	"sync"
	"time"
)

// deadlines holds every deadline of the dispatcher (accept waits, job
// timeouts, grace periods, progress writes, retries) in one heap served by
// one timer, instead of a runtime timer each: under load there are as many
// as jobs in flight, and nearly all are stopped before they are due. The
// rescuer serves it (rescuer.go). Its lock is held only to add, stop or
// pop an entry, so the matcher may add and stop deadlines without waiting
// on anything.
type deadlines struct {
	mu   sync.Mutex
	heap deadlineHeap
	wake chan struct{} // the earliest deadline changed
}

func newDeadlines() *deadlines {
	return &deadlines{wake: make(chan struct{}, 1)}
}

// deadline is one entry; Stop takes it out.
type deadline struct {
	at    time.Time
	f     func()
	index int // in the heap; -1 once out of it
	owner *deadlines
}

// add calls f (through run's fire) once dur has passed, unless stopped
// first.
func (ds *deadlines) add(dur time.Duration, f func()) *deadline {
	dl := &deadline{at: time.Now().Add(dur), f: f, owner: ds}
	ds.mu.Lock()
	heap.Push(&ds.heap, dl)
	first := dl.index == 0
	ds.mu.Unlock()
	if first {
		select {
		case ds.wake <- struct{}{}:
		default:
		}
	}
	return dl
}

// Stop keeps the deadline from firing if it has not yet; safe to call more
// than once and on nil.
func (dl *deadline) Stop() {
	if dl == nil {
		return
	}
	ds := dl.owner
	ds.mu.Lock()
	defer ds.mu.Unlock()
	if dl.index >= 0 {
		heap.Remove(&ds.heap, dl.index)
	}
}

// run hands each deadline that falls due to fire, until ctx is done.
// Deadlines left then never fire.
func (ds *deadlines) run(ctx context.Context, fire func(func())) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := time.Now()
		var due []func()
		wait := time.Hour
		ds.mu.Lock()
		for len(ds.heap) > 0 && !ds.heap[0].at.After(now) {
			due = append(due, heap.Pop(&ds.heap).(*deadline).f)
		}
		if len(ds.heap) > 0 {
			wait = ds.heap[0].at.Sub(now)
		}
		ds.mu.Unlock()
		for _, f := range due {
			fire(f)
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-ds.wake:
		}
	}
}

// deadlineHeap orders deadlines earliest first (container/heap).
type deadlineHeap []*deadline

func (h deadlineHeap) Len() int           { return len(h) }
func (h deadlineHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h deadlineHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *deadlineHeap) Push(x any) {
	dl := x.(*deadline)
	dl.index = len(*h)
	*h = append(*h, dl)
}
func (h *deadlineHeap) Pop() any {
	old := *h
	dl := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	dl.index = -1
	return dl
}
