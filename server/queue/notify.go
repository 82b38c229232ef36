package queue

import (
	"context"
	"strconv"
	"sync"

	"github.com/hibiken/asynq"
)

// Notice kinds, each a Redis channel. Pub/sub ignores database numbers,
// so a channel's name carries it: control planes sharing a Redis on
// different databases do not hear each other.
const (
	kindJobChanges = "job-changes"
	kindJobLogs    = "job-logs"
	kindJobStops   = "job-stops"
	kindJobWaiting = "job-waiting"
)

type notice struct{ kind, id string }

func (q *Queue) channel(kind string) string {
	db := 0
	if opt, ok := q.connOpt.(asynq.RedisClientOpt); ok {
		db = opt.DB
	}
	return "casare:" + kind + ":" + strconv.Itoa(db)
}

// PublishJobChange tells every replica that a job changed. It does not wait
// for Redis: notices leave in pipelined batches from a goroutine of their
// own, so a submit does not pay a round trip for its watchers. Watching is
// best effort by design: a lost notice leaves a watcher one change behind
// until the job changes again, never a job in a wrong state.
func (q *Queue) PublishJobChange(_ context.Context, jobID string) {
	q.publish(notice{kindJobChanges, jobID})
}

// PublishJobLogs tells every replica that a job has new log lines stored.
func (q *Queue) PublishJobLogs(jobID string) {
	q.publish(notice{kindJobLogs, jobID})
}

// PublishJobStop tells every replica to stop a job on its robot: it was
// cancelled.
func (q *Queue) PublishJobStop(jobID string) {
	q.publish(notice{kindJobStops, jobID})
}

// PublishJobWaiting tells every replica that a job waits for a robot the
// replica that took it does not have, so that whichever replica holds a
// free robot that fits takes it: the job reaches a robot through Redis, not
// by going from replica to replica.
func (q *Queue) PublishJobWaiting(jobID string) {
	q.publish(notice{kindJobWaiting, jobID})
}

func (q *Queue) publish(n notice) {
	select {
	case q.notices <- n:
	default:
		q.logger.Debug("notice dropped: the publisher is behind", "kind", n.kind, "job", n.id)
	}
}

// publishNotices sends queued notices until stop is closed.
func (q *Queue) publishNotices(stop <-chan struct{}) {
	channels := map[string]string{}
	for _, kind := range []string{kindJobChanges, kindJobLogs, kindJobStops, kindJobWaiting} {
		channels[kind] = q.channel(kind)
	}
	for {
		var first notice
		select {
		case first = <-q.notices:
		case <-stop:
			return
		}
		pipe := q.rdb.Pipeline()
		pipe.Publish(context.Background(), channels[first.kind], first.id)
	drain:
		for range 1000 {
			select {
			case n := <-q.notices:
				pipe.Publish(context.Background(), channels[n.kind], n.id)
			default:
				break drain
			}
		}
		if _, err := pipe.Exec(context.Background()); err != nil {
			q.logger.Debug("publish notices", "err", err)
		}
	}
}

// Notices fans the job ids of one kind of notice out to this replica's
// subscribers over one Redis subscription.
type Notices struct {
	q       *Queue
	channel string
	mu      sync.Mutex
	subs    map[chan string]struct{}
}

// JobChanges returns the fan-out of job changes; Run must be running for it
// to deliver.
func (q *Queue) JobChanges() *Notices { return q.fanOut(kindJobChanges) }

// JobLogs returns the fan-out of "new log lines stored" notices.
func (q *Queue) JobLogs() *Notices { return q.fanOut(kindJobLogs) }

// JobStops returns the fan-out of "stop this job" notices.
func (q *Queue) JobStops() *Notices { return q.fanOut(kindJobStops) }

// JobsWaiting returns the fan-out of "this job waits for a robot" notices.
func (q *Queue) JobsWaiting() *Notices { return q.fanOut(kindJobWaiting) }

func (q *Queue) fanOut(kind string) *Notices {
	return &Notices{q: q, channel: q.channel(kind), subs: map[chan string]struct{}{}}
}

// Run holds the subscription until ctx is done.
func (c *Notices) Run(ctx context.Context) {
	sub := c.q.rdb.Subscribe(ctx, c.channel)
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

// Subscribe returns a channel of job ids and a function that ends the
// subscription. A subscriber that falls behind misses ids rather than
// holding the others up.
func (c *Notices) Subscribe() (<-chan string, func()) {
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
