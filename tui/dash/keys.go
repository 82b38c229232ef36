package dash

import (
	tea "charm.land/bubbletea/v2"
)

// binding is one key the dashboard answers to. The table below is the only
// place keys are defined: it drives the dispatch, the footer and the help
// screen, so what the footer shows is always what works.
type binding struct {
	keys   []string // as tea.KeyPressMsg.String() spells them
	label  string   // how the footer shows the keys
	short  string   // what the footer says the keys do
	help   string
	footer bool // shown in the footer, not only in the help screen
	// in says whether the binding applies to the view.
	in  func(m *Model) bool
	run func(m *Model) tea.Cmd
}

func inViews(views ...viewID) func(m *Model) bool {
	return func(m *Model) bool {
		for _, v := range views {
			if m.view == v {
				return true
			}
		}
		return false
	}
}

func always(*Model) bool { return true }

var lists = inViews(viewRobots, viewJobs, viewQueues, viewWorkflows, viewSchedules, viewAssets, viewWorkQueues, viewWorkItems)

var bindings []binding

func init() {
	// Assigned in init because the actions refer back to the table (help).
	bindings = []binding{
		{keys: []string{"enter"}, label: "enter", short: "open", help: "open the selected row (a schedule's or work item's job)", footer: true,
			in: inViews(viewRobots, viewJobs, viewQueues, viewSchedules, viewWorkQueues, viewWorkItems), run: (*Model).open},
		{keys: []string{"esc"}, label: "esc", short: "back", help: "go back, or clear the filter", footer: true,
			in: func(m *Model) bool { return len(m.stack) > 0 || (m.isList() && !m.cursor().filter.empty()) }, run: (*Model).back},
		{keys: []string{":"}, label: ":", short: "view", help: "switch view: :robots :jobs :queues :workflows :schedules :assets :workqueues", footer: true,
			in: always, run: func(m *Model) tea.Cmd { m.startInput(inputCommand); return nil }},
		{keys: []string{"/"}, label: "/", short: "filter", help: "filter: words, field:value (status:failed robot:r1), -word to exclude", footer: true,
			in: lists, run: func(m *Model) tea.Cmd { m.startInput(inputFilter); return nil }},
		{keys: []string{"s"}, label: "s", short: "sort", help: "sort by the next column", footer: true,
			in: inViews(viewRobots, viewJobs), run: func(m *Model) tea.Cmd { m.nextSort(); return nil }},
		{keys: []string{"S"}, label: "S", short: "reverse", help: "reverse the sort", footer: false,
			in: inViews(viewRobots, viewJobs), run: func(m *Model) tea.Cmd { m.reverseSort(); return nil }},
		{keys: []string{"l"}, label: "l", short: "logs", help: "show the selected job's log", footer: true,
			in: inViews(viewJobs, viewJob), run: (*Model).openLogs},
		{keys: []string{"c"}, label: "c", short: "cancel", help: "cancel the selected job (asks y/n)", footer: true,
			in: inViews(viewJobs, viewJob, viewLogs), run: (*Model).askCancel},
		{keys: []string{"d"}, label: "d", short: "drain", help: "drain the selected robot (asks y/n)", footer: true,
			in: inViews(viewRobots, viewRobot), run: (*Model).askDrain},
		{keys: []string{"p"}, label: "p", short: "pause", help: "pause or resume the selected schedule (asks y/n)", footer: true,
			in: inViews(viewSchedules), run: (*Model).askPauseSchedule},
		{keys: []string{"t"}, label: "t", short: "run now", help: "make a job of the selected schedule now (asks y/n)", footer: true,
			in: inViews(viewSchedules), run: (*Model).askTriggerSchedule},
		{keys: []string{"R"}, label: "R", short: "retry", help: "retry the selected FAILED or ABANDONED work item as a new item (asks y/n)", footer: true,
			in: inViews(viewWorkItems), run: (*Model).askRetryItem},
		{keys: []string{"r"}, label: "r", short: "reload", help: "reload the list on screen (all but workflows also reload every 5 s)", footer: true,
			in: inViews(viewWorkflows, viewSchedules, viewAssets, viewWorkQueues, viewWorkItems), run: (*Model).reload},
		{keys: []string{"j", "down"}, label: "j/k", short: "move", help: "move down", footer: true,
			in: always, run: func(m *Model) tea.Cmd { m.move(1); return nil }},
		{keys: []string{"k", "up"}, label: "k", short: "up", help: "move up", footer: false,
			in: always, run: func(m *Model) tea.Cmd { m.move(-1); return nil }},
		{keys: []string{"pgdown", "ctrl+f"}, label: "pgdn", short: "page", help: "page down", footer: false,
			in: always, run: func(m *Model) tea.Cmd { m.move(m.pageRows()); return nil }},
		{keys: []string{"pgup", "ctrl+b"}, label: "pgup", short: "page", help: "page up", footer: false,
			in: always, run: func(m *Model) tea.Cmd { m.move(-m.pageRows()); return nil }},
		{keys: []string{"g", "home"}, label: "g", short: "top", help: "go to the top", footer: false,
			in: always, run: func(m *Model) tea.Cmd { m.move(-1 << 30); return nil }},
		{keys: []string{"G", "end"}, label: "G", short: "bottom", help: "go to the bottom (in a log: follow new lines)", footer: false,
			in: always, run: func(m *Model) tea.Cmd { m.move(1 << 30); return nil }},
		{keys: []string{"?"}, label: "?", short: "help", help: "show all keys", footer: true,
			in: always, run: func(m *Model) tea.Cmd { m.help = !m.help; return nil }},
		{keys: []string{"q", "ctrl+c"}, label: "q", short: "quit", help: "quit", footer: true,
			in: always, run: func(m *Model) tea.Cmd { m.quit(); return tea.Quit }},
	}
}

// binding finds what key does in the current view.
func (m *Model) binding(key string) *binding {
	for i := range bindings {
		b := &bindings[i]
		for _, k := range b.keys {
			if k == key && b.in(m) {
				return b
			}
		}
	}
	return nil
}
