package api

import (
	"context"
	"strings"
	"testing"

	"connectrpc.com/connect/v2"
	"google.golang.org/protobuf/encoding/protojson"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/server/registry"
)

// TestCheckQueueUses: a workflow naming a queue that is not stored is
// refused before anything is stored, naming the step's field and the
// queue; names computed by expressions are left to the robot.
func TestCheckQueueUses(t *testing.T) {
	ctx := context.Background()
	r, err := registry.Open(ctx, registry.Options{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	if _, err := r.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.CreateWorkQueue(ctx, &registry.WorkQueue{Name: "invoices"}, nil); err != nil {
		t.Fatal(err)
	}
	s := &Services{reg: r}
	wf := &casarev1.Workflow{}
	src := `{"name":"w","steps":[
	  {"id":"a","uses":"queue.next","with":{"queue":"invoices"}},
	  {"id":"b","uses":"queue.add","with":{"queue":"${{ inputs.queue }}"}},
	  {"id":"c","uses":"queue.process","with":{"queue":"orders"}}
	]}`
	if err := protojson.Unmarshal([]byte(src), wf); err != nil {
		t.Fatal(err)
	}
	err = s.checkQueueUses(ctx, wf)
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), `steps[2].with.queue: no work queue named "orders"`) {
		t.Fatalf("checkQueueUses = %v", err)
	}
	if strings.Contains(err.Error(), "invoices") || strings.Contains(err.Error(), "steps[1]") {
		t.Errorf("checkQueueUses = %v; names a queue that exists or an expression", err)
	}
	if err := r.CreateWorkQueue(ctx, &registry.WorkQueue{Name: "orders"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.checkQueueUses(ctx, wf); err != nil {
		t.Errorf("with every queue stored: %v", err)
	}
}
