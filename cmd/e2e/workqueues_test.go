package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect/v2"
	"connectrpc.com/connect/v2/connecthttp"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/rpc/casare/v1/casarev1connect"
	"github.com/casarerpa/casare/server/registry/registrytest"
)

// TestWorkQueuesOnRobots runs work-queue workflows on real agents, on the
// embedded default and on PostgreSQL and Redis: a loop over a queue's
// items that completes the good ones and fails the others with the right
// exception (business never retried, application retried once), and a
// robot killed in the middle of an item, which is abandoned and retried by
// the job's next attempt on another robot.
func TestWorkQueuesOnRobots(t *testing.T) {
	t.Parallel()
	t.Run("embedded", func(t *testing.T) {
		t.Parallel()
		workQueuesOnRobots(t, startServer(t, t.TempDir(), jobServerFlags...))
	})
	t.Run("postgres+redis", func(t *testing.T) {
		t.Parallel()
		workQueuesOnRobots(t, startServer(t, t.TempDir(), append(slices.Clone(jobServerFlags),
			"--database-url", registrytest.DatabaseURL(t), "--redis-url", startRedis(t).url())...))
	})
}

type queueClient struct {
	t *testing.T
	casarev1connect.WorkQueueServiceClient
}

func (q queueClient) create(name string, maxRetries int32) {
	q.t.Helper()
	if _, err := q.CreateWorkQueue(context.Background(), &casarev1.CreateWorkQueueRequest{Queue: &casarev1.WorkQueue{
		Name: name, MaxRetries: maxRetries, UniqueReferences: true, Sla: durationpb.New(time.Hour),
	}}); err != nil {
		q.t.Fatalf("create queue %s: %v", name, err)
	}
}

func (q queueClient) add(queue string, items ...*casarev1.WorkItemInput) []string {
	q.t.Helper()
	res, err := q.AddWorkItems(context.Background(), &casarev1.AddWorkItemsRequest{Queue: queue, Items: items})
	if err != nil {
		q.t.Fatalf("add items to %s: %v", queue, err)
	}
	return res.GetIds()
}

// items lists every item of the queue, by reference.
func (q queueClient) items(queue string) map[string][]*casarev1.WorkItem {
	q.t.Helper()
	res, err := q.ListWorkItems(context.Background(), &casarev1.ListWorkItemsRequest{Queue: queue, PageSize: 1000})
	if err != nil {
		q.t.Fatalf("list items of %s: %v", queue, err)
	}
	out := map[string][]*casarev1.WorkItem{}
	for _, it := range res.GetItems() {
		out[it.GetReference()] = append(out[it.GetReference()], it)
	}
	for _, list := range out {
		slices.SortFunc(list, func(a, b *casarev1.WorkItem) int { return int(a.GetRetry() - b.GetRetry()) })
	}
	return out
}

func (q queueClient) stats(queue string) *casarev1.WorkQueueStats {
	q.t.Helper()
	res, err := q.GetWorkQueueStats(context.Background(), &casarev1.GetWorkQueueStatsRequest{Name: queue})
	if err != nil {
		q.t.Fatalf("stats of %s: %v", queue, err)
	}
	return res.GetStats()
}

func item(ref string, data map[string]any) *casarev1.WorkItemInput {
	s, err := structpb.NewStruct(data)
	if err != nil {
		panic(err)
	}
	return &casarev1.WorkItemInput{Reference: ref, Data: s}
}

func statusesText(items map[string][]*casarev1.WorkItem) string {
	var b strings.Builder
	for ref, list := range items {
		for _, it := range list {
			fmt.Fprintf(&b, "  %s retry %d: %s %s %q job %s@%d\n", ref, it.GetRetry(), it.GetStatus(), it.GetException(), it.GetReason(), it.GetJobId(), it.GetAttempt())
		}
	}
	return b.String()
}

func workQueuesOnRobots(t *testing.T, s *serverProc) {
	q := queueClient{t, casarev1connect.NewWorkQueueServiceClient(connect.NewClient(connecthttp.NewTransport(http1, s.url()), bearer(s.adminToken())))}
	f := newFleet(t, s)
	f.enrol("w1")
	f.enrol("w2")

	// An unknown queue is refused before the job is stored.
	_, err := f.jobs.SubmitJob(context.Background(), &casarev1.SubmitJobRequest{Source: &casarev1.SubmitJobRequest_Workflow{
		Workflow: workflow("nowhere", step("take", "queue.next", map[string]any{"queue": "no-such-queue"}))}})
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "no-such-queue") {
		t.Fatalf("a job naming an unknown queue: %v, want invalid_argument naming the queue", err)
	}

	// A loop over the queue: good items complete, a business failure is
	// final, an application failure is retried once and then final.
	q.create("invoices", 1)
	q.add("invoices",
		item("ok-1", map[string]any{"kind": "ok", "n": 1}),
		item("ok-2", map[string]any{"kind": "ok", "n": 2}),
		item("biz-1", map[string]any{"kind": "business"}),
		item("app-1", map[string]any{"kind": "application"}),
		item("ok-3", map[string]any{"kind": "ok", "n": 3}),
	)
	loop := step("each", "queue.process", map[string]any{"queue": "invoices"})
	loop.Steps = []*casarev1.Step{
		step("note", "log", map[string]any{"message": "invoice ${{ item.reference }}"}),
		withIf(step("bad_data", "fail", map[string]any{"message": "no invoice number", "business": true}), "item.data.kind == 'business'"),
		withIf(step("portal_down", "fail", map[string]any{"message": "the portal timed out"}), "item.data.kind == 'application'"),
	}
	job := f.submit(workflow("invoices", loop))
	f.wait(job.GetId(), casarev1.JobStatus_JOB_STATUS_SUCCEEDED, 60*time.Second)
	items := q.items("invoices")
	want := map[string][]casarev1.WorkItemStatus{
		"ok-1":  {casarev1.WorkItemStatus_WORK_ITEM_STATUS_SUCCESSFUL},
		"ok-2":  {casarev1.WorkItemStatus_WORK_ITEM_STATUS_SUCCESSFUL},
		"ok-3":  {casarev1.WorkItemStatus_WORK_ITEM_STATUS_SUCCESSFUL},
		"biz-1": {casarev1.WorkItemStatus_WORK_ITEM_STATUS_FAILED},
		"app-1": {casarev1.WorkItemStatus_WORK_ITEM_STATUS_RETRIED, casarev1.WorkItemStatus_WORK_ITEM_STATUS_FAILED},
	}
	for ref, statuses := range want {
		var got []casarev1.WorkItemStatus
		for _, it := range items[ref] {
			got = append(got, it.GetStatus())
		}
		if !slices.Equal(got, statuses) {
			t.Fatalf("item %s went %v, want %v; items:\n%s", ref, got, statuses, statusesText(items))
		}
	}
	if it := items["biz-1"][0]; it.GetException() != casarev1.WorkItemException_WORK_ITEM_EXCEPTION_BUSINESS || !strings.Contains(it.GetReason(), "no invoice number") {
		t.Fatalf("the business failure is recorded as %s %q", it.GetException(), it.GetReason())
	}
	if it := items["app-1"][1]; it.GetException() != casarev1.WorkItemException_WORK_ITEM_EXCEPTION_APPLICATION || it.GetRetry() != 1 || it.GetRetryOf() != items["app-1"][0].GetId() {
		t.Fatalf("the application failure's retry is %s retry %d of %s", it.GetException(), it.GetRetry(), it.GetRetryOf())
	}
	for _, it := range items["ok-1"] {
		if it.GetJobId() != job.GetId() || it.GetAttempt() != 1 || it.GetRobotId() == "" {
			t.Fatalf("item ok-1 was processed by job %s attempt %d robot %q, want the loop's job", it.GetJobId(), it.GetAttempt(), it.GetRobotId())
		}
	}
	st := q.stats("invoices")
	if st.GetCounts()["SUCCESSFUL"] != 3 || st.GetCounts()["FAILED"] != 2 || st.GetCounts()["RETRIED"] != 1 || st.GetCounts()["NEW"] != 0 {
		t.Fatalf("the queue's figures are %v, want 3 successful, 2 failed, 1 retried, none new", st.GetCounts())
	}

	// A robot killed in the middle of an item: when its job's attempt
	// ends the item is abandoned and copied as a retry, which the job's
	// next attempt, on the other robot, takes and completes.
	q.create("slow", 1)
	q.add("slow", item("long-1", map[string]any{"pages": 40}))
	take := step("take", "queue.next", map[string]any{"queue": "slow"})
	hold := withIf(step("work", "delay", map[string]any{"duration": "60s"}), "steps.take.outputs.item.retry == 0")
	done := step("done", "queue.complete", map[string]any{"item": "${{ steps.take.outputs.item.id }}"})
	job = f.submit(workflow("slow", take, hold, done))
	deadline := time.Now().Add(30 * time.Second)
	var holder string
	for holder == "" {
		if list := q.items("slow")["long-1"]; len(list) == 1 && list[0].GetStatus() == casarev1.WorkItemStatus_WORK_ITEM_STATUS_IN_PROGRESS {
			holder = f.ids[list[0].GetRobotId()]
		}
		if time.Now().After(deadline) {
			t.Fatalf("the item was not taken within 30s:\n%s", statusesText(q.items("slow")))
		}
		time.Sleep(50 * time.Millisecond)
	}
	f.agents[holder].cmd.Process.Signal(syscall.SIGKILL)
	f.wait(job.GetId(), casarev1.JobStatus_JOB_STATUS_SUCCEEDED, 60*time.Second)
	items = q.items("slow")
	if list := items["long-1"]; len(list) != 2 ||
		list[0].GetStatus() != casarev1.WorkItemStatus_WORK_ITEM_STATUS_ABANDONED || list[0].GetAttempt() != 1 ||
		list[1].GetStatus() != casarev1.WorkItemStatus_WORK_ITEM_STATUS_SUCCESSFUL || list[1].GetAttempt() != 2 || list[1].GetRetry() != 1 {
		t.Fatalf("after its robot was killed the item went:\n%s\nwant ABANDONED on attempt 1, then its retry SUCCESSFUL on attempt 2", statusesText(items))
	}
}

func withIf(s *casarev1.Step, cond string) *casarev1.Step {
	s.If = cond
	return s
}
