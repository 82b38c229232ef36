package dash

import (
	tea "charm.land/bubbletea/v2"
)

// binding is one key the dashboard answers to. The table below is the only
// place keys are defined: it drives the dispatch, the footer and the help
// screen, so what the footer shows is always what works.
type binding struct {
	keys   []string // as tea.KeyPressMsg.String() spells them
	label  string   // how the footer and help show the keys
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

var lists = inViews(viewRobots, viewJobs, viewQueues, viewWorkflows)

var bindings []binding

func init() {
	// Assigned in init because the actions refer back to the table (help).
	bindings = []binding{
		{keys: []string{"enter"}, label: "enter", help: "open the selected row", footer: true,
			in: inViews(viewRobots, viewJobs, viewQueues), run: (*Model).open},
		{keys: []string{"esc"}, label: "esc", help: "go back, or clear the filter", footer: true,
			in: func(m *Model) bool { return len(m.stack) > 0 || (m.isList() && !m.cursor().filter.empty()) }, run: (*Model).back},
		{keys: []string{":"}, label: ":", help: "switch view: :robots :jobs :queues :workflows", footer: true,
			in: always, run: func(m *Model) tea.Cmd { m.startInput(inputCommand); return nil }},
		{keys: []string{"/"}, label: "/", help: "filter: words, field:value (status:failed robot:r1), -word to exclude", footer: true,
			in: lists, run: func(m *Model) tea.Cmd { m.startInput(inputFilter); return nil }},
		{keys: []string{"s"}, label: "s", help: "sort by the next column", footer: true,
			in: inViews(viewRobots, viewJobs), run: func(m *Model) tea.Cmd { m.nextSort(); return nil }},
		{keys: []string{"S"}, label: "S", help: "reverse the sort", footer: false,
			in: inViews(viewRobots, viewJobs), run: func(m *Model) tea.Cmd { m.reverseSort(); return nil }},
		{keys: []string{"l"}, label: "l", help: "show the selected job's log", footer: true,
			in: inViews(viewJobs, viewJob), run: (*Model).openLogs},
		{keys: []string{"c"}, label: "c", help: "cancel the selected job (asks y/n)", footer: true,
			in: inViews(viewJobs, viewJob, viewLogs), run: (*Model).askCancel},
		{keys: []string{"d"}, label: "d", help: "drain the selected robot (asks y/n)", footer: true,
			in: inViews(viewRobots, viewRobot), run: (*Model).askDrain},
		{keys: []string{"r"}, label: "r", help: "reload the workflows", footer: true,
			in: inViews(viewWorkflows), run: (*Model).loadWorkflows},
		{keys: []string{"j", "down"}, label: "j/k", help: "move down / up (also ↓/↑)", footer: true,
			in: always, run: func(m *Model) tea.Cmd { m.move(1); return nil }},
		{keys: []string{"k", "up"}, label: "k", help: "move up", footer: false,
			in: always, run: func(m *Model) tea.Cmd { m.move(-1); return nil }},
		{keys: []string{"pgdown", "ctrl+f"}, label: "pgdn", help: "page down", footer: false,
			in: always, run: func(m *Model) tea.Cmd { m.move(m.pageRows()); return nil }},
		{keys: []string{"pgup", "ctrl+b"}, label: "pgup", help: "page up", footer: false,
			in: always, run: func(m *Model) tea.Cmd { m.move(-m.pageRows()); return nil }},
		{keys: []string{"g", "home"}, label: "g", help: "go to the top", footer: false,
			in: always, run: func(m *Model) tea.Cmd { m.move(-1 << 30); return nil }},
		{keys: []string{"G", "end"}, label: "G", help: "go to the bottom (in a log: follow new lines)", footer: false,
			in: always, run: func(m *Model) tea.Cmd { m.move(1 << 30); return nil }},
		{keys: []string{"?"}, label: "?", help: "show all keys", footer: true,
			in: always, run: func(m *Model) tea.Cmd { m.help = !m.help; return nil }},
		{keys: []string{"q", "ctrl+c"}, label: "q", help: "quit (also ctrl+c)", footer: true,
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
