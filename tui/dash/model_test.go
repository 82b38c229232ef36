package dash

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/x/ansi"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

// TestListKeepsOrder changes a list row by row, with and without a filter,
// and checks it against sorting and filtering everything from scratch.
func TestListKeepsOrder(t *testing.T) {
	t.Parallel()
	type row struct{ k, tag int }
	byK := func(a, b *row) int { return a.k - b.k }
	rng := rand.New(rand.NewPCG(1, 2))
	l := newList(byK)
	want := map[string]row{}
	check := func(step int) {
		t.Helper()
		var ids []string
		for id, r := range want {
			if l.keep == nil || l.keep(&r) {
				ids = append(ids, id)
			}
		}
		slices.SortFunc(ids, func(a, b string) int {
			ra, rb := want[a], want[b]
			if c := l.cmp(&ra, &rb); c != 0 {
				return c
			}
			return strings.Compare(a, b)
		})
		var got []string
		for _, e := range l.rows() {
			got = append(got, e.id)
		}
		if !slices.Equal(got, ids) {
			t.Fatalf("step %d: order %v, want %v", step, got, ids)
		}
		for i, id := range got {
			if j := l.index(id); j != i {
				t.Fatalf("step %d: index(%s) = %d, want %d", step, id, j, i)
			}
		}
	}
	for step := range 3000 {
		id := fmt.Sprintf("r%03d", rng.IntN(300))
		switch op := rng.IntN(100); {
		case op < 60:
			r := row{k: rng.IntN(50), tag: rng.IntN(3)}
			l.put(id, r)
			want[id] = r
		case op < 85:
			l.remove(id)
			delete(want, id)
		case op < 90:
			l.setFilter(func(r *row) bool { return r.tag != 0 })
		case op < 93:
			l.setFilter(nil)
		case op < 96:
			l.setSort(func(a, b *row) int { return b.k - a.k })
		default:
			l.setSort(byK)
		}
		// Look only now and then, so changes also pile up on stale orders.
		if step%7 == 0 {
			check(step)
		}
	}
	check(-1)
}

func TestFilter(t *testing.T) {
	t.Parallel()
	fields := map[string]string{"status": "failed", "robot": "r1 rb-01", "workflow": "invoice-sync"}
	field := func(name string) (string, bool) { v, ok := fields[name]; return v, ok }
	all := "job-1 invoice-sync failed normal r1"
	tests := []struct {
		name, text string
		want       bool
	}{
		{name: "Empty", text: "", want: true},
		{name: "Word", text: "invoice", want: true},
		{name: "WordCase", text: "INVOICE", want: true},
		{name: "WordMissing", text: "payroll", want: false},
		{name: "Field", text: "status:failed", want: true},
		{name: "FieldPrefix", text: "status:fail", want: true},
		{name: "FieldOther", text: "status:running", want: false},
		{name: "UnknownField", text: "colour:red", want: false},
		{name: "Combined", text: "status:failed robot:r1 invoice", want: true},
		{name: "CombinedOneFails", text: "status:failed robot:r2", want: false},
		{name: "Negated", text: "-status:succeeded", want: true},
		{name: "NegatedHit", text: "!invoice", want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := parseFilter(tt.text).match(all, field); got != tt.want {
				t.Errorf("filter %q matched %v, want %v", tt.text, got, tt.want)
			}
		})
	}
}

func TestLayoutDropsColumnsByPriority(t *testing.T) {
	t.Parallel()
	for _, width := range []int{40, 78, 118, 200} {
		widths := layout(jobColumns, width)
		used, kept := 0, 0
		for i, w := range widths {
			if w == 0 {
				continue
			}
			if w < jobColumns[i].min || w > jobColumns[i].max {
				t.Errorf("width %d: %s is %d wide, want %d..%d", width, jobColumns[i].title, w, jobColumns[i].min, jobColumns[i].max)
			}
			used += w
			kept++
		}
		used += gap * (kept - 1)
		if used > width {
			t.Errorf("width %d: columns take %d", width, used)
		}
		if widths[2] == 0 {
			t.Errorf("width %d: STATUS dropped; it matters most", width)
		}
		// A column is only dropped when every less important one is too.
		for i, w := range widths {
			for j, v := range widths {
				if w == 0 && v > 0 && jobColumns[j].prio > jobColumns[i].prio {
					t.Errorf("width %d: kept %s and dropped the more important %s", width, jobColumns[j].title, jobColumns[i].title)
				}
			}
		}
	}
}

func TestKeys(t *testing.T) {
	t.Parallel()
	t.Run("SwitchView", func(t *testing.T) {
		m := setup(t, 100, 20)
		for name, want := range map[string]viewID{"jobs": viewJobs, "queues": viewQueues, "workflows": viewWorkflows, "robots": viewRobots, "wf": viewWorkflows} {
			typeText(m, ":"+name)
			press(m, "enter")
			if m.view != want {
				t.Errorf(":%s shows view %d, want %d", name, m.view, want)
			}
		}
	})
	t.Run("UnknownView", func(t *testing.T) {
		m := setup(t, 100, 20)
		typeText(m, ":nope")
		press(m, "enter")
		if m.view != viewRobots || !m.flashBad || !strings.Contains(m.flash, `no view "nope"`) {
			t.Errorf("view %d, flash %q (bad %v); want robots and a message", m.view, m.flash, m.flashBad)
		}
	})
	t.Run("FilterAndClear", func(t *testing.T) {
		m := setup(t, 100, 20)
		typeText(m, "/status:idle")
		if got := len(m.robots.rows()); got != 1 {
			t.Fatalf("filter shows %d robots while typing, want 1", got)
		}
		press(m, "enter")
		if got := len(m.robots.rows()); got != 1 || m.idAt(0) != "rb-02" {
			t.Fatalf("filter shows %d robots (%s), want r2", got, m.idAt(0))
		}
		press(m, "esc")
		if got := len(m.robots.rows()); got != 4 {
			t.Errorf("esc leaves %d robots, want all 4", got)
		}
	})
	t.Run("QueueOpensItsJobs", func(t *testing.T) {
		m := setup(t, 100, 20)
		typeText(m, ":queues")
		press(m, "enter", "j", "enter")
		if m.view != viewJobs || m.cursor().filter.text != "workflow:report" || len(m.jobs.rows()) != 3 {
			t.Errorf("view %d filter %q rows %d; want the 3 report jobs", m.view, m.cursor().filter.text, len(m.jobs.rows()))
		}
	})
	t.Run("DetailAndBack", func(t *testing.T) {
		m := setup(t, 100, 20)
		typeText(m, ":jobs")
		press(m, "enter", "j", "enter")
		if m.view != viewJob || m.detailJob != fixtureJobs()[1].GetId() {
			t.Fatalf("view %d job %q, want the detail of job 2", m.view, m.detailJob)
		}
		press(m, "l")
		if m.view != viewLogs || m.logJob != m.detailJob {
			t.Fatalf("l shows view %d log %q", m.view, m.logJob)
		}
		press(m, "esc")
		if m.view != viewJob {
			t.Fatalf("esc from the log shows view %d, want the job", m.view)
		}
		press(m, "esc")
		if m.view != viewJobs || m.detailJob != "" || m.logJob != "" {
			t.Errorf("esc from the job shows view %d, detail %q, log %q", m.view, m.detailJob, m.logJob)
		}
	})
	t.Run("CancelAnswerNo", func(t *testing.T) {
		m := setup(t, 100, 20)
		typeText(m, ":jobs")
		press(m, "enter", "j", "c")
		if m.confirm == nil {
			t.Fatal("c asks nothing")
		}
		if cmd := press(m, "n"); cmd != nil || m.confirm != nil || m.flash != "nothing done" {
			t.Errorf("n: cmd %v, confirm %v, flash %q", cmd != nil, m.confirm != nil, m.flash)
		}
	})
	t.Run("CancelFinishedJob", func(t *testing.T) {
		m := setup(t, 100, 20)
		typeText(m, ":jobs")
		press(m, "enter", "G", "k", "c") // the succeeded job
		if m.confirm != nil || !strings.Contains(m.flash, "already SUCCEEDED") {
			t.Errorf("confirm %v, flash %q; want no question and why", m.confirm != nil, m.flash)
		}
	})
	t.Run("KeysInputDoNotAct", func(t *testing.T) {
		m := setup(t, 100, 20)
		typeText(m, "/q")
		if cmd := press(m, "d"); cmd != nil || m.confirm != nil {
			t.Error("a key typed into the filter acted")
		}
		if m.inputText != "qd" {
			t.Errorf("input %q, want qd", m.inputText)
		}
	})
	t.Run("Quit", func(t *testing.T) {
		m := setup(t, 100, 20)
		for _, k := range []string{"q", "ctrl+c"} {
			cmd := press(m, k)
			if cmd == nil {
				t.Fatalf("%s: no command", k)
			}
			if _, ok := cmd().(tea.QuitMsg); !ok {
				t.Errorf("%s does not quit", k)
			}
		}
	})
	t.Run("SortCycles", func(t *testing.T) {
		m := setup(t, 100, 20)
		press(m, "s")
		if m.cursor().sortCol != 1 {
			t.Fatalf("s sorts by column %d, want 1", m.cursor().sortCol)
		}
		press(m, "S")
		rows := m.robots.rows()
		if rows[0].v.status != "OFFLINE" || rows[len(rows)-1].v.status != "IDLE" {
			t.Errorf("sort by status, reversed: %s first, %s last", rows[0].v.status, rows[len(rows)-1].v.status)
		}
	})
	t.Run("FooterFromKeymap", func(t *testing.T) {
		m := setup(t, 200, 20)
		footer := ansi.Strip(m.footerLine())
		for _, b := range bindings {
			if b.footer && b.in(m) && !strings.Contains(footer, b.label+" "+b.short) {
				t.Errorf("footer %q lacks %s", footer, b.label)
			}
		}
		if strings.Contains(footer, "cancel") {
			t.Errorf("robots footer offers cancel: %q", footer)
		}
	})
}

// TestLive feeds changes as the streams would and checks the screen keeps
// up: the selection stays on its row, an outage keeps the data, and the
// next snapshot replaces it.
func TestLive(t *testing.T) {
	t.Parallel()
	m := setup(t, 120, 20)
	typeText(m, ":jobs")
	press(m, "enter", "j", "j") // job 5
	selected := m.cursor().sel

	newer := &casarev1.Job{Id: "019a2b3c-0000-7000-8000-000000009999", WorkflowName: "report", Status: casarev1.JobStatus_JOB_STATUS_PENDING, CreatedAt: ago(time.Second)}
	send(m, batch{jobs: []jobOp{{kind: opUpsert, jobs: []*casarev1.Job{newer}}}})
	if m.cursor().sel != selected || m.cursor().pos != 3 {
		t.Errorf("a new job above moved the selection to %s at %d, want %s at 3", m.cursor().sel, m.cursor().pos, selected)
	}

	// The job on screen changes: the row says so.
	changed := fixtureJobs()[4]
	changed.Status = casarev1.JobStatus_JOB_STATUS_RUNNING
	changed.RobotId = "rb-02"
	send(m, batch{jobs: []jobOp{{kind: opUpsert, jobs: []*casarev1.Job{changed}}}})
	if screen := m.View().Content; !strings.Contains(screen, "RUNNING    NORMAL    r2") {
		t.Errorf("the changed job is not on screen:\n%s", screen)
	}

	send(m, batch{streams: map[string]streamState{"jobs": {err: "server unreachable", retry: clock.Add(time.Second)}}})
	screen := m.View().Content
	if !strings.Contains(screen, "DISCONNECTED") || !strings.Contains(screen, "invoice-sync") {
		t.Errorf("while away the screen should say so and keep the jobs:\n%s", screen)
	}

	// Back: the new snapshot has one job; the others are gone.
	send(m, batch{
		jobs:    []jobOp{{kind: opReplace, jobs: []*casarev1.Job{newer}}},
		streams: map[string]streamState{"jobs": {up: true}},
	})
	screen = m.View().Content
	if !strings.Contains(screen, "CONNECTED") || strings.Contains(screen, "DISCONNECTED") || strings.Contains(screen, "invoice-sync") || m.jobs.len() != 1 {
		t.Errorf("after the snapshot want only its one job, connected:\n%s", screen)
	}
}
