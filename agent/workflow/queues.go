package workflow

import (
	"fmt"
	"strings"

	"google.golang.org/protobuf/types/known/structpb"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

// QueueSteps are the steps that name a work queue in with.queue.
var QueueSteps = []string{"queue.add", "queue.next", "queue.process"}

// QueueUse is a step that names a work queue.
type QueueUse struct {
	// Path is the step's queue field as validation problems name it
	// (steps[2].with.queue).
	Path string
	// Name is the queue's name as written.
	Name string
}

// QueueUses lists the steps (nested ones and error handlers too) that name
// a work queue by a literal with.queue, in the order they appear. A name
// computed by an expression is known only when the step runs, so it is
// left out.
func QueueUses(wf *casarev1.Workflow) []QueueUse {
	var uses []QueueUse
	var walk func(path string, steps []*casarev1.Step)
	walk = func(path string, steps []*casarev1.Step) {
		for i, s := range steps {
			p := fmt.Sprintf("%s[%d]", path, i)
			if isQueueStep(s.GetUses()) {
				if v, ok := s.GetWith().GetFields()["queue"]; ok {
					if name, ok := v.GetKind().(*structpb.Value_StringValue); ok && !strings.Contains(name.StringValue, "${{") {
						uses = append(uses, QueueUse{Path: p + ".with.queue", Name: name.StringValue})
					}
				}
			}
			walk(p+".steps", s.GetSteps())
			walk(p+".on_error", s.GetOnError())
		}
	}
	walk("steps", wf.GetSteps())
	walk("on_error", wf.GetOnError())
	return uses
}

func isQueueStep(uses string) bool {
	for _, q := range QueueSteps {
		if uses == q {
			return true
		}
	}
	return false
}
