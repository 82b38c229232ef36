package dash

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

// jobRow is a job with what the list sorts and filters on worked out once,
// when the job arrives, not on every frame.
type jobRow struct {
	job      *casarev1.Job
	status   string // SUCCEEDED
	priority string // NORMAL
	robot    string // the robot's name, or its id until the name is known
	created  time.Time
	started  time.Time
	finished time.Time
	text     string // lower case, everything a free-text filter looks at
}

func newJobRow(j *casarev1.Job, robotName string) jobRow {
	r := jobRow{
		job:      j,
		status:   jobStatus(j.GetStatus()),
		priority: priorityWord(j.GetPriority()),
		robot:    robotName,
	}
	if r.robot == "" {
		r.robot = j.GetRobotId()
	}
	if t := j.GetCreatedAt(); t != nil {
		r.created = t.AsTime()
	}
	if t := j.GetStartedAt(); t != nil {
		r.started = t.AsTime()
	}
	if t := j.GetFinishedAt(); t != nil {
		r.finished = t.AsTime()
	}
	r.text = strings.ToLower(strings.Join([]string{j.GetId(), j.GetWorkflowName(), r.status, r.priority, r.robot, j.GetRobotId(), j.GetStatusMessage(), j.GetCurrentStep()}, " "))
	return r
}

func (r *jobRow) field(name string) (string, bool) {
	j := r.job
	switch name {
	case "id":
		return strings.ToLower(j.GetId()), true
	case "workflow", "wf":
		return strings.ToLower(j.GetWorkflowName()), true
	case "status":
		return strings.ToLower(r.status), true
	case "priority", "prio":
		return strings.ToLower(r.priority), true
	case "robot":
		return strings.ToLower(r.robot + " " + j.GetRobotId()), true
	case "step":
		return strings.ToLower(j.GetCurrentStep()), true
	case "message", "msg":
		return strings.ToLower(j.GetStatusMessage()), true
	case "by":
		return strings.ToLower(j.GetCreatedBy()), true
	}
	return "", false
}

// duration is how long the job ran, or has run so far.
func (r *jobRow) duration(now time.Time) time.Duration {
	if r.started.IsZero() {
		return -1
	}
	end := r.finished
	if end.IsZero() {
		end = now
	}
	return end.Sub(r.started)
}

func (r *jobRow) finishedJob() bool {
	switch r.job.GetStatus() {
	case casarev1.JobStatus_JOB_STATUS_SUCCEEDED, casarev1.JobStatus_JOB_STATUS_FAILED, casarev1.JobStatus_JOB_STATUS_CANCELLED:
		return true
	}
	return false
}

// jobColumns are the jobs view's columns; jobCells fills them in this order.
var jobColumns = []column{
	{title: "ID", min: 8, max: 36, prio: 2, tail: true},
	{title: "WORKFLOW", min: 12, max: 18, prio: 1},
	{title: "STATUS", min: 9, max: 9, prio: 0},
	{title: "PRIORITY", min: 8, max: 8, prio: 6},
	{title: "ROBOT", min: 8, max: 16, prio: 4},
	{title: "ATTEMPT", min: 7, max: 7, prio: 8, right: true},
	{title: "AGE", min: 4, max: 4, prio: 3, right: true},
	{title: "DURATION", min: 8, max: 8, prio: 7, right: true},
	{title: "PROGRESS", min: 8, max: 8, prio: 5, right: true},
}

func jobCells(r *jobRow, now time.Time, cells []string) {
	j := r.job
	cells[0] = j.GetId()
	cells[1] = dash(j.GetWorkflowName())
	cells[2] = r.status
	cells[3] = r.priority
	cells[4] = dash(r.robot)
	cells[5] = fmt.Sprintf("%d/%d", j.GetAttempt(), j.GetMaxAttempts())
	cells[6] = since(r.created, now)
	cells[7] = "-"
	if d := r.duration(now); d >= 0 {
		cells[7] = ShortDuration(d)
	}
	cells[8] = "-"
	switch {
	case j.GetStatus() == casarev1.JobStatus_JOB_STATUS_SUCCEEDED:
		cells[8] = "100%"
	case j.GetStatus() == casarev1.JobStatus_JOB_STATUS_RUNNING || j.GetProgress() > 0:
		cells[8] = fmt.Sprintf("%d%%", j.GetProgress())
	}
}

// jobSorts orders jobs by each column, in jobColumns' order. Times sort
// oldest first ascending; the default is newest first.
var jobSorts = []func(a, b *jobRow) int{
	func(a, b *jobRow) int { return strings.Compare(a.job.GetId(), b.job.GetId()) },
	func(a, b *jobRow) int { return strings.Compare(a.job.GetWorkflowName(), b.job.GetWorkflowName()) },
	func(a, b *jobRow) int { return cmp.Compare(a.job.GetStatus(), b.job.GetStatus()) },
	func(a, b *jobRow) int { return cmp.Compare(a.job.GetPriority(), b.job.GetPriority()) },
	func(a, b *jobRow) int { return strings.Compare(a.robot, b.robot) },
	func(a, b *jobRow) int { return cmp.Compare(a.job.GetAttempt(), b.job.GetAttempt()) },
	func(a, b *jobRow) int { return b.created.Compare(a.created) }, // AGE: younger is smaller
	func(a, b *jobRow) int { return cmp.Compare(a.runFor(), b.runFor()) },
	func(a, b *jobRow) int { return cmp.Compare(a.job.GetProgress(), b.job.GetProgress()) },
}

// runFor is the duration used for sorting: only finished jobs have one
// that does not change with the clock, and a sort key must not.
func (r *jobRow) runFor() time.Duration {
	if r.started.IsZero() || r.finished.IsZero() {
		return -1
	}
	return r.finished.Sub(r.started)
}

// robotRow is a robot with its sort and filter text worked out once.
type robotRow struct {
	robot  *casarev1.Robot
	status string
	labels string // k=v,k=v sorted by key
	text   string
}

func newRobotRow(r *casarev1.Robot) robotRow {
	row := robotRow{robot: r, status: robotStatus(r.GetStatus())}
	keys := slices.Sorted(maps.Keys(r.GetLabels()))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + r.GetLabels()[k]
	}
	row.labels = strings.Join(parts, ",")
	row.text = strings.ToLower(strings.Join([]string{r.GetId(), r.GetName(), row.status, row.labels, r.GetVersion(), r.GetOs(), r.GetHostname(), strings.Join(r.GetCapabilities(), ",")}, " "))
	return row
}

func (r *robotRow) field(name string) (string, bool) {
	x := r.robot
	switch name {
	case "id":
		return strings.ToLower(x.GetId()), true
	case "name":
		return strings.ToLower(x.GetName()), true
	case "status":
		return strings.ToLower(r.status), true
	case "label", "labels":
		return strings.ToLower(r.labels), true
	case "version":
		return strings.ToLower(x.GetVersion()), true
	case "os":
		return strings.ToLower(x.GetOs()), true
	case "host", "hostname":
		return strings.ToLower(x.GetHostname()), true
	case "cap", "capability", "capabilities":
		return strings.ToLower(strings.Join(x.GetCapabilities(), ",")), true
	}
	return "", false
}

var robotColumns = []column{
	{title: "NAME", min: 10, max: 24, prio: 0},
	{title: "STATUS", min: 8, max: 8, prio: 1},
	{title: "LABELS", min: 10, max: 30, prio: 4},
	{title: "JOBS", min: 5, max: 5, prio: 2, right: true},
	{title: "HEARTBEAT", min: 9, max: 9, prio: 3, right: true},
	{title: "VERSION", min: 7, max: 12, prio: 6},
	{title: "OS", min: 6, max: 10, prio: 7},
	{title: "CONNECTED", min: 9, max: 9, prio: 5, right: true},
}

func robotCells(r *robotRow, now time.Time, cells []string) {
	x := r.robot
	cells[0] = x.GetName()
	cells[1] = r.status
	cells[2] = dash(r.labels)
	cells[3] = fmt.Sprintf("%d/%d", len(x.GetRunningJobIds()), x.GetMaxJobs())
	cells[4] = "-"
	if t := x.GetLastSeen(); t != nil {
		cells[4] = since(t.AsTime(), now)
	}
	cells[5] = dash(x.GetVersion())
	cells[6] = dash(x.GetOs())
	cells[7] = "-"
	if t := x.GetConnectedSince(); t != nil && x.GetStatus() != casarev1.RobotStatus_ROBOT_STATUS_OFFLINE {
		cells[7] = since(t.AsTime(), now)
	}
}

var robotSorts = []func(a, b *robotRow) int{
	func(a, b *robotRow) int { return strings.Compare(a.robot.GetName(), b.robot.GetName()) },
	func(a, b *robotRow) int { return cmp.Compare(a.robot.GetStatus(), b.robot.GetStatus()) },
	func(a, b *robotRow) int { return strings.Compare(a.labels, b.labels) },
	func(a, b *robotRow) int {
		return cmp.Compare(len(a.robot.GetRunningJobIds()), len(b.robot.GetRunningJobIds()))
	},
	func(a, b *robotRow) int {
		return b.robot.GetLastSeen().AsTime().Compare(a.robot.GetLastSeen().AsTime())
	},
	func(a, b *robotRow) int { return strings.Compare(a.robot.GetVersion(), b.robot.GetVersion()) },
	func(a, b *robotRow) int { return strings.Compare(a.robot.GetOs(), b.robot.GetOs()) },
	func(a, b *robotRow) int {
		return b.robot.GetConnectedSince().AsTime().Compare(a.robot.GetConnectedSince().AsTime())
	},
}

func jobStatus(s casarev1.JobStatus) string {
	return strings.TrimPrefix(s.String(), "JOB_STATUS_")
}

func robotStatus(s casarev1.RobotStatus) string {
	return strings.TrimPrefix(s.String(), "ROBOT_STATUS_")
}

func priorityWord(p casarev1.JobPriority) string {
	if p == casarev1.JobPriority_JOB_PRIORITY_UNSPECIFIED {
		p = casarev1.JobPriority_JOB_PRIORITY_NORMAL
	}
	return strings.TrimPrefix(p.String(), "JOB_PRIORITY_")
}

// since says how long ago t was, the way kubectl does: 5s, 3m, 2h, 4d.
func since(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return ShortDuration(now.Sub(t))
}

// ShortDuration writes d the way kubectl writes ages: 5s, 3m, 2h, 4d.
// casarectl's tables use it too, so the dashboard and the commands agree.
func ShortDuration(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
