package dash

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"
	"connectrpc.com/connect/v2"
	"connectrpc.com/connect/v2/connecthttp"
	"github.com/charmbracelet/x/exp/teatest/v2"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/rpc/casare/v1/casarev1connect"
)

// server is a control plane that plays a script: its first robot watch
// ends after the snapshot, as if the server went away, and the next one
// sends a different fleet. It records what the dashboard asks of it.
type server struct {
	casarev1connect.UnimplementedRobotServiceHandler
	casarev1connect.UnimplementedJobServiceHandler
	casarev1connect.UnimplementedAdminServiceHandler

	mu        sync.Mutex
	watches   int
	cancelled []string
	drained   []string
}

func (s *server) WatchRobots(ctx context.Context, _ *casarev1.WatchRobotsRequest, stream casarev1connect.RobotServiceWatchRobotsServerStream) error {
	s.mu.Lock()
	s.watches++
	first := s.watches == 1
	s.mu.Unlock()
	name := "r-before"
	if !first {
		name = "r-after"
	}
	stream.Send(&casarev1.WatchRobotsResponse{Type: casarev1.WatchEventType_WATCH_EVENT_TYPE_SNAPSHOT,
		Robots: []*casarev1.Robot{{Id: "rb-" + name, Name: name, Status: casarev1.RobotStatus_ROBOT_STATUS_IDLE, MaxJobs: 1}}})
	stream.Send(&casarev1.WatchRobotsResponse{Type: casarev1.WatchEventType_WATCH_EVENT_TYPE_SYNCED})
	if first {
		return connect.NewError(connect.CodeUnavailable, "going away")
	}
	<-ctx.Done()
	return nil
}

func (s *server) DrainRobot(_ context.Context, req *casarev1.DrainRobotRequest) (*casarev1.DrainRobotResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drained = append(s.drained, req.GetId())
	return &casarev1.DrainRobotResponse{}, nil
}

var liveJob = &casarev1.Job{Id: "job-live", WorkflowName: "long", Status: casarev1.JobStatus_JOB_STATUS_RUNNING, Attempt: 1, MaxAttempts: 3}

func (s *server) WatchJobs(ctx context.Context, _ *casarev1.WatchJobsRequest, stream casarev1connect.JobServiceWatchJobsServerStream) error {
	stream.Send(&casarev1.WatchJobsResponse{Type: casarev1.WatchEventType_WATCH_EVENT_TYPE_SNAPSHOT, Jobs: []*casarev1.Job{liveJob}})
	stream.Send(&casarev1.WatchJobsResponse{Type: casarev1.WatchEventType_WATCH_EVENT_TYPE_SYNCED})
	<-ctx.Done()
	return nil
}

func (s *server) CancelJob(_ context.Context, req *casarev1.CancelJobRequest) (*casarev1.CancelJobResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cancelled = append(s.cancelled, req.GetId())
	return &casarev1.CancelJobResponse{}, nil
}

func (s *server) GetJob(_ context.Context, req *casarev1.GetJobRequest) (*casarev1.GetJobResponse, error) {
	return &casarev1.GetJobResponse{Job: liveJob, Events: []*casarev1.JobEvent{{ToStatus: casarev1.JobStatus_JOB_STATUS_PENDING, Attempt: 1, Reason: "submitted"}}}, nil
}

func (s *server) StreamJobLogs(_ context.Context, req *casarev1.StreamJobLogsRequest, stream casarev1connect.JobServiceStreamJobLogsServerStream) error {
	return stream.Send(&casarev1.StreamJobLogsResponse{Lines: []*casarev1.LogLine{
		{Seq: 1, Level: "info", StepId: "go", Message: "first line"},
		{Seq: 2, Level: "info", StepId: "go", Message: "second line"},
	}})
}

func (s *server) WhoAmI(context.Context, *casarev1.WhoAmIRequest) (*casarev1.WhoAmIResponse, error) {
	return &casarev1.WhoAmIResponse{Name: "tester", Role: casarev1.Role_ROLE_OPERATOR}, nil
}

// startServer serves s on loopback and returns clients for it.
func startServer(t *testing.T, s *server) Clients {
	t.Helper()
	srv := connect.NewServer()
	casarev1connect.RegisterRobotServiceHandler(srv, s)
	casarev1connect.RegisterJobServiceHandler(srv, s)
	casarev1connect.RegisterAdminServiceHandler(srv, s)
	mux := http.NewServeMux()
	connecthttp.Mount(mux, srv)
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	client := connect.NewClient(connecthttp.NewTransport(ts.Client(), ts.URL))
	return Clients{
		Jobs:   casarev1connect.NewJobServiceClient(client),
		Robots: casarev1connect.NewRobotServiceClient(client),
		Admin:  casarev1connect.NewAdminServiceClient(client),
	}
}

// run executes cmd as the program would and hands its messages to m.
func run(m *Model, cmd tea.Cmd) {
	if cmd == nil {
		return
	}
	switch msg := cmd().(type) {
	case tea.BatchMsg:
		for _, c := range msg {
			run(m, c)
		}
	case tickMsg, nil:
	default:
		run(m, send(m, msg))
	}
}

// until ticks m until the screen satisfies ok, or fails after a while.
func until(t *testing.T, m *Model, what string, ok func(screen string) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		run(m, send(m, tickMsg(time.Now())))
		screen := m.View().Content
		if ok(screen) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not on screen within 10s:\n%s", what, screen)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestStreams runs the dashboard's streams against a real Connect server
// on loopback: it reconnects by itself and shows the new snapshot, and
// its cancel and drain reach the server.
func TestStreams(t *testing.T) {
	t.Parallel()
	s := &server{}
	clients := startServer(t, s)
	// Cleanups run last first: the streams end before the server closes,
	// which waits for them.
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	m := New(ctx, Options{Server: "test", Clients: clients, NoColor: true})
	m.feed = newFeed(m.opts.Clients)
	m.feed.start(ctx)
	send(m, tea.WindowSizeMsg{Width: 100, Height: 20})
	run(m, m.whoami())

	until(t, m, "the fleet after the reconnect", func(screen string) bool {
		return strings.Contains(screen, "r-after") && !strings.Contains(screen, "r-before") && strings.Contains(screen, "CONNECTED")
	})
	if !strings.Contains(m.View().Content, "tester (operator)") {
		t.Errorf("header lacks the user:\n%s", m.View().Content)
	}

	run(m, press(m, "d"))
	run(m, press(m, "y"))
	typeText(m, ":jobs")
	press(m, "enter")
	run(m, press(m, "enter"))
	until(t, m, "the log in the job detail", func(screen string) bool {
		return strings.Contains(screen, "second line") && strings.Contains(screen, "submitted")
	})
	run(m, press(m, "c"))
	run(m, press(m, "y"))
	until(t, m, "the cancel result", func(screen string) bool { return strings.Contains(screen, "cancelled job job-live") })

	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.drained) != 1 || s.drained[0] != "rb-r-after" || len(s.cancelled) != 1 || s.cancelled[0] != "job-live" {
		t.Errorf("drained %v, cancelled %v; want [rb-r-after] and [job-live]", s.drained, s.cancelled)
	}
}

// TestProgram runs the dashboard as a Bubble Tea program reading keys
// from a terminal's input.
func TestProgram(t *testing.T) {
	t.Parallel()
	m := New(context.Background(), Options{Server: "test", NoColor: true, Now: func() time.Time { return clock }, Location: time.UTC})
	tm := teatest.NewTestModel(t, m, teatest.WithInitialTermSize(100, 20))
	send := func(msg tea.Msg) { tm.Send(msg) }
	send(batch{jobs: []jobOp{{kind: opReplace, jobs: fixtureJobs()}}, streams: map[string]streamState{"robots": {up: true}, "jobs": {up: true}}})
	tm.Type(":jobs")
	tm.Send(tea.KeyPressMsg{Code: tea.KeyEnter})
	teatest.WaitFor(t, tm.Output(), func(b []byte) bool { return bytes.Contains(b, []byte("invoice-sync")) },
		teatest.WithDuration(5*time.Second))
	tm.Type("q")
	final := tm.FinalModel(t, teatest.WithFinalTimeout(5*time.Second)).(*Model)
	if final.view != viewJobs {
		t.Errorf("view %d after :jobs, want jobs", final.view)
	}
}
