// Package dash is casarectl's live dashboard: robots, jobs, queues and
// workflows as they change, in the terminal, driven from the keyboard.
// Everything it shows comes from the server's watch streams; it keeps the
// last data on screen while the server is away and replaces it with the
// new snapshot once the server is back.
package dash

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	tea "charm.land/bubbletea/v2"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/rpc/casare/v1/casarev1connect"
)

// Clients are the API clients the dashboard uses.
type Clients struct {
	Jobs       casarev1connect.JobServiceClient
	Robots     casarev1connect.RobotServiceClient
	Workflows  casarev1connect.WorkflowServiceClient
	Admin      casarev1connect.AdminServiceClient
	Schedules  casarev1connect.ScheduleServiceClient
	Assets     casarev1connect.AssetServiceClient
	WorkQueues casarev1connect.WorkQueueServiceClient
}

// Options configure the dashboard.
type Options struct {
	// Server is the control plane's URL, shown in the header.
	Server  string
	Clients Clients
	// NoColor renders without colour (NO_COLOR).
	NoColor bool
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Location is where times are shown; nil means time.Local.
	Location *time.Location
}

// Run shows the dashboard on in and out until the operator quits or ctx
// ends.
func Run(ctx context.Context, opts Options, in io.Reader, out io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	m := New(ctx, opts)
	m.feed = newFeed(opts.Clients)
	m.feed.start(ctx)
	p := tea.NewProgram(m, tea.WithContext(ctx), tea.WithInput(in), tea.WithOutput(out))
	_, err := p.Run()
	if err != nil && ctx.Err() != nil {
		return nil
	}
	return err
}

// frame is how often the dashboard takes what the streams delivered and
// draws it: one update per frame however many changes arrived.
const frame = 100 * time.Millisecond

type viewID int

const (
	viewRobots viewID = iota
	viewJobs
	viewQueues
	viewWorkflows
	viewSchedules
	viewAssets
	viewWorkQueues
	viewJob
	viewRobot
	viewLogs
	viewWorkItems
)

// viewNames are the names `:` accepts, with short forms.
var viewNames = map[string]viewID{
	"robots": viewRobots, "robot": viewRobots, "ro": viewRobots, "rb": viewRobots,
	"jobs": viewJobs, "job": viewJobs, "jo": viewJobs,
	"queues": viewQueues, "queue": viewQueues, "qu": viewQueues,
	"workflows": viewWorkflows, "workflow": viewWorkflows, "wf": viewWorkflows,
	"schedules": viewSchedules, "schedule": viewSchedules, "sc": viewSchedules, "sched": viewSchedules,
	"assets": viewAssets, "asset": viewAssets, "as": viewAssets,
	"workqueues": viewWorkQueues, "workqueue": viewWorkQueues, "wq": viewWorkQueues,
}

// cursor is where a list view is: the selected row, the filter and the sort.
type cursor struct {
	sel     string // id of the selected row
	pos     int    // its position, kept when the row goes away
	top     int    // first row on screen
	filter  filter
	sortCol int
	desc    bool
}

type inputMode int

const (
	inputNone inputMode = iota
	inputCommand
	inputFilter
)

// confirmation is a question waiting for y or n.
type confirmation struct {
	prompt string
	yes    func() tea.Cmd
}

// Model is the dashboard's state. Use New.
type Model struct {
	ctx  context.Context
	opts Options
	now  func() time.Time
	loc  *time.Location
	th   theme
	feed *feed

	width, height int

	view  viewID
	stack []viewID // views esc goes back to
	curs  map[viewID]*cursor

	robots *list[robotRow]
	jobs   *list[jobRow]
	names  map[string]string // robot id → name

	workflows    []*casarev1.WorkflowSummary
	workflowsErr string

	schedules polled[*casarev1.Schedule]
	assets    polled[*casarev1.Asset]

	workQueues polled[workQueueRow]
	// The items view shows the items of itemsQueue; itemsMore says the
	// queue holds more than it loaded.
	itemsQueue string
	workItems  polled[*casarev1.WorkItem]
	itemsMore  bool

	detailJob    string
	detailStatus casarev1.JobStatus
	events       []*casarev1.JobEvent
	eventsErr    string
	detailRobot  string

	logJob   string
	logLines []*casarev1.LogLine
	logEnded bool
	logTop   int
	logTail  bool // keep the newest line in view

	queues   []queueRow
	queuesAt time.Time

	streams   map[string]streamState
	connected bool
	user      string

	input     inputMode
	inputText string
	confirm   *confirmation
	flash     string
	flashBad  bool
	flashAt   time.Time
	help      bool
}

// New returns a dashboard showing the robots. It starts no streams: Run
// does, and tests feed it messages instead.
func New(ctx context.Context, opts Options) *Model {
	m := &Model{
		ctx: ctx, opts: opts, now: opts.Now, loc: opts.Location,
		th:      newTheme(opts.NoColor),
		width:   80,
		height:  24,
		curs:    map[viewID]*cursor{},
		names:   map[string]string{},
		streams: map[string]streamState{},
		logTail: true,
	}
	if m.now == nil {
		m.now = time.Now
	}
	if m.loc == nil {
		m.loc = time.Local
	}
	for _, v := range []viewID{viewRobots, viewJobs, viewQueues, viewWorkflows, viewSchedules, viewAssets, viewWorkQueues, viewWorkItems} {
		m.curs[v] = &cursor{}
	}
	m.curs[viewJobs].sortCol = 6 // AGE: newest first
	m.robots = newList(robotSorts[0])
	m.jobs = newList(jobSorts[6])
	return m
}

type tickMsg time.Time

// actionMsg reports how a cancel or drain went.
type actionMsg struct {
	text string
	err  error
}

type whoamiMsg struct {
	user string
	err  error
}

type workflowsMsg struct {
	workflows []*casarev1.WorkflowSummary
	err       error
}

type eventsMsg struct {
	jobID  string
	events []*casarev1.JobEvent
	err    error
}

func tick() tea.Cmd {
	return tea.Tick(frame, func(t time.Time) tea.Msg { return tickMsg(t) })
}

// Init asks who the token belongs to and starts the frame clock.
func (m *Model) Init() tea.Cmd {
	return tea.Batch(tick(), m.whoami())
}

// Update applies one message.
func (m *Model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	var cmd tea.Cmd
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
	case tickMsg:
		if m.feed != nil {
			cmd = m.apply(m.feed.in.take())
		}
		if m.flash != "" && m.now().Sub(m.flashAt) > 8*time.Second {
			m.flash = ""
		}
		cmd = tea.Batch(cmd, m.poll(), tick())
	case batch:
		cmd = m.apply(msg)
	case tea.KeyPressMsg:
		cmd = m.key(msg)
	case actionMsg:
		m.say(msg.text, msg.err)
	case whoamiMsg:
		if msg.err == nil {
			m.user = msg.user
		}
	case workflowsMsg:
		m.workflowsErr = ""
		if msg.err != nil {
			m.workflowsErr = describe(msg.err)
		} else {
			m.workflows = msg.workflows
		}
	case schedulesMsg:
		m.schedules.take(msg.schedules, msg.err)
	case assetsMsg:
		m.assets.take(msg.assets, msg.err)
	case reloadSchedulesMsg:
		cmd = m.loadSchedules()
	case workQueuesMsg:
		m.workQueues.take(msg.rows, msg.err)
	case workItemsMsg:
		m.takeWorkItems(msg)
	case reloadWorkItemsMsg:
		cmd = m.loadWorkItems()
	case eventsMsg:
		if msg.jobID == m.detailJob {
			m.eventsErr = ""
			if msg.err != nil {
				m.eventsErr = describe(msg.err)
			} else {
				m.events = msg.events
			}
		}
	}
	m.settle()
	return m, cmd
}

// say shows a result in the status line.
func (m *Model) say(text string, err error) {
	m.flash, m.flashBad, m.flashAt = text, err != nil, m.now()
	if err != nil {
		m.flash = text + ": " + errorText(err)
	}
}

// apply takes one frame's worth of stream data.
func (m *Model) apply(b batch) tea.Cmd {
	var cmds []tea.Cmd
	namesChanged := false
	for _, op := range b.robots {
		switch op.kind {
		case opReplace:
			ids := make([]string, len(op.robots))
			rows := make([]robotRow, len(op.robots))
			for i, r := range op.robots {
				ids[i], rows[i] = r.GetId(), newRobotRow(r)
			}
			m.robots.replace(ids, rows)
			m.names = make(map[string]string, len(op.robots))
			for _, r := range op.robots {
				m.names[r.GetId()] = r.GetName()
			}
			namesChanged = true
		case opUpsert:
			for _, r := range op.robots {
				m.robots.put(r.GetId(), newRobotRow(r))
				if m.names[r.GetId()] != r.GetName() {
					m.names[r.GetId()] = r.GetName()
					namesChanged = true
				}
			}
		case opDelete:
			for _, r := range op.robots {
				m.robots.remove(r.GetId())
			}
		}
	}
	if namesChanged {
		m.renameRobots()
	}
	for _, op := range b.jobs {
		switch op.kind {
		case opReplace:
			ids := make([]string, len(op.jobs))
			rows := make([]jobRow, len(op.jobs))
			for i, j := range op.jobs {
				ids[i], rows[i] = j.GetId(), newJobRow(j, m.names[j.GetRobotId()])
			}
			m.jobs.replace(ids, rows)
		case opUpsert:
			// A burst is cheaper sorted once than inserted one by one.
			if len(op.jobs) > 1000 {
				m.jobs.resort = true
			}
			for _, j := range op.jobs {
				m.jobs.put(j.GetId(), newJobRow(j, m.names[j.GetRobotId()]))
			}
		case opDelete:
			for _, j := range op.jobs {
				m.jobs.remove(j.GetId())
			}
		}
	}
	for _, c := range b.logs {
		if c.jobID != m.logJob {
			continue
		}
		m.logLines = append(m.logLines, c.lines...)
		if c.ended {
			m.logEnded = true
		}
	}
	for name, s := range b.streams {
		m.streams[name] = s
	}
	if len(b.streams) > 0 {
		up := m.streams["robots"].up && m.streams["jobs"].up
		if up && !m.connected {
			// Back after an outage: the token may have changed hands, and
			// the workflows list is as old as the outage.
			cmds = append(cmds, m.whoami())
			switch m.view {
			case viewWorkflows:
				cmds = append(cmds, m.loadWorkflows())
			case viewSchedules:
				cmds = append(cmds, m.loadSchedules())
			case viewAssets:
				cmds = append(cmds, m.loadAssets())
			case viewWorkQueues:
				cmds = append(cmds, m.loadWorkQueues())
			case viewWorkItems:
				cmds = append(cmds, m.loadWorkItems())
			}
		}
		m.connected = up
	}
	// The job on screen changed status: its timeline has a new event.
	if m.detailJob != "" {
		if r, ok := m.jobs.get(m.detailJob); ok && r.job.GetStatus() != m.detailStatus {
			m.detailStatus = r.job.GetStatus()
			cmds = append(cmds, m.loadEvents(m.detailJob))
		}
	}
	return tea.Batch(cmds...)
}

// renameRobots puts the robots' current names into the job rows, which
// sort and filter by them.
func (m *Model) renameRobots() {
	changed := false
	for _, e := range m.jobs.byID {
		name := m.names[e.v.job.GetRobotId()]
		if name == "" {
			name = e.v.job.GetRobotId()
		}
		if e.v.robot != name {
			e.v = newJobRow(e.v.job, name)
			changed = true
		}
	}
	if changed {
		m.jobs.resort = true
		m.jobs.refilter = true
	}
}

// settle keeps the selection on screen after anything changed.
func (m *Model) settle() {
	if m.view == viewLogs {
		rows := m.bodyRows()
		if m.logTail {
			m.logTop = max(0, len(m.logLines)-rows)
		}
		m.logTop = clamp(m.logTop, 0, max(0, len(m.logLines)-rows))
		return
	}
	if !m.isList() {
		return
	}
	c := m.cursor()
	n := m.rowCount()
	if i := m.indexOf(c.sel); i >= 0 {
		c.pos = i
	}
	c.pos = clamp(c.pos, 0, n-1)
	c.sel = m.idAt(c.pos)
	rows := m.bodyRows()
	if c.pos < c.top {
		c.top = c.pos
	}
	if c.pos >= c.top+rows {
		c.top = c.pos - rows + 1
	}
	c.top = clamp(c.top, 0, max(0, n-rows))
}

func clamp(v, lo, hi int) int {
	if hi < lo {
		return lo
	}
	return max(lo, min(v, hi))
}

func (m *Model) isList() bool {
	switch m.view {
	case viewRobots, viewJobs, viewQueues, viewWorkflows, viewSchedules, viewAssets, viewWorkQueues, viewWorkItems:
		return true
	}
	return false
}

func (m *Model) cursor() *cursor {
	if c, ok := m.curs[m.view]; ok {
		return c
	}
	return &cursor{}
}

// rowCount, indexOf and idAt see the current list view's rows.
func (m *Model) rowCount() int {
	switch m.view {
	case viewRobots:
		return len(m.robots.rows())
	case viewJobs:
		return len(m.jobs.rows())
	case viewQueues:
		return len(m.queueRows())
	case viewWorkflows:
		return len(m.shownWorkflows())
	case viewSchedules:
		return len(m.shownSchedules())
	case viewAssets:
		return len(m.shownAssets())
	case viewWorkQueues:
		return len(m.shownWorkQueues())
	case viewWorkItems:
		return len(m.shownWorkItems())
	}
	return 0
}

func (m *Model) indexOf(id string) int {
	if id == "" {
		return -1
	}
	switch m.view {
	case viewRobots:
		return m.robots.index(id)
	case viewJobs:
		return m.jobs.index(id)
	case viewQueues:
		for i, q := range m.queueRows() {
			if q.name == id {
				return i
			}
		}
	case viewWorkflows:
		for i, w := range m.shownWorkflows() {
			if w.GetName() == id {
				return i
			}
		}
	case viewSchedules:
		for i, s := range m.shownSchedules() {
			if s.GetName() == id {
				return i
			}
		}
	case viewAssets:
		for i, a := range m.shownAssets() {
			if assetKey(a) == id {
				return i
			}
		}
	case viewWorkQueues:
		for i, r := range m.shownWorkQueues() {
			if r.queue.GetName() == id {
				return i
			}
		}
	case viewWorkItems:
		for i, it := range m.shownWorkItems() {
			if it.GetId() == id {
				return i
			}
		}
	}
	return -1
}

func (m *Model) idAt(i int) string {
	if i < 0 {
		return ""
	}
	switch m.view {
	case viewRobots:
		if rows := m.robots.rows(); i < len(rows) {
			return rows[i].id
		}
	case viewJobs:
		if rows := m.jobs.rows(); i < len(rows) {
			return rows[i].id
		}
	case viewQueues:
		if rows := m.queueRows(); i < len(rows) {
			return rows[i].name
		}
	case viewWorkflows:
		if rows := m.shownWorkflows(); i < len(rows) {
			return rows[i].GetName()
		}
	case viewSchedules:
		if rows := m.shownSchedules(); i < len(rows) {
			return rows[i].GetName()
		}
	case viewAssets:
		if rows := m.shownAssets(); i < len(rows) {
			return assetKey(rows[i])
		}
	case viewWorkQueues:
		if rows := m.shownWorkQueues(); i < len(rows) {
			return rows[i].queue.GetName()
		}
	case viewWorkItems:
		if rows := m.shownWorkItems(); i < len(rows) {
			return rows[i].GetId()
		}
	}
	return ""
}

// bodyRows is how many lines the list or log has: the screen less the
// header (2), the column titles (1), the status line and the footer.
func (m *Model) bodyRows() int {
	return max(1, m.height-5)
}

func (m *Model) pageRows() int { return max(1, m.bodyRows()-1) }

// key handles one key press: an open question or input line first, then
// the keymap.
func (m *Model) key(k tea.KeyPressMsg) tea.Cmd {
	key := k.String()
	if m.confirm != nil {
		c := m.confirm
		switch key {
		case "y", "Y":
			m.confirm = nil
			return c.yes()
		case "n", "N", "esc", "q":
			m.confirm = nil
			m.say("nothing done", nil)
		case "ctrl+c":
			m.quit()
			return tea.Quit
		}
		return nil
	}
	if m.input != inputNone {
		return m.inputKey(k)
	}
	if m.help && key == "esc" {
		m.help = false
		return nil
	}
	if b := m.binding(key); b != nil {
		return b.run(m)
	}
	return nil
}

func (m *Model) startInput(mode inputMode) {
	m.input = mode
	m.inputText = ""
	if mode == inputFilter {
		m.inputText = m.cursor().filter.text
	}
}

func (m *Model) inputKey(k tea.KeyPressMsg) tea.Cmd {
	switch k.String() {
	case "ctrl+c":
		m.quit()
		return tea.Quit
	case "esc":
		if m.input == inputFilter {
			m.setFilter("")
		}
		m.input = inputNone
		return nil
	case "enter":
		mode := m.input
		m.input = inputNone
		if mode == inputCommand {
			return m.command(m.inputText)
		}
		return nil
	case "backspace":
		if r := []rune(m.inputText); len(r) > 0 {
			m.inputText = string(r[:len(r)-1])
		}
	case "ctrl+u":
		m.inputText = ""
	case "space":
		m.inputText += " "
	default:
		if t := k.Key().Text; t != "" {
			m.inputText += t
		}
	}
	if m.input == inputFilter {
		m.setFilter(m.inputText)
	}
	return nil
}

// command runs what was typed after `:`.
func (m *Model) command(text string) tea.Cmd {
	name := strings.ToLower(strings.TrimSpace(text))
	if name == "q" || name == "quit" {
		m.quit()
		return tea.Quit
	}
	v, ok := viewNames[name]
	if !ok {
		m.say(fmt.Sprintf("no view %q: try robots, jobs, queues, workflows, schedules, assets or workqueues", name), nil)
		m.flashBad = true
		return nil
	}
	return m.show(v)
}

// show switches to a list view.
func (m *Model) show(v viewID) tea.Cmd {
	m.leaveDetail()
	m.stack = nil
	m.view = v
	m.help = false
	switch v {
	case viewWorkflows:
		return m.loadWorkflows()
	case viewSchedules:
		return m.loadSchedules()
	case viewAssets:
		return m.loadAssets()
	case viewWorkQueues:
		return m.loadWorkQueues()
	}
	return nil
}

func (m *Model) push(v viewID) {
	m.stack = append(m.stack, m.view)
	m.view = v
	m.help = false
}

func (m *Model) back() tea.Cmd {
	if m.help {
		m.help = false
		return nil
	}
	if len(m.stack) == 0 {
		m.setFilter("")
		return nil
	}
	from := m.view
	m.view = m.stack[len(m.stack)-1]
	m.stack = m.stack[:len(m.stack)-1]
	switch {
	case from == viewLogs && m.view != viewJob:
		m.leaveDetail()
	case from == viewJob:
		m.leaveDetail()
	case from == viewRobot:
		m.detailRobot = ""
	case from == viewWorkItems:
		// Back on the queues: their figures moved while the items were on
		// screen.
		if m.workQueues.due(m.now()) {
			return m.loadWorkQueues()
		}
	}
	return nil
}

// leaveDetail forgets the job on screen and stops following its log.
func (m *Model) leaveDetail() {
	m.detailJob, m.detailRobot, m.events, m.eventsErr = "", "", nil, ""
	m.logJob, m.logLines, m.logEnded = "", nil, false
	if m.feed != nil {
		m.feed.stopFollowing()
	}
}

func (m *Model) setFilter(text string) {
	c := m.cursor()
	c.filter = parseFilter(text)
	f := c.filter
	switch m.view {
	case viewRobots:
		if f.empty() {
			m.robots.setFilter(nil)
		} else {
			m.robots.setFilter(func(r *robotRow) bool { return f.match(r.text, r.field) })
		}
	case viewJobs:
		if f.empty() {
			m.jobs.setFilter(nil)
		} else {
			m.jobs.setFilter(func(r *jobRow) bool { return f.match(r.text, r.field) })
		}
	}
	c.pos, c.top = 0, 0
	c.sel = ""
}

func (m *Model) nextSort() {
	c := m.cursor()
	switch m.view {
	case viewRobots:
		c.sortCol = (c.sortCol + 1) % len(robotColumns)
	case viewJobs:
		c.sortCol = (c.sortCol + 1) % len(jobColumns)
	}
	c.desc = false
	m.applySort()
}

func (m *Model) reverseSort() {
	m.cursor().desc = !m.cursor().desc
	m.applySort()
}

func (m *Model) applySort() {
	c := m.cursor()
	switch m.view {
	case viewRobots:
		m.robots.setSort(direction(robotSorts[c.sortCol], c.desc))
	case viewJobs:
		m.jobs.setSort(direction(jobSorts[c.sortCol], c.desc))
	}
}

func direction[R any](cmp func(a, b *R) int, desc bool) func(a, b *R) int {
	if !desc {
		return cmp
	}
	return func(a, b *R) int { return cmp(b, a) }
}

// move moves the selection, or scrolls the log, by n rows.
func (m *Model) move(n int) {
	if m.view == viewLogs {
		rows := m.bodyRows()
		last := max(0, len(m.logLines)-rows)
		m.logTop = clamp(m.logTop+n, 0, last)
		m.logTail = m.logTop >= last
		return
	}
	if !m.isList() {
		return
	}
	c := m.cursor()
	c.pos = clamp(c.pos+n, 0, m.rowCount()-1)
	c.sel = m.idAt(c.pos)
}

// open shows the selected row's detail.
func (m *Model) open() tea.Cmd {
	id := m.cursor().sel
	if id == "" {
		return nil
	}
	switch m.view {
	case viewJobs:
		return m.openJob(id)
	case viewSchedules:
		return m.openSchedule()
	case viewWorkQueues:
		return m.openWorkQueue()
	case viewWorkItems:
		return m.openWorkItemJob()
	case viewRobots:
		m.detailRobot = id
		m.push(viewRobot)
	case viewQueues:
		// A queue opens as the jobs view filtered to its workflow.
		m.view = viewJobs
		if id == allQueues {
			m.setFilter("")
		} else {
			m.setFilter("workflow:" + id)
		}
	}
	return nil
}

func (m *Model) openJob(id string) tea.Cmd {
	m.detailJob = id
	m.detailStatus = casarev1.JobStatus_JOB_STATUS_UNSPECIFIED
	if r, ok := m.jobs.get(id); ok {
		m.detailStatus = r.job.GetStatus()
	}
	m.events, m.eventsErr = nil, ""
	m.followLogs(id)
	m.push(viewJob)
	return m.loadEvents(id)
}

func (m *Model) followLogs(id string) {
	if m.logJob == id {
		return
	}
	m.logJob, m.logLines, m.logEnded, m.logTop, m.logTail = id, nil, false, 0, true
	if m.feed != nil {
		m.feed.followLogs(m.ctx, id)
	}
}

// selectedJob is the job the job keys act on.
func (m *Model) selectedJob() string {
	switch m.view {
	case viewJob, viewLogs:
		return m.detailJob
	case viewJobs:
		return m.cursor().sel
	}
	return ""
}

func (m *Model) openLogs() tea.Cmd {
	id := m.selectedJob()
	if id == "" {
		return nil
	}
	var cmd tea.Cmd
	if m.view == viewJobs {
		m.detailJob = id
		if r, ok := m.jobs.get(id); ok {
			m.detailStatus = r.job.GetStatus()
		}
		cmd = m.loadEvents(id)
	}
	m.followLogs(id)
	m.logTail = true
	m.push(viewLogs)
	return cmd
}

func (m *Model) askCancel() tea.Cmd {
	id := m.selectedJob()
	r, ok := m.jobs.get(id)
	if !ok {
		return nil
	}
	if r.finishedJob() {
		m.say(fmt.Sprintf("job %s already %s", id, r.status), nil)
		return nil
	}
	m.confirm = &confirmation{
		prompt: fmt.Sprintf("Cancel job %s (%s)? y/n", id, dash(r.job.GetWorkflowName())),
		yes:    func() tea.Cmd { return m.cancelJob(id) },
	}
	return nil
}

func (m *Model) askDrain() tea.Cmd {
	id := m.cursor().sel
	if m.view == viewRobot {
		id = m.detailRobot
	}
	r, ok := m.robots.get(id)
	if !ok {
		return nil
	}
	name := r.robot.GetName()
	m.confirm = &confirmation{
		prompt: fmt.Sprintf("Drain robot %s? It takes no new jobs. y/n", name),
		yes:    func() tea.Cmd { return m.drainRobot(id, name) },
	}
	return nil
}

func (m *Model) quit() {
	if m.feed != nil {
		m.feed.stopFollowing()
	}
}

// The commands below call the server; each answers with a message.

func (m *Model) cancelJob(id string) tea.Cmd {
	c := m.opts.Clients.Jobs
	if c == nil {
		return nil
	}
	ctx := m.ctx
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_, err := c.CancelJob(ctx, &casarev1.CancelJobRequest{Id: id, Reason: "cancelled from the casarectl dashboard"})
		if err != nil {
			return actionMsg{text: "cancel job " + id, err: err}
		}
		return actionMsg{text: "cancelled job " + id}
	}
}

func (m *Model) drainRobot(id, name string) tea.Cmd {
	c := m.opts.Clients.Robots
	if c == nil {
		return nil
	}
	ctx := m.ctx
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_, err := c.DrainRobot(ctx, &casarev1.DrainRobotRequest{Id: id})
		if err != nil {
			return actionMsg{text: "drain robot " + name, err: err}
		}
		return actionMsg{text: "draining robot " + name}
	}
}

func (m *Model) whoami() tea.Cmd {
	c := m.opts.Clients.Admin
	if c == nil {
		return nil
	}
	ctx := m.ctx
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		res, err := c.WhoAmI(ctx, &casarev1.WhoAmIRequest{})
		if err != nil {
			return whoamiMsg{err: err}
		}
		role := strings.ToLower(strings.TrimPrefix(res.GetRole().String(), "ROLE_"))
		return whoamiMsg{user: fmt.Sprintf("%s (%s)", res.GetName(), role)}
	}
}

func (m *Model) loadWorkflows() tea.Cmd {
	c := m.opts.Clients.Workflows
	if c == nil {
		return nil
	}
	ctx := m.ctx
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		var all []*casarev1.WorkflowSummary
		req := &casarev1.ListWorkflowsRequest{PageSize: 1000}
		for {
			res, err := c.ListWorkflows(ctx, req)
			if err != nil {
				return workflowsMsg{err: err}
			}
			all = append(all, res.GetWorkflows()...)
			if res.GetNextPageToken() == "" {
				return workflowsMsg{workflows: all}
			}
			req.PageToken = res.GetNextPageToken()
		}
	}
}

func (m *Model) loadEvents(id string) tea.Cmd {
	c := m.opts.Clients.Jobs
	if c == nil {
		return nil
	}
	ctx := m.ctx
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		res, err := c.GetJob(ctx, &casarev1.GetJobRequest{Id: id})
		if err != nil {
			return eventsMsg{jobID: id, err: err}
		}
		return eventsMsg{jobID: id, events: res.GetEvents()}
	}
}

// errorText is an API error as the status line shows it.
func errorText(err error) string {
	return describeAction(err)
}
