package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/casarerpa/casare/server/queue/queuetest"
	"github.com/casarerpa/casare/server/registry/registrytest"
)

const (
	submitJob   = "/casare.v1.JobService/SubmitJob"
	getJob      = "/casare.v1.JobService/GetJob"
	listJobs    = "/casare.v1.JobService/ListJobs"
	cancelJob   = "/casare.v1.JobService/CancelJob"
	putWorkflow = "/casare.v1.WorkflowService/PutWorkflow"
	createToken = "/casare.v1.AdminService/CreateToken"
	revokeToken = "/casare.v1.AdminService/RevokeToken"
	listAudit   = "/casare.v1.AdminService/ListAuditEvents"
	whoAmI      = "/casare.v1.AdminService/WhoAmI"
)

// Just the fields the tests read, in the API's JSON names.
type job struct {
	ID              string `json:"id"`
	WorkflowName    string `json:"workflowName"`
	WorkflowVersion int    `json:"workflowVersion"`
	Status          string `json:"status"`
	StatusMessage   string `json:"statusMessage"`
	Priority        string `json:"priority"`
	Attempt         int    `json:"attempt"`
	MaxAttempts     int    `json:"maxAttempts"`
	CreatedAt       string `json:"createdAt"`
	FinishedAt      string `json:"finishedAt"`
}

type jobEvent struct {
	FromStatus string `json:"fromStatus"`
	ToStatus   string `json:"toStatus"`
	Attempt    int    `json:"attempt"`
	Reason     string `json:"reason"`
	Actor      string `json:"actor"`
}

type submitResponse struct {
	Job      job  `json:"job"`
	Existing bool `json:"existing"`
}

type getResponse struct {
	Job    job        `json:"job"`
	Events []jobEvent `json:"events"`
}

type listResponse struct {
	Jobs          []job  `json:"jobs"`
	NextPageToken string `json:"nextPageToken"`
}

const helloWorkflow = `{"name": "hello", "steps": [{"id": "greet", "uses": "log", "with": {"message": "hello"}}]}`

func countJobs(t *testing.T, s *serverProc, token string) int {
	t.Helper()
	var list listResponse
	callOK(t, s.url(), token, listJobs, `{"pageSize": 1000}`, &list)
	return len(list.Jobs)
}

// TestJobLifecycleOverConnectJSON runs on the embedded default and on
// PostgreSQL and Redis: everything above the storage is the same code.
func TestJobLifecycleOverConnectJSON(t *testing.T) {
	t.Parallel()
	t.Run("embedded", func(t *testing.T) {
		t.Parallel()
		jobLifecycle(t, startServer(t, t.TempDir()))
	})
	t.Run("postgres+redis", func(t *testing.T) {
		t.Parallel()
		s := startServer(t, t.TempDir(), "--database-url", registrytest.DatabaseURL(t), "--redis-url", queuetest.RedisURL(t, 14))
		jobLifecycle(t, s)
		s.restart()
		if n := countJobs(t, s, s.adminToken()); n != 2 {
			t.Fatalf("%d jobs after a restart on PostgreSQL, want 2", n)
		}
	})
}

func jobLifecycle(t *testing.T, s *serverProc) {
	token := s.adminToken()

	var sub submitResponse
	callOK(t, s.url(), token, submitJob, `{"workflow": `+helloWorkflow+`, "inputs": {"n": 1}, "priority": "JOB_PRIORITY_HIGH"}`, &sub)
	if sub.Job.Status != "JOB_STATUS_PENDING" || sub.Job.Attempt != 1 || sub.Job.MaxAttempts != 3 ||
		sub.Job.Priority != "JOB_PRIORITY_HIGH" || sub.Job.WorkflowName != "hello" || sub.Job.CreatedAt == "" {
		t.Fatalf("submitted job = %+v", sub.Job)
	}

	var got getResponse
	callOK(t, s.url(), token, getJob, `{"id": "`+sub.Job.ID+`"}`, &got)
	if got.Job.ID != sub.Job.ID || len(got.Events) != 1 || got.Events[0].ToStatus != "JOB_STATUS_PENDING" || got.Events[0].Actor == "" {
		t.Fatalf("GetJob = %+v", got)
	}

	// A second job, so the filters have something to leave out.
	var other submitResponse
	callOK(t, s.url(), token, submitJob, `{"workflow": {"name": "other", "steps": [{"id": "a", "uses": "log", "with": {"message": "other"}}]}}`, &other)

	var list listResponse
	callOK(t, s.url(), token, listJobs, `{"workflowName": "hello"}`, &list)
	if len(list.Jobs) != 1 || list.Jobs[0].ID != sub.Job.ID {
		t.Fatalf("ListJobs(workflow hello) = %+v", list.Jobs)
	}
	callOK(t, s.url(), token, listJobs, `{}`, &list)
	if len(list.Jobs) != 2 || list.Jobs[0].ID != other.Job.ID {
		t.Fatalf("ListJobs() = %+v, want newest first", list.Jobs)
	}
	callOK(t, s.url(), token, listJobs, `{"pageSize": 1}`, &list)
	if len(list.Jobs) != 1 || list.NextPageToken == "" {
		t.Fatalf("ListJobs(pageSize 1) = %+v", list)
	}
	callOK(t, s.url(), token, listJobs, `{"pageSize": 1, "pageToken": "`+list.NextPageToken+`"}`, &list)
	if len(list.Jobs) != 1 || list.Jobs[0].ID != sub.Job.ID || list.NextPageToken != "" {
		t.Fatalf("ListJobs(second page) = %+v", list)
	}

	var cancelled struct{ Job job }
	callOK(t, s.url(), token, cancelJob, `{"id": "`+sub.Job.ID+`", "reason": "not needed"}`, &cancelled)
	if cancelled.Job.Status != "JOB_STATUS_CANCELLED" || cancelled.Job.FinishedAt == "" || cancelled.Job.StatusMessage != "not needed" {
		t.Fatalf("CancelJob = %+v", cancelled.Job)
	}
	callOK(t, s.url(), token, listJobs, `{"statuses": ["JOB_STATUS_CANCELLED"]}`, &list)
	if len(list.Jobs) != 1 || list.Jobs[0].ID != sub.Job.ID {
		t.Fatalf("ListJobs(cancelled) = %+v", list.Jobs)
	}
	callOK(t, s.url(), token, getJob, `{"id": "`+sub.Job.ID+`"}`, &got)
	if len(got.Events) != 2 || got.Events[1].FromStatus != "JOB_STATUS_PENDING" || got.Events[1].ToStatus != "JOB_STATUS_CANCELLED" || got.Events[1].Reason != "not needed" {
		t.Fatalf("events after cancel = %+v", got.Events)
	}

	if e := callErr(t, s.url(), token, cancelJob, `{"id": "`+sub.Job.ID+`"}`); e.Code != "failed_precondition" || !strings.Contains(e.Message, "CANCELLED") {
		t.Errorf("cancelling twice: %+v", e)
	}
	if e := callErr(t, s.url(), token, getJob, `{"id": "no-such-job"}`); e.Code != "not_found" {
		t.Errorf("GetJob(unknown): %+v", e)
	}
	if e := callErr(t, s.url(), token, cancelJob, `{"id": "no-such-job"}`); e.Code != "not_found" {
		t.Errorf("CancelJob(unknown): %+v", e)
	}
}

func TestIdempotencyKeyReturnsTheSameJob(t *testing.T) {
	t.Parallel()
	s := startServer(t, t.TempDir())
	token := s.adminToken()
	body := `{"workflow": ` + helloWorkflow + `, "idempotencyKey": "invoice-2026-11"}`
	var first, second submitResponse
	callOK(t, s.url(), token, submitJob, body, &first)
	callOK(t, s.url(), token, submitJob, body, &second)
	if first.Existing || !second.Existing || first.Job.ID != second.Job.ID {
		t.Fatalf("first = %+v, second = %+v; want the same job, the second marked existing", first, second)
	}
	if n := countJobs(t, s, token); n != 1 {
		t.Fatalf("%d jobs after two submits with one key, want 1", n)
	}
}

func TestWorkflowVersionsAndSubmitByName(t *testing.T) {
	t.Parallel()
	s := startServer(t, t.TempDir())
	token := s.adminToken()
	type putResponse struct {
		Workflow struct {
			Name    string `json:"name"`
			Version int    `json:"version"`
		} `json:"workflow"`
		Created bool `json:"created"`
	}
	var put putResponse
	callOK(t, s.url(), token, putWorkflow, `{"workflow": `+helloWorkflow+`}`, &put)
	if put.Workflow.Version != 1 || !put.Created {
		t.Fatalf("first put = %+v", put)
	}
	callOK(t, s.url(), token, putWorkflow, `{"workflow": `+helloWorkflow+`}`, &put)
	if put.Workflow.Version != 1 || put.Created {
		t.Fatalf("unchanged put = %+v, want version 1 not created", put)
	}
	changed := strings.Replace(helloWorkflow, `"hello"}`, `"hello again"}`, 1)
	callOK(t, s.url(), token, putWorkflow, `{"workflow": `+changed+`}`, &put)
	if put.Workflow.Version != 2 || !put.Created {
		t.Fatalf("changed put = %+v, want version 2", put)
	}

	var sub submitResponse
	callOK(t, s.url(), token, submitJob, `{"workflowName": "hello"}`, &sub)
	if sub.Job.WorkflowName != "hello" || sub.Job.WorkflowVersion != 2 {
		t.Fatalf("submit by name = %+v, want the latest version 2", sub.Job)
	}
	callOK(t, s.url(), token, submitJob, `{"workflowName": "hello", "workflowVersion": 1}`, &sub)
	if sub.Job.WorkflowVersion != 1 {
		t.Fatalf("submit version 1 = %+v", sub.Job)
	}
	if e := callErr(t, s.url(), token, submitJob, `{"workflowName": "hello", "workflowVersion": 9}`); e.Code != "not_found" || !strings.Contains(e.Message, "version 9") {
		t.Errorf("submit of a missing version: %+v", e)
	}
	if e := callErr(t, s.url(), token, putWorkflow, `{"workflow": {"steps": [{"id": "a", "uses": "log"}]}}`); e.Code != "invalid_argument" || !strings.Contains(e.Message, "name") {
		t.Errorf("put without a name: %+v", e)
	}
}

func TestBadInputIsRefusedAndWritesNothing(t *testing.T) {
	t.Parallel()
	s := startServer(t, t.TempDir(), "--max-request-bytes", "65536")
	token := s.adminToken()
	tests := []struct {
		name     string
		body     string
		code     string
		contains string
	}{
		{"MalformedJSON", `{"workflow": {`, "invalid_argument", "unmarshal"},
		{"UnknownField", `{"workflow": ` + helloWorkflow + `, "priorty": "JOB_PRIORITY_HIGH"}`, "invalid_argument", "priorty"},
		{"UnknownStepField", `{"workflow": {"steps": [{"id": "a", "uses": "log", "wiht": {}}]}}`, "invalid_argument", "wiht"},
		{"NoSteps", `{"workflow": {"name": "empty", "steps": []}}`, "invalid_argument", "workflow.steps"},
		{"NoWorkflow", `{"inputs": {"a": 1}}`, "invalid_argument", "source"},
		{"DuplicateStepIDs", `{"workflow": {"steps": [{"id": "a", "uses": "log"}, {"id": "a", "uses": "log"}]}}`, "invalid_argument", `step id "a" is used more than once`},
		{"DuplicateNestedStepIDs", `{"workflow": {"steps": [{"id": "g", "steps": [{"id": "b", "uses": "log"}, {"id": "b", "uses": "set"}]}]}}`, "invalid_argument", `workflow.steps[0].steps`},
		{"StepWithoutAction", `{"workflow": {"steps": [{"id": "a"}]}}`, "invalid_argument", "uses or nested steps"},
		{"BadStepID", `{"workflow": {"steps": [{"id": "not an id", "uses": "log"}]}}`, "invalid_argument", "workflow.steps[0].id"},
		{"UnknownPriorityName", `{"workflow": ` + helloWorkflow + `, "priority": "JOB_PRIORITY_URGENT"}`, "invalid_argument", "JOB_PRIORITY_URGENT"},
		{"UnknownPriorityNumber", `{"workflow": ` + helloWorkflow + `, "priority": 9}`, "invalid_argument", "priority"},
		{"NegativeMaxAttempts", `{"workflow": ` + helloWorkflow + `, "maxAttempts": -1}`, "invalid_argument", "max_attempts"},
		{"MissingStoredWorkflow", `{"workflowName": "nope"}`, "not_found", `"nope"`},
		{"VersionWithoutName", `{"workflow": ` + helloWorkflow + `, "workflowVersion": 2}`, "invalid_argument", "workflow_version"},
		{"MissingRequiredInput", `{"workflow": {"inputs": {"url": {"type": "string", "required": true}}, "steps": [{"id": "a", "uses": "log"}]}}`, "invalid_argument", "inputs.url: required"},
		{"WrongInputType", `{"workflow": {"inputs": {"n": {"type": "integer"}}, "steps": [{"id": "a", "uses": "log"}]}, "inputs": {"n": "x"}}`, "invalid_argument", "inputs.n"},
		{"OversizedBody", `{"workflow": {"name": "big", "description": "` + strings.Repeat("x", 70_000) + `", "steps": [{"id": "a", "uses": "log"}]}}`, "resource_exhausted", "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := callErr(t, s.url(), token, submitJob, tt.body)
			if e.Code != tt.code || !strings.Contains(e.Message, tt.contains) {
				t.Errorf("got %s %q, want %s containing %q", e.Code, e.Message, tt.code, tt.contains)
			}
		})
	}
	if n := countJobs(t, s, token); n != 0 {
		t.Fatalf("%d jobs after only bad submits, want 0", n)
	}
}

func TestAuthentication(t *testing.T) {
	t.Parallel()
	s := startServer(t, t.TempDir())
	admin := s.adminToken()

	status, _ := call(t, s.url(), "", listJobs, `{}`)
	if status != http.StatusUnauthorized {
		t.Errorf("no token: HTTP %d, want 401", status)
	}
	if e := callErr(t, s.url(), "", listJobs, `{}`); e.Code != "unauthenticated" || !strings.Contains(e.Message, "Bearer") {
		t.Errorf("no token: %+v", e)
	}
	if e := callErr(t, s.url(), "csr_notarealtoken", listJobs, `{}`); e.Code != "unauthenticated" {
		t.Errorf("garbage token: %+v", e)
	}

	var viewer struct {
		Token string `json:"token"`
		Info  struct {
			ID string `json:"id"`
		} `json:"info"`
	}
	callOK(t, s.url(), admin, createToken, `{"name": "dashboard", "role": "ROLE_VIEWER"}`, &viewer)
	var who struct {
		Name string `json:"name"`
		Role string `json:"role"`
	}
	callOK(t, s.url(), viewer.Token, whoAmI, `{}`, &who)
	if who.Name != "dashboard" || who.Role != "ROLE_VIEWER" {
		t.Errorf("WhoAmI(viewer) = %+v", who)
	}
	callOK(t, s.url(), viewer.Token, listJobs, `{}`, nil)
	status, _ = call(t, s.url(), viewer.Token, submitJob, `{"workflow": `+helloWorkflow+`}`)
	if status != http.StatusForbidden {
		t.Errorf("viewer submitting: HTTP %d, want 403", status)
	}
	if e := callErr(t, s.url(), viewer.Token, submitJob, `{"workflow": `+helloWorkflow+`}`); e.Code != "permission_denied" || !strings.Contains(e.Message, "operator") {
		t.Errorf("viewer submitting: %+v", e)
	}
	if e := callErr(t, s.url(), viewer.Token, createToken, `{"name": "x", "role": "ROLE_ADMIN"}`); e.Code != "permission_denied" {
		t.Errorf("viewer creating a token: %+v", e)
	}
	if n := countJobs(t, s, admin); n != 0 {
		t.Fatalf("%d jobs after a denied submit, want 0", n)
	}

	var operator struct {
		Token string `json:"token"`
	}
	callOK(t, s.url(), admin, createToken, `{"name": "ci", "role": "ROLE_OPERATOR"}`, &operator)
	var sub submitResponse
	callOK(t, s.url(), operator.Token, submitJob, `{"workflow": `+helloWorkflow+`}`, &sub)
	if e := callErr(t, s.url(), operator.Token, listAudit, `{}`); e.Code != "permission_denied" {
		t.Errorf("operator reading the audit log: %+v", e)
	}

	// The audit log says who did what to which target, denied attempts too.
	var audit struct {
		Events []struct {
			Actor   string `json:"actor"`
			Action  string `json:"action"`
			Target  string `json:"target"`
			Outcome string `json:"outcome"`
		} `json:"events"`
	}
	callOK(t, s.url(), admin, listAudit, `{"pageSize": 100}`, &audit)
	want := map[string]bool{
		"ci " + submitJob + " job/" + sub.Job.ID + " ok":   false,
		"dashboard " + submitJob + "  permission_denied":   false,
		"dashboard " + createToken + "  permission_denied": false,
	}
	var seen []string
	for _, e := range audit.Events {
		line := fmt.Sprintf("%s %s %s %s", e.Actor, e.Action, e.Target, e.Outcome)
		seen = append(seen, line)
		if _, ok := want[line]; ok {
			want[line] = true
		}
	}
	for line, found := range want {
		if !found {
			t.Errorf("audit log lacks %q; it has:\n%s", line, strings.Join(seen, "\n"))
		}
	}

	callOK(t, s.url(), admin, revokeToken, `{"id": "dashboard"}`, nil)
	if e := callErr(t, s.url(), viewer.Token, listJobs, `{}`); e.Code != "unauthenticated" || !strings.Contains(e.Message, "revoked") {
		t.Errorf("revoked token: %+v", e)
	}
}
