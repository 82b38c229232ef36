package dispatch

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"

	"github.com/casarerpa/casare/server/queue"
)

// TaskCheckInterval is how often the dispatch worker looks for tasks when
// the queues are empty. asynq's default (about a second) would be the
// dispatch latency of an idle system; jobs submitted to this replica skip
// the wait altogether (Offer), so this bounds only jobs that came through
// another replica or the reconciler.
const TaskCheckInterval = 20 * time.Millisecond

// EmbeddedTaskCheckInterval is TaskCheckInterval on the embedded Redis.
// Every job this process takes in is offered to it directly and kept out
// of that Redis (queue.KeepHeldOut): only the jobs the reconciler restores
// on start come through it. Each look is four Lua scripts, which the
// embedded Redis runs each in a fresh interpreter: looking 50 times a
// second would be most of what an idle control plane does.
const EmbeddedTaskCheckInterval = time.Second

// RunWorker takes dispatch tasks from the queues, the highest priority
// first, looking every check when they are empty, until ctx is done.
func (d *Dispatcher) RunWorker(ctx context.Context, redis asynq.RedisConnOpt, check time.Duration) error {
	srv := asynq.NewServer(redis, asynq.Config{
		Concurrency:       32,
		Queues:            queue.Queues(),
		StrictPriority:    true,
		TaskCheckInterval: check,
		Logger:            asynqLogger{d.log},
		LogLevel:          asynq.WarnLevel,
		ShutdownTimeout:   2 * time.Second,
	})
	mux := asynq.NewServeMux()
	mux.HandleFunc(queue.TypeDispatch, func(ctx context.Context, t *asynq.Task) error {
		var task queue.Task
		if err := json.Unmarshal(t.Payload(), &task); err != nil {
			return fmt.Errorf("%w: dispatch task: %v", asynq.SkipRetry, err)
		}
		return d.HandleTask(ctx, task)
	})
	if err := srv.Start(mux); err != nil {
		return fmt.Errorf("start the dispatch worker: %w", err)
	}
	<-ctx.Done()
	srv.Shutdown()
	return nil
}

// asynqLogger sends asynq's log lines to the server's log.
type asynqLogger struct{ log *slog.Logger }

func (l asynqLogger) Debug(args ...any) { l.log.Debug(fmt.Sprint(args...), "component", "asynq") }
func (l asynqLogger) Info(args ...any)  { l.log.Info(fmt.Sprint(args...), "component", "asynq") }
func (l asynqLogger) Warn(args ...any)  { l.log.Warn(fmt.Sprint(args...), "component", "asynq") }
func (l asynqLogger) Error(args ...any) { l.log.Error(fmt.Sprint(args...), "component", "asynq") }
func (l asynqLogger) Fatal(args ...any) { l.log.Error(fmt.Sprint(args...), "component", "asynq") }
