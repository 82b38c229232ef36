package e2e

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect/v2"
	"connectrpc.com/connect/v2/connecthttp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/rpc/casare/v1/casarev1connect"
)

// TestSecretInputsNeverLeak runs, on a real server and agent, a job with a
// secret input that logs a substring and an upper-cased copy of it, puts
// a value derived from it in its outputs, and a second job that fails
// with a message holding one. Neither the secret nor those transforms
// appear in any API answer (as admin and as viewer, through SubmitJob,
// GetJob and its events, ListJobs, WatchJobs, StreamJobLogs, casarectl),
// in the server's log or in the robot's.
func TestSecretInputsNeverLeak(t *testing.T) {
	t.Parallel()
	const pw = "Sw0rdfish-42x"
	leaks := map[string]string{
		"the secret":               pw,
		"its substring(1)":         pw[1:],
		"its upper case":           strings.ToUpper(pw),
		"its substring, upper":     strings.ToUpper(pw[1:]),
		"its base64":               base64.StdEncoding.EncodeToString([]byte(pw)),
		"its substring, in base64": base64.StdEncoding.EncodeToString([]byte(pw[1:])),
	}
	s := startServer(t, t.TempDir(), jobServerFlags...)
	f := newFleet(t, s)
	f.enrol("keeper")
	waitStatuses(t, s, map[string]string{"keeper": "IDLE"}, 30*time.Second)

	secretWorkflow := func(name string, steps ...*casarev1.Step) *casarev1.Workflow {
		wf := workflow(name, steps...)
		wf.Inputs = map[string]*casarev1.InputSpec{"pw": {Type: "string", Secret: true, Required: true}, "user": {Type: "string"}}
		return wf
	}
	withInputs := func(req *casarev1.SubmitJobRequest) {
		req.Inputs = &structpb.Struct{Fields: map[string]*structpb.Value{"pw": structpb.NewStringValue(pw), "user": structpb.NewStringValue("ann")}}
	}
	okWF := secretWorkflow("login",
		step("tail", "log", map[string]any{"message": "tail ${{ inputs.pw.substring(1) }}"}),
		step("loud", "log", map[string]any{"message": "loud ${{ inputs.pw.upperAscii() }}"}),
		step("keep", "set", map[string]any{"rest": "${{ inputs.pw.substring(1) }}"}),
		step("again", "log", map[string]any{"message": "kept ${{ vars.rest }} for ${{ inputs.user }}"}),
	)
	okWF.Outputs = map[string]string{"rest": "${{ vars.rest }}", "shout": "${{ inputs.pw.upperAscii() }}", "user": "${{ inputs.user }}"}
	failWF := secretWorkflow("refused",
		step("loud", "log", map[string]any{"message": "${{ inputs.pw.substring(1).upperAscii() }}"}),
		step("boom", "fail", map[string]any{"message": "login refused for ${{ inputs.pw.substring(1) }}", "business": true}),
	)

	var answers []string
	record := func(what string, v any) {
		switch v := v.(type) {
		case string:
			answers = append(answers, what+": "+v)
		case []byte:
			answers = append(answers, what+": "+string(v))
		case proto.Message:
			b, err := protojson.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			answers = append(answers, what+": "+string(b))
		}
	}
	ok := f.submit(okWF, withInputs)
	bad := f.submit(failWF, withInputs)
	record("SubmitJob", ok)
	record("SubmitJob", bad)
	done := f.wait(ok.GetId(), casarev1.JobStatus_JOB_STATUS_SUCCEEDED, 60*time.Second)
	if got := done.GetResult().GetFields()["user"].GetStringValue(); got != "ann" {
		t.Errorf("output user = %q, want ann: outputs that hold no secret are shown", got)
	}
	failed := f.wait(bad.GetId(), casarev1.JobStatus_JOB_STATUS_FAILED, 60*time.Second)
	if !strings.Contains(failed.GetStatusMessage(), "login refused for ***") {
		t.Errorf("status message %q, want the derived value masked", failed.GetStatusMessage())
	}

	var viewer struct {
		Token string `json:"token"`
	}
	callOK(t, s.url(), s.adminToken(), createToken, `{"name": "eyes", "role": "ROLE_VIEWER"}`, &viewer)
	ctx := context.Background()
	for role, token := range map[string]string{"admin": s.adminToken(), "viewer": viewer.Token} {
		jobs := casarev1connect.NewJobServiceClient(connect.NewClient(connecthttp.NewTransport(http1, s.url()), bearer(token)))
		for _, id := range []string{ok.GetId(), bad.GetId()} {
			got, err := jobs.GetJob(ctx, &casarev1.GetJobRequest{Id: id})
			if err != nil {
				t.Fatalf("%s: GetJob: %v", role, err)
			}
			record(role+" GetJob", got)
			logs, err := jobs.StreamJobLogs(ctx, &casarev1.StreamJobLogsRequest{JobId: id})
			if err != nil {
				t.Fatal(err)
			}
			lines := 0
			for {
				msg, err := logs.Receive()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatalf("%s: StreamJobLogs: %v", role, err)
				}
				lines += len(msg.GetLines())
				record(role+" StreamJobLogs", msg)
			}
			logs.Close()
			if lines == 0 {
				t.Errorf("%s: job %s has no log lines to check", role, id)
			}
		}
		list, err := jobs.ListJobs(ctx, &casarev1.ListJobsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		record(role+" ListJobs", list)
		watchCtx, stop := context.WithTimeout(ctx, 30*time.Second)
		watch, err := jobs.WatchJobs(watchCtx, &casarev1.WatchJobsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for {
			msg, err := watch.Receive()
			if err != nil {
				t.Fatalf("%s: WatchJobs: %v", role, err)
			}
			record(role+" WatchJobs", msg)
			if msg.GetType() == casarev1.WatchEventType_WATCH_EVENT_TYPE_SYNCED {
				break
			}
		}
		watch.Close()
		stop()
	}
	record("casarectl jobs get", ctl(t, s, "jobs", "get", ok.GetId(), "-o", "json"))
	record("casarectl jobs logs", ctl(t, s, "jobs", "logs", bad.GetId()))
	record("server log", s.log.String())
	record("robot log", f.agents["keeper"].log.String())

	for _, text := range answers {
		what, _, _ := strings.Cut(text, ": ")
		for name, leak := range leaks {
			if strings.Contains(text, leak) {
				t.Errorf("%s shows %s (%q):\n%s", what, name, leak, text)
			}
		}
	}
}
