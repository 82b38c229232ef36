package workqueue

import (
	"context"
	"testing"

	"google.golang.org/protobuf/types/known/structpb"

	agentv1 "github.com/casarerpa/casare/rpc/casare/agent/v1"
	"github.com/casarerpa/casare/server/registry"
	"github.com/casarerpa/casare/server/registry/registrytest"
)

func forEachBackend(t *testing.T, test func(t *testing.T, r *registry.Registry)) {
	for name, url := range map[string]func() string{
		"sqlite":   func() string { return "" },
		"postgres": func() string { return registrytest.DatabaseURL(t) },
	} {
		t.Run(name, func(t *testing.T) {
			r, err := registry.Open(context.Background(), registry.Options{DatabaseURL: url(), DataDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { r.Close() })
			if _, err := r.Migrate(context.Background()); err != nil {
				t.Fatal(err)
			}
			test(t, r)
		})
	}
}

// runningJob stores a job running on robot, attempt 1.
func runningJob(t *testing.T, r *registry.Registry, robot string) string {
	t.Helper()
	job := &registry.Job{
		ID: registry.NewID(), WorkflowName: "w", Workflow: "{}", Status: registry.JobRunning, Priority: registry.PriorityNormal,
		Attempt: 1, MaxAttempts: 1, RobotID: robot, Inputs: "{}", Requires: "{}", CreatedBy: "tester",
	}
	if _, err := r.DB().NewInsert().Model(job).Exec(context.Background()); err != nil {
		t.Fatal(err)
	}
	return job.ID
}

func TestCalls(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *registry.Registry) {
		ctx := context.Background()
		if err := r.CreateWorkQueue(ctx, &registry.WorkQueue{Name: "q", MaxRetries: 1, UniqueReferences: true}, nil); err != nil {
			t.Fatal(err)
		}
		var woken []string
		calls := NewCalls(CallsOptions{Registry: r, Wake: func(q string) { woken = append(woken, q) }, Metrics: NewMetrics(r, "test", nil)})
		job := runningJob(t, r, "robot-1")
		call := func(robot string, c *agentv1.WorkItemCall) *agentv1.WorkItemResult {
			if c.JobId == "" {
				c.JobId, c.Attempt = job, 1
			}
			return calls.Call(ctx, robot, c)
		}
		data, _ := structpb.NewStruct(map[string]any{"amount": 12.5})
		res := call("robot-1", &agentv1.WorkItemCall{Op: &agentv1.WorkItemCall_Add{Add: &agentv1.AddWorkItems{Queue: "q", Items: []*agentv1.NewWorkItem{
			{Reference: "a", Priority: "high", Data: data}, {Reference: "b"},
		}}}})
		if res.GetError() != "" || len(res.GetAddedIds()) != 2 || len(woken) != 1 {
			t.Fatalf("add = %v, woken %v", res, woken)
		}
		for _, tt := range []struct {
			name  string
			robot string
			call  *agentv1.WorkItemCall
			code  string
		}{
			{"DuplicateReference", "robot-1", &agentv1.WorkItemCall{Op: &agentv1.WorkItemCall_Add{Add: &agentv1.AddWorkItems{Queue: "q", Items: []*agentv1.NewWorkItem{{Reference: "a"}}}}}, "already_exists"},
			{"BadPriority", "robot-1", &agentv1.WorkItemCall{Op: &agentv1.WorkItemCall_Add{Add: &agentv1.AddWorkItems{Queue: "q", Items: []*agentv1.NewWorkItem{{Reference: "c", Priority: "urgent"}}}}}, "invalid_argument"},
			{"UnknownQueue", "robot-1", &agentv1.WorkItemCall{Op: &agentv1.WorkItemCall_Next{Next: &agentv1.NextWorkItem{Queue: "nope"}}}, "not_found"},
			{"OtherRobot", "robot-2", &agentv1.WorkItemCall{Op: &agentv1.WorkItemCall_Next{Next: &agentv1.NextWorkItem{Queue: "q"}}}, "failed_precondition"},
			{"StaleAttempt", "robot-1", &agentv1.WorkItemCall{JobId: job, Attempt: 2, Op: &agentv1.WorkItemCall_Next{Next: &agentv1.NextWorkItem{Queue: "q"}}}, "failed_precondition"},
			{"NoOp", "robot-1", &agentv1.WorkItemCall{}, "invalid_argument"},
			{"CompleteMissing", "robot-1", &agentv1.WorkItemCall{Op: &agentv1.WorkItemCall_Complete{Complete: &agentv1.CompleteWorkItem{ItemId: "nope"}}}, "not_found"},
		} {
			t.Run(tt.name, func(t *testing.T) {
				if res := call(tt.robot, tt.call); res.GetCode() != tt.code || res.GetError() == "" {
					t.Errorf("result = %v, want code %s", res, tt.code)
				}
			})
		}
		next := call("robot-1", &agentv1.WorkItemCall{Op: &agentv1.WorkItemCall_Next{Next: &agentv1.NextWorkItem{Queue: "q"}}})
		item := next.GetItem()
		if next.GetError() != "" || item.GetReference() != "a" || item.GetPriority() != "high" || item.GetData().GetFields()["amount"].GetNumberValue() != 12.5 {
			t.Fatalf("next = %v", next)
		}
		if res := call("robot-1", &agentv1.WorkItemCall{Op: &agentv1.WorkItemCall_Progress{Progress: &agentv1.WorkItemProgress{ItemId: item.GetId(), Progress: "half"}}}); res.GetError() != "" {
			t.Fatalf("progress = %v", res)
		}
		out, _ := structpb.NewStruct(map[string]any{"paid": true})
		if res := call("robot-1", &agentv1.WorkItemCall{Op: &agentv1.WorkItemCall_Complete{Complete: &agentv1.CompleteWorkItem{ItemId: item.GetId(), Output: out}}}); res.GetError() != "" {
			t.Fatalf("complete = %v", res)
		}
		second := call("robot-1", &agentv1.WorkItemCall{Op: &agentv1.WorkItemCall_Next{Next: &agentv1.NextWorkItem{Queue: "q"}}}).GetItem()
		if res := call("robot-1", &agentv1.WorkItemCall{Op: &agentv1.WorkItemCall_Fail{Fail: &agentv1.FailWorkItem{ItemId: second.GetId(), Exception: "application", Reason: "timeout"}}}); res.GetError() != "" {
			t.Fatalf("fail = %v", res)
		}
		retry := call("robot-1", &agentv1.WorkItemCall{Op: &agentv1.WorkItemCall_Next{Next: &agentv1.NextWorkItem{Queue: "q"}}}).GetItem()
		if retry.GetReference() != "b" || retry.GetRetry() != 1 {
			t.Errorf("the retry = %v", retry)
		}
		if empty := call("robot-1", &agentv1.WorkItemCall{Op: &agentv1.WorkItemCall_Next{Next: &agentv1.NextWorkItem{Queue: "q"}}}); empty.GetItem() != nil || empty.GetError() != "" {
			t.Errorf("next of an empty queue = %v, want no item and no error", empty)
		}
		got, _, err := r.GetWorkItem(ctx, item.GetId())
		if err != nil || got.Status != registry.ItemSuccessful || got.Output != `{"paid":true}` || got.Progress != "half" {
			t.Errorf("completed item = %+v, %v", got, err)
		}
	})
}
