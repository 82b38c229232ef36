package server

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect/v2"
	"connectrpc.com/connect/v2/connecthttp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	agentv1 "github.com/casarerpa/casare/rpc/casare/agent/v1"
	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/rpc/casare/v1/casarev1connect"
	"github.com/casarerpa/casare/server/gateway"
)

// TestNoJobAnswerShowsASecret runs a job with a secret input to its end
// through a robot that reports the secret back in its progress, outputs
// and failure, and reads the job through every answer that carries one:
// SubmitJob, GetJob (with its events), ListJobs, WatchJobs, ExplainJob and
// StreamJobLogs, as admin and as a viewer. None shows the secret or one
// of its obvious transforms.
func TestNoJobAnswerShowsASecret(t *testing.T) {
	const pw = "Tr0ub4dor&3-horse"
	leaks := []string{pw, strings.ToUpper(pw), strings.ToLower(pw), base64.StdEncoding.EncodeToString([]byte(pw))}

	cfg, err := ConfigFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	cfg.HTTPAddr, cfg.QUICAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.DatabaseURL, cfg.RedisURL = "", ""
	ctx, cancel := context.WithCancel(context.Background())
	s, err := New(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; s.Close() })

	admin, err := os.ReadFile(filepath.Join(cfg.DataDir, AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	viewer, err := createToken(ctx, s.reg, "viewer", "viewer", 0, "test")
	if err != nil {
		t.Fatal(err)
	}
	clientOf := func(token string) casarev1connect.JobServiceClient {
		return casarev1connect.NewJobServiceClient(connect.NewClient(
			connecthttp.NewTransport(http.DefaultClient, "http://"+s.Addr()), bearerToken(token)))
	}
	clients := map[string]casarev1connect.JobServiceClient{
		"admin":  clientOf(strings.TrimSpace(string(admin))),
		"viewer": clientOf(viewer),
	}

	assigned := make(chan *agentv1.JobAssign, 4)
	s.dispatcher.RobotUp(ctx, gateway.Robot{ID: "robot", Name: "robot", MaxJobs: 1, ConnectedSince: time.Now(), Send: func(m *agentv1.ServerMessage) error {
		if a := m.GetJobAssign(); a != nil {
			assigned <- a
		}
		return nil
	}})

	var answers []proto.Message
	// run submits a job and plays the robot: it accepts the job, reports
	// the secret in its progress, and ends it as end says.
	run := func(end func(a *agentv1.JobAssign) *agentv1.AgentMessage) string {
		t.Helper()
		req := &casarev1.SubmitJobRequest{
			Source: &casarev1.SubmitJobRequest_Workflow{Workflow: &casarev1.Workflow{
				Name:   "login",
				Inputs: map[string]*casarev1.InputSpec{"pw": {Type: "string", Secret: true}, "user": {Type: "string"}},
				Steps:  []*casarev1.Step{{Id: "a", Uses: "log", With: &structpb.Struct{Fields: map[string]*structpb.Value{"message": structpb.NewStringValue("hi")}}}},
			}},
			Inputs: &structpb.Struct{Fields: map[string]*structpb.Value{"pw": structpb.NewStringValue(pw), "user": structpb.NewStringValue("ann")}},
		}
		res, err := clients["admin"].SubmitJob(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		answers = append(answers, res)
		if got := res.GetJob().GetInputs().GetFields()["user"].GetStringValue(); got != "ann" {
			t.Errorf("the input user shows %q, want it shown as given", got)
		}
		var a *agentv1.JobAssign
		select {
		case a = <-assigned:
		case <-time.After(30 * time.Second):
			t.Fatal("the job was never assigned")
		}
		s.dispatcher.Handle(ctx, "robot", &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_JobAccept{JobAccept: &agentv1.JobAccept{JobId: a.GetJobId(), Attempt: a.GetAttempt()}}})
		s.dispatcher.Handle(ctx, "robot", &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_JobProgress{JobProgress: &agentv1.JobProgress{
			JobId: a.GetJobId(), Attempt: a.GetAttempt(), Percent: 50, StepId: "a", Message: "typing " + pw,
		}}})
		s.dispatcher.Handle(ctx, "robot", end(a))
		waitFor(t, "job "+a.GetJobId()+" ended", func() bool {
			j, err := s.reg.GetJob(ctx, a.GetJobId())
			return err == nil && j.Status.Finished()
		})
		return a.GetJobId()
	}
	succeeded := run(func(a *agentv1.JobAssign) *agentv1.AgentMessage {
		out, _ := structpb.NewStruct(map[string]any{"echo": "pw was " + pw, "shout": strings.ToUpper(pw), "nested": map[string]any{"list": []any{pw}}, "count": 3})
		return &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_JobComplete{JobComplete: &agentv1.JobComplete{JobId: a.GetJobId(), Attempt: a.GetAttempt(), Outputs: out}}}
	})
	failed := run(func(a *agentv1.JobAssign) *agentv1.AgentMessage {
		return &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_JobFail{JobFail: &agentv1.JobFail{JobId: a.GetJobId(), Attempt: a.GetAttempt(), Error: "login refused for " + pw, Business: true}}}
	})

	for role, jobs := range clients {
		for _, id := range []string{succeeded, failed} {
			got, err := jobs.GetJob(ctx, &casarev1.GetJobRequest{Id: id})
			if err != nil {
				t.Fatalf("%s: GetJob: %v", role, err)
			}
			answers = append(answers, got)
			if id == succeeded {
				if c := got.GetJob().GetResult().GetFields()["count"].GetNumberValue(); c != 3 {
					t.Errorf("%s: the output count is %v, want 3 shown as it is", role, c)
				}
			}
			explained, err := jobs.ExplainJob(ctx, &casarev1.ExplainJobRequest{Id: id})
			if err != nil {
				t.Fatalf("%s: ExplainJob: %v", role, err)
			}
			answers = append(answers, explained)
			logs, err := jobs.StreamJobLogs(ctx, &casarev1.StreamJobLogsRequest{JobId: id})
			if err != nil {
				t.Fatalf("%s: StreamJobLogs: %v", role, err)
			}
			for {
				msg, err := logs.Receive()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatalf("%s: StreamJobLogs: %v", role, err)
				}
				answers = append(answers, msg)
			}
			logs.Close()
		}
		list, err := jobs.ListJobs(ctx, &casarev1.ListJobsRequest{})
		if err != nil {
			t.Fatalf("%s: ListJobs: %v", role, err)
		}
		if len(list.GetJobs()) != 2 {
			t.Fatalf("%s: ListJobs gave %d jobs, want 2", role, len(list.GetJobs()))
		}
		answers = append(answers, list)
		watchCtx, stop := context.WithTimeout(ctx, 30*time.Second)
		watch, err := jobs.WatchJobs(watchCtx, &casarev1.WatchJobsRequest{})
		if err != nil {
			t.Fatalf("%s: WatchJobs: %v", role, err)
		}
		for {
			msg, err := watch.Receive()
			if err != nil {
				t.Fatalf("%s: WatchJobs: %v", role, err)
			}
			answers = append(answers, msg)
			if msg.GetType() == casarev1.WatchEventType_WATCH_EVENT_TYPE_SYNCED {
				break
			}
		}
		watch.Close()
		stop()
	}

	sawMask := false
	for _, a := range answers {
		text := protojson.Format(a)
		for _, leak := range leaks {
			if strings.Contains(text, leak) {
				t.Errorf("%T shows %q:\n%s", a, leak, text)
			}
		}
		sawMask = sawMask || strings.Contains(text, "***")
	}
	if !sawMask {
		t.Errorf("no answer shows *** where the secret was")
	}
}
