package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect/v2"
	"connectrpc.com/connect/v2/connecthttp"
	"google.golang.org/protobuf/types/known/structpb"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/rpc/casare/v1/casarev1connect"
)

// tenfold is the expression: 'aaaaaaaaaa' made ten times longer n
// times, 10^(n+1) characters.
func tenfold(n int) string {
	return "'aaaaaaaaaa'" + strings.Repeat(".replace('a','aaaaaaaaaa')", n)
}

func oneStep(id, uses string, with map[string]any) *casarev1.Workflow {
	w, err := structpb.NewStruct(with)
	if err != nil {
		panic(err)
	}
	return &casarev1.Workflow{Steps: []*casarev1.Step{{Id: id, Uses: uses, With: w}}}
}

// TestOversizedResultsEndTheJob sends jobs whose result, log line or error
// would be over the robot protocol's frame to a real robot: each ends with
// a status message that names the limit, and the robot, which has one
// slot, runs the next job.
func TestOversizedResultsEndTheJob(t *testing.T) {
	t.Parallel()
	s := startServer(t, t.TempDir(), jobServerFlags...)
	f := newFleet(t, s)
	f.enrol("limits")
	logs := casarev1connect.NewJobServiceClient(connect.NewClient(connecthttp.NewTransport(http1, s.url()), bearer(s.adminToken())))

	withOutputs := func(wf *casarev1.Workflow, outputs map[string]string) *casarev1.Workflow {
		wf.Outputs = outputs
		return wf
	}
	for _, tc := range []struct {
		name   string
		wf     *casarev1.Workflow
		status casarev1.JobStatus
		says   string // in the status message
	}{
		{
			name:   "IssueOutput",
			wf:     withOutputs(oneStep("a", "log", map[string]any{"message": "x"}), map[string]string{"big": "${{ " + tenfold(6) + " }}"}),
			status: casarev1.JobStatus_JOB_STATUS_FAILED,
			says:   "the value of replace is 9.5 MiB, the limit is 4 MiB",
		},
		{
			name:   "OutputOverLimit",
			wf:     withOutputs(oneStep("a", "log", map[string]any{"message": "x"}), map[string]string{"big": "${{ " + tenfold(5) + " + " + tenfold(5) + " }}"}),
			status: casarev1.JobStatus_JOB_STATUS_FAILED,
			says:   "output big is 1.9 MiB, the limit is 1 MiB",
		},
		{
			name:   "HugeFail",
			wf:     oneStep("f", "fail", map[string]any{"message": "${{ " + tenfold(5) + " }}"}),
			status: casarev1.JobStatus_JOB_STATUS_FAILED,
			says:   "… [cut: ",
		},
		{
			name:   "HugeLog",
			wf:     oneStep("l", "log", map[string]any{"message": "${{ " + tenfold(5) + " }}"}),
			status: casarev1.JobStatus_JOB_STATUS_SUCCEEDED,
		},
		{
			name:   "NextJobRuns",
			wf:     oneStep("a", "log", map[string]any{"message": "after the others"}),
			status: casarev1.JobStatus_JOB_STATUS_SUCCEEDED,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			job := f.submit(tc.wf)
			done := f.wait(job.GetId(), tc.status, 60*time.Second)
			msg := done.GetStatusMessage()
			if !strings.Contains(msg, tc.says) || len(msg) > 17<<10 {
				t.Errorf("status message of %d bytes: %.300q, want it to say %q", len(msg), msg, tc.says)
			}
			if tc.name != "HugeLog" {
				return
			}
			stream, err := logs.StreamJobLogs(context.Background(), &casarev1.StreamJobLogsRequest{JobId: job.GetId()})
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for {
				res, err := stream.Receive()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				for _, l := range res.GetLines() {
					if l.GetStepId() != "l" || l.GetLevel() != "info" {
						continue
					}
					found = true
					if len(l.GetMessage()) > 64<<10 || !strings.HasSuffix(l.GetMessage(), "… [cut: 912.6 KiB of 976.6 KiB]") {
						t.Errorf("log line of %d bytes ending %q", len(l.GetMessage()), l.GetMessage()[max(len(l.GetMessage())-40, 0):])
					}
				}
			}
			if !found {
				t.Error("the log step's line is not in the job's log")
			}
		})
	}
}

// TestHugeInvalidWorkflowAnswersCapped sends workflows as an attacker
// would: each is refused as invalid_argument with an answer, and a log
// line, of bounded size.
func TestHugeInvalidWorkflowAnswersCapped(t *testing.T) {
	t.Parallel()
	s := startServer(t, t.TempDir())
	token := s.adminToken()

	// 3 MB of steps whose expressions all refer to steps that do not exist.
	var steps []string
	for i := range 300 {
		steps = append(steps, fmt.Sprintf(`{"id": "s%d", "uses": "log", "with": {"message": "${{ steps.nope%d.outputs.x + '%s' }}"}}`, i, i, strings.Repeat("x", 10000)))
	}
	badRefs := `{"workflow": {"steps": [` + strings.Join(steps, ",") + `]}}`
	deep := `{"workflow": ` + strings.Repeat(`{"steps": [{"id": "g", "steps": [`, 9000) + `{"id": "a", "uses": "log"}` + strings.Repeat(`]}]}`, 9000) + `}`
	var dup []string
	for g := range 2 {
		var inner []string
		for range 999 {
			inner = append(inner, `{"id": "d", "uses": "log", "with": {"message": "x"}}`)
		}
		dup = append(dup, fmt.Sprintf(`{"id": "g%d", "steps": [%s]}`, g, strings.Join(inner, ",")))
	}
	dups := `{"workflow": {"steps": [` + strings.Join(dup, ",") + `]}}`
	for _, tc := range []struct {
		name string
		body string
		says string
	}{
		{"ThreeMegabytesOfBadReferences", badRefs, "of different expressions in the workflow, the limit is 64 KiB"},
		{"NineThousandLevels", deep, "invalid_argument"},
		{"DuplicateIDs", dups, `workflow.steps[1].steps: step id "d" is used more than once`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			e := callErr(t, s.url(), token, "/casare.v1.JobService/SubmitJob", tc.body)
			t.Logf("%d bytes refused in %s with %d bytes", len(tc.body), time.Since(start), len(e.Message))
			if e.Code != "invalid_argument" || len(e.Message) > 33<<10 {
				t.Fatalf("%s, %d bytes: %.300s", e.Code, len(e.Message), e.Message)
			}
			if tc.says != "invalid_argument" && !strings.Contains(e.Message, tc.says) {
				t.Errorf("message does not say %q: %.500s", tc.says, e.Message)
			}
		})
	}
	for line := range strings.SplitSeq(s.log.String(), "\n") {
		if len(line) > 40<<10 {
			var rec map[string]any
			_ = json.Unmarshal([]byte(line), &rec)
			t.Errorf("a server log line of %d bytes: %.200s", len(line), line)
		}
	}
}
