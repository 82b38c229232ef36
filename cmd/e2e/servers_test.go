package e2e

import (
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect/v2"
	"connectrpc.com/connect/v2/connecthttp"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/rpc/casare/v1/casarev1connect"
	"github.com/casarerpa/casare/server/registry/registrytest"
)

// TestAgentDialsTheNextReplica gives a robot two addresses, the first
// of which nobody answers: it registers through the second.
func TestAgentDialsTheNextReplica(t *testing.T) {
	t.Parallel()
	s := startServer(t, t.TempDir(), "--heartbeat-interval", "500ms")
	f := newFleet(t, s)
	live := quicListening.FindStringSubmatch(s.log.String())[1]
	f.enrol("two", "--server", freeUDPAddr(t)+","+live)
	waitStatuses(t, s, map[string]string{"two": "IDLE"}, 30*time.Second)
	waitLog(t, f.agents["two"].log, "server="+live, 1)
}

// TestRobotLeavesAFrozenReplicaAndKeepsItsJob freezes the replica a robot
// is on while it runs a job. The robot hears nothing, not even its
// keep-alives' answers, gives the connection up within a few liveness
// periods (long before the minute its idle timeout would take) and
// registers with the other replica, which takes the running job over:
// it ends on its first attempt.
func TestRobotLeavesAFrozenReplicaAndKeepsItsJob(t *testing.T) {
	t.Parallel()
	dbURL, redisURL := registrytest.DatabaseURL(t), startRedis(t).url()
	// The default heartbeat: a lease of 45s, an idle timeout of a minute.
	shared := []string{"--database-url", dbURL, "--redis-url", redisURL}
	first := startServer(t, t.TempDir(), shared...)
	second := startServer(t, t.TempDir(), append(shared,
		"--ca-cert", filepath.Join(first.dataDir, "ca.crt"), "--ca-key", filepath.Join(first.dataDir, "ca.key"), "--secret-key-file", filepath.Join(first.dataDir, "secret.key"))...)
	replicas, addrOf := map[string]*serverProc{}, map[*serverProc]string{}
	var addrs []string
	for _, s := range []*serverProc{first, second} {
		addr := quicListening.FindStringSubmatch(s.log.String())[1]
		replicas[addr], addrOf[s] = s, addr
		addrs = append(addrs, addr)
	}
	f := newFleet(t, first)
	f.enrol("mover", "--server", strings.Join(addrs, ","))
	agent := f.agents["mover"]
	connected := regexp.MustCompile(`state=CONNECTED server=(\S+)`)
	waitLogWithin(t, agent.log, "state=REGISTERED", 1, 30*time.Second)
	on := connected.FindStringSubmatch(agent.log.String())[1]
	frozen, other := replicas[on], first
	if other == frozen {
		other = second
	}
	f.jobs = casarev1connect.NewJobServiceClient(connect.NewClient(connecthttp.NewTransport(http1, other.url()), bearer(first.adminToken())))
	job := f.submit(sleeper("15s"))
	f.wait(job.GetId(), casarev1.JobStatus_JOB_STATUS_RUNNING, 30*time.Second)

	if err := frozen.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { frozen.cmd.Process.Signal(syscall.SIGCONT) })
	// Half the idle timeout: a robot that waited for it fails here.
	waitLogWithin(t, agent.log, "state=CONNECTED server="+addrOf[other], 1, 30*time.Second)
	if !strings.Contains(agent.log.String(), "the control plane has sent nothing for") {
		t.Fatalf("the robot left its replica for another reason:\n%s", agent.log.String())
	}
	got := f.wait(job.GetId(), casarev1.JobStatus_JOB_STATUS_SUCCEEDED, 60*time.Second)
	if got.GetAttempt() != 1 || strings.Contains(agent.log.String(), "stopping the robot's jobs") {
		t.Fatalf("the job ended on attempt %d; the robot's log:\n%s", got.GetAttempt(), agent.log.String())
	}
}
