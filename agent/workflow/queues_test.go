package workflow

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

func TestQueueUses(t *testing.T) {
	wf := &casarev1.Workflow{}
	src := `{"name":"w","steps":[
	  {"id":"a","uses":"queue.add","with":{"queue":"invoices","reference":"r"}},
	  {"id":"b","uses":"queue.next","with":{"queue":"${{ inputs.queue }}"}},
	  {"id":"c","uses":"queue.process","with":{"queue":"orders"},"steps":[
	    {"id":"d","uses":"queue.complete","with":{"queue":"ignored","item":"x"}},
	    {"id":"e","uses":"log","with":{"queue":"not-a-queue-step"}}
	  ],"on_error":[{"id":"f","uses":"queue.add","with":{"queue":"errors"}}]},
	  {"id":"g","uses":"queue.next","with":{"queue":3}}
	],"on_error":[{"id":"h","uses":"queue.next","with":{"queue":"late"}}]}`
	if err := protojson.Unmarshal([]byte(src), wf); err != nil {
		t.Fatal(err)
	}
	want := []QueueUse{
		{Path: "steps[0].with.queue", Name: "invoices"},
		{Path: "steps[2].with.queue", Name: "orders"},
		{Path: "steps[2].on_error[0].with.queue", Name: "errors"},
		{Path: "on_error[0].with.queue", Name: "late"},
	}
	if diff := cmp.Diff(want, QueueUses(wf)); diff != "" {
		t.Errorf("QueueUses (-want +got):\n%s", diff)
	}
}
