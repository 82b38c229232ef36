// Package queue owns the dispatch queue: asynq tasks in Redis that carry
// "dispatch this attempt of this job". The database holds every job's state;
// this package only carries the work to dispatch, and the reconciler puts
// back whatever Redis loses.
package queue

import (
	"github.com/casarerpa/casare/server/registry"

	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// Task is the dispatch work for one attempt of a job.
type Task struct {
	JobID    string            `json:"job_id"`
	Attempt  int32             `json:"attempt"`
	Priority registry.Priority `json:"priority"`
}

// TypeDispatch is the asynq task type; the payload is the Task as JSON.
const TypeDispatch = "job:dispatch"

// ErrTaskActive is returned when a task is being dispatched right now and
// so cannot be removed from the queue.
var ErrTaskActive = errors.New("the job is being dispatched")

// TaskID is the asynq task id of an attempt. Deriving it from the job and
// the attempt makes enqueueing the same attempt twice harmless.
func TaskID(jobID string, attempt int32) string {
	return "job:" + jobID + ":" + strconv.Itoa(int(attempt))
}

var queueNames = map[registry.Priority]string{
	registry.PriorityCritical: "critical",
	registry.PriorityHigh:     "high",
	registry.PriorityNormal:   "normal",
	registry.PriorityLow:      "low",
}

// QueueName maps a priority to its asynq queue; an unknown priority is
// normal.
func QueueName(p registry.Priority) string {
	if name, ok := queueNames[p]; ok {
		return name
	}
	return queueNames[registry.PriorityNormal]
}

// Queues returns the asynq queues with their weights, for the dispatcher's
// asynq.Server with StrictPriority: a higher queue always drains first.
func Queues() map[string]int {
	out := make(map[string]int, len(queueNames))
	for p, name := range queueNames {
		out[name] = int(p)
	}
	return out
}

// Options configures Open.
type Options struct {
	// RedisURL is redis://host:port/db; empty starts an embedded Redis.
	RedisURL string
	// Environment labels the metrics; empty means "default".
	Environment string
	Logger      *slog.Logger
}

// Queue is the dispatch queue in one Redis.
type Queue struct {
	rdb         redis.UniversalClient
	client      *asynq.Client
	inspector   *asynq.Inspector
	connOpt     asynq.RedisConnOpt
	embedded    *miniredis.Miniredis
	environment string
	logger      *slog.Logger
	held        Held // see KeepHeldOut

	stopClock    chan struct{} // stops the embedded Redis's clock
	clockStopped chan struct{}

	notices        chan notice // notices waiting to be published
	stopNotices    chan struct{}
	noticesStopped chan struct{}
}

// Open connects to the Redis at opts.RedisURL and pings it, or with no URL
// starts an embedded Redis-compatible server in this process. The embedded
// one keeps nothing across restarts; the reconciler restores the pending
// jobs from the database.
func Open(ctx context.Context, opts Options) (*Queue, error) {
	q := &Queue{environment: opts.Environment, logger: opts.Logger}
	if q.environment == "" {
		q.environment = "default"
	}
	if q.logger == nil {
		q.logger = slog.Default()
	}
	url := opts.RedisURL
	if url == "" {
		mr := miniredis.NewMiniRedis()
		if err := mr.StartAddr("127.0.0.1:0"); err != nil {
			return nil, fmt.Errorf("start embedded redis: %w", err)
		}
		q.embedded = mr
		q.stopClock = make(chan struct{})
		q.clockStopped = make(chan struct{})
		go func() {
			defer close(q.clockStopped)
			runEmbeddedClock(mr, q.stopClock)
		}()
		url = "redis://" + mr.Addr() + "/0"
	}
	connOpt, err := asynq.ParseRedisURI(url)
	if err != nil {
		q.Close()
		return nil, fmt.Errorf("redis url: %w", err)
	}
	q.connOpt = connOpt
	rdb, ok := connOpt.MakeRedisClient().(redis.UniversalClient)
	if !ok {
		q.Close()
		return nil, errors.New("redis url: unsupported client type")
	}
	q.rdb = rdb
	q.client = asynq.NewClientFromRedisClient(rdb)
	q.inspector = asynq.NewInspectorFromRedisClient(rdb)
	if err := q.Ping(ctx); err != nil {
		q.Close()
		return nil, err
	}
	q.notices = make(chan notice, 16384)
	q.stopNotices = make(chan struct{})
	q.noticesStopped = make(chan struct{})
	go func() {
		defer close(q.noticesStopped)
		q.publishNotices(q.stopNotices)
	}()
	return q, nil
}

// Embedded reports whether the queue runs on the in-process Redis.
func (q *Queue) Embedded() bool { return q.embedded != nil }

// RedisConnOpt returns the connection options, for the dispatcher's
// asynq.Server.
func (q *Queue) RedisConnOpt() asynq.RedisConnOpt { return q.connOpt }

// Ping checks that Redis answers.
func (q *Queue) Ping(ctx context.Context) error {
	if err := q.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("ping redis: %w", err)
	}
	return nil
}

// Close closes the connections and stops the embedded server.
func (q *Queue) Close() error {
	if q.stopNotices != nil {
		close(q.stopNotices)
		<-q.noticesStopped
	}
	var errs []error
	if q.rdb != nil {
		errs = append(errs, q.rdb.Close())
	}
	if q.embedded != nil {
		close(q.stopClock)
		<-q.clockStopped
		q.embedded.Close()
	}
	return errors.Join(errs...)
}

// embeddedTick is how often the embedded Redis's key TTLs move on. asynq's
// TTLs are seconds to days, so a second of slack changes nothing.
const embeddedTick = time.Second

// runEmbeddedClock makes the embedded Redis expire keys, which asynq
// relies on, by moving its TTLs on every embeddedTick until stop is
// closed. miniredis's own ClockTTL moves them on every command instead,
// and each move walks and sorts every key: a command would then cost more
// with every task Redis holds, and the queue's polls are commands.
func runEmbeddedClock(mr *miniredis.Miniredis, stop <-chan struct{}) {
	ticker := time.NewTicker(embeddedTick)
	defer ticker.Stop()
	last := time.Now()
	for {
		select {
		case <-stop:
			return
		case now := <-ticker.C:
			mr.FastForward(now.Sub(last))
			last = now
		}
	}
}

// KeepHeldOut makes Enqueue leave out of the embedded Redis the attempts
// held says this process holds. The embedded Redis serves this process
// alone and dies with it, so a task there would only come back to the
// dispatcher that has the job already, and every task it holds makes each
// of its commands cost more. A real Redis still gets every task: it
// carries the job to the other replicas and past this one's end. Call it
// before the queue is used.
func (q *Queue) KeepHeldOut(held Held) {
	if q.embedded != nil {
		q.held = held
	}
}

// Enqueue puts the task on its priority queue. A task Redis already holds
// is not an error: that is what makes enqueueing idempotent. asynq does not
// retry the task; attempts are counted by the database.
func (q *Queue) Enqueue(ctx context.Context, t Task) error {
	if q.held != nil && q.held(t) {
		return nil
	}
	_, err := enqueue(ctx, q.client, t)
	return err
}

// enqueue adds the task with client and reports whether it was added
// (false: Redis held it already).
func enqueue(ctx context.Context, client *asynq.Client, t Task) (bool, error) {
	payload, err := json.Marshal(t)
	if err != nil {
		return false, fmt.Errorf("enqueue job %s: %w", t.JobID, err)
	}
	_, err = client.EnqueueContext(ctx, asynq.NewTask(TypeDispatch, payload),
		asynq.TaskID(TaskID(t.JobID, t.Attempt)),
		asynq.Queue(QueueName(t.Priority)),
		asynq.MaxRetry(0),
	)
	switch {
	case errors.Is(err, asynq.ErrTaskIDConflict):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("enqueue job %s: %w", t.JobID, err)
	}
	return true, nil
}

// Remove deletes the task if Redis holds it; one it does not hold is not an
// error. A task being dispatched right now gives ErrTaskActive.
func (q *Queue) Remove(ctx context.Context, t Task) error {
	queue, id := QueueName(t.Priority), TaskID(t.JobID, t.Attempt)
	info, err := q.inspector.GetTaskInfo(queue, id)
	if notHeld(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove job %s from the queue: %w", t.JobID, err)
	}
	if info.State == asynq.TaskStateActive {
		return fmt.Errorf("remove job %s from the queue: %w", t.JobID, ErrTaskActive)
	}
	if err := q.inspector.DeleteTask(queue, id); err != nil && !notHeld(err) {
		return fmt.Errorf("remove job %s from the queue: %w", t.JobID, err)
	}
	return nil
}

// Held reports whether Redis holds the task in any state.
func (q *Queue) Held(ctx context.Context, t Task) (bool, error) {
	_, err := q.inspector.GetTaskInfo(QueueName(t.Priority), TaskID(t.JobID, t.Attempt))
	if notHeld(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("look up job %s in the queue: %w", t.JobID, err)
	}
	return true, nil
}

// Depth returns the number of pending tasks per priority.
func (q *Queue) Depth(ctx context.Context) (map[registry.Priority]int, error) {
	// asynq creates a queue with its first task; one not created yet is empty.
	existing, err := q.inspector.Queues()
	if err != nil {
		return nil, fmt.Errorf("queue depth: %w", err)
	}
	out := make(map[registry.Priority]int, len(queueNames))
	for p, name := range queueNames {
		if !slices.Contains(existing, name) {
			out[p] = 0
			continue
		}
		info, err := q.inspector.GetQueueInfo(name)
		if err != nil {
			return nil, fmt.Errorf("queue depth: %w", err)
		}
		out[p] = info.Pending
	}
	return out, nil
}

func notHeld(err error) bool {
	return errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound)
}
