package dash

import (
	"context"
	"fmt"
	"strings"
	"time"

	tea "charm.land/bubbletea/v2"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

// pollEvery is how often a view without a watch stream (schedules,
// assets) asks the server again while it is on screen: what changes on its
// own there, a schedule's next and last fire, moves on a scale of seconds.
const pollEvery = 5 * time.Second

// polled is the list of a view that polls: what it shows, why the last
// load failed, and when it last asked.
type polled[T any] struct {
	list    []T
	err     string
	asked   time.Time // when the last load started
	loading bool
}

// start marks a load begun; false when one is under way already.
func (p *polled[T]) start(now time.Time) bool {
	if p.loading {
		return false
	}
	p.loading, p.asked = true, now
	return true
}

// take applies a load's answer; the list on screen stays when the server
// is away, with the reason beside it.
func (p *polled[T]) take(list []T, err error) {
	p.loading, p.err = false, ""
	if err != nil {
		p.err = describe(err)
		return
	}
	p.list = list
}

// due says whether the list is older than pollEvery.
func (p *polled[T]) due(now time.Time) bool { return now.Sub(p.asked) >= pollEvery }

// reloadSchedulesMsg asks for the schedules again after an action on one,
// so its new state shows at once rather than at the next poll.
type reloadSchedulesMsg struct{}

type schedulesMsg struct {
	schedules []*casarev1.Schedule
	err       error
}

func (m *Model) loadSchedules() tea.Cmd {
	c := m.opts.Clients.Schedules
	if c == nil || !m.schedules.start(m.now()) {
		return nil
	}
	ctx := m.ctx
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		var all []*casarev1.Schedule
		req := &casarev1.ListSchedulesRequest{PageSize: 1000}
		for {
			res, err := c.ListSchedules(ctx, req)
			if err != nil {
				return schedulesMsg{err: err}
			}
			all = append(all, res.GetSchedules()...)
			if res.GetNextPageToken() == "" {
				return schedulesMsg{schedules: all}
			}
			req.PageToken = res.GetNextPageToken()
		}
	}
}

// poll reloads the polled view on screen when its list is older than
// pollEvery.
func (m *Model) poll() tea.Cmd {
	switch {
	case m.view == viewSchedules && m.schedules.due(m.now()):
		return m.loadSchedules()
	case m.view == viewAssets && m.assets.due(m.now()):
		return m.loadAssets()
	case m.view == viewWorkQueues && m.workQueues.due(m.now()):
		return m.loadWorkQueues()
	case m.view == viewWorkItems && m.workItems.due(m.now()):
		return m.loadWorkItems()
	}
	return nil
}

func (m *Model) shownSchedules() []*casarev1.Schedule {
	f := m.curs[viewSchedules].filter
	if f.empty() {
		return m.schedules.list
	}
	var out []*casarev1.Schedule
	for _, s := range m.schedules.list {
		state := scheduleState(s)
		text := strings.ToLower(strings.Join([]string{s.GetName(), s.GetWorkflowName(), s.GetCron(), s.GetTimeZone(), state, s.GetDescription()}, " "))
		if f.match(text, func(field string) (string, bool) {
			switch field {
			case "name":
				return strings.ToLower(s.GetName()), true
			case "workflow":
				return strings.ToLower(s.GetWorkflowName()), true
			case "state", "status":
				return state, true
			}
			return "", false
		}) {
			out = append(out, s)
		}
	}
	return out
}

func (m *Model) selectedSchedule() *casarev1.Schedule {
	id := m.cursor().sel
	for _, s := range m.schedules.list {
		if s.GetName() == id {
			return s
		}
	}
	return nil
}

// scheduleState is a schedule's state in one word: paused, active, or
// done once it will never fire again.
func scheduleState(s *casarev1.Schedule) string {
	switch {
	case s.GetPaused():
		return "paused"
	case s.GetNextFireTime() == nil:
		return "done"
	}
	return "active"
}

var scheduleColumns = []column{
	{title: "NAME", min: 12, max: 24, prio: 0},
	{title: "WORKFLOW", min: 10, max: 20, prio: 1},
	{title: "CRON", min: 16, max: 24, prio: 2},
	{title: "TIME ZONE", min: 16, max: 20, prio: 5},
	{title: "STATE", min: 6, max: 6, prio: 1},
	{title: "NEXT FIRE", min: 9, max: 9, prio: 1, right: true},
	{title: "LAST FIRE", min: 9, max: 9, prio: 3, right: true},
	{title: "LAST JOB", min: 9, max: 9, prio: 2},
}

func scheduleCells(s *casarev1.Schedule, now time.Time, cells []string) {
	cells[0] = s.GetName()
	cells[1] = s.GetWorkflowName()
	cells[2] = s.GetCron()
	cells[3] = s.GetTimeZone()
	if cells[3] == "" {
		cells[3] = "UTC"
	}
	cells[4] = scheduleState(s)
	cells[5] = "-"
	if t := s.GetNextFireTime(); t != nil && !s.GetPaused() {
		cells[5] = fireIn(t.AsTime(), now)
	}
	cells[6] = "-"
	if t := s.GetLastFireTime(); t != nil {
		cells[6] = since(t.AsTime(), now)
	}
	cells[7] = "-"
	if s.GetLastJobId() != "" {
		cells[7] = statusText(s.GetLastJobStatus())
	}
}

// fireIn is how long from now until t, as "in 4m"; "now" once it is due.
func fireIn(t, now time.Time) string {
	d := t.Sub(now)
	if d < time.Second {
		return "now"
	}
	return "in " + ShortDuration(d.Truncate(time.Second))
}

// statusText is a job status as the tables show it: RUNNING, FAILED.
func statusText(s casarev1.JobStatus) string {
	if s == casarev1.JobStatus_JOB_STATUS_UNSPECIFIED {
		return "-"
	}
	return strings.TrimPrefix(s.String(), "JOB_STATUS_")
}

// reload asks the server again for the list on screen.
func (m *Model) reload() tea.Cmd {
	switch m.view {
	case viewSchedules:
		return m.loadSchedules()
	case viewAssets:
		return m.loadAssets()
	case viewWorkQueues:
		return m.loadWorkQueues()
	case viewWorkItems:
		return m.loadWorkItems()
	}
	return m.loadWorkflows()
}

// openSchedule opens the job the selected schedule made last.
func (m *Model) openSchedule() tea.Cmd {
	s := m.selectedSchedule()
	if s == nil {
		return nil
	}
	if s.GetLastJobId() == "" {
		m.say(fmt.Sprintf("schedule %s has made no job yet", s.GetName()), nil)
		return nil
	}
	return m.openJob(s.GetLastJobId())
}

func (m *Model) askPauseSchedule() tea.Cmd {
	s := m.selectedSchedule()
	if s == nil {
		return nil
	}
	name := s.GetName()
	if s.GetPaused() {
		m.confirm = &confirmation{
			prompt: fmt.Sprintf("Resume schedule %s? It fires from now on. y/n", name),
			yes:    func() tea.Cmd { return m.scheduleAction(name, "resumed", "resume") },
		}
		return nil
	}
	m.confirm = &confirmation{
		prompt: fmt.Sprintf("Pause schedule %s? It makes no jobs until resumed. y/n", name),
		yes:    func() tea.Cmd { return m.scheduleAction(name, "paused", "pause") },
	}
	return nil
}

func (m *Model) askTriggerSchedule() tea.Cmd {
	s := m.selectedSchedule()
	if s == nil {
		return nil
	}
	name := s.GetName()
	m.confirm = &confirmation{
		prompt: fmt.Sprintf("Run schedule %s now (one job of %s)? y/n", name, s.GetWorkflowName()),
		yes:    func() tea.Cmd { return m.scheduleAction(name, "triggered", "trigger") },
	}
	return nil
}

// scheduleAction pauses, resumes or triggers a schedule, then reloads the
// view so its state shows at once rather than at the next poll.
func (m *Model) scheduleAction(name, done, verb string) tea.Cmd {
	c := m.opts.Clients.Schedules
	if c == nil {
		return nil
	}
	ctx := m.ctx
	act := func() tea.Msg {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		var err error
		text := done + " schedule " + name
		switch verb {
		case "pause":
			_, err = c.PauseSchedule(ctx, &casarev1.PauseScheduleRequest{Name: name})
		case "resume":
			_, err = c.ResumeSchedule(ctx, &casarev1.ResumeScheduleRequest{Name: name})
		case "trigger":
			var res *casarev1.TriggerScheduleResponse
			res, err = c.TriggerSchedule(ctx, &casarev1.TriggerScheduleRequest{Name: name})
			if err == nil {
				text += ": job " + res.GetJob().GetId()
			}
		}
		if err != nil {
			return actionMsg{text: verb + " schedule " + name, err: err}
		}
		return actionMsg{text: text}
	}
	return tea.Sequence(act, func() tea.Msg { return reloadSchedulesMsg{} })
}
