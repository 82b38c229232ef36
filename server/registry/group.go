package registry

import (
	"context"
	"errors"
	"sync"
)

// group commits the writes of many callers together. A commit costs a
// round trip and a WAL flush whatever its size, so writes that arrive while
// a commit is in flight share the next one; nothing waits for a batch to
// fill, so at low load a batch holds one write and costs what it would on
// its own. Within a batch each key (a job id) appears once: a second write
// of the same job waits for the next batch, so writes of one job are
// applied in the order they came.
type group[Req, Res any] struct {
	queue   chan *groupCall[Req, Res]
	stop    chan struct{}
	workers sync.WaitGroup
	key     func(Req) string
	// exec applies a batch of distinct keys and returns one result per
	// request, in order.
	exec func(ctx context.Context, batch []Req) []Res
	// failed is the result of a request exec could not run.
	failed func(error) Res
}

type groupCall[Req, Res any] struct {
	req  Req
	done chan Res
}

// errClosed is the answer to a write after Close.
var errClosed = errors.New("registry closed")

func newGroup[Req, Res any](workers int, key func(Req) string, exec func(context.Context, []Req) []Res, failed func(error) Res) *group[Req, Res] {
	g := &group[Req, Res]{
		queue: make(chan *groupCall[Req, Res], maxBatch*workers),
		stop:  make(chan struct{}),
		key:   key, exec: exec, failed: failed,
	}
	for range workers {
		g.workers.Go(g.run)
	}
	return g
}

// do applies req in the next batch and returns its result once committed.
func (g *group[Req, Res]) do(ctx context.Context, req Req) Res {
	call := &groupCall[Req, Res]{req: req, done: make(chan Res, 1)}
	select {
	case g.queue <- call:
	case <-ctx.Done():
		return g.failed(ctx.Err())
	case <-g.stop:
		return g.failed(errClosed)
	}
	select {
	case res := <-call.done:
		return res
	case <-ctx.Done():
		// The batch may still commit, as it might had the connection
		// dropped after a commit.
		return g.failed(ctx.Err())
	}
}

// close stops the workers once the batches in flight are committed. Writes
// still queued are answered errClosed.
func (g *group[Req, Res]) close() {
	close(g.stop)
	g.workers.Wait()
	for {
		select {
		case call := <-g.queue:
			call.done <- g.failed(errClosed)
		default:
			return
		}
	}
}

func (g *group[Req, Res]) run() {
	var carry []*groupCall[Req, Res] // writes of a key already in a batch
	for {
		batch := carry
		carry = nil
		if len(batch) == 0 {
			select {
			case call := <-g.queue:
				batch = append(batch, call)
			case <-g.stop:
				return
			}
		}
		keys := make(map[string]bool, len(batch))
		distinct := batch[:0]
		for _, call := range batch {
			if k := g.key(call.req); keys[k] {
				carry = append(carry, call)
			} else {
				keys[k] = true
				distinct = append(distinct, call)
			}
		}
		batch = distinct
	fill:
		for len(batch) < maxBatch {
			select {
			case call := <-g.queue:
				if k := g.key(call.req); keys[k] {
					carry = append(carry, call)
					continue
				} else {
					keys[k] = true
				}
				batch = append(batch, call)
			default:
				break fill
			}
		}
		reqs := make([]Req, len(batch))
		for i, call := range batch {
			reqs[i] = call.req
		}
		for i, res := range g.exec(context.Background(), reqs) {
			batch[i].done <- res
		}
	}
}
