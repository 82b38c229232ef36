package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	agentv1 "github.com/casarerpa/casare/rpc/casare/agent/v1"
	"github.com/casarerpa/casare/server/pki"
	"github.com/casarerpa/casare/server/registry"
	"github.com/casarerpa/casare/server/registry/registrytest"
)

// BenchmarkRobotFleet connects a fleet of simulated robots (10,000 unless
// CASARE_BENCH_ROBOTS says otherwise), all in this process on one UDP
// socket, with mutual TLS to a casare-server process on PostgreSQL. It
// reports the time for all to register, the server's memory per connected
// robot, the server's CPU while they heartbeat every 5 s and send QUIC
// keep-alives every second as real robots do, and the time for
// all to come back after the server restarts.
func BenchmarkRobotFleet(b *testing.B) {
	robots := 10_000
	if n, err := strconv.Atoi(os.Getenv("CASARE_BENCH_ROBOTS")); err == nil && n > 0 {
		robots = n
	}
	for range b.N {
		runFleet(b, robots)
	}
}

func runFleet(b *testing.B, n int) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dataDir := b.TempDir()
	dbURL := registrytest.DatabaseURL(b)

	fleet, roots := simFleet(b, dataDir, dbURL, n, "sim")

	quicAddr := freeUDPAddr(b)
	s := startServer(b, dataDir, "--database-url", dbURL, "--quic-addr", quicAddr, "--heartbeat-interval", "5s")
	udpAddr, err := net.ResolveUDPAddr("udp", quicAddr)
	if err != nil {
		b.Fatal(err)
	}
	sock, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	tr := &quic.Transport{Conn: sock}
	defer tr.Close()

	baseline := rssKiB(b, s.cmd.Process.Pid)
	var registered atomic.Int64
	start := time.Now()
	for _, r := range fleet {
		go r.run(ctx, tr, udpAddr, roots, &registered)
	}
	waitFor(b, func() bool { return registered.Load() >= int64(n) }, 5*time.Minute, "all robots to register")
	registerTime := time.Since(start)

	time.Sleep(5 * time.Second) // let the first heartbeats and batched writes settle
	perRobot := float64(rssKiB(b, s.cmd.Process.Pid)-baseline) / float64(n)

	cpuBefore := cpuSeconds(b, s.cmd.Process.Pid)
	const window = 15 * time.Second
	time.Sleep(window)
	cpuShare := (cpuSeconds(b, s.cmd.Process.Pid) - cpuBefore) / window.Seconds()

	registered.Store(0)
	restart := time.Now()
	s.restart()
	waitFor(b, func() bool { return registered.Load() >= int64(n) }, 5*time.Minute, "all robots to come back")
	restartTime := time.Since(restart)

	b.ReportMetric(float64(n), "robots")
	b.ReportMetric(registerTime.Seconds(), "register-s")
	b.ReportMetric(perRobot, "server-KiB/robot")
	b.ReportMetric(100*cpuShare, "heartbeat-cpu-%")
	b.ReportMetric(float64(n)/5, "heartbeats/s")
	b.ReportMetric(restartTime.Seconds(), "back-after-restart-s")
}

// simFleet makes n robots with their certificates from a new CA in
// dataDir, registered directly in the database: enrolling thousands of
// robots one token at a time is not what the benchmarks measure.
func simFleet(b *testing.B, dataDir, dbURL string, n int, prefix string) ([]*simRobot, *x509.CertPool) {
	ctx := context.Background()
	ca, _, err := pki.Init(dataDir)
	if err != nil {
		b.Fatal(err)
	}
	reg, err := registry.Open(ctx, registry.Options{DatabaseURL: dbURL})
	if err != nil {
		b.Fatal(err)
	}
	defer reg.Close()
	if _, err := reg.Migrate(ctx); err != nil {
		b.Fatal(err)
	}
	fleet := make([]*simRobot, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range fleet {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			fleet[i] = newSimRobot(b, ca, reg, fmt.Sprintf("%s-%05d", prefix, i))
		})
	}
	wg.Wait()
	roots := x509.NewCertPool()
	roots.AddCert(ca.Certificate())
	return fleet, roots
}

type simRobot struct {
	id   string
	cert tls.Certificate
}

func newSimRobot(b *testing.B, ca *pki.CA, reg *registry.Registry, name string) *simRobot {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		b.Fatal(err)
	}
	id := registry.NewID()
	cert, err := ca.SignRobot(csr, id, name, 0)
	if err != nil {
		b.Fatal(err)
	}
	err = reg.UpsertRobot(context.Background(), &registry.Robot{ID: id, Name: name, Labels: "{}", Capabilities: "[]", Status: "offline", MaxJobs: 1, CertSerial: pki.Serial(cert)})
	if err != nil {
		b.Fatal(err)
	}
	return &simRobot{id: id, cert: tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}}
}

// run keeps the robot connected like casare-agent does: hello, heartbeats,
// and a reconnect with jittered backoff when the connection drops.
func (r *simRobot) run(ctx context.Context, tr *quic.Transport, addr *net.UDPAddr, roots *x509.CertPool, registered *atomic.Int64) {
	conf := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{r.cert}, RootCAs: roots, ServerName: "127.0.0.1", NextProtos: []string{agentv1.ALPN}}
	backoff := 200 * time.Millisecond
	for ctx.Err() == nil {
		if r.session(ctx, tr, addr, conf, registered) {
			backoff = 200 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Duration(float64(backoff) * (0.5 + mathRand()))):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (r *simRobot) session(ctx context.Context, tr *quic.Transport, addr *net.UDPAddr, conf *tls.Config, registered *atomic.Int64) bool {
	dialCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// A real robot keeps a quiet connection checked every liveness
	// period (1 s by default); the server pays for those packets too.
	conn, err := tr.Dial(dialCtx, addr, conf, &quic.Config{MaxIdleTimeout: time.Minute, KeepAlivePeriod: time.Second})
	if err != nil {
		return false
	}
	defer conn.CloseWithError(0, "")
	stream, err := conn.OpenStreamSync(dialCtx)
	if err != nil {
		return false
	}
	if agentv1.WriteFrame(stream, &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_Hello{Hello: &agentv1.Hello{RobotId: r.id, MaxJobs: 1}}}) != nil {
		return false
	}
	frames := agentv1.NewFrameReader(stream)
	if err := frames.Read(&agentv1.ServerMessage{}); err != nil {
		return false
	}
	registered.Add(1)
	lost := make(chan struct{})
	go func() {
		frames.Read(&agentv1.ServerMessage{})
		close(lost)
	}()
	// Spread the heartbeats over the interval, as robots that connected at
	// different times would.
	first := time.Duration(mathRand() * float64(5*time.Second))
	timer := time.NewTimer(first)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return true
		case <-lost:
			return true
		case <-timer.C:
			if agentv1.WriteFrame(stream, &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_Heartbeat{Heartbeat: &agentv1.Heartbeat{}}}) != nil {
				return true
			}
			timer.Reset(5 * time.Second)
		}
	}
}

func waitFor(b testing.TB, cond func() bool, limit time.Duration, what string) {
	b.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			b.Fatalf("gave up waiting %s for %s", limit, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// rssKiB reads a process's resident memory.
func rssKiB(b *testing.B, pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kib, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return kib
		}
	}
	b.Fatal("no VmRSS")
	return 0
}

// cpuSeconds reads the user and system CPU time a process has used.
func cpuSeconds(b *testing.B, pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command name, which is in parentheses.
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	utime, _ := strconv.ParseFloat(fields[11], 64)
	stime, _ := strconv.ParseFloat(fields[12], 64)
	const clockTicks = 100 // USER_HZ on Linux
	return (utime + stime) / clockTicks
}

func mathRand() float64 { return mrand.Float64() }
