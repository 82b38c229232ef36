package engine

import (
	"encoding/json"
	"fmt"

	"github.com/casarerpa/casare/agent/step/core"
	"github.com/casarerpa/casare/agent/workflow/expr"
)

// Limits on what a run makes, each well under the robot protocol's 4 MiB
// frame so that a job's end, its log lines and its progress always reach
// the control plane: a value that cannot be sent would leave the job
// running for good.
const (
	// MaxOutputBytes bounds one workflow output, as JSON.
	MaxOutputBytes = 1 << 20
	// MaxResultBytes bounds all of a workflow's outputs together.
	MaxResultBytes = 2 << 20
	// MaxLogLine bounds one log line; a longer one is cut with a marker.
	MaxLogLine = core.MaxLogMessage
	// MaxErrorBytes bounds a job's error message; a longer one is cut
	// with a marker.
	MaxErrorBytes = core.MaxFailMessage
	// MaxProgressMessage bounds the message of a progress report.
	MaxProgressMessage = 1 << 10
)

// checkOutputs holds a workflow's outputs to MaxOutputBytes each and
// MaxResultBytes together.
func checkOutputs(outputs map[string]any, names []string) error {
	total := 0
	for _, name := range names {
		b, err := json.Marshal(outputs[name])
		if err != nil {
			return &Error{Message: fmt.Sprintf("output %s cannot be sent: %v", name, err), Business: true}
		}
		if len(b) > MaxOutputBytes {
			tl := &expr.TooLargeError{What: "output " + name, Size: len(b), Limit: MaxOutputBytes}
			return &Error{Message: tl.Error(), Business: true}
		}
		total += len(b)
	}
	if total > MaxResultBytes {
		tl := &expr.TooLargeError{What: "the result (all outputs together)", Size: total, Limit: MaxResultBytes}
		return &Error{Message: tl.Error(), Business: true}
	}
	return nil
}

// capError cuts the message of a failure to MaxErrorBytes.
func capError(err error) error {
	if err == nil {
		return nil
	}
	if ee, ok := err.(*Error); ok {
		if len(ee.Message) <= MaxErrorBytes {
			return ee
		}
		cut := *ee
		cut.Message = expr.Truncate(ee.Message, MaxErrorBytes)
		return &cut
	}
	if msg := err.Error(); len(msg) > MaxErrorBytes {
		return &Error{Message: expr.Truncate(msg, MaxErrorBytes)}
	}
	return err
}

// cappedReporter cuts what a run says to the limits before it goes on.
type cappedReporter struct{ r Reporter }

func (c cappedReporter) Log(level, stepID, message string) {
	c.r.Log(level, stepID, expr.Truncate(message, MaxLogLine))
}

func (c cappedReporter) Progress(stepID string, percent int32, message string) {
	c.r.Progress(stepID, percent, expr.Truncate(message, MaxProgressMessage))
}
