package dash

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/x/ansi"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

// updating reports whether -update was given: rewrite the golden files in
// testdata. teatest's golden package defines the flag; it is defined here
// only if that ever stops being so.
func updating() bool {
	f := flag.Lookup("update")
	return f != nil && f.Value.String() == "true"
}

func init() {
	if flag.Lookup("update") == nil {
		flag.Bool("update", false, "rewrite the golden files in testdata")
	}
}

// clock is the fixed now of every test, so ages and durations are stable.
var clock = time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)

func ago(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(clock.Add(-d)) }

// fixtureRobots and fixtureJobs are a small fleet with one of everything.
func fixtureRobots() []*casarev1.Robot {
	// BUSY is every slot taken: r1 runs its one job.
	return []*casarev1.Robot{
		{Id: "rb-01", Name: "r1", Status: casarev1.RobotStatus_ROBOT_STATUS_BUSY, Labels: map[string]string{"site": "hq", "os": "linux"},
			Version: "1.4.0", Os: "linux", LastSeen: ago(2 * time.Second), ConnectedSince: ago(3 * time.Hour), MaxJobs: 1,
			RunningJobIds: []string{"019a2b3c-0000-7000-8000-000000000002"}, Capabilities: []string{"browser", "shell"}, Hostname: "vm-1", CreatedAt: ago(72 * time.Hour)},
		{Id: "rb-02", Name: "r2", Status: casarev1.RobotStatus_ROBOT_STATUS_IDLE, Labels: map[string]string{"site": "hq"},
			Version: "1.4.0", Os: "windows", LastSeen: ago(5 * time.Second), ConnectedSince: ago(50 * time.Minute), MaxJobs: 1},
		{Id: "rb-03", Name: "r3", Status: casarev1.RobotStatus_ROBOT_STATUS_DRAINING, Labels: map[string]string{"site": "dc2"},
			Version: "1.3.2", Os: "linux", LastSeen: ago(time.Second), ConnectedSince: ago(26 * time.Hour), MaxJobs: 4},
		{Id: "rb-04", Name: "r4-with-a-long-name", Status: casarev1.RobotStatus_ROBOT_STATUS_OFFLINE,
			Version: "1.2.0", Os: "linux", LastSeen: ago(9 * time.Minute), MaxJobs: 1},
	}
}

func fixtureJobs() []*casarev1.Job {
	mk := func(n int, wf string, st casarev1.JobStatus, p casarev1.JobPriority, robot string, created, started, finished time.Duration) *casarev1.Job {
		j := &casarev1.Job{Id: fmt.Sprintf("019a2b3c-0000-7000-8000-00000000%04d", n), WorkflowName: wf, Status: st, Priority: p,
			RobotId: robot, Attempt: 1, MaxAttempts: 3, CreatedAt: ago(created), CreatedBy: "ops"}
		if started > 0 {
			j.StartedAt = ago(started)
		}
		if finished > 0 {
			j.FinishedAt = ago(finished)
		}
		return j
	}
	const (
		pending   = casarev1.JobStatus_JOB_STATUS_PENDING
		running   = casarev1.JobStatus_JOB_STATUS_RUNNING
		succeeded = casarev1.JobStatus_JOB_STATUS_SUCCEEDED
		failed    = casarev1.JobStatus_JOB_STATUS_FAILED
		cancelled = casarev1.JobStatus_JOB_STATUS_CANCELLED
		normal    = casarev1.JobPriority_JOB_PRIORITY_NORMAL
		high      = casarev1.JobPriority_JOB_PRIORITY_HIGH
		critical  = casarev1.JobPriority_JOB_PRIORITY_CRITICAL
	)
	jobs := []*casarev1.Job{
		mk(1, "invoice-sync", succeeded, normal, "rb-01", 30*time.Minute, 29*time.Minute, 27*time.Minute),
		mk(2, "invoice-sync", running, high, "rb-01", 2*time.Minute, 90*time.Second, 0),
		mk(3, "report", failed, normal, "rb-02", 20*time.Minute, 19*time.Minute, 40*time.Second),
		mk(4, "report", pending, critical, "", 45*time.Second, 0, 0),
		mk(5, "report", pending, normal, "", 3*time.Minute, 0, 0),
		mk(6, "cleanup", cancelled, normal, "rb-03", 2*time.Hour, 0, 100*time.Minute),
	}
	jobs[1].Progress, jobs[1].CurrentStep = 40, "scrape"
	jobs[2].StatusMessage = "step fetch: HTTP 503 from https://erp.example/api"
	jobs[2].Attempt = 3
	jobs[0].Result = mustStruct(map[string]any{"count": 12})
	jobs[0].WorkflowVersion = 4
	return jobs
}

// setup is a dashboard at size w×h holding the fixture, connected.
func setup(t testing.TB, w, h int) *Model {
	t.Helper()
	m := New(context.Background(), Options{
		Server: "http://casare.test:8080", NoColor: true,
		Now: func() time.Time { return clock }, Location: time.UTC,
	})
	m.user = "ops (operator)"
	send(m, tea.WindowSizeMsg{Width: w, Height: h})
	send(m, batch{
		robots:  []robotOp{{kind: opReplace, robots: fixtureRobots()}},
		jobs:    []jobOp{{kind: opReplace, jobs: fixtureJobs()}},
		streams: map[string]streamState{"robots": {up: true}, "jobs": {up: true}},
	})
	return m
}

func send(m *Model, msgs ...tea.Msg) tea.Cmd {
	var cmd tea.Cmd
	for _, msg := range msgs {
		_, cmd = m.Update(msg)
	}
	return cmd
}

// press sends keys as the terminal would: each string one key.
func press(m *Model, keys ...string) tea.Cmd {
	var cmd tea.Cmd
	for _, k := range keys {
		cmd = send(m, keyMsg(k))
	}
	return cmd
}

// typeText sends each character of s as a key.
func typeText(m *Model, s string) {
	for _, r := range s {
		send(m, keyMsg(string(r)))
	}
}

func keyMsg(k string) tea.KeyPressMsg {
	switch k {
	case "enter":
		return tea.KeyPressMsg{Code: tea.KeyEnter}
	case "esc":
		return tea.KeyPressMsg{Code: tea.KeyEscape}
	case "backspace":
		return tea.KeyPressMsg{Code: tea.KeyBackspace}
	case "down":
		return tea.KeyPressMsg{Code: tea.KeyDown}
	case "up":
		return tea.KeyPressMsg{Code: tea.KeyUp}
	case "pgdown":
		return tea.KeyPressMsg{Code: tea.KeyPgDown}
	case "pgup":
		return tea.KeyPressMsg{Code: tea.KeyPgUp}
	case "space":
		return tea.KeyPressMsg{Code: tea.KeySpace, Text: " "}
	case "ctrl+c":
		return tea.KeyPressMsg{Code: 'c', Mod: tea.ModCtrl}
	}
	r := []rune(k)[0]
	return tea.KeyPressMsg{Code: r, Text: k}
}

// colour matches an SGR sequence that sets a foreground or background
// colour: 30–49 and 90–107, alone or among other parameters.
var colour = regexp.MustCompile(`\x1b\[(?:[0-9;]*;)?(?:3[0-9]|4[0-9]|9[0-7]|10[0-7])(?:;[0-9;]*)?m`)

// golden compares the screen with testdata/name.golden. The screen is
// drawn without colour (NO_COLOR); the golden file holds its text, one
// line a screen row, with attributes (bold, reverse) removed.
func golden(t *testing.T, m *Model, name string) {
	t.Helper()
	screen := m.View().Content
	if colour.MatchString(screen) {
		t.Errorf("%s: colour in a NO_COLOR screen: %q", name, colour.FindString(screen))
	}
	lines := strings.Split(screen, "\n")
	if len(lines) != m.height {
		t.Errorf("%s: %d lines, want the terminal's %d", name, len(lines), m.height)
	}
	for i, l := range lines {
		if w := ansi.StringWidth(l); w != m.width {
			t.Errorf("%s: line %d is %d cells wide, want %d: %q", name, i, w, m.width, l)
		}
	}
	got := ansi.Strip(screen) + "\n"
	path := filepath.Join("testdata", name+".golden")
	if updating() {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to write it)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s differs from %s (-want +got):\n%s", name, path, diff)
	}
}

func TestViewsGolden(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		w, h int
		do   func(m *Model)
	}{
		{name: "robots", w: 120, h: 24, do: func(m *Model) {}},
		{name: "robots_80x24", w: 80, h: 24, do: func(m *Model) {}},
		{name: "jobs", w: 120, h: 24, do: func(m *Model) { typeText(m, ":jobs"); press(m, "enter") }},
		{name: "jobs_80x24", w: 80, h: 24, do: func(m *Model) { typeText(m, ":jobs"); press(m, "enter") }},
		{name: "jobs_filtered", w: 120, h: 24, do: func(m *Model) {
			typeText(m, ":jobs")
			press(m, "enter")
			typeText(m, "/status:pend report")
			press(m, "enter")
		}},
		{name: "jobs_sorted_by_workflow", w: 120, h: 24, do: func(m *Model) {
			typeText(m, ":jobs")
			press(m, "enter", "s", "s", "s", "s", "S")
		}},
		{name: "job_detail", w: 120, h: 30, do: func(m *Model) {
			typeText(m, ":jobs")
			press(m, "enter", "j", "enter")
			send(m, eventsMsg{jobID: fixtureJobs()[1].GetId(), events: []*casarev1.JobEvent{
				{Time: ago(2 * time.Minute), ToStatus: casarev1.JobStatus_JOB_STATUS_PENDING, Attempt: 1, Reason: "submitted", Actor: "ops"},
				{Time: ago(100 * time.Second), FromStatus: casarev1.JobStatus_JOB_STATUS_PENDING, ToStatus: casarev1.JobStatus_JOB_STATUS_ASSIGNED, Attempt: 1, RobotId: "rb-01", Reason: "assigned", Actor: "system"},
				{Time: ago(90 * time.Second), FromStatus: casarev1.JobStatus_JOB_STATUS_ASSIGNED, ToStatus: casarev1.JobStatus_JOB_STATUS_RUNNING, Attempt: 1, RobotId: "rb-01", Reason: "accepted", Actor: "system"},
			}})
			send(m, batch{logs: []logChunk{{jobID: fixtureJobs()[1].GetId(), lines: logLines(1, 4)}}})
		}},
		{name: "logs", w: 100, h: 12, do: func(m *Model) {
			typeText(m, ":jobs")
			press(m, "enter", "j", "l")
			send(m, batch{logs: []logChunk{{jobID: fixtureJobs()[1].GetId(), lines: logLines(1, 20)}}})
		}},
		{name: "logs_scrolled", w: 100, h: 12, do: func(m *Model) {
			typeText(m, ":jobs")
			press(m, "enter", "j", "l")
			send(m, batch{logs: []logChunk{{jobID: fixtureJobs()[1].GetId(), lines: logLines(1, 20)}}})
			press(m, "g", "j")
			send(m, batch{logs: []logChunk{{jobID: fixtureJobs()[1].GetId(), lines: logLines(21, 2), ended: true}}})
		}},
		{name: "robot_detail", w: 100, h: 20, do: func(m *Model) { press(m, "enter") }},
		{name: "queues", w: 120, h: 16, do: func(m *Model) { typeText(m, ":queues"); press(m, "enter") }},
		{name: "queues_80x24", w: 80, h: 24, do: func(m *Model) { typeText(m, ":qu"); press(m, "enter") }},
		{name: "workflows", w: 100, h: 12, do: func(m *Model) {
			typeText(m, ":workflows")
			press(m, "enter")
			send(m, workflowsMsg{workflows: []*casarev1.WorkflowSummary{
				{Name: "invoice-sync", LatestVersion: 4, Description: "Copy invoices from the portal to SAP", UpdatedAt: ago(26 * time.Hour)},
				{Name: "report", LatestVersion: 1, UpdatedAt: ago(5 * time.Minute)},
			}})
		}},
		{name: "schedules", w: 120, h: 12, do: func(m *Model) {
			typeText(m, ":schedules")
			press(m, "enter")
			send(m, schedulesMsg{schedules: fixtureSchedules()})
		}},
		{name: "schedules_80x24", w: 80, h: 24, do: func(m *Model) {
			typeText(m, ":sc")
			press(m, "enter")
			send(m, schedulesMsg{schedules: fixtureSchedules()})
		}},
		{name: "confirm_pause_schedule", w: 120, h: 10, do: func(m *Model) {
			typeText(m, ":schedules")
			press(m, "enter")
			send(m, schedulesMsg{schedules: fixtureSchedules()})
			press(m, "p")
		}},
		{name: "assets", w: 120, h: 10, do: func(m *Model) {
			typeText(m, ":assets")
			press(m, "enter")
			send(m, assetsMsg{assets: fixtureAssets()})
		}},
		{name: "workqueues", w: 120, h: 10, do: func(m *Model) {
			typeText(m, ":wq")
			press(m, "enter")
			queues, stats := fixtureWorkQueues()
			rows := make([]workQueueRow, len(queues))
			for i := range queues {
				rows[i] = workQueueRow{queue: queues[i], stats: stats[i]}
			}
			send(m, workQueuesMsg{rows: rows})
		}},
		{name: "workqueues_80x24", w: 80, h: 24, do: func(m *Model) {
			typeText(m, ":workqueues")
			press(m, "enter")
			queues, stats := fixtureWorkQueues()
			send(m, workQueuesMsg{rows: []workQueueRow{{queue: queues[0], stats: stats[0]}}})
		}},
		{name: "workitems", w: 120, h: 12, do: func(m *Model) {
			typeText(m, ":wq")
			press(m, "enter")
			queues, stats := fixtureWorkQueues()
			send(m, workQueuesMsg{rows: []workQueueRow{{queue: queues[0], stats: stats[0]}}})
			press(m, "enter")
			send(m, workItemsMsg{queue: "invoices", items: fixtureWorkItems()})
		}},
		{name: "confirm_retry_item", w: 120, h: 10, do: func(m *Model) {
			typeText(m, ":wq")
			press(m, "enter")
			queues, stats := fixtureWorkQueues()
			send(m, workQueuesMsg{rows: []workQueueRow{{queue: queues[0], stats: stats[0]}}})
			press(m, "enter")
			send(m, workItemsMsg{queue: "invoices", items: fixtureWorkItems()})
			press(m, "R")
		}},
		{name: "help", w: 100, h: 30, do: func(m *Model) { press(m, "?") }},
		{name: "confirm_cancel", w: 120, h: 12, do: func(m *Model) {
			typeText(m, ":jobs")
			press(m, "enter", "j", "c")
		}},
		{name: "confirm_drain", w: 100, h: 10, do: func(m *Model) { press(m, "j", "d") }},
		{name: "action_result", w: 100, h: 10, do: func(m *Model) {
			press(m, "j", "d", "y")
			send(m, actionMsg{text: "draining robot r2"})
		}},
		{name: "disconnected", w: 120, h: 10, do: func(m *Model) {
			send(m, batch{streams: map[string]streamState{"jobs": {err: "server unreachable", retry: clock.Add(4 * time.Second)}}})
		}},
		{name: "scrolled", w: 100, h: 8, do: func(m *Model) {
			// Three rows fit: the selection pulls the window down.
			press(m, "G")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := setup(t, tt.w, tt.h)
			tt.do(m)
			golden(t, m, tt.name)
		})
	}
}

func logLines(from, n int) []*casarev1.LogLine {
	var out []*casarev1.LogLine
	for i := from; i < from+n; i++ {
		level := "info"
		if i%7 == 0 {
			level = "warn"
		}
		out = append(out, &casarev1.LogLine{Seq: int64(i), Time: ago(time.Duration(60-i) * time.Second), Level: level, StepId: "scrape",
			Message: fmt.Sprintf("line %d", i)})
	}
	return out
}

func mustStruct(v map[string]any) *structpb.Struct {
	s, err := structpb.NewStruct(v)
	if err != nil {
		panic(err)
	}
	return s
}
