package e2e

import (
	"context"
	"testing"
	"time"

	"connectrpc.com/connect/v2"
	"connectrpc.com/connect/v2/connecthttp"
	"google.golang.org/protobuf/types/known/structpb"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/rpc/casare/v1/casarev1connect"
	"github.com/casarerpa/casare/server/queue/queuetest"
	"github.com/casarerpa/casare/server/registry/registrytest"
)

// TestWatchJobs follows jobs as they change, on the embedded default and on
// PostgreSQL and Redis (where changes travel over Redis pub/sub).
func TestWatchJobs(t *testing.T) {
	t.Parallel()
	t.Run("embedded", func(t *testing.T) {
		t.Parallel()
		watchJobs(t, startServer(t, t.TempDir()))
	})
	t.Run("postgres+redis", func(t *testing.T) {
		t.Parallel()
		watchJobs(t, startServer(t, t.TempDir(), "--database-url", registrytest.DatabaseURL(t), "--redis-url", queuetest.RedisURL(t, 15)))
	})
}

type watched struct {
	kind casarev1.WatchEventType
	jobs []*casarev1.Job
}

func watchJobs(t *testing.T, s *serverProc) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	jobs := casarev1connect.NewJobServiceClient(connect.NewClient(connecthttp.NewTransport(http1, s.url()), bearer(s.adminToken())))
	submit := func() *casarev1.Job {
		t.Helper()
		res, err := jobs.SubmitJob(ctx, &casarev1.SubmitJobRequest{Source: &casarev1.SubmitJobRequest_Workflow{Workflow: &casarev1.Workflow{
			Name: "watched", Steps: []*casarev1.Step{{Id: "a", Uses: "log", With: &structpb.Struct{Fields: map[string]*structpb.Value{"message": structpb.NewStringValue("watched")}}}},
		}}})
		if err != nil {
			t.Fatal(err)
		}
		return res.GetJob()
	}
	watch := func(req *casarev1.WatchJobsRequest) <-chan watched {
		t.Helper()
		stream, err := jobs.WatchJobs(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		out := make(chan watched, 100)
		go func() {
			defer stream.Close()
			for {
				msg, err := stream.Receive()
				if err != nil {
					close(out)
					return
				}
				out <- watched{msg.GetType(), msg.GetJobs()}
			}
		}()
		return out
	}
	next := func(ch <-chan watched) watched {
		t.Helper()
		select {
		case w, ok := <-ch:
			if !ok {
				t.Fatal("the watch ended")
			}
			return w
		case <-time.After(10 * time.Second):
			t.Fatal("no watch message within 10s")
		}
		return watched{}
	}

	old := submit()
	pending := watch(&casarev1.WatchJobsRequest{Statuses: []casarev1.JobStatus{casarev1.JobStatus_JOB_STATUS_PENDING}})
	if w := next(pending); w.kind != casarev1.WatchEventType_WATCH_EVENT_TYPE_SNAPSHOT || len(w.jobs) != 1 || w.jobs[0].GetId() != old.GetId() {
		t.Fatalf("snapshot = %v", w)
	}
	if w := next(pending); w.kind != casarev1.WatchEventType_WATCH_EVENT_TYPE_SYNCED {
		t.Fatalf("after the snapshot: %v, want SYNCED", w)
	}
	one := watch(&casarev1.WatchJobsRequest{JobIds: []string{old.GetId()}})
	if w := next(one); len(w.jobs) != 1 {
		t.Fatalf("snapshot of one job = %v", w)
	}
	next(one) // SYNCED

	// A pending job changes while it waits (its status message says for
	// what), so the pending watch may carry UPSERTs of waiting jobs too.
	nextNotWaiting := func(ch <-chan watched, want func(w watched) bool) watched {
		t.Helper()
		for {
			w := next(ch)
			if want(w) {
				return w
			}
			if w.kind == casarev1.WatchEventType_WATCH_EVENT_TYPE_UPSERT && len(w.jobs) == 1 &&
				w.jobs[0].GetStatus() == casarev1.JobStatus_JOB_STATUS_PENDING {
				continue
			}
			return w
		}
	}
	fresh := submit()
	isFresh := func(w watched) bool { return len(w.jobs) == 1 && w.jobs[0].GetId() == fresh.GetId() }
	if w := nextNotWaiting(pending, isFresh); w.kind != casarev1.WatchEventType_WATCH_EVENT_TYPE_UPSERT || w.jobs[0].GetId() != fresh.GetId() {
		t.Fatalf("a new pending job: %v, want its UPSERT", w)
	}
	if _, err := jobs.CancelJob(ctx, &casarev1.CancelJobRequest{Id: old.GetId()}); err != nil {
		t.Fatal(err)
	}
	if w := nextNotWaiting(pending, func(w watched) bool { return w.kind == casarev1.WatchEventType_WATCH_EVENT_TYPE_DELETE }); w.kind != casarev1.WatchEventType_WATCH_EVENT_TYPE_DELETE || w.jobs[0].GetId() != old.GetId() {
		t.Fatalf("a cancelled job leaving the pending filter: %v, want DELETE", w)
	}
	if w := nextNotWaiting(one, func(w watched) bool {
		return len(w.jobs) == 1 && w.jobs[0].GetStatus() == casarev1.JobStatus_JOB_STATUS_CANCELLED
	}); w.kind != casarev1.WatchEventType_WATCH_EVENT_TYPE_UPSERT || w.jobs[0].GetStatus() != casarev1.JobStatus_JOB_STATUS_CANCELLED {
		t.Fatalf("the watched job cancelled: %v, want an UPSERT to CANCELLED", w)
	}
	// The job-id watch saw nothing of the other job.
	select {
	case w := <-one:
		t.Fatalf("a watch of one job got %v", w)
	case <-time.After(200 * time.Millisecond):
	}
}
