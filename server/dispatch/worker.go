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

// RunWorker takes dispatch tasks from the queues, the highest priority
// first, until ctx is done.
func (d *Dispatcher) RunWorker(ctx context.Context, redis asynq.RedisConnOpt) error {
	srv := asynq.NewServer(redis, asynq.Config{
		Concurrency:       32,
		Queues:            queue.Queues(),
		StrictPriority:    true,
		TaskCheckInterval: TaskCheckInterval,
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
