package dispatch

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestDeadlines: deadlines fire in the order they fall due, a stopped one
// never fires, and one added earlier than all others wakes the heap.
func TestDeadlines(t *testing.T) {
	ds := newDeadlines()
	var mu sync.Mutex
	var fired []int
	done := make(chan struct{})
	fire := func(n int) func() {
		return func() {
			mu.Lock()
			defer mu.Unlock()
			fired = append(fired, n)
			if len(fired) == 3 {
				close(done)
			}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// A long wait first: the ones added after it must wake the loop.
	ds.add(time.Hour, fire(99))
	go ds.run(ctx, func(f func()) { f() })
	ds.add(60*time.Millisecond, fire(3))
	stopped := ds.add(30*time.Millisecond, fire(-1))
	ds.add(40*time.Millisecond, fire(2))
	ds.add(20*time.Millisecond, fire(1))
	stopped.Stop()
	stopped.Stop() // twice is harmless
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("deadlines did not fire")
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(fired, []int{1, 2, 3}) {
		t.Errorf("fired %v, want [1 2 3]", fired)
	}
	if len(ds.heap) != 1 {
		t.Errorf("%d deadlines left, want the hour's", len(ds.heap))
	}
}
