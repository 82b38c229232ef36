package dash

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	tea "charm.land/bubbletea/v2"
	"connectrpc.com/connect/v2"
	"github.com/charmbracelet/x/ansi"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

// View draws the screen: header, the current view, status line, footer.
// Only the rows that fit are drawn, so its cost does not grow with the
// number of jobs.
func (m *Model) View() tea.View {
	v := tea.NewView(m.render())
	v.AltScreen = true
	v.WindowTitle = "casarectl"
	return v
}

func (m *Model) render() string {
	now := m.now()
	lines := make([]string, 0, m.height)
	lines = append(lines, fit(m.headerLine(now), m.width, false, false), fit(m.titleLine(), m.width, false, false))
	body := m.bodyRows() + 1 // the column titles are part of the body
	var content []string
	switch {
	case m.help:
		content = m.helpLines()
	case m.view == viewRobots:
		content = m.listLines(robotColumns, len(m.robots.rows()), func(i int, cells []string) {
			robotCells(&m.robots.rows()[i].v, now, cells)
		}, 1)
	case m.view == viewJobs:
		content = m.listLines(jobColumns, len(m.jobs.rows()), func(i int, cells []string) {
			jobCells(&m.jobs.rows()[i].v, now, cells)
		}, 2)
	case m.view == viewQueues:
		rows := m.queueRows()
		content = m.listLines(queueColumns, len(rows), func(i int, cells []string) {
			queueCells(&rows[i], now, cells)
		}, -1)
	case m.view == viewWorkflows:
		rows := m.shownWorkflows()
		content = m.listLines(workflowColumns, len(rows), func(i int, cells []string) {
			workflowCells(rows[i], now, cells)
		}, -1)
		if len(rows) == 0 && m.workflowsErr != "" {
			content = append(content, m.th.bad.Render("  cannot list workflows: "+m.workflowsErr))
		}
	case m.view == viewSchedules:
		rows := m.shownSchedules()
		content = m.listLines(scheduleColumns, len(rows), func(i int, cells []string) {
			scheduleCells(rows[i], now, cells)
		}, 4)
		if m.schedules.err != "" {
			content = append(content, m.th.bad.Render("  cannot list schedules: "+m.schedules.err))
		}
	case m.view == viewAssets:
		rows := m.shownAssets()
		content = m.listLines(assetColumns, len(rows), func(i int, cells []string) {
			assetCells(rows[i], now, cells)
		}, -1)
		if m.assets.err != "" {
			content = append(content, m.th.bad.Render("  cannot list assets: "+m.assets.err))
		}
	case m.view == viewWorkQueues:
		rows := m.shownWorkQueues()
		content = m.listLines(workQueueColumns, len(rows), func(i int, cells []string) {
			workQueueCells(rows[i], now, cells)
		}, -1)
		if m.workQueues.err != "" {
			content = append(content, m.th.bad.Render("  cannot list work queues: "+m.workQueues.err))
		}
	case m.view == viewWorkItems:
		rows := m.shownWorkItems()
		content = m.listLines(workItemColumns, len(rows), func(i int, cells []string) {
			workItemCells(rows[i], now, cells)
		}, 2)
		if m.workItems.err != "" {
			content = append(content, m.th.bad.Render("  cannot list the items: "+m.workItems.err))
		}
	case m.view == viewJob:
		content = m.jobLines(now, body)
	case m.view == viewRobot:
		content = m.robotLines(now)
	case m.view == viewLogs:
		content = m.logView(body)
	}
	for i := 0; i < body; i++ {
		line := ""
		if i < len(content) {
			line = content[i]
		}
		lines = append(lines, fit(line, m.width, false, false))
	}
	lines = append(lines, fit(m.statusLine(), m.width, false, false), fit(m.footerLine(), m.width, false, false))
	return strings.Join(lines, "\n")
}

func (m *Model) headerLine(now time.Time) string {
	left := m.th.brand.Render("casare") + " " + m.opts.Server
	if m.user != "" {
		left += "  user " + m.user
	}
	var state string
	switch {
	case m.connected:
		state = m.th.ok.Render("● CONNECTED")
	case len(m.streams) == 0:
		state = m.th.warn.Render("○ CONNECTING")
	default:
		why, retry := "", time.Time{}
		for _, name := range []string{"robots", "jobs"} {
			if s := m.streams[name]; !s.up {
				why = s.err
				if s.retry.After(retry) {
					retry = s.retry
				}
			}
		}
		text := "○ DISCONNECTED · retrying"
		if d := retry.Sub(now); d > time.Second {
			text += " in " + ShortDuration(d.Round(time.Second))
		}
		if why != "" {
			text += " · " + why
		}
		state = m.th.bad.Render(text)
	}
	pad := m.width - ansi.StringWidth(left) - ansi.StringWidth(state)
	if pad < 1 {
		return fit(state+"  "+left, m.width, false, false)
	}
	return left + strings.Repeat(" ", pad) + state
}

func (m *Model) titleLine() string {
	if m.help {
		return m.th.title.Render("Keys")
	}
	switch m.view {
	case viewRobots:
		return m.listTitle("Robots", len(m.robots.rows()), m.robots.len(), robotColumns)
	case viewJobs:
		return m.listTitle("Jobs", len(m.jobs.rows()), m.jobs.len(), jobColumns)
	case viewQueues:
		return m.listTitle("Queues", max(0, len(m.queueRows())-1), max(0, len(m.queues)-1), nil)
	case viewWorkflows:
		return m.listTitle("Workflows", len(m.shownWorkflows()), len(m.workflows), nil)
	case viewSchedules:
		return m.listTitle("Schedules", len(m.shownSchedules()), len(m.schedules.list), nil)
	case viewAssets:
		return m.listTitle("Assets", len(m.shownAssets()), len(m.assets.list), nil)
	case viewWorkQueues:
		return m.listTitle("Work queues", len(m.shownWorkQueues()), len(m.workQueues.list), nil)
	case viewWorkItems:
		s := m.listTitle("Items of "+m.itemsQueue, len(m.shownWorkItems()), len(m.workItems.list), nil)
		if m.itemsMore {
			s += fmt.Sprintf(" · the newest %d (casarectl workqueues items %s pages on)", itemsShown, m.itemsQueue)
		}
		return s
	case viewJob:
		return m.th.title.Render("Job " + m.detailJob)
	case viewRobot:
		name := m.detailRobot
		if r, ok := m.robots.get(m.detailRobot); ok {
			name = r.robot.GetName()
		}
		return m.th.title.Render("Robot " + name)
	case viewLogs:
		state := "following"
		if m.logEnded {
			state = "ended"
		} else if !m.logTail {
			state = "paused (G follows)"
		}
		if s, ok := m.streams["logs"]; ok && !s.up && !m.logEnded {
			state = "reconnecting"
		}
		return m.th.title.Render(fmt.Sprintf("Log %s", m.logJob)) + fmt.Sprintf(" · %d lines · %s", len(m.logLines), state)
	}
	return ""
}

func (m *Model) listTitle(name string, shown, total int, cols []column) string {
	s := m.th.title.Render(name) + " " + strconv.Itoa(shown)
	c := m.cursor()
	if !c.filter.empty() {
		s += " of " + strconv.Itoa(total) + " · filter " + c.filter.text
	}
	if cols != nil {
		arrow := "↑"
		if c.desc {
			arrow = "↓"
		}
		s += " · sort " + cols[c.sortCol].title + " " + arrow
	}
	return s
}

// listLines draws the column titles and the rows on screen. statusCol is
// the column whose words get status colours, -1 for none.
func (m *Model) listLines(cols []column, n int, cells func(i int, cells []string), statusCol int) []string {
	width := m.width - 2 // the selection marker
	widths := layout(cols, width)
	titles := make([]string, len(cols))
	for i, c := range cols {
		titles[i] = c.title
	}
	out := []string{"  " + m.th.colHeader.Render(renderRow(cols, widths, titles, width))}
	if n == 0 {
		empty := "  nothing to show"
		if !m.connected && len(m.streams) == 0 {
			empty = "  waiting for the server…"
		} else if !m.cursor().filter.empty() {
			empty = "  nothing matches the filter (esc clears it)"
		}
		return append(out, m.th.dim.Render(empty))
	}
	c := m.cursor()
	rows := m.bodyRows()
	buf := make([]string, len(cols))
	for i := c.top; i < min(n, c.top+rows); i++ {
		cells(i, buf)
		if i == c.pos {
			out = append(out, m.th.selected.Render("> "+renderRow(cols, widths, buf, width)))
			continue
		}
		if statusCol >= 0 {
			// Colour after fitting, so the padding stays outside the colour.
			w := widths[statusCol]
			if w > 0 {
				buf[statusCol] = m.th.statusWord(buf[statusCol]) + strings.Repeat(" ", max(0, w-ansi.StringWidth(buf[statusCol])))
			}
		}
		out = append(out, "  "+renderRow(cols, widths, buf, width))
	}
	return out
}

// field lines are "Label     value".
func (m *Model) fieldLine(label, value string) string {
	return "  " + m.th.colHeader.Render(fmt.Sprintf("%-10s", label)) + " " + value
}

func (m *Model) when(t time.Time, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.In(m.loc).Format("2006-01-02 15:04:05") + " (" + since(t, now) + " ago)"
}

func (m *Model) jobLines(now time.Time, height int) []string {
	r, ok := m.jobs.get(m.detailJob)
	if !ok {
		return []string{m.th.dim.Render("  the job is not in the dashboard's data (deleted, or the server is away)")}
	}
	j := r.job
	wf := dash(j.GetWorkflowName())
	if v := j.GetWorkflowVersion(); v > 0 {
		wf += fmt.Sprintf(" (version %d)", v)
	}
	status := m.th.statusWord(r.status)
	if s := j.GetCurrentStep(); s != "" && !r.finishedJob() {
		status += "  step " + s
	}
	if j.GetStatus() == casarev1.JobStatus_JOB_STATUS_RUNNING {
		status += fmt.Sprintf("  %d%%", j.GetProgress())
	}
	robot := "-"
	if j.GetRobotId() != "" {
		robot = r.robot
		if robot != j.GetRobotId() {
			robot += " (" + j.GetRobotId() + ")"
		}
	}
	dur := "-"
	if d := r.duration(now); d >= 0 {
		dur = d.Round(time.Millisecond).String()
	}
	out := []string{
		m.fieldLine("Workflow", wf),
		m.fieldLine("Status", status),
		m.fieldLine("Message", dash(firstLine(j.GetStatusMessage()))),
		m.fieldLine("Priority", r.priority+fmt.Sprintf("   attempt %d of %d", j.GetAttempt(), j.GetMaxAttempts())),
		m.fieldLine("Robot", robot),
		m.fieldLine("Created", m.when(r.created, now)+"  by "+dash(j.GetCreatedBy())),
		m.fieldLine("Started", m.when(r.started, now)),
		m.fieldLine("Finished", m.when(r.finished, now)),
		m.fieldLine("Duration", dur),
	}
	if res := j.GetResult(); res != nil && len(res.GetFields()) > 0 {
		b, _ := json.Marshal(res.AsMap())
		out = append(out, m.fieldLine("Result", string(b)))
	}
	out = append(out, "", m.th.title.Render("Events"))
	switch {
	case m.eventsErr != "":
		out = append(out, m.th.bad.Render("  cannot load the timeline: "+m.eventsErr))
	case len(m.events) == 0:
		out = append(out, m.th.dim.Render("  loading…"))
	}
	for _, e := range m.events {
		from := ""
		if e.GetFromStatus() != casarev1.JobStatus_JOB_STATUS_UNSPECIFIED {
			from = jobStatus(e.GetFromStatus()) + " → "
		}
		line := fmt.Sprintf("  %s  %s%s  attempt %d", e.GetTime().AsTime().In(m.loc).Format("15:04:05.000"), from, jobStatus(e.GetToStatus()), e.GetAttempt())
		if id := e.GetRobotId(); id != "" {
			line += "  robot " + dash(m.names[id])
		}
		if reason := e.GetReason(); reason != "" {
			line += "  " + firstLine(reason)
		}
		if a := e.GetActor(); a != "" {
			line += "  (" + a + ")"
		}
		out = append(out, line)
	}
	out = append(out, "", m.th.title.Render("Log")+m.th.dim.Render("  (l shows all of it)"))
	room := height - len(out)
	lines := m.logLines
	if room > 0 && len(lines) > room {
		lines = lines[len(lines)-room:]
	}
	if len(lines) == 0 {
		out = append(out, m.th.dim.Render("  no lines yet"))
	}
	for _, l := range lines {
		out = append(out, m.logLine(l))
	}
	return out
}

func (m *Model) logLine(l *casarev1.LogLine) string {
	level := strings.ToUpper(dash(l.GetLevel()))
	styled := fmt.Sprintf("%-5s", level)
	if st, ok := m.th.status[level]; ok {
		styled = st.Render(styled)
	}
	return fmt.Sprintf("  %s %s %s: %s", l.GetTime().AsTime().In(m.loc).Format("15:04:05"), styled, dash(l.GetStepId()), firstLine(l.GetMessage()))
}

// logView draws the log view.
func (m *Model) logView(height int) []string {
	var out []string
	if len(m.logLines) == 0 {
		msg := "  no lines yet"
		if m.logEnded {
			msg = "  the job wrote no log"
		}
		return []string{m.th.dim.Render(msg)}
	}
	end := min(len(m.logLines), m.logTop+height)
	for _, l := range m.logLines[m.logTop:end] {
		out = append(out, m.logLine(l))
	}
	return out
}

func (m *Model) robotLines(now time.Time) []string {
	row, ok := m.robots.get(m.detailRobot)
	if !ok {
		return []string{m.th.dim.Render("  the robot is gone")}
	}
	r := row.robot
	ts := func(t interface{ AsTime() time.Time }, ok bool) string {
		if !ok {
			return "-"
		}
		return m.when(t.AsTime(), now)
	}
	out := []string{
		m.fieldLine("ID", r.GetId()),
		m.fieldLine("Status", m.th.statusWord(row.status)),
		m.fieldLine("Labels", dash(row.labels)),
		m.fieldLine("Capability", dash(strings.Join(r.GetCapabilities(), ", "))),
		m.fieldLine("Version", dash(r.GetVersion())+"   os "+dash(r.GetOs())+"   host "+dash(r.GetHostname())),
		m.fieldLine("Heartbeat", ts(r.GetLastSeen(), r.GetLastSeen() != nil)),
		m.fieldLine("Connected", ts(r.GetConnectedSince(), r.GetConnectedSince() != nil)),
		m.fieldLine("Enrolled", ts(r.GetCreatedAt(), r.GetCreatedAt() != nil)),
		m.fieldLine("Cert ends", ts(r.GetCertExpiresAt(), r.GetCertExpiresAt() != nil)),
		m.fieldLine("Jobs", fmt.Sprintf("%d of %d slots", len(r.GetRunningJobIds()), r.GetMaxJobs())),
	}
	for _, id := range r.GetRunningJobIds() {
		line := "    " + id
		if j, ok := m.jobs.get(id); ok {
			line += "  " + dash(j.job.GetWorkflowName()) + "  " + m.th.statusWord(j.status)
		}
		out = append(out, line)
	}
	return out
}

func (m *Model) helpLines() []string {
	out := []string{}
	for _, b := range bindings {
		keys := strings.Join(b.keys, ", ")
		out = append(out, "  "+m.th.key.Render(fmt.Sprintf("%-16s", keys))+" "+b.help)
	}
	out = append(out, "", "  Filter fields — jobs: id workflow status priority robot step message by;",
		"  robots: id name status label version os host cap; work items: id ref status exception job reason.",
		"  Views: robots jobs queues workflows schedules assets workqueues.")
	return out
}

func (m *Model) statusLine() string {
	switch {
	case m.confirm != nil:
		return m.th.warn.Render(m.confirm.prompt)
	case m.input == inputCommand:
		return ":" + m.inputText + "█"
	case m.input == inputFilter:
		return "/" + m.inputText + "█"
	case m.flash != "":
		if m.flashBad {
			return m.th.bad.Render(m.flash)
		}
		return m.th.ok.Render(m.flash)
	}
	return ""
}

// footerLine lists the keys that work here, from the keymap.
func (m *Model) footerLine() string {
	if m.confirm != nil {
		return m.th.key.Render("y") + " yes  " + m.th.key.Render("n") + " no"
	}
	if m.input != inputNone {
		return m.th.key.Render("enter") + " apply  " + m.th.key.Render("esc") + " cancel"
	}
	var parts []string
	for _, b := range bindings {
		if b.footer && b.in(m) {
			parts = append(parts, m.th.key.Render(b.label)+" "+b.short)
		}
	}
	return strings.Join(parts, "  ")
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

func itoa(n int) string { return strconv.Itoa(n) }

// describeAction is an error from a cancel or drain as the operator reads
// it: the server's own words, with its code.
func describeAction(err error) string {
	var cerr *connect.Error
	if errors.As(err, &cerr) {
		switch cerr.Code() {
		case connect.CodeUnavailable, connect.CodeUnknown:
			return "server unreachable"
		}
		return strings.ReplaceAll(cerr.Code().String(), "_", " ") + ": " + cerr.Message()
	}
	return err.Error()
}
