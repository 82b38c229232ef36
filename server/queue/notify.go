package queue

import (
	"context"
	"strconv"
	"sync"

	"github.com/hibiken/asynq"
)

// jobChannel is the Redis channel that carries the ids of jobs that
// changed, so every control plane replica can tell its watchers. Pub/sub
// ignores database numbers, so the channel carries it: control planes
// sharing a Redis on different databases do not hear each other.
func (q *Queue) jobChannel() string {
	db := 0
	if opt, ok := q.connOpt.(asynq.RedisClientOpt); ok {
		db = opt.DB
	}
	return "casare:job-changes:" + strconv.Itoa(db)
}

// PublishJobChange tells every replica that a job changed. It does not wait
// for Redis: notices leave in pipelined batches from a goroutine of their
// own, so a submit does not pay a round trip for its watchers. Watching is
// best effort by design: a lost notice leaves a watcher one change behind
// until the job changes again, never a job in a wrong state.
func (q *Queue) PublishJobChange(_ context.Context, jobID string) {
	select {
	case q.notices <- jobID:
	default:
		q.logger.Debug("job change notice dropped: the publisher is behind", "job", jobID)
	}
}

// publishNotices sends queued change notices until stop is closed.
func (q *Queue) publishNotices(stop <-chan struct{}) {
	channel := q.jobChannel()
	for {
		var first string
		select {
		case first = <-q.notices:
		case <-stop:
			return
		}
		pipe := q.rdb.Pipeline()
		pipe.Publish(context.Background(), channel, first)
	drain:
		for range 1000 {
			select {
			case id := <-q.notices:
				pipe.Publish(context.Background(), channel, id)
			default:
				break drain
			}
		}
		if _, err := pipe.Exec(context.Background()); err != nil {
			q.logger.Debug("publish job changes", "err", err)
		}
	}
}

// JobChanges fans the ids of changed jobs out to this replica's watchers
// over one Redis subscription.
type JobChanges struct {
	q    *Queue
	mu   sync.Mutex
	subs map[chan string]struct{}
}

// JobChanges returns the fan-out; Run must be running for it to deliver.
func (q *Queue) JobChanges() *JobChanges {
	return &JobChanges{q: q, subs: map[chan string]struct{}{}}
}

// Run holds the subscription until ctx is done.
func (c *JobChanges) Run(ctx context.Context) {
	sub := c.q.rdb.Subscribe(ctx, c.q.jobChannel())
	defer sub.Close()
	ch := sub.Channel()
	for {
		select {
		case <-ctx.Done():
			return
		case msg, ok := <-ch:
			if !ok {
				return
			}
			c.mu.Lock()
			for s := range c.subs {
				select {
				case s <- msg.Payload:
				default:
				}
			}
			c.mu.Unlock()
		}
	}
}

// Subscribe returns a channel of changed job ids and a function that ends
// the subscription. A subscriber that falls behind misses ids rather than
// holding the others up.
func (c *JobChanges) Subscribe() (<-chan string, func()) {
	ch := make(chan string, 4096)
	c.mu.Lock()
	c.subs[ch] = struct{}{}
	c.mu.Unlock()
	return ch, func() {
		c.mu.Lock()
		delete(c.subs, ch)
		c.mu.Unlock()
	}
}
