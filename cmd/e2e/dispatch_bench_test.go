package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect/v2"
	"connectrpc.com/connect/v2/connecthttp"
	"github.com/hibiken/asynq"
	"github.com/quic-go/quic-go"

	agentv1 "github.com/casarerpa/casare/rpc/casare/agent/v1"
	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/rpc/casare/v1/casarev1connect"
	"github.com/casarerpa/casare/server/dispatch"
	"github.com/casarerpa/casare/server/queue/queuetest"
	"github.com/casarerpa/casare/server/registry"
	"github.com/casarerpa/casare/server/registry/registrytest"
)

// BenchmarkDispatch runs a casare-server process on PostgreSQL and Redis
// with 1,000 simulated robots in this process that accept and complete
// no-op jobs at once. It reports dispatch latency (SubmitJob returned →
// job_assign at the robot) on an idle system and at 1,000 jobs/s, the end
// to end throughput (submit → completion stored), the CPU time per job of
// the server process and of this one (the robots and the clients) during
// that throughput phase, and bare asynq's throughput on the same Redis as
// a reference.
func BenchmarkDispatch(b *testing.B) {
	for range b.N {
		runDispatchBench(b, 1000)
	}
}

func runDispatchBench(b *testing.B, robots int) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dataDir := b.TempDir()
	dbURL := registrytest.DatabaseURL(b)
	redisURL := queuetest.RedisURL(b, 11)
	fleet, roots := simFleet(b, dataDir, dbURL, robots, "bench")
	reg, err := registry.Open(ctx, registry.Options{DatabaseURL: dbURL})
	if err != nil {
		b.Fatal(err)
	}
	defer reg.Close()

	quicAddr := freeUDPAddr(b)
	s := startServer(b, dataDir, "--database-url", dbURL, "--redis-url", redisURL, "--quic-addr", quicAddr,
		"--heartbeat-interval", "5s")
	udpAddr, _ := net.ResolveUDPAddr("udp", quicAddr)
	sock, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	tr := &quic.Transport{Conn: sock}
	defer tr.Close()

	var assigned sync.Map // job id -> time the robot got job_assign
	var registered atomic.Int64
	for _, r := range fleet {
		go r.work(ctx, tr, udpAddr, roots, &registered, &assigned)
	}
	waitFor(b, func() bool { return registered.Load() >= int64(robots) }, 5*time.Minute, "all robots to register")

	client := casarev1connect.NewJobServiceClient(connect.NewClient(connecthttp.NewTransport(http1, s.url()), bearer(s.adminToken())))
	noop := &casarev1.SubmitJobRequest{Source: &casarev1.SubmitJobRequest_Workflow{Workflow: workflow("noop", step("a", "log", map[string]any{"message": "x"}))}}
	submit := func() (string, time.Time) {
		res, err := client.SubmitJob(ctx, noop)
		if err != nil {
			b.Fatal(err)
		}
		return res.GetJob().GetId(), time.Now()
	}
	latency := func(id string, returned time.Time) time.Duration {
		for {
			if at, ok := assigned.Load(id); ok {
				return max(at.(time.Time).Sub(returned), 0)
			}
			time.Sleep(100 * time.Microsecond)
		}
	}

	// Idle: one job at a time.
	var idle []time.Duration
	for range 300 {
		id, at := submit()
		idle = append(idle, latency(id, at))
	}

	// 1,000 jobs per second for 5 seconds.
	type sent struct {
		id string
		at time.Time
	}
	var mu sync.Mutex
	var loaded []sent
	ticker := time.NewTicker(time.Millisecond)
	var submits sync.WaitGroup
	for range 5000 {
		<-ticker.C
		submits.Go(func() {
			id, at := submit()
			mu.Lock()
			loaded = append(loaded, sent{id, at})
			mu.Unlock()
		})
	}
	ticker.Stop()
	submits.Wait()
	var underLoad []time.Duration
	for _, s := range loaded {
		underLoad = append(underLoad, latency(s.id, s.at))
	}

	// Throughput: as fast as 64 clients can submit, until every job's
	// completion is stored.
	const total = 10_000
	before := countSucceeded(b, reg)
	serverCPU, benchCPU := cpuSeconds(b, s.cmd.Process.Pid), cpuSeconds(b, os.Getpid())
	start := time.Now()
	var next atomic.Int64
	for range 64 {
		submits.Go(func() {
			for next.Add(1) <= total {
				submit()
			}
		})
	}
	submits.Wait()
	waitFor(b, func() bool { return countSucceeded(b, reg)-before >= total }, 5*time.Minute, "all jobs to complete")
	throughput := total / time.Since(start).Seconds()
	// CPU per job hardly moves with what else runs on the machine, unlike
	// the throughput: the figure to compare between runs on a busy one.
	serverCPU = cpuSeconds(b, s.cmd.Process.Pid) - serverCPU
	benchCPU = cpuSeconds(b, os.Getpid()) - benchCPU

	b.ReportMetric(ms(percentile(idle, 50)), "idle-p50-ms")
	b.ReportMetric(ms(percentile(idle, 99)), "idle-p99-ms")
	b.ReportMetric(ms(percentile(underLoad, 50)), "1000/s-p50-ms")
	b.ReportMetric(ms(percentile(underLoad, 99)), "1000/s-p99-ms")
	b.ReportMetric(throughput, "e2e-jobs/s")
	b.ReportMetric(serverCPU*1000/total, "server-cpu-ms/job")
	b.ReportMetric(benchCPU*1000/total, "bench-cpu-ms/job")
	b.ReportMetric(bareAsynq(b, redisURL, total), "bare-asynq-tasks/s")
}

func countSucceeded(b *testing.B, reg *registry.Registry) int64 {
	n, err := reg.DB().NewSelect().Table("jobs").Where("status = 'succeeded'").Count(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	return n
}

func percentile(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)*p/100, len(s)-1)]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// bareAsynq enqueues n tasks and processes them with a no-op handler on
// the same Redis, with the dispatcher's asynq settings: the reference for
// the end-to-end throughput.
func bareAsynq(b *testing.B, redisURL string, n int) float64 {
	opt, err := asynq.ParseRedisURI(redisURL)
	if err != nil {
		b.Fatal(err)
	}
	var done atomic.Int64
	srv := asynq.NewServer(opt, asynq.Config{
		Concurrency: 32, Queues: map[string]int{"bench": 1}, TaskCheckInterval: dispatch.TaskCheckInterval, LogLevel: asynq.ErrorLevel,
	})
	mux := asynq.NewServeMux()
	mux.HandleFunc("bench", func(context.Context, *asynq.Task) error { done.Add(1); return nil })
	if err := srv.Start(mux); err != nil {
		b.Fatal(err)
	}
	defer srv.Shutdown()
	client := asynq.NewClient(opt)
	defer client.Close()
	start := time.Now()
	var wg sync.WaitGroup
	var next atomic.Int64
	for range 64 {
		wg.Go(func() {
			for i := next.Add(1); i <= int64(n); i = next.Add(1) {
				if _, err := client.Enqueue(asynq.NewTask("bench", nil), asynq.Queue("bench"), asynq.TaskID(fmt.Sprintf("bench-%d-%d", start.UnixNano(), i))); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	waitFor(b, func() bool { return done.Load() >= int64(n) }, 5*time.Minute, "bare asynq tasks")
	return float64(n) / time.Since(start).Seconds()
}

// work keeps the robot connected and runs what it is given: it accepts
// each job and completes it at once.
func (r *simRobot) work(ctx context.Context, tr *quic.Transport, addr *net.UDPAddr, roots *x509.CertPool, registered *atomic.Int64, assigned *sync.Map) {
	conf := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{r.cert}, RootCAs: roots, ServerName: "127.0.0.1", NextProtos: []string{agentv1.ALPN}}
	for ctx.Err() == nil {
		dialCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		conn, err := tr.Dial(dialCtx, addr, conf, &quic.Config{MaxIdleTimeout: time.Minute, KeepAlivePeriod: 10 * time.Second})
		cancel()
		if err != nil {
			time.Sleep(200 * time.Millisecond)
			continue
		}
		r.serve(ctx, conn, registered, assigned)
		conn.CloseWithError(0, "")
	}
}

func (r *simRobot) serve(ctx context.Context, conn *quic.Conn, registered *atomic.Int64, assigned *sync.Map) {
	stream, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return
	}
	var mu sync.Mutex
	send := func(msg *agentv1.AgentMessage) error {
		mu.Lock()
		defer mu.Unlock()
		return agentv1.WriteFrame(stream, msg)
	}
	if send(&agentv1.AgentMessage{Msg: &agentv1.AgentMessage_Hello{Hello: &agentv1.Hello{RobotId: r.id, MaxJobs: 1}}}) != nil {
		return
	}
	frames := agentv1.NewFrameReader(stream)
	if err := frames.Read(&agentv1.ServerMessage{}); err != nil {
		return
	}
	registered.Add(1)
	// Heartbeats list the jobs whose end the control plane has not
	// confirmed, as a real robot's do.
	var running sync.Map // job id -> attempt
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-conn.Context().Done():
				return
			case <-time.After(5 * time.Second):
				hb := &agentv1.Heartbeat{}
				running.Range(func(id, attempt any) bool {
					hb.RunningJobs = append(hb.RunningJobs, &agentv1.RunningJob{JobId: id.(string), Attempt: attempt.(int32)})
					return true
				})
				send(&agentv1.AgentMessage{Msg: &agentv1.AgentMessage_Heartbeat{Heartbeat: hb}})
			}
		}
	}()
	for {
		msg := &agentv1.ServerMessage{}
		if err := frames.Read(msg); err != nil {
			return
		}
		if ack := msg.GetJobAck(); ack != nil {
			running.Delete(ack.GetJobId())
			continue
		}
		a := msg.GetJobAssign()
		if a == nil {
			continue
		}
		assigned.Store(a.GetJobId(), time.Now())
		running.Store(a.GetJobId(), a.GetAttempt())
		send(&agentv1.AgentMessage{Msg: &agentv1.AgentMessage_JobAccept{JobAccept: &agentv1.JobAccept{JobId: a.GetJobId(), Attempt: a.GetAttempt()}}})
		send(&agentv1.AgentMessage{Msg: &agentv1.AgentMessage_JobComplete{JobComplete: &agentv1.JobComplete{JobId: a.GetJobId(), Attempt: a.GetAttempt()}}})
	}
}
