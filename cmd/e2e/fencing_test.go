package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect/v2"
	"connectrpc.com/connect/v2/connecthttp"

	agentv1 "github.com/casarerpa/casare/rpc/casare/agent/v1"
	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/rpc/casare/v1/casarev1connect"
	"github.com/casarerpa/casare/server/registry/registrytest"
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

// TestFrozenReplicaLeavesAnAdoptedJobAlone: a replica frozen while its
// robot had a job to accept wakes with the accept timeout overdue. The
// robot had moved to another replica meanwhile, which recorded the job
// running: the woken replica must not send it back, or a second robot
// runs it while the first still does.
func TestFrozenReplicaLeavesAnAdoptedJobAlone(t *testing.T) {
	t.Parallel()
	// The accept timeout fires as A wakes; A's grace period for the robot
	// it lost outlasts the test, and so do its heartbeats.
	t.Run("accept timeout", func(t *testing.T) {
		t.Parallel()
		frozenReplica(t, "2s", "60s", "10s")
	})
	// Only A's loss of the robot acts: after the grace period, or at once
	// when A, woken, takes the robot for lost by missed heartbeats before
	// it reads the close.
	t.Run("grace period", func(t *testing.T) {
		t.Parallel()
		frozenReplica(t, "60s", "1500ms", "500ms")
	})
}

func frozenReplica(t *testing.T, acceptTimeout, grace, heartbeatA string) {
	dbURL, redisURL := registrytest.DatabaseURL(t), startRedis(t).url()
	shared := []string{"--database-url", dbURL, "--redis-url", redisURL,
		"--accept-timeout", acceptTimeout, "--robot-grace-period", grace}
	a := startServer(t, t.TempDir(), append(slices.Clone(shared), "--heartbeat-interval", heartbeatA)...)
	b := startServer(t, t.TempDir(), append(shared, "--heartbeat-interval", "500ms",
		"--ca-cert", filepath.Join(a.dataDir, "ca.crt"), "--ca-key", filepath.Join(a.dataDir, "ca.key"), "--secret-key-file", filepath.Join(a.dataDir, "secret.key"))...)
	f := newFleet(t, a)
	dir := filepath.Join(t.TempDir(), "mover")
	if out, err := agentCmd("enroll", "--token", enrollmentToken(t, a, "mover", "--labels", "kind=mover"), "--dir", dir); err != nil {
		t.Fatalf("enroll: %v\n%s", err, out)
	}
	id := robotID(t, dir)
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "robot.crt"), filepath.Join(dir, "robot.key"))
	if err != nil {
		t.Fatal(err)
	}
	onA := dialRobot(t, quicListening.FindStringSubmatch(a.log.String())[1], cert, id)
	job := f.submit(sleeper("1s"), func(r *casarev1.SubmitJobRequest) {
		r.Requires = &casarev1.Requirements{Labels: map[string]string{"kind": "mover"}}
	})
	if as := onA.next(t).GetJobAssign(); as.GetJobId() != job.GetId() || as.GetAttempt() != 1 {
		t.Fatalf("assigned %v", as)
	}
	// A freezes before it hears the accept; the robot, running the job,
	// goes to B and says so there.
	freeze(t, a.cmd.Process.Pid)
	onA.conn.CloseWithError(0, "moving")
	onB := dialRobot(t, quicListening.FindStringSubmatch(b.log.String())[1], cert, id, &agentv1.RunningJob{JobId: job.GetId(), Attempt: 1})
	// A is frozen: ask B from now on.
	f.jobs = casarev1connect.NewJobServiceClient(connect.NewClient(connecthttp.NewTransport(http1, b.url()), bearer(a.adminToken())))
	f.wait(job.GetId(), casarev1.JobStatus_JOB_STATUS_RUNNING, 10*time.Second)
	time.Sleep(2500 * time.Millisecond) // A's accept timeout is overdue
	if err := a.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	// A wakes and its timer fires at once; give it time to act.
	// A wakes, its overdue timers fire, and it sees the robot gone.
	waitLog(t, a.log, "robot offline", 1)
	time.Sleep(2 * time.Second)
	if got, events := f.get(job.GetId()); got.GetStatus() != casarev1.JobStatus_JOB_STATUS_RUNNING || got.GetAttempt() != 1 {
		t.Fatalf("after the frozen replica woke the job is %s on attempt %d, want RUNNING on 1:\n%s", got.GetStatus(), got.GetAttempt(), eventsText(events))
	}
	// The robot is B's: A's loss of it must not mark it offline.
	robots := casarev1connect.NewRobotServiceClient(connect.NewClient(connecthttp.NewTransport(http1, b.url()), bearer(a.adminToken())))
	if got, err := robots.GetRobot(context.Background(), &casarev1.GetRobotRequest{Id: id}); err != nil || got.GetRobot().GetStatus() == casarev1.RobotStatus_ROBOT_STATUS_OFFLINE || got.GetRobot().GetConnectedSince() == nil {
		t.Fatalf("after the frozen replica woke the robot registered with the other is %v, %v", got.GetRobot(), err)
	}
	onB.send(t, &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_JobComplete{JobComplete: &agentv1.JobComplete{JobId: job.GetId(), Attempt: 1}}})
	f.wait(job.GetId(), casarev1.JobStatus_JOB_STATUS_SUCCEEDED, 10*time.Second)
}

// freeze stops the process pid and returns once it is stopped: the
// signal takes effect when the kernel next schedules the process, and
// until then it still reads its sockets.
func freeze(t *testing.T, pid int) {
	t.Helper()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			t.Fatal(err)
		}
		// pid (comm) state ...: comm may hold spaces and parentheses.
		fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		return len(fields) > 0 && fields[0] == "T"
	}, 10*time.Second, fmt.Sprintf("process %d to stop", pid))
}
