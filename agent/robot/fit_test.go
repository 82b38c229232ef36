package robot

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	agentv1 "github.com/casarerpa/casare/rpc/casare/agent/v1"
)

func TestFitKeepsEveryMessageInOneFrame(t *testing.T) {
	huge := strings.Repeat("a", agentv1.MaxFrameSize+1)
	big, err := structpb.NewStruct(map[string]any{"big": huge})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		msg  *agentv1.AgentMessage
		want string // in the text of the fitted message
	}{
		{"Complete", &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_JobComplete{JobComplete: &agentv1.JobComplete{JobId: "j", Attempt: 2, Outputs: big}}}, "the job's result cannot be sent: its report is 4.0 MiB, the limit is 4 MiB"},
		{"Fail", &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_JobFail{JobFail: &agentv1.JobFail{JobId: "j", Error: huge}}}, "… [cut: "},
		{"Reject", &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_JobReject{JobReject: &agentv1.JobReject{JobId: "j", Reason: huge}}}, "… [cut: "},
		{"Progress", &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_JobProgress{JobProgress: &agentv1.JobProgress{JobId: "j", StepId: huge, Message: huge}}}, "… [cut: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := fit(tc.msg)
			if size := proto.Size(got); size > agentv1.MaxFrameSize/4 {
				t.Fatalf("fitted message is %d bytes", size)
			}
			var text string
			switch m := got.GetMsg().(type) {
			case *agentv1.AgentMessage_JobFail:
				text = m.JobFail.GetError()
				if tc.name == "Complete" && (m.JobFail.GetJobId() != "j" || m.JobFail.GetAttempt() != 2 || !m.JobFail.GetBusiness()) {
					t.Errorf("job_fail = %v", m.JobFail)
				}
			case *agentv1.AgentMessage_JobReject:
				text = m.JobReject.GetReason()
			case *agentv1.AgentMessage_JobProgress:
				text = m.JobProgress.GetStepId() + m.JobProgress.GetMessage()
			default:
				t.Fatalf("fitted into a %T", m)
			}
			if !strings.Contains(text, tc.want) {
				t.Errorf("text %q does not say %q", text[:min(len(text), 200)], tc.want)
			}
		})
	}
	line := fitLine(&agentv1.LogEntry{Level: huge, StepId: huge, Message: huge})
	if proto.Size(line) > agentv1.MaxFrameSize/4 {
		t.Errorf("log line of %d bytes", proto.Size(line))
	}
	small := &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_JobFail{JobFail: &agentv1.JobFail{JobId: "j", Error: "boom"}}}
	if fit(small) != small {
		t.Error("a message that fits was changed")
	}
}
