package dispatch

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/server/registry"
)

// Requirements are what a robot must have to run a job.
type Requirements struct {
	Capabilities []string
	Labels       map[string]string
}

// JobRequirements reads what a robot needs to run the job.
func JobRequirements(job *registry.Job) (Requirements, error) {
	req, err := job.DecodeRequires()
	if err != nil {
		return Requirements{}, err
	}
	return NewRequirements(req), nil
}

// NewRequirements returns the requirements req states.
func NewRequirements(req *casarev1.Requirements) Requirements {
	caps := slices.Clone(req.GetCapabilities())
	slices.Sort(caps)
	return Requirements{Capabilities: caps, Labels: req.GetLabels()}
}

// key identifies requirements: jobs with equal keys fit the same robots.
func (q Requirements) key() string {
	var b strings.Builder
	for _, c := range q.Capabilities {
		b.WriteString(c)
		b.WriteByte(0)
	}
	b.WriteByte(1)
	for _, k := range slices.Sorted(maps.Keys(q.Labels)) {
		b.WriteString(k)
		b.WriteByte(0)
		b.WriteString(q.Labels[k])
		b.WriteByte(0)
	}
	return b.String()
}

// Misses lists, in words, what a robot with these capabilities and labels
// lacks; empty when it fits.
func (q Requirements) Misses(capabilities map[string]bool, labels map[string]string) []string {
	var out []string
	for _, c := range q.Capabilities {
		if !capabilities[c] {
			out = append(out, "missing capability "+c)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(q.Labels)) {
		want := q.Labels[k]
		switch have, ok := labels[k]; {
		case !ok:
			out = append(out, fmt.Sprintf("label %s=%s (not set)", k, want))
		case have != want:
			out = append(out, fmt.Sprintf("label %s=%s (has %s)", k, want, have))
		}
	}
	return out
}

// Fits says whether a robot with these capabilities and labels can run a
// job of these requirements. It is the matcher's own rule, exported so the
// pool metrics judge a pool's robots as dispatch would.
func (q Requirements) Fits(capabilities map[string]bool, labels map[string]string) bool {
	for _, c := range q.Capabilities {
		if !capabilities[c] {
			return false
		}
	}
	for k, v := range q.Labels {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// String says what the requirements ask for.
func (q Requirements) String() string {
	var parts []string
	for _, c := range q.Capabilities {
		parts = append(parts, "capability "+c)
	}
	for _, k := range slices.Sorted(maps.Keys(q.Labels)) {
		parts = append(parts, fmt.Sprintf("label %s=%s", k, q.Labels[k]))
	}
	if len(parts) == 0 {
		return "nothing in particular"
	}
	return strings.Join(parts, ", ")
}

// The status messages that start with one of UnrunnablePrefixes are those
// of pending jobs that no registered robot can run: the metric of such jobs
// counts them by their message.
const (
	noRobotEnrolled     = "waiting: no robot is enrolled"
	noRobotCanRunPrefix = "no registered robot can run this job"
)

// UnrunnablePrefixes start the status message of every pending job that no
// registered robot can run.
var UnrunnablePrefixes = []string{noRobotEnrolled, noRobotCanRunPrefix}

// noRobotCanRun says that no registered robot has what q asks for.
func (q Requirements) noRobotCanRun() string {
	return noRobotCanRunPrefix + ": it needs " + q.String()
}

// capable counts the robots that have what q asks for, whatever their
// state.
func (q Requirements) capable(robots []registry.Robot) int {
	n := 0
	for i := range robots {
		if q.Fits(RobotSets(&robots[i])) {
			n++
		}
	}
	return n
}

// Fit is one robot judged against a job.
type Fit struct {
	RobotID, RobotName string
	Eligible           bool
	Reasons            []string
}

// RobotSets reads a stored robot's capabilities and labels. A robot whose
// row cannot be read has none: it is judged as fitting no job that needs
// any, which its status message then says.
func RobotSets(rb *registry.Robot) (map[string]bool, map[string]string) {
	caps, _ := rb.DecodeCapabilities()
	labels, _ := rb.DecodeLabels()
	set := make(map[string]bool, len(caps))
	for _, c := range caps {
		set[c] = true
	}
	return set, labels
}

// Explain judges every robot against a pending job's requirements, from
// what the registry knows: a robot not seen since staleBefore is offline
// whatever its row says, and active counts the jobs each robot holds.
func Explain(q Requirements, robots []registry.Robot, active map[string]int, staleBefore time.Time) (fits []Fit, summary string) {
	eligible, capable := 0, 0
	for i := range robots {
		rb := &robots[i]
		caps, labels := RobotSets(rb)
		reasons := q.Misses(caps, labels)
		if len(reasons) == 0 {
			capable++
		}
		switch {
		case rb.Status == registry.RobotOffline || rb.LastSeen == nil || rb.LastSeen.Before(staleBefore):
			reasons = append([]string{"offline"}, reasons...)
		case rb.Status == registry.RobotDraining:
			reasons = append([]string{"draining"}, reasons...)
		case active[rb.ID] >= int(max(rb.MaxJobs, 1)):
			reasons = append([]string{fmt.Sprintf("busy (%d of %d slots)", active[rb.ID], max(rb.MaxJobs, 1))}, reasons...)
		}
		fit := Fit{RobotID: rb.ID, RobotName: rb.Name, Eligible: len(reasons) == 0, Reasons: reasons}
		if fit.Eligible {
			eligible++
		}
		fits = append(fits, fit)
	}
	switch {
	case len(robots) == 0:
		summary = "no robot is enrolled"
	case capable == 0:
		summary = q.noRobotCanRun()
	case eligible == 0:
		summary = fmt.Sprintf("waiting for a robot: %d can run it, none is free now", capable)
	default:
		summary = fmt.Sprintf("%d robots can take it now; it is about to be assigned", eligible)
	}
	return fits, summary
}
