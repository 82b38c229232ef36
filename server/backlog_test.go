package server

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/casarerpa/casare/server/logtest"
	"github.com/casarerpa/casare/server/registry"
)

// A backlog of jobs no robot can take waits in the dispatcher, not in the
// embedded Redis: a reconcile pass queues none of them again, and says
// nothing about them after the pass that restored them. Each job queued
// again would make every command of the embedded Redis, and so every poll
// of the queue, cost more.
func TestABacklogNoRobotTakesStaysOutOfTheEmbeddedRedis(t *testing.T) {
	const jobs = 1000
	cfg, err := ConfigFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	cfg.HTTPAddr, cfg.QUICAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.DatabaseURL, cfg.RedisURL = "", ""
	cfg.ReconcileInterval = 20 * time.Millisecond
	var out logtest.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := New(ctx, cfg, slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	// The backlog a restart finds: pending in the database, in no Redis.
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for i := w; i < jobs; i += 16 {
				job := &registry.Job{
					ID: registry.NewID(), WorkflowName: fmt.Sprint("backlog-", i), Status: registry.JobPending,
					Priority: registry.Priority(i%4 + 1), Attempt: 1, MaxAttempts: 3, CreatedBy: "test",
					Workflow: `{"name":"backlog"}`, Requires: `{"capabilities":["nowhere"]}`,
				}
				if _, _, err := s.reg.CreateJob(ctx, job, nil); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	waitFor(t, "every pending job waits in the dispatcher", func() bool {
		held := 0
		for after := ""; ; {
			tasks, err := s.pendingTasks(ctx, after, 500)
			if err != nil {
				t.Fatal(err)
			}
			for _, task := range tasks {
				if s.dispatcher.Holds(task) {
					held++
				}
			}
			if len(tasks) < 500 {
				return held == jobs
			}
			after = tasks[len(tasks)-1].JobID
		}
	})
	passes := regexp.MustCompile(`msg="reconciled the queue with the database" pending=(\d+) queued=(\d+)`)
	// A pass under way may have looked at a job just before it was held
	// and queued it after its task was taken: the passes that count start
	// after that one.
	seen := len(passes.FindAllString(out.String(), -1)) + 1
	waitFor(t, "three more reconcile passes", func() bool {
		return len(passes.FindAllString(out.String(), -1)) >= seen+3
	})
	for _, m := range passes.FindAllStringSubmatch(out.String(), -1)[seen:] {
		if m[1] != fmt.Sprint(jobs) || m[2] != "0" {
			t.Errorf("a reconcile pass with every job held here: %s; want pending=%d queued=0", m[0], jobs)
		}
	}
	// A task the first pass queued before its job was held here is taken
	// off by the queue's worker on its next poll, which a busy machine may
	// delay: what counts is that the queue empties, and the passes above
	// show that nothing queues them again.
	queued := func() int {
		depth, err := s.queue.Depth(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return depth[registry.PriorityLow] + depth[registry.PriorityNormal] + depth[registry.PriorityHigh] + depth[registry.PriorityCritical]
	}
	waitFor(t, "the embedded Redis to hold no task of the jobs waiting in the dispatcher", func() bool { return queued() == 0 })
	log := out.String()
	if n := strings.Count(log, "queued pending jobs that Redis did not hold"); n < 1 {
		t.Errorf("the reconciler never said it queued the backlog on start")
	}
	from := passes.FindAllStringIndex(log, -1)[seen-1][0]
	if n := strings.Count(log[from:], "queued pending jobs that Redis did not hold"); n != 0 {
		t.Errorf("the reconciler said %d times more that it queued jobs waiting here, want none", n)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(120 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 120 s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
