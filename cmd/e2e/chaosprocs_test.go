package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// proc is a process the fault suite owns: it may kill, freeze and start
// it again at any time, from any goroutine, so nothing here fails the test.
type proc struct {
	name string
	path string
	args []string
	env  []string
	dir  string // working directory, or ""

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	stopped bool // SIGSTOPped
	log     *syncBuffer
	logs    []*syncBuffer // every run's output, for the report
}

func (p *proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return fmt.Errorf("%s is running", p.name)
	}
	log := &syncBuffer{}
	cmd := exec.Command(p.path, p.args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env, cmd.Dir = p.env, p.dir
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	p.cmd, p.exited, p.log, p.stopped = cmd, exited, log, false
	p.logs = append(p.logs, log)
	return nil
}

// running says the process is up (it may be frozen).
func (p *proc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-exited
}

// reap forgets a process that exited by itself, so it can be started again.
func (p *proc) reap() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	select {
	case <-p.exited:
		p.cmd = nil
	default:
	}
}

func (p *proc) signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return fmt.Errorf("%s is not running", p.name)
	}
	p.stopped = sig == syscall.SIGSTOP
	return p.cmd.Process.Signal(sig)
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var s string
	for i, l := range p.logs {
		s += fmt.Sprintf("--- %s run %d ---\n%s", p.name, i+1, l.String())
	}
	return s
}

func (p *proc) current() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.log == nil {
		return ""
	}
	return p.log.String()
}

// Ports a test keeps across restarts come from below the kernel's
// ephemeral range (32768 and up on Linux): a port picked there could be
// handed to any other process's connection while its owner is down, and
// the restart would find it taken. Each is picked once per test binary.
const (
	stablePortLow  = 20000
	stablePortHigh = 32767
)

var stablePorts = struct {
	sync.Mutex
	next int
}{next: stablePortLow + os.Getpid()%(stablePortHigh-stablePortLow)}

// stablePort returns a port free on 127.0.0.1 for both TCP and UDP, for a
// process the test restarts on the same address.
func stablePort(t testing.TB) int {
	t.Helper()
	stablePorts.Lock()
	defer stablePorts.Unlock()
	for range stablePortHigh - stablePortLow {
		port := stablePorts.next
		stablePorts.next++
		if stablePorts.next > stablePortHigh {
			stablePorts.next = stablePortLow
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		c, err := net.ListenPacket("udp", addr)
		l.Close()
		if err != nil {
			continue
		}
		c.Close()
		return port
	}
	t.Fatalf("no free port on 127.0.0.1 between %d and %d", stablePortLow, stablePortHigh)
	return 0
}

func freeTCPPort(t testing.TB) int { return stablePort(t) }

// redisProc is a redis-server of the suite's own, without persistence: a
// restart loses everything it held, as a Redis that lost its disk would.
type redisProc struct {
	proc
	port int
}

func startRedis(t testing.TB) *redisProc {
	t.Helper()
	path, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skip("redis-server is not installed")
		}
		t.Fatal(err)
	}
	r := &redisProc{port: freeTCPPort(t)}
	dir := t.TempDir()
	r.proc = proc{name: "redis", path: path, dir: dir, args: []string{
		"--port", strconv.Itoa(r.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir,
	}}
	if err := r.restart(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.kill)
	return r
}

func (r *redisProc) url() string { return fmt.Sprintf("redis://127.0.0.1:%d/0", r.port) }

// restart kills Redis if it runs, starts it and waits until it answers.
func (r *redisProc) restart() error {
	r.kill()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r.reap()
		if !r.running() {
			if err := r.start(); err != nil {
				return err
			}
		}
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", r.port), time.Second)
		if err == nil {
			_, err = c.Write([]byte("PING\r\n"))
			buf := make([]byte, 7)
			if err == nil {
				c.SetReadDeadline(time.Now().Add(time.Second))
				_, err = c.Read(buf)
			}
			c.Close()
			if err == nil && string(buf) == "+PONG\r\n" {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis-server not answering within 30s: %v\n%s", err, r.current())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// replica is one casare-server of the control plane, on fixed ports so
// robots and the submit client find it again after a restart.
type replica struct {
	proc
	httpAddr string
	quicAddr string
	dataDir  string
}

func (r *replica) url() string { return "http://" + r.httpAddr }

// up starts the replica and waits until it is ready. A replica that
// starts while the database is away may exit; up tries again until
// ctx ends.
func (r *replica) up(ctx context.Context) error {
	for {
		r.reap()
		if !r.running() {
			if err := r.start(); err != nil {
				return err
			}
		}
		res, err := http.Get(r.url() + "/health/ready")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w\n%s", r.name, ctx.Err(), r.current())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// udpRelay forwards one agent's datagrams to the replicas: a port per
// replica, an upstream socket per agent socket. Cut drops everything both
// ways, as a lost network would, without touching the host's firewall.
type udpRelay struct {
	ports   []*net.UDPConn // ports[i] forwards to targets[i]
	targets []*net.UDPAddr
	cut     atomic.Bool

	mu    sync.Mutex
	peers map[string]*net.UDPConn // agent address -> upstream socket
	done  chan struct{}
	wg    sync.WaitGroup
}

func newUDPRelay(t testing.TB, targets []string) *udpRelay {
	t.Helper()
	r := &udpRelay{peers: map[string]*net.UDPConn{}, done: make(chan struct{})}
	for _, target := range targets {
		addr, err := net.ResolveUDPAddr("udp", target)
		if err != nil {
			t.Fatal(err)
		}
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		r.ports = append(r.ports, c)
		r.targets = append(r.targets, addr)
	}
	for i := range r.ports {
		r.wg.Add(1)
		go r.serve(i)
	}
	t.Cleanup(r.close)
	return r
}

// addrs are the relay's ports, comma separated, for the agent's --server.
func (r *udpRelay) addrs() string {
	s := ""
	for i, c := range r.ports {
		if i > 0 {
			s += ","
		}
		s += c.LocalAddr().String()
	}
	return s
}

// index says which replica a relay port forwards to; -1 for none.
func (r *udpRelay) index(addr string) int {
	for i, c := range r.ports {
		if c.LocalAddr().String() == addr {
			return i
		}
	}
	return -1
}

func (r *udpRelay) serve(i int) {
	defer r.wg.Done()
	port := r.ports[i]
	buf := make([]byte, 65536)
	for {
		n, from, err := port.ReadFromUDP(buf)
		if err != nil {
			return
		}
		if r.cut.Load() {
			continue
		}
		key := fmt.Sprintf("%d/%s", i, from)
		r.mu.Lock()
		up := r.peers[key]
		if up == nil {
			select {
			case <-r.done:
				r.mu.Unlock()
				return
			default:
			}
			up, err = net.DialUDP("udp", nil, r.targets[i])
			if err != nil {
				r.mu.Unlock()
				continue
			}
			r.peers[key] = up
			r.wg.Add(1)
			go r.back(port, up, from)
		}
		r.mu.Unlock()
		_, _ = up.Write(buf[:n])
	}
}

// back carries a replica's answers to the agent socket they are for.
func (r *udpRelay) back(port, up *net.UDPConn, to *net.UDPAddr) {
	defer r.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, err := up.Read(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && !errors.Is(err, net.ErrClosed) {
				// ICMP port unreachable while the replica is down: keep on.
				select {
				case <-r.done:
					return
				default:
					continue
				}
			}
			return
		}
		if r.cut.Load() {
			continue
		}
		_, _ = port.WriteToUDP(buf[:n], to)
	}
}

func (r *udpRelay) close() {
	r.mu.Lock()
	select {
	case <-r.done:
		r.mu.Unlock()
		return
	default:
	}
	close(r.done)
	for _, c := range r.ports {
		c.Close()
	}
	for _, c := range r.peers {
		c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}

// chaosAgent is one robot of the suite, behind its own relay, writing its
// execution records under its own file root.
type chaosAgent struct {
	proc
	robotID string
	root    string // TMPDIR and --file-root: the job directories and exec.log
	relay   *udpRelay
}

func (a *chaosAgent) records() string { return filepath.Join(a.root, "exec.log") }
