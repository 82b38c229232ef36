// Package jobs owns the job state machine: it is the only code that changes
// a job. API handlers and the dispatcher say what happened (a submit, an
// accept, an end, a robot lost) and this package decides, from one table,
// which status the job moves to and under which fence; the registry
// applies the change with the guard the table gives it.
package jobs

import (
	"slices"

	"github.com/casarerpa/casare/server/registry"
)

// Event is something that happens to a job.
type Event string

// Events. See DESIGN.md "Jobs".
const (
	// Submit creates the job.
	Submit Event = "submit"
	// Assign gives the job to a robot, which was sent job_assign.
	Assign Event = "assign"
	// Accept is the robot starting the job it was given.
	Accept Event = "accept"
	// Progress is the robot saying how far the job got.
	Progress Event = "progress"
	// Succeed is the robot reporting the job done.
	Succeed Event = "succeed"
	// Fail is the robot reporting the job failed or stopped.
	Fail Event = "fail"
	// HandBack sends the job back for another robot on the same attempt:
	// the robot never ran it (it turned it down, or could not be reached).
	HandBack Event = "hand back"
	// Retry sends the job back on the next attempt: its robot may have run
	// part of it (lost, handed it back after running, came back without it).
	Retry Event = "retry"
	// Expire sends back a job its robot did not accept in time, on the
	// next attempt, which fences a late accept: only while it waits.
	Expire Event = "expire"
	// Cancel is an operator ending the job.
	Cancel Event = "cancel"
	// TimeOut ends a job that ran longer than its timeout.
	TimeOut Event = "time out"
)

// Events lists every event, in the order of the table.
var Events = []Event{Submit, Assign, Accept, Progress, Succeed, Fail, HandBack, Retry, Expire, Cancel, TimeOut}

// Fence says which news about a job an event may act on.
type Fence int

// Fences.
const (
	// Unfenced events apply whatever attempt the job is on (cancel).
	Unfenced Fence = iota
	// FenceAttempt: the event names the attempt it is about and applies only
	// while the job is on it.
	FenceAttempt
	// FenceRobot: the attempt as well as the robot that holds the job; a
	// robot the job was taken from cannot move it.
	FenceRobot
)

// Rule is one row of the transition table: event on a job in From moves it
// to To.
type Rule struct {
	Event Event
	From  registry.JobStatus // "" for the event that creates the job
	To    registry.JobStatus
	Fence Fence
	// NextAttempt starts the job's next attempt.
	NextAttempt bool
	// OutOfAttempts, when set, is where the job goes instead of To when it
	// has no attempt left to start.
	OutOfAttempts registry.JobStatus
}

// Table is the job state machine: every change of a job's status is one of
// these rows, and no other change is made. Both backends apply a row with
// the guard From(event) gives (WHERE status IN …).
var Table = []Rule{
	{Event: Submit, From: "", To: registry.JobPending},

	{Event: Assign, From: registry.JobPending, To: registry.JobAssigned, Fence: FenceAttempt},
	{Event: Accept, From: registry.JobAssigned, To: registry.JobRunning, Fence: FenceRobot},
	{Event: Progress, From: registry.JobRunning, To: registry.JobRunning, Fence: FenceRobot},

	{Event: Succeed, From: registry.JobAssigned, To: registry.JobSucceeded, Fence: FenceRobot},
	{Event: Succeed, From: registry.JobRunning, To: registry.JobSucceeded, Fence: FenceRobot},
	{Event: Fail, From: registry.JobAssigned, To: registry.JobFailed, Fence: FenceRobot},
	{Event: Fail, From: registry.JobRunning, To: registry.JobFailed, Fence: FenceRobot},

	{Event: HandBack, From: registry.JobAssigned, To: registry.JobPending, Fence: FenceRobot},
	{Event: HandBack, From: registry.JobRunning, To: registry.JobPending, Fence: FenceRobot},
	{Event: Retry, From: registry.JobAssigned, To: registry.JobPending, Fence: FenceRobot, NextAttempt: true, OutOfAttempts: registry.JobFailed},
	{Event: Retry, From: registry.JobRunning, To: registry.JobPending, Fence: FenceRobot, NextAttempt: true, OutOfAttempts: registry.JobFailed},
	{Event: Expire, From: registry.JobAssigned, To: registry.JobPending, Fence: FenceRobot, NextAttempt: true, OutOfAttempts: registry.JobFailed},

	{Event: Cancel, From: registry.JobPending, To: registry.JobCancelled},
	{Event: Cancel, From: registry.JobAssigned, To: registry.JobCancelled},
	{Event: Cancel, From: registry.JobRunning, To: registry.JobCancelled},

	{Event: TimeOut, From: registry.JobAssigned, To: registry.JobFailed, Fence: FenceRobot},
	{Event: TimeOut, From: registry.JobRunning, To: registry.JobFailed, Fence: FenceRobot},
}

// Statuses lists every job status, for tests that walk the whole table.
var Statuses = []registry.JobStatus{
	registry.JobPending, registry.JobAssigned, registry.JobRunning,
	registry.JobSucceeded, registry.JobFailed, registry.JobCancelled,
}

// Next returns the rule for event on a job in status from; false when the
// table refuses the event there.
func Next(from registry.JobStatus, event Event) (Rule, bool) {
	for _, r := range Table {
		if r.Event == event && r.From == from {
			return r, true
		}
	}
	return Rule{}, false
}

// From lists the statuses event applies in, sorted: the guard of the
// statement that applies it.
func From(event Event) []registry.JobStatus {
	var out []registry.JobStatus
	for _, r := range Table {
		if r.Event == event && !slices.Contains(out, r.From) {
			out = append(out, r.From)
		}
	}
	slices.Sort(out)
	return out
}

// ruleOf is the shape every row of an event shares (to, fence, next
// attempt): the table states it per row so that it reads as data, and a
// test checks the rows of one event agree.
func ruleOf(event Event) Rule {
	for _, r := range Table {
		if r.Event == event {
			return r
		}
	}
	panic("jobs: no rule for event " + string(event))
}
