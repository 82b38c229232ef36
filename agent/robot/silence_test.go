package robot

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	agentv1 "github.com/casarerpa/casare/rpc/casare/agent/v1"
)

// cutRelay forwards one client's UDP to a server until it is cut, as a
// replica that freezes or a link that fails looks to the robot: nothing
// comes back, not even an acknowledgement.
type cutRelay struct {
	front, back net.PacketConn
	server      net.Addr
	cut         atomic.Bool
	mu          sync.Mutex
	client      net.Addr
}

func newCutRelay(t *testing.T, server string) *cutRelay {
	t.Helper()
	front, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	back, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr, err := net.ResolveUDPAddr("udp", server)
	if err != nil {
		t.Fatal(err)
	}
	r := &cutRelay{front: front, back: back, server: addr}
	t.Cleanup(func() { front.Close(); back.Close() })
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := front.ReadFrom(buf)
			if err != nil {
				return
			}
			r.mu.Lock()
			r.client = from
			r.mu.Unlock()
			if !r.cut.Load() {
				back.WriteTo(buf[:n], r.server)
			}
		}
	}()
	go func() {
		buf := make([]byte, 65536)
		for {
			n, _, err := back.ReadFrom(buf)
			if err != nil {
				return
			}
			r.mu.Lock()
			client := r.client
			r.mu.Unlock()
			if !r.cut.Load() && client != nil {
				front.WriteTo(buf[:n], client)
			}
		}
	}()
	return r
}

// TestRobotGivesUpAReplicaSilentBeforeItsWelcome: a replica that goes
// silent after the handshake, before it welcomes the robot, is given up
// after a few liveness periods, not held until the idle timeout (a
// minute), so the robot races the replicas again.
func TestRobotGivesUpAReplicaSilentBeforeItsWelcome(t *testing.T) {
	cert, client := selfSigned(t)
	ln, err := quic.ListenAddr("127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{agentv1.ALPN}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	relay := newCutRelay(t, ln.Addr().String())
	// The replica reads the hello and then freezes.
	go func() {
		conn, err := ln.Accept(context.Background())
		if err != nil {
			return
		}
		stream, err := conn.AcceptStream(context.Background())
		if err != nil {
			return
		}
		if agentv1.NewFrameReader(stream).Read(&agentv1.AgentMessage{}) == nil {
			relay.cut.Store(true)
		}
		<-conn.Context().Done()
	}()
	servers, err := parseServers(relay.front.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	tlsConf := client.Clone()
	tlsConf.NextProtos = []string{agentv1.ALPN}
	r := &runner{
		opts:    Options{Liveness: 200 * time.Millisecond, MaxJobs: 1},
		id:      &Identity{RobotID: "r1"},
		log:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		servers: servers,
		tls:     tlsConf,
		jobs:    map[string]*job{},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	registered, err := r.session(ctx)
	if registered || err == nil || !strings.Contains(err.Error(), "no welcome: the control plane has sent nothing for") {
		t.Fatalf("session = %v, %v; want no welcome after the replica went silent", registered, err)
	}
}
