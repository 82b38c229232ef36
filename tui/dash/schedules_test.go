package dash

import (
	"context"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"
	"connectrpc.com/connect/v2"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/rpc/casare/v1/casarev1connect"
)

func fixtureSchedules() []*casarev1.Schedule {
	return []*casarev1.Schedule{
		{Name: "invoices-hourly", WorkflowName: "invoice-sync", Cron: "0 * * * *", TimeZone: "Europe/Berlin",
			NextFireTime: ago(-42 * time.Minute), LastFireTime: ago(18 * time.Minute),
			LastJobId: fixtureJobs()[0].GetId(), LastJobStatus: casarev1.JobStatus_JOB_STATUS_SUCCEEDED},
		{Name: "month-end", WorkflowName: "report", Cron: "0 6 1 * *", Paused: true,
			LastFireTime: ago(30 * 24 * time.Hour), LastJobId: fixtureJobs()[2].GetId(), LastJobStatus: casarev1.JobStatus_JOB_STATUS_FAILED},
		{Name: "nightly-cleanup", WorkflowName: "cleanup", Cron: "30 2 * * mon-fri", TimeZone: "America/New_York",
			NextFireTime: ago(-(16*time.Hour + 30*time.Minute))},
	}
}

// scheduleClient answers the dashboard's schedule calls from memory and
// records the pauses, resumes and triggers it was asked for.
type scheduleClient struct {
	casarev1connect.ScheduleServiceClient

	mu      sync.Mutex
	list    []*casarev1.Schedule
	listErr error
	lists   int
	calls   []string
}

func (c *scheduleClient) ListSchedules(context.Context, *casarev1.ListSchedulesRequest) (*casarev1.ListSchedulesResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lists++
	if c.listErr != nil {
		return nil, c.listErr
	}
	return &casarev1.ListSchedulesResponse{Schedules: c.list}, nil
}

func (c *scheduleClient) record(call string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, call)
}

func (c *scheduleClient) PauseSchedule(_ context.Context, req *casarev1.PauseScheduleRequest) (*casarev1.PauseScheduleResponse, error) {
	c.record("pause " + req.GetName())
	return &casarev1.PauseScheduleResponse{}, nil
}

func (c *scheduleClient) ResumeSchedule(_ context.Context, req *casarev1.ResumeScheduleRequest) (*casarev1.ResumeScheduleResponse, error) {
	c.record("resume " + req.GetName())
	return &casarev1.ResumeScheduleResponse{}, nil
}

func (c *scheduleClient) TriggerSchedule(_ context.Context, req *casarev1.TriggerScheduleRequest) (*casarev1.TriggerScheduleResponse, error) {
	c.record("trigger " + req.GetName())
	return &casarev1.TriggerScheduleResponse{Job: &casarev1.Job{Id: "019a2b3c-0000-7000-8000-000000000077"}}, nil
}

// setupSchedules is a dashboard on the schedules view whose clock the
// test moves, answering from client.
func setupSchedules(t *testing.T, client *scheduleClient) (*Model, *time.Time) {
	t.Helper()
	now := clock
	m := New(context.Background(), Options{
		Server: "http://casare.test:8080", NoColor: true, Location: time.UTC,
		Now:     func() time.Time { return now },
		Clients: Clients{Schedules: client},
	})
	send(m, tea.WindowSizeMsg{Width: 120, Height: 16})
	send(m, batch{
		robots:  []robotOp{{kind: opReplace, robots: fixtureRobots()}},
		jobs:    []jobOp{{kind: opReplace, jobs: fixtureJobs()}},
		streams: map[string]streamState{"robots": {up: true}, "jobs": {up: true}},
	})
	typeText(m, ":schedules")
	carryOut(m, press(m, "enter"))
	return m, &now
}

// carryOut carries out cmd as the program would: its messages go back to the
// model, batches and sequences in order, ticks left out (they never end).
func carryOut(m *Model, cmd tea.Cmd) {
	if cmd == nil {
		return
	}
	switch msg := cmd().(type) {
	case tea.BatchMsg:
		for _, c := range msg {
			carryOut(m, c)
		}
	case tickMsg:
	default:
		if s, ok := sequence(msg); ok {
			for _, c := range s {
				carryOut(m, c)
			}
			return
		}
		carryOut(m, send(m, msg))
	}
}

// sequence unpacks what tea.Sequence makes, whose type bubbletea keeps
// to itself: a slice of commands.
func sequence(msg tea.Msg) ([]tea.Cmd, bool) {
	v := reflect.ValueOf(msg)
	if v.Kind() != reflect.Slice || v.Type().Elem() != reflect.TypeFor[tea.Cmd]() {
		return nil, false
	}
	out := make([]tea.Cmd, v.Len())
	for i := range out {
		out[i] = v.Index(i).Interface().(tea.Cmd)
	}
	return out, true
}

func TestSchedulesView(t *testing.T) {
	t.Parallel()
	t.Run("LoadsOnShowAndPolls", func(t *testing.T) {
		client := &scheduleClient{list: fixtureSchedules()}
		m, now := setupSchedules(t, client)
		if got := len(m.shownSchedules()); got != 3 || client.lists != 1 {
			t.Fatalf("shows %d schedules after %d loads, want 3 after 1", got, client.lists)
		}
		if cmd := m.poll(); cmd != nil {
			t.Error("polled again before 5 s")
		}
		*now = now.Add(pollEvery)
		client.list = client.list[:1]
		carryOut(m, m.poll())
		if got := len(m.shownSchedules()); got != 1 || client.lists != 2 {
			t.Errorf("after 5 s: %d schedules, %d loads; want 1 and 2", got, client.lists)
		}
		press(m, ":")
		typeText(m, "jobs")
		press(m, "enter")
		*now = now.Add(time.Hour)
		if cmd := m.poll(); cmd != nil {
			t.Error("polls while another view is on screen")
		}
	})
	t.Run("OutageKeepsTheList", func(t *testing.T) {
		client := &scheduleClient{list: fixtureSchedules()}
		m, now := setupSchedules(t, client)
		client.listErr = connect.NewError(connect.CodeUnavailable, "connection refused")
		*now = now.Add(pollEvery)
		carryOut(m, m.poll())
		screen := m.View().Content
		if !strings.Contains(screen, "invoices-hourly") || !strings.Contains(screen, "cannot list schedules") {
			t.Errorf("want the old list and the reason:\n%s", screen)
		}
	})
	t.Run("PauseAsksThenPausesAndReloads", func(t *testing.T) {
		client := &scheduleClient{list: fixtureSchedules()}
		m, _ := setupSchedules(t, client)
		press(m, "p")
		if m.confirm == nil || !strings.Contains(m.confirm.prompt, "Pause schedule invoices-hourly") {
			t.Fatalf("p asks %v", m.confirm)
		}
		carryOut(m, press(m, "y"))
		if len(client.calls) != 1 || client.calls[0] != "pause invoices-hourly" || client.lists != 2 {
			t.Errorf("calls %q after %d loads; want one pause and a reload", client.calls, client.lists)
		}
		if !strings.Contains(m.flash, "paused schedule invoices-hourly") {
			t.Errorf("flash %q", m.flash)
		}
	})
	t.Run("ResumeAPausedOne", func(t *testing.T) {
		client := &scheduleClient{list: fixtureSchedules()}
		m, _ := setupSchedules(t, client)
		press(m, "j", "p")
		if m.confirm == nil || !strings.Contains(m.confirm.prompt, "Resume schedule month-end") {
			t.Fatalf("p on a paused schedule asks %v", m.confirm)
		}
		carryOut(m, press(m, "y"))
		if len(client.calls) != 1 || client.calls[0] != "resume month-end" {
			t.Errorf("calls %q", client.calls)
		}
	})
	t.Run("TriggerNamesTheJob", func(t *testing.T) {
		client := &scheduleClient{list: fixtureSchedules()}
		m, _ := setupSchedules(t, client)
		press(m, "G", "t")
		carryOut(m, press(m, "y"))
		if len(client.calls) != 1 || client.calls[0] != "trigger nightly-cleanup" || !strings.Contains(m.flash, "job 019a2b3c-0000-7000-8000-000000000077") {
			t.Errorf("calls %q, flash %q", client.calls, m.flash)
		}
	})
	t.Run("EnterOpensTheLastJob", func(t *testing.T) {
		client := &scheduleClient{list: fixtureSchedules()}
		m, _ := setupSchedules(t, client)
		press(m, "enter")
		if m.view != viewJob || m.detailJob != fixtureJobs()[0].GetId() {
			t.Fatalf("enter shows view %d job %q, want the last job's detail", m.view, m.detailJob)
		}
		press(m, "esc")
		if m.view != viewSchedules {
			t.Errorf("esc goes to view %d, want the schedules", m.view)
		}
		press(m, "G", "enter")
		if m.view != viewSchedules || !strings.Contains(m.flash, "has made no job yet") {
			t.Errorf("a schedule without jobs: view %d flash %q", m.view, m.flash)
		}
	})
	t.Run("Filter", func(t *testing.T) {
		client := &scheduleClient{list: fixtureSchedules()}
		m, _ := setupSchedules(t, client)
		typeText(m, "/state:paused")
		press(m, "enter")
		if rows := m.shownSchedules(); len(rows) != 1 || rows[0].GetName() != "month-end" {
			t.Errorf("state:paused shows %d rows", len(rows))
		}
	})
}

func fixtureAssets() []*casarev1.Asset {
	return []*casarev1.Asset{
		{Name: "mail_host", Type: casarev1.AssetType_ASSET_TYPE_TEXT, Value: "mail.example.com", UpdatedAt: ago(26 * time.Hour), UpdatedBy: "ops"},
		{Name: "mail_host", Type: casarev1.AssetType_ASSET_TYPE_TEXT, Value: "hq-mail.example.com", Selector: "site=hq", UpdatedAt: ago(3 * time.Hour), UpdatedBy: "ops"},
		// The API sends "***"; a value that slipped through is not shown
		// either.
		{Name: "api_token", Type: casarev1.AssetType_ASSET_TYPE_SECRET, Value: "leaked-token-value", UpdatedAt: ago(time.Hour), UpdatedBy: "admin"},
		{Name: "sap", Type: casarev1.AssetType_ASSET_TYPE_CREDENTIAL, Username: "robot", Password: "leaked-password", UpdatedAt: ago(5 * time.Minute), UpdatedBy: "admin"},
	}
}

// assetClient answers ListAssets from memory.
type assetClient struct {
	casarev1connect.AssetServiceClient
	list  []*casarev1.Asset
	lists int
}

func (c *assetClient) ListAssets(context.Context, *casarev1.ListAssetsRequest) (*casarev1.ListAssetsResponse, error) {
	c.lists++
	return &casarev1.ListAssetsResponse{Assets: c.list}, nil
}

func TestAssetsView(t *testing.T) {
	t.Parallel()
	now := clock
	client := &assetClient{list: fixtureAssets()}
	m := New(context.Background(), Options{
		Server: "http://casare.test:8080", NoColor: true, Location: time.UTC,
		Now:     func() time.Time { return now },
		Clients: Clients{Assets: client},
	})
	send(m, tea.WindowSizeMsg{Width: 120, Height: 12})
	typeText(m, ":assets")
	carryOut(m, press(m, "enter"))
	if got := len(m.shownAssets()); got != 4 || client.lists != 1 {
		t.Fatalf("shows %d assets after %d loads, want 4 after 1", got, client.lists)
	}
	screen := m.View().Content
	for _, leak := range []string{"leaked-token-value", "leaked-password"} {
		if strings.Contains(screen, leak) {
			t.Errorf("the assets view shows %q:\n%s", leak, screen)
		}
	}
	if !strings.Contains(screen, "robot / ***") || !strings.Contains(screen, "site=hq") {
		t.Errorf("want the credential's username and the override's selector:\n%s", screen)
	}
	if cmd := m.poll(); cmd != nil {
		t.Error("polled again before 5 s")
	}
	now = now.Add(pollEvery)
	carryOut(m, m.poll())
	if client.lists != 2 {
		t.Errorf("%d loads after 5 s, want 2", client.lists)
	}
	typeText(m, "/type:secret")
	press(m, "enter")
	if rows := m.shownAssets(); len(rows) != 1 || rows[0].GetName() != "api_token" {
		t.Errorf("type:secret shows %d rows", len(rows))
	}
}
