package dash

import (
	"slices"
	"strings"
	"time"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

// allQueues names the row that sums every workflow.
const allQueues = "(all)"

// queueRow is the work waiting for and running on robots for one
// workflow, worked out from the jobs the dashboard already holds.
type queueRow struct {
	name    string
	pending [5]int // by JobPriority; UNSPECIFIED counts as NORMAL
	running int    // ASSIGNED or RUNNING
	perMin  int    // finished in the last minute
	oldest  time.Time
}

func (q *queueRow) add(r *jobRow, now time.Time) {
	switch r.job.GetStatus() {
	case casarev1.JobStatus_JOB_STATUS_PENDING:
		p := r.job.GetPriority()
		if p == casarev1.JobPriority_JOB_PRIORITY_UNSPECIFIED {
			p = casarev1.JobPriority_JOB_PRIORITY_NORMAL
		}
		if int(p) < len(q.pending) {
			q.pending[p]++
		}
		if q.oldest.IsZero() || r.created.Before(q.oldest) {
			q.oldest = r.created
		}
	case casarev1.JobStatus_JOB_STATUS_ASSIGNED, casarev1.JobStatus_JOB_STATUS_RUNNING:
		q.running++
	default:
		if !r.finished.IsZero() && now.Sub(r.finished) <= time.Minute {
			q.perMin++
		}
	}
}

func (q *queueRow) waiting() int {
	n := 0
	for _, c := range q.pending {
		n += c
	}
	return n
}

// queueRows works the queues out again at most once a second: it reads
// every job, and a second is as fine as a person reads these numbers.
func (m *Model) queueRows() []queueRow {
	now := m.now()
	if m.queues != nil && now.Sub(m.queuesAt) < time.Second {
		return m.filteredQueues()
	}
	byName := map[string]*queueRow{}
	all := queueRow{name: allQueues}
	// The slice is faster to walk than the map, and holds every job.
	for _, e := range m.jobs.sorted {
		r := &e.v
		name := r.job.GetWorkflowName()
		if name == "" {
			name = "(inline)"
		}
		q := byName[name]
		if q == nil {
			q = &queueRow{name: name}
			byName[name] = q
		}
		q.add(r, now)
		all.add(r, now)
	}
	rows := make([]queueRow, 0, len(byName)+1)
	for _, q := range byName {
		rows = append(rows, *q)
	}
	// The busiest queue first: most waiting, then most running.
	slices.SortFunc(rows, func(a, b queueRow) int {
		if d := b.waiting() - a.waiting(); d != 0 {
			return d
		}
		if d := b.running - a.running; d != 0 {
			return d
		}
		return strings.Compare(a.name, b.name)
	})
	m.queues = append([]queueRow{all}, rows...)
	m.queuesAt = now
	return m.filteredQueues()
}

func (m *Model) filteredQueues() []queueRow {
	f := m.curs[viewQueues].filter
	if f.empty() {
		return m.queues
	}
	var out []queueRow
	for _, q := range m.queues {
		name := strings.ToLower(q.name)
		if f.match(name, func(field string) (string, bool) { return name, field == "workflow" || field == "name" }) {
			out = append(out, q)
		}
	}
	return out
}

var queueColumns = []column{
	{title: "WORKFLOW", min: 12, max: 28, prio: 0},
	{title: "CRITICAL", min: 8, max: 8, prio: 3, right: true},
	{title: "HIGH", min: 5, max: 5, prio: 4, right: true},
	{title: "NORMAL", min: 6, max: 6, prio: 2, right: true},
	{title: "LOW", min: 5, max: 5, prio: 5, right: true},
	{title: "PENDING", min: 7, max: 7, prio: 1, right: true},
	{title: "RUNNING", min: 7, max: 7, prio: 1, right: true},
	{title: "PER MIN", min: 7, max: 7, prio: 1, right: true},
	{title: "OLDEST WAIT", min: 11, max: 11, prio: 1, right: true},
}

func queueCells(q *queueRow, now time.Time, cells []string) {
	cells[0] = q.name
	cells[1] = itoa(q.pending[casarev1.JobPriority_JOB_PRIORITY_CRITICAL])
	cells[2] = itoa(q.pending[casarev1.JobPriority_JOB_PRIORITY_HIGH])
	cells[3] = itoa(q.pending[casarev1.JobPriority_JOB_PRIORITY_NORMAL])
	cells[4] = itoa(q.pending[casarev1.JobPriority_JOB_PRIORITY_LOW])
	cells[5] = itoa(q.waiting())
	cells[6] = itoa(q.running)
	cells[7] = itoa(q.perMin)
	cells[8] = since(q.oldest, now)
}

func (m *Model) shownWorkflows() []*casarev1.WorkflowSummary {
	f := m.curs[viewWorkflows].filter
	if f.empty() {
		return m.workflows
	}
	var out []*casarev1.WorkflowSummary
	for _, w := range m.workflows {
		text := strings.ToLower(w.GetName() + " " + w.GetDescription())
		if f.match(text, func(field string) (string, bool) {
			return strings.ToLower(w.GetName()), field == "name" || field == "workflow"
		}) {
			out = append(out, w)
		}
	}
	return out
}

var workflowColumns = []column{
	{title: "NAME", min: 12, max: 32, prio: 0},
	{title: "VERSION", min: 7, max: 7, prio: 1, right: true},
	{title: "UPDATED", min: 7, max: 7, prio: 2, right: true},
	{title: "DESCRIPTION", min: 11, max: 80, prio: 3},
}

func workflowCells(w *casarev1.WorkflowSummary, now time.Time, cells []string) {
	cells[0] = w.GetName()
	cells[1] = itoa(int(w.GetLatestVersion()))
	cells[2] = "-"
	if t := w.GetUpdatedAt(); t != nil {
		cells[2] = since(t.AsTime(), now)
	}
	cells[3] = dash(firstLine(w.GetDescription()))
}
