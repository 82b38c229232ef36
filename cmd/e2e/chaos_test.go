package e2e

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect/v2"
	"connectrpc.com/connect/v2/connecthttp"
	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/types/known/durationpb"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/rpc/casare/v1/casarev1connect"
	"github.com/casarerpa/casare/server/registry/registrytest"
)

// The short run is part of every test run (not of -short ones); make
// chaos runs the long one.
var (
	chaosDuration = flag.Duration("chaos.duration", 60*time.Second, "how long the fault suite injects faults")
	chaosFaults   = flag.Int("chaos.faults", 50, "how many faults the fault suite injects over its duration")
	chaosAgents   = flag.Int("chaos.agents", 10, "how many robots the fault suite runs")
)

// Fault kinds, as the report names them.
const (
	faultKillReplica  = "kill -9 replica"
	faultStopReplica  = "SIGSTOP replica"
	faultKillAgent    = "kill -9 agent"
	faultRestartRedis = "restart Redis"
	faultStopPostgres = "stop PostgreSQL"
	faultCutAgent     = "drop agent UDP"
)

// pgDown is the target of the span PostgreSQL was actually down, within
// the longer one its fault holds it.
const pgDown = "postgres down"

var faultKinds = []string{faultKillReplica, faultStopReplica, faultKillAgent, faultRestartRedis, faultStopPostgres, faultCutAgent}

const (
	chaosReplicas = 3
	// The heartbeat gives robots a lease of 6s (see gateway.Lease): longer
	// than a robot takes to give up a dead or frozen replica and register
	// with another, so their running jobs go on, and short enough that a
	// robot that is really gone loses its jobs (after 12s) within the run.
	chaosHeartbeat = 4 * time.Second
	// An execution runs this long between its start and end records: long
	// enough for two executions to overlap measurably. One job in six runs
	// longer than the control plane takes to give up on a robot.
	chaosJobDelay     = 400 * time.Millisecond
	chaosLongJobDelay = 15 * time.Second
	chaosLongJobEvery = 6
	// A job is submitted this often: about half of what the robots can
	// run while the faults go on, so what is left at the end is the
	// faults' doing, not a backlog the suite built.
	chaosSubmitEvery = 400 * time.Millisecond
)

// chaos is one run of the fault suite: the processes it owns and what it
// recorded of them.
type chaos struct {
	t        *testing.T
	pg       *registrytest.Cluster
	redis    *redisProc
	replicas []*replica
	agents   []*chaosAgent
	token    string
	clock    string // URL of the suite's clock, which executions ask for the time

	mu       sync.Mutex
	faults   map[string]int
	busy     map[string]bool // what a fault in progress holds: "replica1", "agent3", "postgres", "redis"
	faulted  []faultSpan     // every fault, for the report
	lastHeal time.Time
	end      time.Time // when inject starts no more faults
	errs     []string  // what went wrong in the suite itself
}

type faultSpan struct {
	kind     string
	target   string
	from, to time.Time
}

// TestChaos runs a control plane of three replicas on one PostgreSQL and
// one Redis with robots behind relays, a steady stream of jobs, and
// random faults: replicas killed and frozen, agents killed and cut off,
// Redis restarted, PostgreSQL stopped. It then checks from the database
// and the robots' own records that no job was lost, none completed
// twice, no attempt ran on two robots at once, no job ran more often than
// its attempts say, and every job ended within 60s of the last fault.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("the fault suite takes minutes")
	}
	c := &chaos{t: t, faults: map[string]int{}, busy: map[string]bool{}}
	c.pg = registrytest.NewCluster(t)
	c.redis = startRedis(t)
	c.startClock()
	c.startReplicas()
	c.startAgents(*chaosAgents)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sub := newSubmitter(c)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); sub.run(ctx) }()

	start := time.Now()
	c.inject(*chaosDuration, *chaosFaults)
	cancel()
	wg.Wait()
	c.healAll()
	healed := time.Now()
	t.Logf("faults over after %s; %d jobs submitted; waiting for them to end", healed.Sub(start).Round(time.Second), len(sub.jobs))

	rep := c.check(sub, healed)
	t.Log("\n" + rep.table())
	if n := len(c.errs); n > 0 {
		errs := c.errs[:min(n, 10)]
		t.Errorf("the suite itself (%d problems, the first %d): %s", n, len(errs), strings.Join(errs, "; "))
	}
	for _, f := range rep.failures() {
		t.Error(f)
	}
	if t.Failed() || os.Getenv("CASARE_CHAOS_LOGS") != "" {
		c.dumpLogs()
	}
}

func (c *chaos) fail(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.errs = append(c.errs, fmt.Sprintf(format, args...))
}

// startClock serves the time, so executions on every robot stamp their
// records from one clock.
func (c *chaos) startClock() {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		c.t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, time.Now().UnixNano())
	})}
	go srv.Serve(l)
	c.t.Cleanup(func() { srv.Close() })
	c.clock = "http://" + l.Addr().String() + "/now"
}

func (c *chaos) startReplicas() {
	t := c.t
	for i := range chaosReplicas {
		r := &replica{
			httpAddr: fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t)),
			quicAddr: freeUDPAddr(t),
			dataDir:  t.TempDir(),
		}
		r.name = fmt.Sprintf("replica%d", i+1)
		r.path = filepath.Join(bin, "casare-server")
		r.env = filterEnv(os.Environ(), "CASARE_")
		r.args = []string{
			"--http-addr", r.httpAddr, "--quic-addr", r.quicAddr, "--data-dir", r.dataDir,
			"--database-url", c.pg.URL(), "--redis-url", c.redis.url(),
			"--heartbeat-interval", chaosHeartbeat.String(), "--accept-timeout", "3s",
			"--reconcile-interval", "1s", "--shutdown-timeout", "2s",
		}
		if i > 0 {
			first := c.replicas[0].dataDir
			r.args = append(r.args, "--ca-cert", filepath.Join(first, "ca.crt"), "--ca-key", filepath.Join(first, "ca.key"), "--secret-key-file", filepath.Join(first, "secret.key"))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		err := r.up(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(r.kill)
		c.replicas = append(c.replicas, r)
		if i == 0 {
			b, err := os.ReadFile(filepath.Join(r.dataDir, "admin.token"))
			if err != nil {
				t.Fatal(err)
			}
			c.token = strings.TrimSpace(string(b))
		}
	}
}

func (c *chaos) robots(r *replica) casarev1connect.RobotServiceClient {
	return casarev1connect.NewRobotServiceClient(connect.NewClient(connecthttp.NewTransport(http1, r.url()), bearer(c.token)))
}

func (c *chaos) startAgents(n int) {
	t := c.t
	var targets []string
	for _, r := range c.replicas {
		targets = append(targets, r.quicAddr)
	}
	for i := range n {
		name := fmt.Sprintf("robot%02d", i+1)
		res, err := c.robots(c.replicas[0]).CreateEnrollmentToken(context.Background(), &casarev1.CreateEnrollmentTokenRequest{Name: name})
		if err != nil {
			t.Fatalf("enrollment token: %v", err)
		}
		dir := filepath.Join(t.TempDir(), name)
		if out, err := agentCmd("enroll", "--token", res.GetToken(), "--dir", dir); err != nil {
			t.Fatalf("enroll %s: %v\n%s", name, err, out)
		}
		a := &chaosAgent{robotID: robotID(t, dir), root: filepath.Join(dir, "tmp"), relay: newUDPRelay(t, targets)}
		if err := os.MkdirAll(a.root, 0o755); err != nil {
			t.Fatal(err)
		}
		a.name = name
		a.path = filepath.Join(bin, "casare-agent")
		// Job directories are made under TMPDIR, so "../exec.log" from a
		// job's directory is this robot's record, inside its file root.
		a.env = append(filterEnv(os.Environ(), "TMPDIR="), "TMPDIR="+a.root)
		a.args = []string{"run", "--dir", dir, "--server", a.relay.addrs(), "--max-jobs", "2",
			"--no-browser", "--file-root", a.root, "--drain-timeout", "5s"}
		if err := a.start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(a.kill)
		c.agents = append(c.agents, a)
	}
	deadline := time.Now().Add(60 * time.Second)
	for _, a := range c.agents {
		for !strings.Contains(a.current(), "state=REGISTERED") {
			if time.Now().After(deadline) {
				t.Fatalf("%s not registered within 60s\n%s", a.name, a.current())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// chaosWorkflow records the start and end of each execution, with the
// job, the attempt, the time from the suite's clock and how long it runs,
// in the robot's exec.log.
func (c *chaos) chaosWorkflow(delay time.Duration) *casarev1.Workflow {
	record := func(what, clock string) string {
		return fmt.Sprintf("%s ${{ job.id }} ${{ job.attempt }} ${{ steps.%s.outputs.body }} %d\n", what, clock, delay.Milliseconds())
	}
	return workflow("chaos",
		step("t0", "http.request", map[string]any{"url": c.clock, "fail_on_status": true, "timeout": "5s"}),
		step("start", "file.write", map[string]any{"path": "../exec.log", "append": true, "content": record("start", "t0")}),
		step("work", "delay", map[string]any{"duration": delay.String()}),
		step("t1", "http.request", map[string]any{"url": c.clock, "fail_on_status": true, "timeout": "5s"}),
		step("end", "file.write", map[string]any{"path": "../exec.log", "append": true, "content": record("end", "t1")}),
	)
}

// submitter sends jobs at a steady pace to the replicas in turn. A submit
// that fails is sent again with the same idempotency key, to another
// replica, until it is answered: a submit lost to a fault must be
// neither lost nor doubled.
type submitter struct {
	c       *chaos
	clients []casarev1connect.JobServiceClient
	mu      sync.Mutex
	jobs    map[string]string // idempotency key -> job id
	retries int
}

func newSubmitter(c *chaos) *submitter {
	s := &submitter{c: c, jobs: map[string]string{}}
	for _, r := range c.replicas {
		client := &http.Client{Timeout: 10 * time.Second, Transport: http1.Transport}
		s.clients = append(s.clients, casarev1connect.NewJobServiceClient(connect.NewClient(connecthttp.NewTransport(client, r.url()), bearer(c.token))))
	}
	return s
}

func (s *submitter) run(ctx context.Context) {
	short, long := s.c.chaosWorkflow(chaosJobDelay), s.c.chaosWorkflow(chaosLongJobDelay)
	tick := time.NewTicker(chaosSubmitEvery)
	defer tick.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		key := fmt.Sprintf("chaos-%05d", n)
		wf := short
		if n%chaosLongJobEvery == chaosLongJobEvery-1 {
			wf = long
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.submit(key, wf, n)
		}()
	}
}

// submit keeps trying, past the end of the fault period: a key once sent
// may have made a job, and only an answer says which.
func (s *submitter) submit(key string, wf *casarev1.Workflow, n int) {
	req := &casarev1.SubmitJobRequest{
		Source:         &casarev1.SubmitJobRequest_Workflow{Workflow: wf},
		IdempotencyKey: key, MaxAttempts: 100, Timeout: durationpb.New(10 * time.Minute),
	}
	deadline := time.Now().Add(3 * time.Minute)
	for i := n; ; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		res, err := s.clients[i%len(s.clients)].SubmitJob(ctx, req)
		cancel()
		if err == nil {
			s.mu.Lock()
			if old, ok := s.jobs[key]; ok && old != res.GetJob().GetId() {
				s.c.fail("key %s gave jobs %s and %s", key, old, res.GetJob().GetId())
			}
			s.jobs[key] = res.GetJob().GetId()
			s.mu.Unlock()
			return
		}
		switch connect.CodeOf(err) {
		case connect.CodeUnavailable, connect.CodeDeadlineExceeded, connect.CodeUnknown, connect.CodeAborted, connect.CodeCanceled, connect.CodeInternal:
		default:
			s.c.fail("submit %s: %v", key, err)
			return
		}
		s.mu.Lock()
		s.retries++
		s.mu.Unlock()
		if time.Now().After(deadline) {
			s.c.fail("submit %s: no answer within 3 minutes: %v", key, err)
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// inject runs faults at random for the duration, spread evenly, each on
// a target no other fault holds. Faults with a length (a frozen replica,
// PostgreSQL stopped, an agent cut off) run on their own while the next
// ones start.
func (c *chaos) inject(d time.Duration, n int) {
	var wg sync.WaitGroup
	defer wg.Wait()
	every := d / time.Duration(max(n, 1))
	end := time.Now().Add(d)
	c.mu.Lock()
	c.end = end
	c.mu.Unlock()
	for i := 0; i < n && time.Now().Before(end); i++ {
		next := time.Now().Add(every)
		for range 20 {
			kind := faultKinds[rand.IntN(len(faultKinds))]
			if c.startFault(&wg, kind) {
				break
			}
		}
		time.Sleep(time.Until(next))
	}
}

// hold takes a target for a fault; false when another fault holds it.
func (c *chaos) hold(target string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.busy[target] {
		return false
	}
	c.busy[target] = true
	return true
}

// downReplicas counts the replicas a fault holds.
func (c *chaos) downReplicas() int {
	var names []string
	for _, r := range c.replicas {
		names = append(names, r.name)
	}
	return c.held(names)
}

// downAgents counts the agents a fault holds.
func (c *chaos) downAgents() int {
	var names []string
	for _, a := range c.agents {
		names = append(names, a.name)
	}
	return c.held(names)
}

// held counts the targets a fault holds.
func (c *chaos) held(names []string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, name := range names {
		if c.busy[name] {
			n++
		}
	}
	return n
}

func (c *chaos) release(target, kind string, from time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.busy, target)
	now := time.Now()
	c.faulted = append(c.faulted, faultSpan{kind: kind, target: target, from: from, to: now})
	if now.After(c.lastHeal) {
		c.lastHeal = now
	}
}

func (c *chaos) count(kind string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.faults[kind]++
}

func between(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(rand.Int64N(int64(hi-lo)+1))
}

// startFault starts one fault of the kind; false when no target is free.
func (c *chaos) startFault(wg *sync.WaitGroup, kind string) bool {
	pick := func(names []string) string {
		for _, i := range rand.Perm(len(names)) {
			if c.hold(names[i]) {
				return names[i]
			}
		}
		return ""
	}
	var replicaNames, agentNames []string
	for _, r := range c.replicas {
		replicaNames = append(replicaNames, r.name)
	}
	for _, a := range c.agents {
		agentNames = append(agentNames, a.name)
	}
	run := func(target string, f func()) {
		from := time.Now()
		c.count(kind)
		wg.Add(1)
		go func() {
			defer wg.Done()
			f()
			c.release(target, kind, from)
		}()
	}
	// A quarter of the robots at most are killed or cut off at once: cuts
	// last up to a minute, and with more the fleet would be away most of
	// the run and the suite would measure only that.
	if (kind == faultKillAgent || kind == faultCutAgent) && c.downAgents() >= max(len(c.agents)/4, 1) {
		return false
	}
	switch kind {
	case faultKillReplica, faultStopReplica:
		// One replica always serves: the suite tests failover, not a
		// control plane that is down altogether.
		if c.downReplicas() >= chaosReplicas-1 {
			return false
		}
		target := pick(replicaNames)
		if target == "" {
			return false
		}
		r := c.replica(target)
		if kind == faultKillReplica {
			r.kill()
			run(target, func() {
				time.Sleep(between(500*time.Millisecond, 5*time.Second))
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				if err := r.up(ctx); err != nil {
					c.fail("restart %s: %v", target, err)
				}
			})
			return true
		}
		if err := r.signal(syscall.SIGSTOP); err != nil {
			c.fail("SIGSTOP %s: %v", target, err)
		}
		run(target, func() {
			time.Sleep(between(time.Second, 15*time.Second))
			if err := r.signal(syscall.SIGCONT); err != nil {
				c.fail("SIGCONT %s: %v", target, err)
			}
		})
		return true
	case faultKillAgent:
		target := pick(agentNames)
		if target == "" {
			return false
		}
		a := c.agent(target)
		a.kill()
		run(target, func() {
			time.Sleep(between(200*time.Millisecond, 3*time.Second))
			if err := a.start(); err != nil {
				c.fail("restart %s: %v", target, err)
			}
		})
		return true
	case faultCutAgent:
		target := pick(agentNames)
		if target == "" {
			return false
		}
		a := c.agent(target)
		a.relay.cut.Store(true)
		run(target, func() {
			time.Sleep(between(10*time.Second, 60*time.Second))
			a.relay.cut.Store(false)
		})
		return true
	case faultRestartRedis:
		if !c.hold("redis") {
			return false
		}
		run("redis", func() {
			if err := c.redis.restart(); err != nil {
				c.fail("restart Redis: %v", err)
			}
		})
		return true
	case faultStopPostgres:
		if !c.hold("postgres") {
			return false
		}
		down := time.Now()
		if err := c.pg.Stop(); err != nil {
			c.fail("stop PostgreSQL: %v", err)
		}
		run("postgres", func() {
			outage := between(5*time.Second, 30*time.Second)
			time.Sleep(outage)
			if err := c.pg.Start(); err != nil {
				c.fail("start PostgreSQL: %v", err)
			}
			c.mu.Lock()
			c.faulted = append(c.faulted, faultSpan{kind: faultStopPostgres, target: pgDown, from: down, to: time.Now()})
			c.mu.Unlock()
			// The database stays up three times as long as it was away: a
			// control plane without one runs no jobs, and one without it
			// half the time would measure only the backlog. No fault
			// starts after the run's end, so none need be kept off then.
			time.Sleep(min(3*outage, time.Until(c.end)))
		})
		return true
	}
	return false
}

func (c *chaos) replica(name string) *replica {
	for _, r := range c.replicas {
		if r.name == name {
			return r
		}
	}
	panic(name)
}

func (c *chaos) agent(name string) *chaosAgent {
	for _, a := range c.agents {
		if a.name == name {
			return a
		}
	}
	panic(name)
}

// healAll makes sure every process runs again once the faults are over:
// inject has waited for each fault to undo itself, so this only catches
// what the suite itself failed to bring back.
func (c *chaos) healAll() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, r := range c.replicas {
		if err := r.up(ctx); err != nil {
			c.fail("%s after the faults: %v", r.name, err)
		}
	}
	for _, a := range c.agents {
		a.reap()
		if !a.running() {
			c.fail("%s exited during the run:\n%s", a.name, a.current())
			_ = a.start()
		}
	}
}

func (c *chaos) dumpLogs() {
	dir := os.Getenv("CASARE_CHAOS_LOGS")
	if dir == "" {
		dir = c.t.TempDir()
		c.t.Logf("set CASARE_CHAOS_LOGS to keep the processes' logs")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return
	}
	for _, r := range c.replicas {
		os.WriteFile(filepath.Join(dir, r.name+".log"), []byte(r.output()), 0o644)
	}
	for _, a := range c.agents {
		os.WriteFile(filepath.Join(dir, a.name+".log"), []byte(a.output()), 0o644)
		if b, err := os.ReadFile(a.records()); err == nil {
			os.WriteFile(filepath.Join(dir, a.name+".exec.log"), b, 0o644)
		}
	}
	var b strings.Builder
	for _, f := range c.faulted {
		fmt.Fprintf(&b, "%s %s %s %s\n", f.from.Format(time.RFC3339Nano), f.to.Format(time.RFC3339Nano), f.kind, f.target)
	}
	os.WriteFile(filepath.Join(dir, "faults.log"), []byte(b.String()), 0o644)
	c.t.Logf("logs in %s", dir)
}

// execution is one run of a job on a robot, from its records.
type execution struct {
	job      string
	attempt  int
	robot    string
	from, to time.Time
	ended    bool
}

// executions reads every robot's records. An execution without an end
// record was cut short: it ran until its robot stopped it (its log says
// when) or was killed, or at most its delay and a second more.
func (c *chaos) executions() []execution {
	var out []execution
	for _, a := range c.agents {
		b, err := os.ReadFile(a.records())
		if err != nil {
			continue
		}
		open := map[string]int{} // job/attempt -> index in out
		for line := range strings.SplitSeq(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) != 5 {
				continue
			}
			ms, _ := strconv.Atoi(f[4])
			delay := time.Duration(ms) * time.Millisecond
			attempt, _ := strconv.Atoi(f[2])
			ns, _ := strconv.ParseInt(f[3], 10, 64)
			at := time.Unix(0, ns)
			key := f[1] + "/" + f[2]
			switch f[0] {
			case "start":
				out = append(out, execution{job: f[1], attempt: attempt, robot: a.name, from: at, to: at.Add(delay + time.Second)})
				open[key] = len(out) - 1
			case "end":
				if i, ok := open[key]; ok {
					out[i].to, out[i].ended = at, true
					delete(open, key)
				}
			}
		}
		// A robot that stopped an execution (its lease ran out) says when.
		stops := map[string]time.Time{}
		for _, log := range a.logs {
			for line := range strings.SplitSeq(log.String(), "\n") {
				if !strings.Contains(line, `msg="job stopped"`) || field(line, "attempt") == "" {
					continue
				}
				if at, err := time.Parse(time.RFC3339Nano, field(line, "time")); err == nil {
					stops[field(line, "job")+"/"+field(line, "attempt")] = at
				}
			}
		}
		for key, i := range open {
			if at, ok := stops[key]; ok && at.After(out[i].from) && at.Before(out[i].to) {
				out[i].to = at
			}
			for _, f := range c.faulted {
				if f.target == a.name && f.kind == faultKillAgent && f.from.After(out[i].from) && f.from.Before(out[i].to) {
					out[i].to = f.from
				}
			}
		}
	}
	return out
}

// chaosReport is what the suite found.
type chaosReport struct {
	submitted, retries int
	faults             map[string]int
	succeeded, failed  int
	failedReasons      map[string]int
	lost               []string
	twice              []string
	concurrent         []string
	beyond             []string
	stuck              []string
	maxWithout         time.Duration
	maxWithoutRobot    string
	maxReregister      time.Duration
	maxReregisterAt    string // the robot and the fault
	reregisters        int
	reregistersNoDB    int      // while PostgreSQL was down too, so not timed
	carried            int      // executions running when their robot's replica was lost
	cutShort           []string // of those, stopped though the robot found another replica
	cutByOther         int      // of those, stopped by another fault
	executions         int
	unanswered         int // jobs that ran though their submit got no answer
}

func (c *chaos) check(sub *submitter, healed time.Time) *chaosReport {
	t := c.t
	rep := &chaosReport{faults: c.faults, failedReasons: map[string]int{}, submitted: len(sub.jobs), retries: sub.retries}
	ctx := context.Background()
	db, err := pgx.Connect(ctx, c.pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(ctx)
	ids := make([]string, 0, len(sub.jobs))
	for _, id := range sub.jobs {
		ids = append(ids, id)
	}
	nonTerminal := func() []string {
		rows, err := db.Query(ctx, `SELECT id FROM jobs WHERE id = ANY($1) AND status NOT IN ('succeeded', 'failed', 'cancelled') ORDER BY id`, ids)
		if err != nil {
			t.Fatal(err)
		}
		list, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return list
	}
	c.mu.Lock()
	last := healed
	if c.lastHeal.After(last) {
		last = c.lastHeal
	}
	c.mu.Unlock()
	for {
		rep.stuck = nonTerminal()
		if len(rep.stuck) == 0 || time.Since(last) > 60*time.Second {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	// A stuck job is lost if it does not end in another minute either.
	rep.lost = rep.stuck
	for deadline := time.Now().Add(60 * time.Second); len(rep.lost) > 0 && time.Now().Before(deadline); {
		time.Sleep(time.Second)
		rep.lost = nonTerminal()
	}
	// What the database says of each lost job, to tell where it stopped.
	for i, id := range rep.lost {
		var status, robot, msg string
		var attempt int
		if err := db.QueryRow(ctx, `SELECT status, attempt, robot_id, status_message FROM jobs WHERE id = $1`, id).Scan(&status, &attempt, &robot, &msg); err != nil {
			continue
		}
		events, err := db.Query(ctx, `SELECT time, from_status, to_status, attempt, robot_id, reason FROM job_events WHERE job_id = $1 ORDER BY id`, id)
		if err != nil {
			continue
		}
		var history []string
		for events.Next() {
			var at time.Time
			var from, to, robotID, reason string
			var n int
			if events.Scan(&at, &from, &to, &n, &robotID, &reason) == nil {
				history = append(history, fmt.Sprintf("%s %s→%s #%d %s %q", at.Format("15:04:05.000"), from, to, n, robotID, reason))
			}
		}
		events.Close()
		rep.lost[i] = fmt.Sprintf("%s: %s attempt %d robot %q %q; events: %s", id, status, attempt, robot, msg, strings.Join(history, "; "))
	}
	var stored int
	if err := db.QueryRow(ctx, `SELECT count(*) FROM jobs WHERE id = ANY($1)`, ids).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if stored != len(ids) {
		rep.lost = append(rep.lost, fmt.Sprintf("%d submitted jobs are not in the database", len(ids)-stored))
	}
	var keyed int
	if err := db.QueryRow(ctx, `SELECT count(*) FROM jobs WHERE idempotency_key LIKE 'chaos-%'`).Scan(&keyed); err != nil {
		t.Fatal(err)
	}
	if keyed != len(ids) {
		c.fail("%d jobs in the database for %d answered submits", keyed, len(ids))
	}

	rows, err := db.Query(ctx, `SELECT job_id, count(*) FROM job_events WHERE job_id = ANY($1) AND to_status IN ('succeeded', 'failed', 'cancelled') GROUP BY job_id HAVING count(*) > 1`, ids)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		var n int
		if err := rows.Scan(&id, &n); err != nil {
			t.Fatal(err)
		}
		rep.twice = append(rep.twice, fmt.Sprintf("%s (%d ends)", id, n))
	}
	rows.Close()

	attempts := map[string]int{}
	rows, err = db.Query(ctx, `SELECT id, attempt, status, status_message FROM jobs WHERE id = ANY($1)`, ids)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id, status, msg string
		var attempt int
		if err := rows.Scan(&id, &attempt, &status, &msg); err != nil {
			t.Fatal(err)
		}
		attempts[id] = attempt
		switch status {
		case "succeeded":
			rep.succeeded++
		case "failed":
			rep.failed++
			if len(msg) > 120 {
				msg = msg[:120] + "…"
			}
			rep.failedReasons[msg]++
		}
	}
	rows.Close()

	execs := c.executions()
	rep.executions = len(execs)
	byJob := map[string][]execution{}
	for _, e := range execs {
		byJob[e.job] = append(byJob[e.job], e)
	}
	for job, list := range byJob {
		if _, known := attempts[job]; !known {
			// A job whose submit never got an answer: the suite does not
			// know it, so its attempts are not counted.
			rep.unanswered++
			continue
		}
		if len(list) > attempts[job] {
			rep.beyond = append(rep.beyond, fmt.Sprintf("%s: %d executions, %d attempts", job, len(list), attempts[job]))
		}
		for i := range list {
			for j := i + 1; j < len(list); j++ {
				a, b := list[i], list[j]
				if a.robot != b.robot && a.from.Before(b.to) && b.from.Before(a.to) {
					rep.concurrent = append(rep.concurrent, fmt.Sprintf("%s: attempt %d on %s %s–%s and attempt %d on %s %s–%s",
						job, a.attempt, a.robot, a.from.Format("15:04:05.000"), a.to.Format("15:04:05.000"),
						b.attempt, b.robot, b.from.Format("15:04:05.000"), b.to.Format("15:04:05.000")))
				}
			}
		}
	}
	c.connectivity(rep, execs)
	return rep
}

// connectivity reads the agents' logs: how long each robot was without a
// replica (from losing its connection to its next welcome), leaving out
// the times the suite cut it off or killed it, how soon the robots of a
// killed or frozen replica were registered with another, and whether the
// executions they were running then went on to their end.
func (c *chaos) connectivity(rep *chaosReport, execs []execution) {
	type registration struct {
		at, lost time.Time // lost is zero while it holds
		replica  int
	}
	for _, a := range c.agents {
		var regs []registration
		var handshakes []handshake
		for _, log := range a.logs {
			var down time.Time // when it last lost its replica; zero while registered
			var last time.Time // the last line's time
			dialling := -1     // the replica of the last connection
			for line := range strings.SplitSeq(log.String(), "\n") {
				if !strings.Contains(line, `msg="robot state"`) {
					continue
				}
				at, err := time.Parse(time.RFC3339Nano, field(line, "time"))
				if err != nil {
					continue
				}
				last = at
				switch field(line, "state") {
				case "CONNECTED":
					// The robot races the replicas; this names the winner.
					dialling = a.relay.index(field(line, "server"))
					handshakes = append(handshakes, handshake{at: at, replica: dialling})
				case "REGISTERED":
					if !down.IsZero() && !c.faultedDuring(a.name, down, at) {
						if gap := at.Sub(down); gap > rep.maxWithout {
							rep.maxWithout, rep.maxWithoutRobot = gap, a.name
						}
					}
					down = time.Time{}
					regs = append(regs, registration{at: at, replica: dialling})
				case "RECONNECTING", "DISCONNECTED":
					if down.IsZero() {
						down = at
						if n := len(regs); n > 0 && regs[n-1].lost.IsZero() {
							regs[n-1].lost = at
						}
					}
				}
			}
			// A killed agent logs nothing more; its next run starts over.
			// The last run's registration holds to the end.
			if n := len(regs); n > 0 && regs[n-1].lost.IsZero() {
				regs[n-1].lost = last
				if log == a.logs[len(a.logs)-1] {
					regs[n-1].lost = time.Now()
				}
			}
		}
		// For every kill of the replica this robot was on, the time until
		// it was registered with another.
		for _, f := range c.faulted {
			if f.kind != faultKillReplica && f.kind != faultStopReplica {
				continue
			}
			idx := -1
			for i, r := range c.replicas {
				if r.name == f.target {
					idx = i
				}
			}
			for i, g := range regs {
				// The robot lost that replica to this fault: its connection
				// ended during it or soon after (a robot takes a few
				// liveness periods to give a silent replica up). One that
				// outlived a short freeze did not move. A robot the suite
				// killed or cut off meanwhile is left out.
				if g.replica == idx && g.at.Before(f.from) && !g.lost.Before(f.from) && g.lost.Before(f.to.Add(5*time.Second)) && i+1 < len(regs) &&
					!c.faultedDuring(a.name, f.from.Add(-time.Second), regs[i+1].at) {
					if c.faultedDuring(pgDown, f.from, regs[i+1].at) {
						// No replica registers a robot without its database.
						rep.reregistersNoDB++
						c.carriedOver(rep, a.name, f, regs[i+1].at, regs[i+1].lost, handshakes, execs)
						continue
					}
					rep.reregisters++
					if d := regs[i+1].at.Sub(f.from); d > rep.maxReregister {
						rep.maxReregister = d
						rep.maxReregisterAt = fmt.Sprintf("%s, %s %s at %s", a.name, f.target, map[string]string{faultKillReplica: "killed", faultStopReplica: "frozen"}[f.kind], f.from.Format("15:04:05.000"))
					}
					c.carriedOver(rep, a.name, f, regs[i+1].at, regs[i+1].lost, handshakes, execs)
				}
			}
		}
	}
}

// carriedOver checks the executions a robot was running when its replica
// was killed or frozen: each should go on to its end, the robot keeping
// it through the move to another replica. One ended by a fault of the
// robot itself (killed, cut off) is another fault's doing and counted
// apart.
func (c *chaos) carriedOver(rep *chaosReport, robot string, lost faultSpan, registered, lostAgain time.Time, handshakes []handshake, execs []execution) {
	for _, e := range execs {
		if e.robot != robot || !e.from.Before(lost.from) || !e.to.After(lost.from) {
			continue
		}
		rep.carried++
		if e.ended {
			continue
		}
		// e.to is when the robot was killed, if it was: up to a second
		// past it, so the kill itself is found.
		// So is one its robot had to stop after it lost the replica it
		// moved to as well, or while PostgreSQL was down.
		// So is one whose robot, on its way, shook hands with a replica
		// that was killed or frozen before it could welcome the robot: the
		// move took two replica faults, not one.
		if c.faultedDuring(pgDown, lost.from, e.to) || c.faultedDuring(robot, lost.from, e.to.Add(time.Second)) || lostAgain.Before(e.to) ||
			c.lostOnTheWay(lost, registered, handshakes) {
			rep.cutByOther++
			continue
		}
		rep.cutShort = append(rep.cutShort, fmt.Sprintf("%s attempt %d on %s, running when %s was %s at %s, re-registered at %s",
			e.job, e.attempt, robot, lost.target, map[string]string{faultKillReplica: "killed", faultStopReplica: "frozen"}[lost.kind],
			lost.from.Format("15:04:05.000"), registered.Format("15:04:05.000")))
	}
}

// handshake is a robot's QUIC handshake with a replica, logged before
// the replica welcomes it.
type handshake struct {
	at      time.Time
	replica int
}

// lostOnTheWay says whether a robot moving off a lost replica (from
// lost.from until registered) shook hands with another replica that a
// second kill or freeze then took before it welcomed the robot.
func (c *chaos) lostOnTheWay(lost faultSpan, registered time.Time, handshakes []handshake) bool {
	for _, h := range handshakes {
		if h.at.Before(lost.from) || !h.at.Before(registered) || h.replica < 0 {
			continue
		}
		name := c.replicas[h.replica].name
		for _, f := range c.faulted {
			if f == lost || f.target != name || (f.kind != faultKillReplica && f.kind != faultStopReplica) {
				continue
			}
			if f.to.After(h.at.Add(-time.Second)) && f.from.Before(registered) {
				return true
			}
		}
	}
	return false
}

// faultedDuring says whether a fault held the target (an agent the suite
// killed or cut off, pgDown) at some point between from and to.
func (c *chaos) faultedDuring(target string, from, to time.Time) bool {
	for _, f := range c.faulted {
		if f.target == target && f.from.Before(to) && f.to.After(from) {
			return true
		}
	}
	return false
}

// field returns the value of key= in a text log line.
func field(line, key string) string {
	i := strings.Index(line, " "+key+"=")
	if i < 0 {
		if !strings.HasPrefix(line, key+"=") {
			return ""
		}
		i = -1
	}
	v := line[i+len(key)+2:]
	if strings.HasPrefix(v, `"`) {
		if j := strings.Index(v[1:], `"`); j >= 0 {
			return v[1 : j+1]
		}
	}
	if j := strings.IndexByte(v, ' '); j >= 0 {
		return v[:j]
	}
	return v
}

func (r *chaosReport) table() string {
	var b strings.Builder
	row := func(name string, v any) { fmt.Fprintf(&b, "%-52s %v\n", name, v) }
	total := 0
	for _, n := range r.faults {
		total += n
	}
	row("jobs submitted", r.submitted)
	row("  submits retried (same idempotency key)", r.retries)
	row("  succeeded", r.succeeded)
	row("  failed", r.failed)
	for msg, n := range r.failedReasons {
		row("    "+msg, n)
	}
	row("faults injected", total)
	for _, k := range faultKinds {
		row("  "+k, r.faults[k])
	}
	row("executions recorded", r.executions)
	row("  of jobs whose submit got no answer", r.unanswered)
	row("jobs lost (never terminal)", len(r.lost))
	row("jobs completed twice", len(r.twice))
	row("attempts that ran at once on two robots", len(r.concurrent))
	row("jobs with executions beyond their attempts", len(r.beyond))
	row("jobs non-terminal 60s after the last fault", len(r.stuck))
	row("longest time a robot was without a replica", fmt.Sprintf("%s (%s)", r.maxWithout.Round(10*time.Millisecond), r.maxWithoutRobot))
	row("robots of a killed or frozen replica re-registered", r.reregisters)
	row("  longest time to register elsewhere", fmt.Sprintf("%s (%s)", r.maxReregister.Round(10*time.Millisecond), r.maxReregisterAt))
	row("  while PostgreSQL was down too (not timed)", r.reregistersNoDB)
	row("  jobs they were running", r.carried)
	row("    cut short (restarted)", len(r.cutShort))
	row("    cut short by another fault too", r.cutByOther)
	return b.String()
}

func (r *chaosReport) failures() []string {
	var out []string
	list := func(what string, items []string) {
		if len(items) == 0 {
			return
		}
		if len(items) > 10 {
			items = append(items[:10:10], fmt.Sprintf("and %d more", len(items)-10))
		}
		out = append(out, fmt.Sprintf("%s:\n  %s", what, strings.Join(items, "\n  ")))
	}
	list("jobs lost", r.lost)
	list("jobs completed twice", r.twice)
	list("attempts that ran at once on two robots", r.concurrent)
	list("executions beyond the attempts", r.beyond)
	list("jobs non-terminal 60s after the last fault", r.stuck)
	list("jobs cut short though their robot found another replica", r.cutShort)
	if r.maxReregister > 10*time.Second {
		out = append(out, fmt.Sprintf("a robot of a lost replica took %s to register with another, over 10s (%s)", r.maxReregister.Round(10*time.Millisecond), r.maxReregisterAt))
	}
	return out
}
