package gateway

import "sync"

// changes fans out the ids of robots whose state changed here, to the
// WatchRobots streams.
type changes struct {
	mu   sync.Mutex
	subs map[chan string]struct{}
}

// Subscribe returns a channel of the ids of robots that change, and a
// function that ends the subscription. A subscriber that falls behind
// misses ids rather than holding the gateway up; WatchRobots re-reads the
// robot on each id, so a later change of the same robot repairs it.
func (g *Gateway) Subscribe() (<-chan string, func()) {
	ch := make(chan string, 1024)
	g.changes.mu.Lock()
	if g.changes.subs == nil {
		g.changes.subs = map[chan string]struct{}{}
	}
	g.changes.subs[ch] = struct{}{}
	g.changes.mu.Unlock()
	return ch, func() {
		g.changes.mu.Lock()
		delete(g.changes.subs, ch)
		g.changes.mu.Unlock()
	}
}

// Changed tells the subscribers that a robot changed.
func (g *Gateway) Changed(robotID string) {
	g.changes.mu.Lock()
	defer g.changes.mu.Unlock()
	for ch := range g.changes.subs {
		select {
		case ch <- robotID:
		default:
		}
	}
}
