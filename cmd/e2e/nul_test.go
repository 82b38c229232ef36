package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/server/registry/registrytest"
)

// TestNULByteRefusedAtTheAPIAndSanitisedFromRobots covers what the
// database cannot hold, on both backends: a NUL byte in a request is
// refused naming the field and stores nothing, and a NUL in what a robot
// sends (a log line, an error) is stored as U+FFFD while the job ends as it
// would have.
func TestNULByteRefusedAtTheAPIAndSanitisedFromRobots(t *testing.T) {
	t.Parallel()
	t.Run("embedded", func(t *testing.T) {
		t.Parallel()
		nulByte(t, startServer(t, t.TempDir(), jobServerFlags...))
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		nulByte(t, startServer(t, t.TempDir(), append(jobServerFlags, "--database-url", registrytest.DatabaseURL(t))...))
	})
}

func nulByte(t *testing.T, s *serverProc) {
	token := s.adminToken()
	wf := `{"name": "hello", "steps": [{"id": "greet", "uses": "log", "with": {"message": "hello"}}]}`
	withStep := func(field string) string {
		return `{"workflow": {"steps": [{"id": "greet", "uses": "log", ` + field + `}]}}`
	}
	for _, tc := range []struct {
		name, procedure, body, field string
	}{
		{"IdempotencyKey", submitJob, `{"workflow": ` + wf + `, "idempotencyKey": "k\u0000x"}`, "idempotency_key"},
		{"RequiredLabelValue", submitJob, `{"workflow": ` + wf + `, "requires": {"labels": {"app": "s\u0000p"}}}`, "requires.labels"},
		{"RequiredLabelKey", submitJob, `{"workflow": ` + wf + `, "requires": {"labels": {"a\u0000": "sap"}}}`, "requires.labels"},
		{"RequiredCapability", submitJob, `{"workflow": ` + wf + `, "requires": {"capabilities": ["brow\u0000ser"]}}`, "requires.capabilities[0]"},
		{"WorkflowName", submitJob, `{"workflowName": "hel\u0000lo"}`, "workflow_name"},
		{"StepName", submitJob, withStep(`"name": "gr\u0000eet"`), "workflow.steps[0].name"},
		{"StepIf", submitJob, withStep(`"if": "true\u0000"`), "workflow.steps[0].if"},
		{"WorkflowDescription", putWorkflow, `{"workflow": {"name": "x", "description": "d\u0000", "steps": [{"id": "a", "uses": "log"}]}}`, "workflow.description"},
		{"WorkflowOutput", putWorkflow, `{"workflow": {"name": "x", "outputs": {"o": "\u0000"}, "steps": [{"id": "a", "uses": "log"}]}}`, "workflow.outputs"},
		{"GetJobID", getJob, `{"id": "\u0000"}`, "id"},
		{"ListJobsRobot", listJobs, `{"robotId": "r\u0000"}`, "robot_id"},
		{"CancelReason", cancelJob, `{"id": "j", "reason": "no\u0000"}`, "reason"},
		{"TokenName", createToken, `{"name": "ci\u0000", "role": "ROLE_VIEWER"}`, "name"},
		{"RevokeToken", revokeToken, `{"id": "t\u0000"}`, "id"},
		{"AuditActor", listAudit, `{"actor": "a\u0000"}`, "actor"},
		{"EnrollmentLabel", "/casare.v1.RobotService/CreateEnrollmentToken", `{"name": "r1", "labels": {"site": "h\u0000q"}}`, "labels"},
		{"RobotID", "/casare.v1.RobotService/GetRobot", `{"id": "r\u0000"}`, "id"},
		// Not a NUL, but bytes that are no UTF-8 cannot reach the database
		// either: decoding refuses them.
		{"InvalidUTF8", submitJob, "{\"workflow\": " + wf + ", \"idempotencyKey\": \"k\xff\xfex\"}", "invalid UTF-8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := callErr(t, s.url(), token, tc.procedure, tc.body)
			if e.Code != "invalid_argument" || !strings.Contains(e.Message, tc.field) {
				t.Fatalf("%s %s: %+v, want invalid_argument naming %s", tc.procedure, tc.body, e, tc.field)
			}
		})
	}
	// Nothing of the refused requests was stored.
	if n := countJobs(t, s, token); n != 0 {
		t.Fatalf("%d jobs after refused submits, want 0", n)
	}
	var wfs struct {
		Workflows []json.RawMessage `json:"workflows"`
	}
	callOK(t, s.url(), token, "/casare.v1.WorkflowService/ListWorkflows", `{}`, &wfs)
	var tokens struct {
		Tokens []json.RawMessage `json:"tokens"`
	}
	callOK(t, s.url(), token, "/casare.v1.AdminService/ListTokens", `{}`, &tokens)
	if len(wfs.Workflows) != 0 || len(tokens.Tokens) != 1 {
		t.Fatalf("after refused requests: %d workflows, %d tokens; want 0 and the admin's 1", len(wfs.Workflows), len(tokens.Tokens))
	}

	// A robot's text: the expressions make the NUL on the robot, past the
	// API. An input may hold one: it is stored as JSON, where it is the
	// escape \u0000.
	f := newFleet(t, s)
	f.enrol("nul-robot")
	logNUL := step("nul", "log", map[string]any{"message": `${{ 'a\u0000b' }}`})
	echo := step("echo", "log", map[string]any{"message": "input ${{ inputs.note }}"})
	ok := workflow("nul-log", logNUL, echo)
	ok.Outputs = map[string]string{"out": `${{ 'x\u0000y' }}`}
	inputs := mustStruct(map[string]any{"note": "n\x00o"})
	job := f.submit(ok, func(r *casarev1.SubmitJobRequest) { r.Inputs = inputs })
	done := f.wait(job.GetId(), casarev1.JobStatus_JOB_STATUS_SUCCEEDED, time.Minute)
	if got := done.GetResult().GetFields()["out"].GetStringValue(); got != "x\x00y" {
		t.Errorf("result out = %q, want the NUL kept (the result is JSON)", got)
	}
	if got := done.GetInputs().GetFields()["note"].GetStringValue(); got != "n\x00o" {
		t.Errorf("input note = %q, want it kept", got)
	}
	if got, want := jobLog(t, f, job.GetId()), []string{"a\uFFFDb", "input n\uFFFDo"}; strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("log = %q, want %q", got, want)
	}

	failing := f.submit(workflow("nul-fail", logNUL, step("boom", "fail", map[string]any{"message": `${{ 'bad\u0000thing' }}`})))
	failed := f.wait(failing.GetId(), casarev1.JobStatus_JOB_STATUS_FAILED, time.Minute)
	if !strings.Contains(failed.GetStatusMessage(), "bad\uFFFDthing") {
		t.Errorf("status message = %q, want the error with U+FFFD for the NUL", failed.GetStatusMessage())
	}
	if got := jobLog(t, f, failing.GetId()); len(got) == 0 || got[0] != "a\uFFFDb" {
		t.Errorf("log of the failed job = %q, want its line kept", got)
	}
}

// jobLog returns the messages of a job's log at level info, in order: the
// lines its workflow wrote, without the engine's own.
func jobLog(t *testing.T, f *fleet, id string) []string {
	t.Helper()
	stream, err := f.jobs.StreamJobLogs(context.Background(), &casarev1.StreamJobLogsRequest{JobId: id})
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	var out []string
	for {
		msg, err := stream.Receive()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("stream the log of job %s: %v", id, err)
		}
		for _, l := range msg.GetLines() {
			if l.GetLevel() == "info" {
				out = append(out, l.GetMessage())
			}
		}
	}
}
