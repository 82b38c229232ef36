package e2e

import (
	"crypto/tls"
	"path/filepath"
	"testing"
	"time"

	agentv1 "github.com/casarerpa/casare/rpc/casare/agent/v1"
	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

// TestAcceptTimeoutFencesTheAttempt: a robot's accept that arrives after
// the accept timeout may be from a robot that started the job; the job
// must go out again on a new attempt, or two robots run one attempt and
// neither report can be told from the other.
func TestAcceptTimeoutFencesTheAttempt(t *testing.T) {
	t.Parallel()
	s := startServer(t, t.TempDir(), "--heartbeat-interval", "500ms", "--accept-timeout", "1s")
	f := newFleet(t, s)
	dir := filepath.Join(t.TempDir(), "slow")
	if out, err := agentCmd("enroll", "--token", enrollmentToken(t, s, "slow", "--labels", "kind=slow"), "--dir", dir); err != nil {
		t.Fatalf("enroll: %v\n%s", err, out)
	}
	id := robotID(t, dir)
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "robot.crt"), filepath.Join(dir, "robot.key"))
	if err != nil {
		t.Fatal(err)
	}
	addr := quicListening.FindStringSubmatch(s.log.String())[1]
	job := f.submit(sleeper("1s"), func(r *casarev1.SubmitJobRequest) {
		r.Requires = &casarev1.Requirements{Labels: map[string]string{"kind": "slow"}}
	})
	robot := dialRobot(t, addr, cert, id)
	if a := robot.next(t).GetJobAssign(); a.GetJobId() != job.GetId() || a.GetAttempt() != 1 {
		t.Fatalf("assigned %v", a)
	}
	// The robot started it, but its accept is late.
	robot.runs(&agentv1.RunningJob{JobId: job.GetId(), Attempt: 1})
	for deadline := time.Now().Add(10 * time.Second); ; {
		got, events := f.get(job.GetId())
		if got.GetStatus() == casarev1.JobStatus_JOB_STATUS_PENDING && got.GetAttempt() == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the accept timeout the job is %s on attempt %d, want PENDING on attempt 2:\n%s", got.GetStatus(), got.GetAttempt(), eventsText(events))
		}
		time.Sleep(50 * time.Millisecond)
	}
	robot.send(t, &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_JobAccept{JobAccept: &agentv1.JobAccept{JobId: job.GetId(), Attempt: 1}}})
	for {
		if c := robot.next(t).GetJobCancel(); c != nil {
			if c.GetJobId() != job.GetId() || c.GetAttempt() != 1 {
				t.Fatalf("cancelled %v, want attempt 1 of the job", c)
			}
			break
		}
	}
	if got, _ := f.get(job.GetId()); got.GetAttempt() != 2 || got.GetStatus() != casarev1.JobStatus_JOB_STATUS_PENDING {
		t.Fatalf("after the late accept the job is %s on attempt %d", got.GetStatus(), got.GetAttempt())
	}
}
