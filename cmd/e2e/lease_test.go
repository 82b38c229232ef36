package e2e

import (
	"regexp"
	"strings"
	"testing"
	"time"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

// TestCutOffRobotStopsItsJobWithinItsLease: a robot whose UDP is dropped
// while it runs a long job stops the job once it has heard nothing from
// the control plane for longer than its lease, before the control plane
// gives the job to a second robot; so the two attempts never run at once.
// Once its network is back, its hand-back of the superseded attempt is
// ignored.
func TestCutOffRobotStopsItsJobWithinItsLease(t *testing.T) {
	t.Parallel()
	quicAddr := freeUDPAddr(t)
	s := startServer(t, t.TempDir(), "--quic-addr", quicAddr, "--heartbeat-interval", "1s")
	f := newFleet(t, s)
	relay := newUDPRelay(t, []string{quicAddr})
	f.enrol("cut", "--server", relay.addrs(), "--max-jobs", "1")
	cut := f.agents["cut"]
	waitLog(t, cut.log, "lease=1.5s", 1)

	job := f.submit(sleeper("30s"))
	f.wait(job.GetId(), casarev1.JobStatus_JOB_STATUS_RUNNING, 30*time.Second)
	if got, _ := f.get(job.GetId()); f.ids[got.GetRobotId()] != "cut" || got.GetAttempt() != 1 {
		t.Fatalf("the job runs attempt %d on %q, want attempt 1 on cut", got.GetAttempt(), f.ids[got.GetRobotId()])
	}
	f.enrol("spare", "--max-jobs", "1")
	spare := f.agents["spare"]
	waitLog(t, spare.log, "state=REGISTERED", 1)

	relay.cut.Store(true)
	stoppedLine := regexp.MustCompile(`(?m)^time=(\S+) .*msg="job stopped" robot=\S+ job=` + job.GetId() + ` attempt=1 reason="cut off from the control plane for [^"]*, longer than its lease of 1.5s"`)
	startedLine := regexp.MustCompile(`(?m)^time=(\S+) .*msg="job started" robot=\S+ job=` + job.GetId() + ` attempt=2`)
	deadline := time.Now().Add(60 * time.Second)
	for startedLine.FindStringSubmatch(spare.log.String()) == nil {
		if time.Now().After(deadline) {
			got, events := f.get(job.GetId())
			t.Fatalf("attempt 2 not started on spare within 60s: the job is %s on attempt %d; events:\n%s\ncut's log:\n%s", got.GetStatus(), got.GetAttempt(), eventsText(events), cut.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	m := stoppedLine.FindStringSubmatch(cut.log.String())
	if m == nil {
		t.Fatalf("cut did not stop the job for its lease before attempt 2 started on spare:\n%s", cut.log.String())
	}
	stoppedAt, err := time.Parse(time.RFC3339Nano, m[1])
	if err != nil {
		t.Fatal(err)
	}
	startedAt, err := time.Parse(time.RFC3339Nano, startedLine.FindStringSubmatch(spare.log.String())[1])
	if err != nil {
		t.Fatal(err)
	}
	if !stoppedAt.Before(startedAt) {
		t.Fatalf("attempt 1 stopped on cut at %s, after attempt 2 started on spare at %s", stoppedAt.Format(time.StampMilli), startedAt.Format(time.StampMilli))
	}
	if n := strings.Count(cut.log.String(), `msg="stopping the robot's jobs: cut off from the control plane`); n != 1 {
		t.Fatalf("cut logged the lease running out %d times, want once:\n%s", n, cut.log.String())
	}
	// spare starts the job as it accepts it; the accept is recorded a
	// moment later.
	f.wait(job.GetId(), casarev1.JobStatus_JOB_STATUS_RUNNING, 10*time.Second)
	got, events := f.get(job.GetId())
	if got.GetStatus() != casarev1.JobStatus_JOB_STATUS_RUNNING || got.GetAttempt() != 2 || f.ids[got.GetRobotId()] != "spare" {
		t.Fatalf("the job is %s on attempt %d on %q, want RUNNING on attempt 2 on spare; events:\n%s", got.GetStatus(), got.GetAttempt(), f.ids[got.GetRobotId()], eventsText(events))
	}

	// Back on the network, cut hands back attempt 1, which is ignored.
	relay.cut.Store(false)
	waitLog(t, cut.log, "state=REGISTERED", 2)
	waitLog(t, s.log, "ignored a reject of a job this robot does not hold", 1)
	got, events = f.get(job.GetId())
	if got.GetStatus() != casarev1.JobStatus_JOB_STATUS_RUNNING || got.GetAttempt() != 2 || f.ids[got.GetRobotId()] != "spare" {
		t.Fatalf("after cut came back the job is %s on attempt %d on %q, want RUNNING on attempt 2 on spare; events:\n%s", got.GetStatus(), got.GetAttempt(), f.ids[got.GetRobotId()], eventsText(events))
	}
}
