package cli

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect/v2"
	"connectrpc.com/connect/v2/connecthttp"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/rpc/casare/v1/casarev1connect"
)

// fakeWorkQueues is a WorkQueueService that keeps one queue, answers from
// fixtures and records every request.
type fakeWorkQueues struct {
	casarev1connect.UnimplementedWorkQueueServiceHandler

	mu    sync.Mutex
	queue *casarev1.WorkQueue
	reqs  []proto.Message
	// addErr refuses the add call numbered refuseCall (from 1).
	addErr     error
	refuseCall int
	addCall    int
	// pages are the pages ListWorkItems answers, in turn.
	pages [][]*casarev1.WorkItem
}

func (f *fakeWorkQueues) record(req proto.Message) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs = append(f.reqs, proto.Clone(req))
}

// requests returns the recorded requests of type T.
func requests[T proto.Message](f *fakeWorkQueues) []T {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []T
	for _, r := range f.reqs {
		if t, ok := r.(T); ok {
			out = append(out, t)
		}
	}
	return out
}

func last[T proto.Message](t *testing.T, f *fakeWorkQueues) T {
	t.Helper()
	all := requests[T](f)
	if len(all) == 0 {
		var zero T
		t.Fatalf("no %T reached the server", zero)
	}
	return all[len(all)-1]
}

func fixtureStats() *casarev1.WorkQueueStats {
	return &casarev1.WorkQueueStats{
		Queue:             "invoices",
		Counts:            map[string]int64{"NEW": 120, "IN_PROGRESS": 4, "SUCCESSFUL": 9000, "FAILED": 17, "ABANDONED": 1, "RETRIED": 3, "DELETED": 0},
		ItemsPerMinute:    42.5,
		AverageProcessing: durationpb.New(1500 * time.Millisecond),
		SlaBreaches:       6,
		OldestNew:         timestamppb.New(time.Now().Add(-90 * time.Minute)),
	}
}

func (f *fakeWorkQueues) CreateWorkQueue(_ context.Context, req *casarev1.CreateWorkQueueRequest) (*casarev1.CreateWorkQueueResponse, error) {
	f.record(req)
	return &casarev1.CreateWorkQueueResponse{Queue: req.GetQueue()}, nil
}

func (f *fakeWorkQueues) UpdateWorkQueue(_ context.Context, req *casarev1.UpdateWorkQueueRequest) (*casarev1.UpdateWorkQueueResponse, error) {
	f.record(req)
	return &casarev1.UpdateWorkQueueResponse{Queue: req.GetQueue()}, nil
}

func (f *fakeWorkQueues) DeleteWorkQueue(_ context.Context, req *casarev1.DeleteWorkQueueRequest) (*casarev1.DeleteWorkQueueResponse, error) {
	f.record(req)
	return nil, connect.NewError(connect.CodePermissionDenied, "deleting a work queue needs the admin role")
}

func (f *fakeWorkQueues) GetWorkQueue(_ context.Context, req *casarev1.GetWorkQueueRequest) (*casarev1.GetWorkQueueResponse, error) {
	f.record(req)
	if req.GetName() != f.queue.GetName() {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Sprintf("work queue %q not found", req.GetName()))
	}
	return &casarev1.GetWorkQueueResponse{Queue: proto.CloneOf(f.queue), Stats: fixtureStats()}, nil
}

func (f *fakeWorkQueues) ListWorkQueues(_ context.Context, req *casarev1.ListWorkQueuesRequest) (*casarev1.ListWorkQueuesResponse, error) {
	f.record(req)
	if req.GetPageToken() == "" {
		return &casarev1.ListWorkQueuesResponse{Queues: []*casarev1.WorkQueue{f.queue}, Stats: []*casarev1.WorkQueueStats{fixtureStats()}, NextPageToken: "p2"}, nil
	}
	empty := &casarev1.WorkQueueStats{Queue: "empty", Counts: map[string]int64{}}
	return &casarev1.ListWorkQueuesResponse{Queues: []*casarev1.WorkQueue{{Name: "empty"}}, Stats: []*casarev1.WorkQueueStats{empty}}, nil
}

func (f *fakeWorkQueues) AddWorkItems(_ context.Context, req *casarev1.AddWorkItemsRequest) (*casarev1.AddWorkItemsResponse, error) {
	f.record(req)
	f.mu.Lock()
	f.addCall++
	call := f.addCall
	f.mu.Unlock()
	if f.addErr != nil && call == f.refuseCall {
		return nil, f.addErr
	}
	ids := make([]string, len(req.GetItems()))
	for i := range ids {
		ids[i] = fmt.Sprintf("item-%d-%d", call, i+1)
	}
	return &casarev1.AddWorkItemsResponse{Ids: ids}, nil
}

func (f *fakeWorkQueues) ListWorkItems(_ context.Context, req *casarev1.ListWorkItemsRequest) (*casarev1.ListWorkItemsResponse, error) {
	f.record(req)
	page := 0
	if req.GetPageToken() != "" {
		fmt.Sscanf(req.GetPageToken(), "page-%d", &page)
	}
	res := &casarev1.ListWorkItemsResponse{Items: f.pages[page]}
	if page+1 < len(f.pages) {
		res.NextPageToken = fmt.Sprintf("page-%d", page+1)
	}
	return res, nil
}

func (f *fakeWorkQueues) GetWorkItem(_ context.Context, req *casarev1.GetWorkItemRequest) (*casarev1.GetWorkItemResponse, error) {
	f.record(req)
	data, _ := structpb.NewStruct(map[string]any{"amount": 120.5})
	return &casarev1.GetWorkItemResponse{
		Item: &casarev1.WorkItem{Id: req.GetId(), Queue: "invoices", Reference: "INV-7", Status: casarev1.WorkItemStatus_WORK_ITEM_STATUS_FAILED,
			Exception: casarev1.WorkItemException_WORK_ITEM_EXCEPTION_BUSINESS, Reason: "no invoice number", Retry: 1, RetryOf: "item-0",
			JobId: "job-9", Attempt: 2, RobotId: "robot-3", Data: data, CreatedAt: timestamppb.Now()},
		History: []*casarev1.WorkItemEvent{
			{Time: timestamppb.Now(), Status: casarev1.WorkItemStatus_WORK_ITEM_STATUS_NEW, Message: "retry of item-0"},
			{Time: timestamppb.Now(), Status: casarev1.WorkItemStatus_WORK_ITEM_STATUS_IN_PROGRESS, JobId: "job-9", Attempt: 2, RobotId: "robot-3", Message: "taken"},
			{Time: timestamppb.Now(), Status: casarev1.WorkItemStatus_WORK_ITEM_STATUS_FAILED, JobId: "job-9", Attempt: 2, Message: "business exception: no invoice number"},
		},
	}, nil
}

func (f *fakeWorkQueues) RetryWorkItems(_ context.Context, req *casarev1.RetryWorkItemsRequest) (*casarev1.RetryWorkItemsResponse, error) {
	f.record(req)
	ids := make([]string, len(req.GetIds()))
	for i, id := range req.GetIds() {
		ids[i] = "retry-of-" + id
	}
	return &casarev1.RetryWorkItemsResponse{Ids: ids}, nil
}

func (f *fakeWorkQueues) DeferWorkItems(_ context.Context, req *casarev1.DeferWorkItemsRequest) (*casarev1.DeferWorkItemsResponse, error) {
	f.record(req)
	return &casarev1.DeferWorkItemsResponse{Deferred: int32(len(req.GetIds()))}, nil
}

func (f *fakeWorkQueues) DeleteWorkItems(_ context.Context, req *casarev1.DeleteWorkItemsRequest) (*casarev1.DeleteWorkItemsResponse, error) {
	f.record(req)
	return &casarev1.DeleteWorkItemsResponse{Deleted: int32(len(req.GetIds()))}, nil
}

func (f *fakeWorkQueues) GetWorkQueueStats(_ context.Context, req *casarev1.GetWorkQueueStatsRequest) (*casarev1.GetWorkQueueStatsResponse, error) {
	f.record(req)
	return &casarev1.GetWorkQueueStatsResponse{Stats: fixtureStats()}, nil
}

type wqBundle struct {
	*bundle
	wq    *fakeWorkQueues
	stdin string
}

func setupWorkQueues(t *testing.T) *wqBundle {
	t.Helper()
	b := &wqBundle{bundle: &bundle{home: t.TempDir(), env: map[string]string{}}, wq: &fakeWorkQueues{
		queue: &casarev1.WorkQueue{Name: "invoices", Description: "supplier invoices", MaxRetries: 2, UniqueReferences: true,
			Sla:     durationpb.New(4 * time.Hour),
			Trigger: &casarev1.QueueTrigger{WorkflowName: "invoice-process", MinItems: 5, ItemsPerJob: 50, MaxJobs: 4, Enabled: true}},
	}}
	server := connect.NewServer()
	casarev1connect.RegisterWorkQueueServiceHandler(server, b.wq)
	mux := http.NewServeMux()
	connecthttp.Mount(mux, server)
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	b.url = ts.URL
	b.env["HOME"] = b.home
	b.env["CASARE_SERVER"] = ts.URL
	return b
}

func (b *wqBundle) run(args ...string) int {
	b.stdout.Reset()
	b.stderr.Reset()
	return Run(context.Background(), args, Env{
		Stdin:  strings.NewReader(b.stdin),
		Stdout: &b.stdout,
		Stderr: &b.stderr,
		Getenv: func(k string) string { return b.env[k] },
	})
}

func (b *wqBundle) mustRun(t *testing.T, args ...string) string {
	t.Helper()
	if code := b.run(args...); code != 0 {
		t.Fatalf("casarectl %s: exit %d\n%s", strings.Join(args, " "), code, b.stderr.String())
	}
	return b.stdout.String()
}

func TestWorkQueuesCreate(t *testing.T) {
	t.Parallel()
	b := setupWorkQueues(t)
	out := b.mustRun(t, "workqueues", "create", "orders", "--description", "web orders", "--max-retries", "3", "--unique-references",
		"--sla", "1d12h", "--trigger-workflow", "order-entry", "--min-items", "10", "--items-per-job", "25", "--max-jobs", "3",
		"--trigger-priority", "high", "--trigger-require-capability", "browser", "--trigger-require-label", "site=hq")
	if !strings.Contains(out, "work queue orders created") {
		t.Errorf("stdout %q", out)
	}
	want := &casarev1.WorkQueue{Name: "orders", Description: "web orders", MaxRetries: 3, UniqueReferences: true, Sla: durationpb.New(36 * time.Hour),
		Trigger: &casarev1.QueueTrigger{WorkflowName: "order-entry", MinItems: 10, ItemsPerJob: 25, MaxJobs: 3, Enabled: true,
			Priority: casarev1.JobPriority_JOB_PRIORITY_HIGH,
			Requires: &casarev1.Requirements{Capabilities: []string{"browser"}, Labels: map[string]string{"site": "hq"}}}}
	if diff := cmp.Diff(want, last[*casarev1.CreateWorkQueueRequest](t, b.wq).GetQueue(), protocmp.Transform()); diff != "" {
		t.Errorf("create request (-want +got):\n%s", diff)
	}

	b.mustRun(t, "workqueues", "create", "plain")
	if diff := cmp.Diff(&casarev1.WorkQueue{Name: "plain"}, last[*casarev1.CreateWorkQueueRequest](t, b.wq).GetQueue(), protocmp.Transform()); diff != "" {
		t.Errorf("a queue without flags (-want +got):\n%s", diff)
	}
}

func TestWorkQueuesUpdateChangesOnlyWhatIsGiven(t *testing.T) {
	t.Parallel()
	b := setupWorkQueues(t)
	b.mustRun(t, "workqueues", "update", "invoices", "--max-retries", "5", "--max-jobs", "8", "--sla", "0")
	want := proto.CloneOf(b.wq.queue)
	want.MaxRetries, want.Trigger.MaxJobs, want.Sla = 5, 8, nil
	if diff := cmp.Diff(want, last[*casarev1.UpdateWorkQueueRequest](t, b.wq).GetQueue(), protocmp.Transform()); diff != "" {
		t.Errorf("update request (-want +got):\n%s", diff)
	}

	b.mustRun(t, "workqueues", "update", "invoices", "--trigger-enabled=false")
	if got := last[*casarev1.UpdateWorkQueueRequest](t, b.wq).GetQueue(); got.GetTrigger().GetEnabled() || got.GetTrigger().GetWorkflowName() != "invoice-process" {
		t.Errorf("--trigger-enabled=false sent trigger %v", got.GetTrigger())
	}
	b.mustRun(t, "workqueues", "update", "invoices", "--no-trigger")
	if got := last[*casarev1.UpdateWorkQueueRequest](t, b.wq).GetQueue(); got.GetTrigger() != nil || got.GetMaxRetries() != 2 {
		t.Errorf("--no-trigger sent %v", got)
	}
	if code := b.run("workqueues", "update", "nope", "--max-retries", "1"); code != ExitError || !strings.Contains(b.stderr.String(), `not found: work queue "nope" not found`) {
		t.Errorf("unknown queue: exit %d, %s", code, b.stderr.String())
	}
}

func TestWorkQueuesUsageErrors(t *testing.T) {
	t.Parallel()
	b := setupWorkQueues(t)
	csv := writeFile(t, b.home, "bad.csv", "reference,priority,amount\nINV-1,high,10\nINV-2,urgent,20\n")
	short := writeFile(t, b.home, "short.csv", "reference,amount\nINV-1,10\nINV-2\n")
	dupe := writeFile(t, b.home, "dupe.csv", "reference,amount,amount\nINV-1,1,2\n")
	badJSON := writeFile(t, b.home, "bad.json", `[{"a": 1}, 7]`)
	badDate := writeFile(t, b.home, "date.json", `[{"reference": "x", "deadline": "tomorrow", "data": {}}]`)
	notArray := writeFile(t, b.home, "obj.json", `{"a": 1}`)
	empty := writeFile(t, b.home, "empty.csv", "reference,amount\n")
	big := writeFile(t, b.home, "big.json", `[{"blob": "`+strings.Repeat("x", maxItemData)+`"}]`)
	unknown := writeFile(t, b.home, "items.txt", "  \n")
	tests := []struct {
		name string
		args []string
		msg  string
	}{
		{"TriggerFlagWithoutTrigger", []string{"workqueues", "create", "q", "--max-jobs", "3"}, "--max-jobs: the queue has no trigger: give --trigger-workflow W too"},
		{"BadSLA", []string{"workqueues", "create", "q", "--sla", "soon"}, `--sla: want a duration such as 30m, 4h or 2d, got "soon"`},
		{"SLAOverAYear", []string{"workqueues", "create", "q", "--sla", "400d"}, "over the limit of 365d"},
		{"MaxRetriesOver100", []string{"workqueues", "create", "q", "--max-retries", "101"}, "--max-retries: want 0 to 100, got 101"},
		{"NoTriggerAndTriggerFlag", []string{"workqueues", "update", "invoices", "--no-trigger", "--max-jobs", "2"}, "--no-trigger: give no other trigger flag"},
		{"UpdateNothing", []string{"workqueues", "update", "invoices"}, "nothing to change"},
		{"UpdateOnlyOutput", []string{"workqueues", "update", "invoices", "-o", "json"}, "nothing to change"},
		{"AddNothing", []string{"workqueues", "add", "invoices"}, "say what to add"},
		{"AddBoth", []string{"workqueues", "add", "invoices", "-f", csv, "--reference", "x"}, "not both"},
		{"CSVBadPriority", []string{"workqueues", "add", "invoices", "-f", csv}, `bad.csv: line 3: priority: want low, normal or high, got "urgent"`},
		{"CSVShortRow", []string{"workqueues", "add", "invoices", "-f", short}, "record on line 3: wrong number of fields"},
		{"CSVDuplicateColumn", []string{"workqueues", "add", "invoices", "-f", dupe}, `line 1: column "amount" appears twice`},
		{"CSVNoRows", []string{"workqueues", "add", "invoices", "-f", empty}, "empty.csv: no items in it"},
		{"JSONNotObject", []string{"workqueues", "add", "invoices", "-f", badJSON}, "bad.json: item 2: want a JSON object, got 7"},
		{"JSONBadDeadline", []string{"workqueues", "add", "invoices", "-f", badDate}, `item 1: deadline: want a time such as`},
		{"JSONDataObjectBadPriority", []string{"workqueues", "add", "invoices", "-f", writeFile(t, b.home, "prio.json", `[{"a": 1}, {"a": 2, "priority": "urgent"}]`)}, `prio.json: item 2: priority: want low, normal or high, got "urgent"`},
		{"JSONFractionReference", []string{"workqueues", "add", "invoices", "-f", writeFile(t, b.home, "ref.json", `[{"reference": 1.5, "a": 2}]`)}, `item 1: reference: want a string`},
		{"JSONNotArray", []string{"workqueues", "add", "invoices", "-f", notArray}, "want a JSON array of items or of data objects"},
		{"DataOver1MiB", []string{"workqueues", "add", "invoices", "-f", big}, "item 1: data: 1048587 bytes as JSON, over the limit of 1 MiB"},
		{"CannotTellFormat", []string{"workqueues", "add", "invoices", "-f", unknown}, "cannot tell CSV from JSON: give --format csv or --format json"},
		{"BadFormat", []string{"workqueues", "add", "invoices", "-f", csv, "--format", "xlsx"}, `--format: want csv or json, got "xlsx"`},
		{"InlineDataNotObject", []string{"workqueues", "add", "invoices", "--data", "[1,2]"}, "--data: want a JSON object"},
		{"InlineBadPriority", []string{"workqueues", "add", "invoices", "--data", "{}", "--priority", "asap"}, `--priority: want low, normal or high, got "asap"`},
		{"ItemsBadStatus", []string{"workqueues", "items", "invoices", "--status", "done"}, `--status: unknown status "done"`},
		{"ItemsBadException", []string{"workqueues", "items", "invoices", "--exception", "system"}, `--exception: want one of application, business, got "system"`},
		{"ItemsBadSince", []string{"workqueues", "items", "invoices", "--since", "yesterday"}, "--since: want a time such as"},
		{"ItemsLimitOver1000", []string{"workqueues", "items", "invoices", "--limit", "5000"}, "--limit: want 1 to 1000"},
		{"DeferWithoutUntil", []string{"workqueues", "defer", "item-1"}, "--until: required"},
		{"RetryNoIDs", []string{"workqueues", "retry", "-"}, "no item ids"},
		{"DeleteNeedsAdmin", []string{"workqueues", "delete", "invoices"}, "permission denied: deleting a work queue needs the admin role"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if code := b.run(tt.args...); code != ExitError || !strings.Contains(b.stderr.String(), tt.msg) {
				t.Fatalf("exit %d, stderr %q; want 2 and %q", code, b.stderr.String(), tt.msg)
			}
		})
	}
	if got := requests[*casarev1.AddWorkItemsRequest](b.wq); len(got) != 0 {
		t.Errorf("a bad file reached the server: %d add calls", len(got))
	}
}

func TestWorkQueuesAddCSV(t *testing.T) {
	t.Parallel()
	b := setupWorkQueues(t)
	file := writeFile(t, b.home, "invoices.csv", "\ufeffreference,priority,deadline,defer_until,supplier,amount\n"+
		"INV-1,high,2027-01-31T17:00:00Z,,ACME,\"1,200.50\"\n"+
		"INV-2,,,2027-01-01,\"Smith, J\",80\n")
	out := b.mustRun(t, "workqueues", "add", "invoices", "-f", file)
	if !strings.Contains(out, "2 item(s) added to invoices") {
		t.Errorf("stdout %q", out)
	}
	req := last[*casarev1.AddWorkItemsRequest](t, b.wq)
	want := &casarev1.AddWorkItemsRequest{Queue: "invoices", Items: []*casarev1.WorkItemInput{
		{Reference: "INV-1", Priority: casarev1.WorkItemPriority_WORK_ITEM_PRIORITY_HIGH,
			Deadline: timestamppb.New(time.Date(2027, 1, 31, 17, 0, 0, 0, time.UTC)),
			Data:     mustStruct(t, map[string]any{"supplier": "ACME", "amount": "1,200.50"})},
		{Reference: "INV-2", DeferUntil: timestamppb.New(time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)),
			Data: mustStruct(t, map[string]any{"supplier": "Smith, J", "amount": "80"})},
	}}
	if diff := cmp.Diff(want, req, protocmp.Transform()); diff != "" {
		t.Errorf("add request (-want +got):\n%s", diff)
	}
}

func mustStruct(t *testing.T, m map[string]any) *structpb.Struct {
	t.Helper()
	s, err := structpb.NewStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestWorkQueuesAddJSON(t *testing.T) {
	t.Parallel()
	b := setupWorkQueues(t)
	t.Run("ItemsAndDataObjects", func(t *testing.T) {
		file := writeFile(t, b.home, "items.json", `[
			{"reference": "INV-1", "priority": "low", "data": {"amount": 10, "lines": [1, 2]}},
			{"reference": "INV-2", "amount": 20, "deadline": "2027-02-01"},
			{"reference": 1003, "data": "not an object, so this is data"},
			{"data": {"nested": {"ok": true}}, "deferUntil": "2027-03-01T08:00:00+01:00"}
		]`)
		b.mustRun(t, "workqueues", "add", "invoices", "-f", file)
		want := []*casarev1.WorkItemInput{
			{Reference: "INV-1", Priority: casarev1.WorkItemPriority_WORK_ITEM_PRIORITY_LOW, Data: mustStruct(t, map[string]any{"amount": 10.0, "lines": []any{1.0, 2.0}})},
			// Data objects: the item fields come out, as CSV columns do.
			{Reference: "INV-2", Deadline: timestamppb.New(time.Date(2027, 2, 1, 0, 0, 0, 0, time.UTC)), Data: mustStruct(t, map[string]any{"amount": 20.0})},
			{Reference: "1003", Data: mustStruct(t, map[string]any{"data": "not an object, so this is data"})},
			{Data: mustStruct(t, map[string]any{"nested": map[string]any{"ok": true}}), DeferUntil: timestamppb.New(time.Date(2027, 3, 1, 7, 0, 0, 0, time.UTC))},
		}
		if diff := cmp.Diff(want, last[*casarev1.AddWorkItemsRequest](t, b.wq).GetItems(), protocmp.Transform()); diff != "" {
			t.Errorf("items (-want +got):\n%s", diff)
		}
	})
	t.Run("StdinSniffed", func(t *testing.T) {
		b.stdin = `  [{"a": 1}]`
		b.mustRun(t, "workqueues", "add", "invoices", "-f", "-")
		if got := last[*casarev1.AddWorkItemsRequest](t, b.wq).GetItems(); len(got) != 1 || got[0].GetData().AsMap()["a"] != 1.0 {
			t.Errorf("stdin JSON sent %v", got)
		}
		b.stdin = "reference,a\nR1,x\n"
		b.mustRun(t, "workqueues", "add", "invoices", "-f", "-")
		if got := last[*casarev1.AddWorkItemsRequest](t, b.wq).GetItems(); len(got) != 1 || got[0].GetReference() != "R1" {
			t.Errorf("stdin CSV sent %v", got)
		}
		// --format beats the first character: read as CSV, "[x]" is a
		// header row and nothing follows it.
		b.stdin = "[x]\n"
		if code := b.run("workqueues", "add", "invoices", "-f", "-", "--format", "csv"); code != ExitError || !strings.Contains(b.stderr.String(), "stdin: no items in it") {
			t.Errorf("--format csv: exit %d, %s", code, b.stderr.String())
		}
	})
	t.Run("Inline", func(t *testing.T) {
		b.stdin = ""
		b.mustRun(t, "workqueues", "add", "invoices", "--reference", "INV-9", "--priority", "HIGH", "--data", `{"amount": 5}`, "--deadline", "2027-02-01")
		want := []*casarev1.WorkItemInput{{Reference: "INV-9", Priority: casarev1.WorkItemPriority_WORK_ITEM_PRIORITY_HIGH,
			Deadline: timestamppb.New(time.Date(2027, 2, 1, 0, 0, 0, 0, time.UTC)), Data: mustStruct(t, map[string]any{"amount": 5.0})}}
		if diff := cmp.Diff(want, last[*casarev1.AddWorkItemsRequest](t, b.wq).GetItems(), protocmp.Transform()); diff != "" {
			t.Errorf("inline item (-want +got):\n%s", diff)
		}
	})
}

func TestWorkQueuesAddBatches(t *testing.T) {
	t.Parallel()
	var csv strings.Builder
	csv.WriteString("reference,n\n")
	const n = 2*maxItemsPerCall + 1
	for i := range n {
		fmt.Fprintf(&csv, "R%d,%d\n", i, i)
	}
	t.Run("AllAdded", func(t *testing.T) {
		b := setupWorkQueues(t)
		b.stdin = csv.String()
		out := b.mustRun(t, "workqueues", "add", "invoices", "-f", "-", "--format", "csv", "-o", "json")
		var sizes []int
		for _, r := range requests[*casarev1.AddWorkItemsRequest](b.wq) {
			sizes = append(sizes, len(r.GetItems()))
		}
		if diff := cmp.Diff([]int{maxItemsPerCall, maxItemsPerCall, 1}, sizes); diff != "" {
			t.Errorf("call sizes (-want +got):\n%s", diff)
		}
		reqs := requests[*casarev1.AddWorkItemsRequest](b.wq)
		if got := reqs[1].GetItems()[0].GetReference(); got != fmt.Sprint("R", maxItemsPerCall) {
			t.Errorf("second call starts at %s", got)
		}
		if strings.Count(out, `"item-`) != n {
			t.Errorf("-o json lists %d ids, want %d", strings.Count(out, `"item-`), n)
		}
	})
	t.Run("RefusedBatchSaysWhere", func(t *testing.T) {
		b := setupWorkQueues(t)
		b.wq.addErr = connect.NewError(connect.CodeAlreadyExists, `work queue invoices: references already exist: row 3 "R10002", row 7 "R10006"`)
		b.wq.refuseCall = 2
		b.stdin = csv.String()
		code := b.run("workqueues", "add", "invoices", "-f", "-")
		msg := b.stderr.String()
		if code != ExitError || !strings.Contains(msg, "items 10001 to 20000 refused, 10000 added before them (the rows below count within these items)") ||
			!strings.Contains(msg, `already exists: work queue invoices: references already exist: row 3 "R10002"`) {
			t.Fatalf("exit %d, stderr %q", code, msg)
		}
		if got := len(requests[*casarev1.AddWorkItemsRequest](b.wq)); got != 2 {
			t.Errorf("%d calls after a refusal, want 2: it stops at the first", got)
		}
	})
}

func TestWorkQueuesAddRefusedSingleBatch(t *testing.T) {
	t.Parallel()
	b := setupWorkQueues(t)
	b.wq.addErr = connect.NewError(connect.CodeAlreadyExists, `references already exist: row 1 "INV-1"`)
	b.wq.refuseCall = 1
	file := writeFile(t, b.home, "one.csv", "reference\nINV-1\n")
	if code := b.run("workqueues", "add", "invoices", "-f", file); code != ExitError ||
		b.stderr.String() != "casarectl: already exists: references already exist: row 1 \"INV-1\"\n" {
		t.Fatalf("exit %d, stderr %q", code, b.stderr.String())
	}
}

func TestWorkQueuesItems(t *testing.T) {
	t.Parallel()
	b := setupWorkQueues(t)
	item := func(id string, st casarev1.WorkItemStatus) *casarev1.WorkItem {
		return &casarev1.WorkItem{Id: id, Queue: "invoices", Reference: "ref-" + id, Status: st, CreatedAt: timestamppb.Now(),
			Exception: casarev1.WorkItemException_WORK_ITEM_EXCEPTION_APPLICATION, Reason: "portal timed out\nstack…", JobId: "job-1", Retry: 2}
	}
	b.wq.pages = [][]*casarev1.WorkItem{
		{item("a", casarev1.WorkItemStatus_WORK_ITEM_STATUS_FAILED), item("b", casarev1.WorkItemStatus_WORK_ITEM_STATUS_FAILED)},
		{item("c", casarev1.WorkItemStatus_WORK_ITEM_STATUS_IN_PROGRESS)},
	}
	before := time.Now()
	out := b.mustRun(t, "workqueues", "items", "invoices", "--status", "failed,in-progress", "--reference", "INV-1",
		"--since", "24h", "--until", "2027-01-01T00:00:00Z", "--exception", "application", "--limit", "2")
	req := last[*casarev1.ListWorkItemsRequest](t, b.wq)
	wantStatuses := []casarev1.WorkItemStatus{casarev1.WorkItemStatus_WORK_ITEM_STATUS_FAILED, casarev1.WorkItemStatus_WORK_ITEM_STATUS_IN_PROGRESS}
	if diff := cmp.Diff(wantStatuses, req.GetStatuses()); diff != "" {
		t.Errorf("statuses (-want +got):\n%s", diff)
	}
	since := req.GetCreatedAfter().AsTime()
	if req.GetQueue() != "invoices" || req.GetReference() != "INV-1" || req.GetPageSize() != 2 ||
		req.GetException() != casarev1.WorkItemException_WORK_ITEM_EXCEPTION_APPLICATION ||
		since.Before(before.Add(-24*time.Hour-time.Second)) || since.After(time.Now().Add(-24*time.Hour)) ||
		!req.GetCreatedBefore().AsTime().Equal(time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("request %v", req)
	}
	if !strings.Contains(out, "ID") || !strings.Contains(out, "ref-a") || !strings.Contains(out, "application") ||
		!strings.Contains(out, "portal timed out") || strings.Contains(out, "stack") || strings.Contains(out, "ref-c") {
		t.Errorf("first page table:\n%s", out)
	}
	if !strings.Contains(b.stderr.String(), "more items: casarectl workqueues items invoices --page-token page-1 (or --all)") {
		t.Errorf("stderr %q", b.stderr.String())
	}
	out = b.mustRun(t, "workqueues", "items", "invoices", "--all", "-o", "json")
	for _, id := range []string{`"id": "a"`, `"id": "b"`, `"id": "c"`, `"status": "WORK_ITEM_STATUS_IN_PROGRESS"`} {
		if !strings.Contains(out, id) {
			t.Errorf("--all -o json lacks %s:\n%s", id, out)
		}
	}
	if got := last[*casarev1.ListWorkItemsRequest](t, b.wq); got.GetPageToken() != "page-1" || len(got.GetStatuses()) != 0 {
		t.Errorf("--all: last request %v", got)
	}
}

func TestWorkQueuesItemShowsHistory(t *testing.T) {
	t.Parallel()
	b := setupWorkQueues(t)
	out := squeeze(b.mustRun(t, "workqueues", "item", "item-7"))
	for _, want := range []string{"Reference: INV-7", "Exception: business: no invoice number", "Retry: 1 (of item-0)",
		"job-9 (attempt 2) on robot robot-3", `{"amount":120.5}`, "TIME", "IN_PROGRESS", "business exception: no invoice number"} {
		if !strings.Contains(out, want) {
			t.Errorf("item lacks %q:\n%s", want, out)
		}
	}
	out = b.mustRun(t, "workqueues", "item", "item-7", "-o", "yaml")
	if !strings.Contains(out, "history:") || !strings.Contains(out, "status: WORK_ITEM_STATUS_FAILED") || !strings.Contains(out, "retryOf: item-0") {
		t.Errorf("yaml:\n%s", out)
	}
}

func TestWorkQueuesBulkItems(t *testing.T) {
	t.Parallel()
	b := setupWorkQueues(t)
	b.stdin = "id-2\nid-3 id-4\n\nid-2\n"
	out := b.mustRun(t, "workqueues", "retry", "id-1", "-")
	if diff := cmp.Diff([]string{"id-1", "id-2", "id-3", "id-4"}, last[*casarev1.RetryWorkItemsRequest](t, b.wq).GetIds()); diff != "" {
		t.Errorf("retry ids (-want +got):\n%s", diff)
	}
	if !strings.Contains(out, "4 item(s) retried as new items:\nretry-of-id-1\n") {
		t.Errorf("retry stdout %q", out)
	}

	b.stdin = ""
	out = b.mustRun(t, "workqueues", "defer", "id-1", "id-2", "--until", "2027-05-01T09:00:00Z")
	req := last[*casarev1.DeferWorkItemsRequest](t, b.wq)
	if !req.GetDeferUntil().AsTime().Equal(time.Date(2027, 5, 1, 9, 0, 0, 0, time.UTC)) || len(req.GetIds()) != 2 || !strings.Contains(out, "2 of 2 item(s) deferred") {
		t.Errorf("defer request %v, stdout %q", req, out)
	}
	b.mustRun(t, "workqueues", "defer", "id-1", "--until", "now")
	if got := last[*casarev1.DeferWorkItemsRequest](t, b.wq); got.GetDeferUntil() != nil {
		t.Errorf("--until now sent %v, want no time", got.GetDeferUntil())
	}
	b.mustRun(t, "workqueues", "defer", "id-1", "--until", "2h")
	if got := last[*casarev1.DeferWorkItemsRequest](t, b.wq).GetDeferUntil().AsTime(); got.Before(time.Now().Add(time.Hour)) {
		t.Errorf("--until 2h sent %v", got)
	}

	ids := make([]string, maxItemsPerCall+5)
	for i := range ids {
		ids[i] = fmt.Sprint("x", i)
	}
	b.stdin = strings.Join(ids, "\n")
	out = b.mustRun(t, "workqueues", "delete-items", "-", "-o", "json")
	deletes := requests[*casarev1.DeleteWorkItemsRequest](b.wq)
	if len(deletes) != 2 || len(deletes[0].GetIds()) != maxItemsPerCall || len(deletes[1].GetIds()) != 5 {
		t.Errorf("%d delete calls, want 2 of 10000 and 5", len(deletes))
	}
	if !strings.Contains(out, `"deleted": 10005`) {
		t.Errorf("delete-items -o json: %s", out)
	}
}

func TestWorkQueuesReads(t *testing.T) {
	t.Parallel()
	b := setupWorkQueues(t)
	out := b.mustRun(t, "workqueues", "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "NAME") || !strings.Contains(lines[1], "invoices") ||
		!strings.Contains(lines[1], "120") || !strings.Contains(lines[1], "42.5") || !strings.Contains(lines[1], "1h") ||
		!strings.Contains(lines[1], "invoice-process (min 5, 50 per job, max 4 jobs)") || !strings.HasPrefix(lines[2], "empty") {
		t.Errorf("list over two pages:\n%s", out)
	}
	out = b.mustRun(t, "workqueues", "list", "-o", "json")
	if !strings.Contains(out, `"name": "empty"`) || !strings.Contains(out, `"itemsPerMinute": 42.5`) || strings.Contains(out, "nextPageToken") {
		t.Errorf("list -o json:\n%s", out)
	}
	out = squeeze(b.mustRun(t, "workqueues", "get", "invoices"))
	for _, want := range []string{"Unique references: true", "SLA: 4h", "NEW: 120",
		"ABANDONED: 1", "Average processing: 1.5s", "SLA breaches: 6", "Oldest new item: 1h"} {
		if !strings.Contains(out, want) {
			t.Errorf("get lacks %q:\n%s", want, out)
		}
	}
	out = b.mustRun(t, "workqueues", "get", "invoices", "-o", "yaml")
	if !strings.Contains(out, "maxRetries: 2") || !strings.Contains(out, "slaBreaches: \"6\"") {
		t.Errorf("get -o yaml:\n%s", out)
	}
	out = b.mustRun(t, "workqueues", "stats", "invoices", "-o", "json")
	if !strings.Contains(out, `"SUCCESSFUL": "9000"`) || !strings.Contains(out, `"averageProcessing": "1.500s"`) {
		t.Errorf("stats -o json:\n%s", out)
	}
	if got := last[*casarev1.GetWorkQueueStatsRequest](t, b.wq).GetName(); got != "invoices" {
		t.Errorf("stats asked for %q", got)
	}
	if code := b.run("workqueues", "get", "nope"); code != ExitError || !strings.Contains(b.stderr.String(), `not found: work queue "nope" not found`) {
		t.Errorf("get unknown: exit %d, %s", code, b.stderr.String())
	}
}

// squeeze makes every run of spaces one, so a test need not know how wide
// the table's columns came out.
func squeeze(s string) string {
	return regexp.MustCompile(` {2,}`).ReplaceAllString(s, " ")
}

func TestParseDuration(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"4h", 4 * time.Hour, true}, {"2d", 48 * time.Hour, true}, {"1d12h", 36 * time.Hour, true},
		{"-3d", -72 * time.Hour, true}, {"90m", 90 * time.Minute, true},
		{"d", 0, false}, {"xd", 0, false}, {"2days", 0, false}, {"", 0, false}, {"1.5d", 0, false},
	}
	for _, tt := range tests {
		got, err := parseDuration(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v, ok %t", tt.in, got, err, tt.want, tt.ok)
		}
	}
}
