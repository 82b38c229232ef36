package server

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect/v2"
	"connectrpc.com/connect/v2/connecthttp"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/rpc/casare/v1/casarev1connect"
	"github.com/casarerpa/casare/server/queue/queuetest"
	"github.com/casarerpa/casare/server/registry/registrytest"
)

// workQueueRedisDB is the Redis database of this file's tests; they run
// one after the other.
const workQueueRedisDB = 8

// queueServer is a control plane with clients of the admin token.
type queueServer struct {
	*scheduling
	queues casarev1connect.WorkQueueServiceClient
	admin  casarev1connect.AdminServiceClient
	addr   string
}

func startQueueServer(t *testing.T, dbURL, redisURL string) *queueServer {
	t.Helper()
	dir := t.TempDir()
	sc := startScheduling(t, dir, dbURL, redisURL, "")
	b, err := os.ReadFile(filepath.Join(dir, AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(b))
	client := connect.NewClient(connecthttp.NewTransport(http.DefaultClient, "http://"+sc.srv.Addr()), bearerToken(token))
	return &queueServer{
		scheduling: sc, addr: sc.srv.Addr(),
		queues: casarev1connect.NewWorkQueueServiceClient(client),
		admin:  casarev1connect.NewAdminServiceClient(client),
	}
}

// as returns a work queue client with a new token of the role.
func (qs *queueServer) as(t *testing.T, role casarev1.Role) casarev1connect.WorkQueueServiceClient {
	t.Helper()
	res, err := qs.admin.CreateToken(context.Background(), &casarev1.CreateTokenRequest{Name: "t-" + role.String(), Role: role})
	if err != nil {
		t.Fatal(err)
	}
	client := connect.NewClient(connecthttp.NewTransport(http.DefaultClient, "http://"+qs.addr), bearerToken(res.GetToken()))
	return casarev1connect.NewWorkQueueServiceClient(client)
}

func forEachQueueStore(t *testing.T, test func(t *testing.T, qs *queueServer)) {
	t.Run("embedded", func(t *testing.T) { test(t, startQueueServer(t, "", "")) })
	t.Run("postgres", func(t *testing.T) {
		test(t, startQueueServer(t, registrytest.DatabaseURL(t), queuetest.RedisURL(t, workQueueRedisDB)))
	})
}

func (qs *queueServer) triggerJobs(t *testing.T, queue string) []*casarev1.Job {
	t.Helper()
	res, err := qs.jobs.ListJobs(context.Background(), &casarev1.ListJobsRequest{WorkflowName: "tick", PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var out []*casarev1.Job
	for _, j := range res.GetJobs() {
		if j.GetCreatedBy() == "workqueue/"+queue {
			out = append(out, j)
		}
	}
	return out
}

func items(n int, prefix string) []*casarev1.WorkItemInput {
	out := make([]*casarev1.WorkItemInput, n)
	for i := range out {
		out[i] = &casarev1.WorkItemInput{Reference: prefix + string(rune('a'+i))}
	}
	return out
}

// TestWorkQueueTrigger: jobs start as items arrive, one per items_per_job
// up to max_jobs, and none once the queue is empty.
func TestWorkQueueTrigger(t *testing.T) {
	forEachQueueStore(t, func(t *testing.T, qs *queueServer) {
		ctx := context.Background()
		_, err := qs.queues.CreateWorkQueue(ctx, &casarev1.CreateWorkQueueRequest{Queue: &casarev1.WorkQueue{
			Name: "orders", MaxRetries: 1,
			Trigger: &casarev1.QueueTrigger{WorkflowName: "tick", ItemsPerJob: 2, MaxJobs: 3, Enabled: true},
		}})
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		if jobs := qs.triggerJobs(t, "orders"); len(jobs) != 0 {
			t.Fatalf("an empty queue's trigger started %d jobs", len(jobs))
		}
		if _, err := qs.queues.AddWorkItems(ctx, &casarev1.AddWorkItemsRequest{Queue: "orders", Items: items(1, "first-")}); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, "a job for the first item", 10*time.Second, func() bool { return len(qs.triggerJobs(t, "orders")) == 1 })
		job := qs.triggerJobs(t, "orders")[0]
		got, err := qs.jobs.GetJob(ctx, &casarev1.GetJobRequest{Id: job.GetId()})
		if err != nil {
			t.Fatal(err)
		}
		if q := got.GetJob().GetInputs().GetFields()["queue"].GetStringValue(); q != "orders" {
			t.Errorf("the trigger's job has input queue %q, want orders", q)
		}

		// 10 items want 5 jobs; max_jobs holds them to 3 while none ends.
		added, err := qs.queues.AddWorkItems(ctx, &casarev1.AddWorkItemsRequest{Queue: "orders", Items: items(9, "more-")})
		if err != nil {
			t.Fatal(err)
		}
		waitUntil(t, "max_jobs jobs", 10*time.Second, func() bool { return len(qs.triggerJobs(t, "orders")) == 3 })
		time.Sleep(1500 * time.Millisecond)
		if jobs := qs.triggerJobs(t, "orders"); len(jobs) != 3 {
			t.Fatalf("%d jobs pending at once, want max_jobs 3", len(jobs))
		}

		// Emptied, the queue starts no job even once the others end.
		list, err := qs.queues.ListWorkItems(ctx, &casarev1.ListWorkItemsRequest{Queue: "orders", PageSize: 100})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, it := range list.GetItems() {
			ids = append(ids, it.GetId())
		}
		if len(ids) != 10 || len(added.GetIds()) != 9 {
			t.Fatalf("listed %d items, want 10", len(ids))
		}
		if _, err := qs.queues.DeleteWorkItems(ctx, &casarev1.DeleteWorkItemsRequest{Ids: ids}); err != nil {
			t.Fatal(err)
		}
		for _, j := range qs.triggerJobs(t, "orders") {
			if _, err := qs.jobs.CancelJob(ctx, &casarev1.CancelJobRequest{Id: j.GetId()}); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(1500 * time.Millisecond)
		if jobs := qs.triggerJobs(t, "orders"); len(jobs) != 3 {
			t.Errorf("an empty queue's trigger started %d more jobs", len(jobs)-3)
		}
		stats, err := qs.queues.GetWorkQueueStats(ctx, &casarev1.GetWorkQueueStatsRequest{Name: "orders"})
		if err != nil {
			t.Fatal(err)
		}
		if c := stats.GetStats().GetCounts(); c["DELETED"] != 10 || c["NEW"] != 0 || len(c) != 7 {
			t.Errorf("counts = %v, want 10 DELETED and every status", c)
		}

		// Deferred items are NEW but not to be taken yet: no job starts
		// for them until they may be.
		later := items(2, "later-")
		for _, it := range later {
			it.DeferUntil = timestamppb.New(time.Now().Add(time.Hour))
		}
		deferred, err := qs.queues.AddWorkItems(ctx, &casarev1.AddWorkItemsRequest{Queue: "orders", Items: later})
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(1500 * time.Millisecond)
		if jobs := qs.triggerJobs(t, "orders"); len(jobs) != 3 {
			t.Fatalf("the trigger started %d jobs for items deferred an hour", len(jobs)-3)
		}
		if _, err := qs.queues.DeferWorkItems(ctx, &casarev1.DeferWorkItemsRequest{Ids: deferred.GetIds()}); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, "a job once the items may be taken", 10*time.Second, func() bool { return len(qs.triggerJobs(t, "orders")) == 4 })
	})
}

// TestWorkQueueRolesAndBadInput: viewers read, operators add, admins
// delete queues; bad items are refused naming the row, nothing stored.
func TestWorkQueueRolesAndBadInput(t *testing.T) {
	qs := startQueueServer(t, "", "")
	ctx := context.Background()
	viewer, operator := qs.as(t, casarev1.Role_ROLE_VIEWER), qs.as(t, casarev1.Role_ROLE_OPERATOR)
	code := func(err error) connect.Code {
		var cerr *connect.Error
		if errors.As(err, &cerr) {
			return cerr.Code()
		}
		return 0
	}
	queue := &casarev1.WorkQueue{Name: "invoices", UniqueReferences: true}
	if _, err := viewer.CreateWorkQueue(ctx, &casarev1.CreateWorkQueueRequest{Queue: queue}); code(err) != connect.CodePermissionDenied {
		t.Errorf("viewer creates a queue: %v, want permission_denied", err)
	}
	if _, err := operator.CreateWorkQueue(ctx, &casarev1.CreateWorkQueueRequest{Queue: queue}); err != nil {
		t.Fatal(err)
	}
	if _, err := operator.CreateWorkQueue(ctx, &casarev1.CreateWorkQueueRequest{Queue: queue}); code(err) != connect.CodeAlreadyExists {
		t.Errorf("second create: %v, want already_exists", err)
	}
	if _, err := viewer.AddWorkItems(ctx, &casarev1.AddWorkItemsRequest{Queue: "invoices", Items: items(1, "x")}); code(err) != connect.CodePermissionDenied {
		t.Errorf("viewer adds: %v, want permission_denied", err)
	}
	if _, err := operator.AddWorkItems(ctx, &casarev1.AddWorkItemsRequest{Queue: "invoices", Items: items(2, "INV-")}); err != nil {
		t.Fatal(err)
	}
	_, err := operator.AddWorkItems(ctx, &casarev1.AddWorkItemsRequest{Queue: "invoices", Items: []*casarev1.WorkItemInput{
		{Reference: "INV-new"}, {Reference: "INV-a"},
	}})
	if code(err) != connect.CodeAlreadyExists || !strings.Contains(err.Error(), `items[1] reference "INV-a" already exists`) {
		t.Errorf("a taken reference: %v", err)
	}
	big, _ := structpb.NewStruct(map[string]any{"blob": strings.Repeat("x", 1<<20)})
	_, err = operator.AddWorkItems(ctx, &casarev1.AddWorkItemsRequest{Queue: "invoices", Items: []*casarev1.WorkItemInput{{Reference: "big", Data: big}}})
	if code(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "items[0].data") || !strings.Contains(err.Error(), "1 MiB") {
		t.Errorf("data over 1 MiB: %v", err)
	}
	if _, err := operator.AddWorkItems(ctx, &casarev1.AddWorkItemsRequest{Queue: "nothing", Items: items(1, "x")}); code(err) != connect.CodeNotFound {
		t.Errorf("add to an unknown queue: %v, want not_found", err)
	}
	stats, err := viewer.GetWorkQueueStats(ctx, &casarev1.GetWorkQueueStatsRequest{Name: "invoices"})
	if err != nil || stats.GetStats().GetCounts()["NEW"] != 2 {
		t.Fatalf("stats after refusals = %v, %v; want the 2 items added, nothing of the refused batches", stats, err)
	}
	list, err := viewer.ListWorkItems(ctx, &casarev1.ListWorkItemsRequest{Queue: "invoices"})
	if err != nil || len(list.GetItems()) != 2 {
		t.Fatalf("viewer lists = %v, %v", list, err)
	}
	item, err := viewer.GetWorkItem(ctx, &casarev1.GetWorkItemRequest{Id: list.GetItems()[0].GetId()})
	if err != nil || len(item.GetHistory()) != 1 || item.GetItem().GetStatus() != casarev1.WorkItemStatus_WORK_ITEM_STATUS_NEW {
		t.Errorf("GetWorkItem = %v, %v", item, err)
	}
	if _, err := operator.RetryWorkItems(ctx, &casarev1.RetryWorkItemsRequest{Ids: []string{list.GetItems()[0].GetId()}}); code(err) != connect.CodeFailedPrecondition {
		t.Errorf("retry a NEW item: %v, want failed_precondition", err)
	}
	if _, err := operator.DeleteWorkQueue(ctx, &casarev1.DeleteWorkQueueRequest{Name: "invoices"}); code(err) != connect.CodePermissionDenied {
		t.Errorf("operator deletes a queue: %v, want permission_denied", err)
	}
	if _, err := qs.queues.DeleteWorkQueue(ctx, &casarev1.DeleteWorkQueueRequest{Name: "invoices"}); err != nil {
		t.Errorf("admin deletes a queue: %v", err)
	}
	_, err = qs.queues.CreateWorkQueue(ctx, &casarev1.CreateWorkQueueRequest{Queue: &casarev1.WorkQueue{
		Name: "t", Trigger: &casarev1.QueueTrigger{WorkflowName: "missing", Enabled: true},
	}})
	if code(err) != connect.CodeNotFound || !strings.Contains(err.Error(), "queue.trigger.workflow_name") {
		t.Errorf("a trigger of an unknown workflow: %v", err)
	}
}
