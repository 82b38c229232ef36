package robot

import (
	"testing"

	"google.golang.org/protobuf/proto"

	agentv1 "github.com/casarerpa/casare/rpc/casare/agent/v1"
)

// TestReportsAreValidUTF8 checks that a log line or an end whose text is
// not UTF-8 (a program's output in another encoding) can be sent: protobuf
// refuses to encode such a string, and the shipper would try it forever.
func TestReportsAreValidUTF8(t *testing.T) {
	bad := "caf\xe9 \x00ok"
	entry := &agentv1.LogEntry{Line: 1, Level: "info", StepId: "s", Message: bad}
	if _, err := proto.Marshal(entry); err == nil {
		t.Fatal("protobuf encoded invalid UTF-8; the test shows nothing")
	}
	fixed := validEntry(entry)
	if _, err := proto.Marshal(fixed); err != nil {
		t.Fatalf("validEntry left the line unsendable: %v", err)
	}
	if fixed.GetMessage() != "caf\uFFFD \x00ok" || entry.GetMessage() != bad {
		t.Fatalf("validEntry = %q (original now %q), want the bad byte replaced in a copy", fixed.GetMessage(), entry.GetMessage())
	}
	if good := (&agentv1.LogEntry{Message: "fine"}); validEntry(good) != good {
		t.Error("validEntry copied a valid line")
	}
	for _, end := range []*agentv1.AgentMessage{
		{Msg: &agentv1.AgentMessage_JobFail{JobFail: &agentv1.JobFail{JobId: "j", Error: bad}}},
		{Msg: &agentv1.AgentMessage_JobReject{JobReject: &agentv1.JobReject{JobId: "j", Reason: bad}}},
	} {
		if _, err := proto.Marshal(validEnd(end)); err != nil {
			t.Errorf("validEnd left %T unsendable: %v", end.GetMsg(), err)
		}
	}
}
