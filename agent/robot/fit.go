package robot

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/casarerpa/casare/agent/engine"
	"github.com/casarerpa/casare/agent/workflow/expr"
	agentv1 "github.com/casarerpa/casare/rpc/casare/agent/v1"
)

// Limits of the short texts the robot sends. The engine already holds what
// a workflow makes to its limits; these hold the robot's own messages to
// them as well, whatever made the text, because a message that cannot be
// sent leaves its job running for good.
const (
	maxStepID = 256
	maxLevel  = 16
)

// fit returns msg as it can be sent in one frame: texts cut to the
// engine's limits with a marker, and a job_complete whose result still
// does not fit turned into a job_fail that names the limit. Other
// messages are returned as they are; the caller's write refuses one that
// is still too large.
func fit(msg *agentv1.AgentMessage) *agentv1.AgentMessage {
	switch m := msg.GetMsg().(type) {
	case *agentv1.AgentMessage_JobProgress:
		p := m.JobProgress
		if len(p.GetStepId()) > maxStepID || len(p.GetMessage()) > engine.MaxProgressMessage {
			p = proto.CloneOf(p)
			p.StepId = expr.Truncate(p.GetStepId(), maxStepID)
			p.Message = expr.Truncate(p.GetMessage(), engine.MaxProgressMessage)
			return &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_JobProgress{JobProgress: p}}
		}
	case *agentv1.AgentMessage_JobReject:
		if r := m.JobReject; len(r.GetReason()) > engine.MaxErrorBytes {
			r = proto.CloneOf(r)
			r.Reason = expr.Truncate(r.GetReason(), engine.MaxErrorBytes)
			return &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_JobReject{JobReject: r}}
		}
	case *agentv1.AgentMessage_JobFail:
		if f := m.JobFail; len(f.GetError()) > engine.MaxErrorBytes {
			f = proto.CloneOf(f)
			f.Error = expr.Truncate(f.GetError(), engine.MaxErrorBytes)
			return &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_JobFail{JobFail: f}}
		}
	case *agentv1.AgentMessage_JobComplete:
		c := m.JobComplete
		if size := proto.Size(msg); size > agentv1.MaxFrameSize {
			return &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_JobFail{JobFail: &agentv1.JobFail{
				JobId: c.GetJobId(), Attempt: c.GetAttempt(), LogLines: c.GetLogLines(), Business: true,
				Error: fmt.Sprintf("the job's result cannot be sent: %v", &expr.TooLargeError{
					What: "its report", Size: size, Limit: agentv1.MaxFrameSize,
				}),
			}}}
		}
	}
	return msg
}

// fitLine returns a log line cut to the limits, so that no line can be too
// large for its frame.
func fitLine(e *agentv1.LogEntry) *agentv1.LogEntry {
	e.Level = expr.Truncate(e.GetLevel(), maxLevel)
	e.StepId = expr.Truncate(e.GetStepId(), maxStepID)
	e.Message = expr.Truncate(e.GetMessage(), engine.MaxLogLine)
	return e
}
