package robot

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"math/big"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

// selfSigned is a certificate for "replica" and 127.0.0.1, and a client
// configuration that trusts it.
func selfSigned(t testing.TB) (tls.Certificate, *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), DNSNames: []string{"replica"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, &tls.Config{RootCAs: roots, NextProtos: []string{"test"}}
}

// replica is a QUIC listener on loopback that completes handshakes, as a
// live control plane does.
func replica(t testing.TB) (addr string, client *tls.Config) {
	t.Helper()
	cert, client := selfSigned(t)
	ln, err := quic.ListenAddr("127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"test"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept(context.Background())
			if err != nil {
				return
			}
			go func() { <-conn.Context().Done() }()
		}
	}()
	return ln.Addr().String(), client
}

// frozen is a UDP socket that reads nothing, as a SIGSTOPped replica's.
func frozen(t testing.TB) string {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.LocalAddr().String()
}

// dead is a UDP port nobody listens on, as a killed replica's.
func dead(t testing.TB) string {
	t.Helper()
	addr := frozen(t)
	c, _ := net.Dial("udp", addr)
	c.Close()
	return addr
}

func targets(addrs ...string) []target {
	out := make([]target, len(addrs))
	for i, a := range addrs {
		out[i] = target{addr: a, serverName: "replica"}
	}
	return out
}

func TestRaceSkipsDeadAndFrozenReplicas(t *testing.T) {
	live, client := replica(t)
	dial := quicDial(client, &quic.Config{HandshakeIdleTimeout: 10 * time.Second})
	for _, order := range [][]string{
		{frozen(t), dead(t), live},
		{dead(t), frozen(t), live},
		{live, frozen(t)},
	} {
		start := time.Now()
		won, err := race(context.Background(), &sync.WaitGroup{}, targets(order...), minStagger, dial)
		if err != nil {
			t.Fatalf("race %v: %v", order, err)
		}
		took := time.Since(start)
		if order[won.index] != live {
			t.Fatalf("race %v was won by %s, want the live replica %s", order, order[won.index], live)
		}
		// Sequential dialling waits out a whole handshake timeout on the
		// frozen replica; the race reaches the live one after a stagger
		// per replica before it, whatever the machine's load.
		if took >= 10*time.Second {
			t.Fatalf("race %v took %v: it waited for the frozen replica", order, took)
		}
		won.conn.CloseWithError(0, "")
	}
}

func TestRaceNamesEveryReplicaWhenAllFail(t *testing.T) {
	_, client := replica(t)
	a, b := frozen(t), frozen(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := race(ctx, &sync.WaitGroup{}, targets(a, b), 100*time.Millisecond, quicDial(client, nil))
	if err == nil {
		t.Fatal("two frozen replicas: race won")
	}
	for _, addr := range []string{a, b} {
		if !strings.Contains(err.Error(), addr) {
			t.Errorf("error %q does not name %s", err, addr)
		}
	}
}

func TestRaceClosesTheLosers(t *testing.T) {
	// Both dials complete; the one that finishes second must be closed,
	// not left open on a replica that would count it as the robot's.
	var closed atomic.Int32
	slowDone := make(chan struct{})
	live, client := replica(t)
	real := quicDial(client, nil)
	dial := func(ctx context.Context, tg target) (*quic.Conn, error) {
		if tg.serverName == "slow" {
			defer close(slowDone)
			// Ignores the race's cancel, as a handshake that was just
			// completing would.
			time.Sleep(300 * time.Millisecond)
			c, err := real(context.Background(), target{addr: tg.addr, serverName: "replica"})
			if err == nil {
				go func() { <-c.Context().Done(); closed.Add(1) }()
			}
			return c, err
		}
		return real(ctx, tg)
	}
	var owner sync.WaitGroup
	won, err := race(context.Background(), &owner, []target{{live, "slow"}, {live, "replica"}}, 10*time.Millisecond, dial)
	if err != nil || won.index != 1 {
		t.Fatalf("race: %v, won by %d, want the second", err, won.index)
	}
	defer won.conn.CloseWithError(0, "")
	// The losing dial belongs to the race's owner: waiting for the owner
	// waits for it.
	owner.Wait()
	select {
	case <-slowDone:
	default:
		t.Fatal("the race's owner was done before the dial that lost")
	}
	deadline := time.Now().Add(10 * time.Second)
	for closed.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the connection that lost the race is still open")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRaceStartsTheNextAtOnceWhenOneFails(t *testing.T) {
	var dials atomic.Int32
	dial := func(ctx context.Context, tg target) (*quic.Conn, error) {
		dials.Add(1)
		if tg.addr == "refused" {
			return nil, errors.New("refused")
		}
		<-ctx.Done()
		return nil, ctx.Err()
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		// With an hour's stagger, the second dial can only have started
		// because the first failed.
		deadline := time.Now().Add(10 * time.Second)
		for dials.Load() < 2 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
	}()
	race(ctx, &sync.WaitGroup{}, targets("refused", "hangs"), time.Hour, dial)
	if n := dials.Load(); n != 2 {
		t.Fatalf("%d dials, want the second started when the first failed", n)
	}
}

func TestStaggerFollowsTheLink(t *testing.T) {
	for rtt, want := range map[time.Duration]time.Duration{
		0:                      minStagger,
		time.Millisecond:       minStagger,
		200 * time.Millisecond: 800 * time.Millisecond,
		time.Second:            maxStagger,
	} {
		if got := stagger(rtt); got != want {
			t.Errorf("stagger(%v) = %v, want %v", rtt, got, want)
		}
	}
}

// BenchmarkDialPastDeadAndFrozen is how long a robot whose first two
// replicas are dead and frozen takes to connect to the third.
func BenchmarkDialPastDeadAndFrozen(b *testing.B) {
	live, client := replica(b)
	dial := quicDial(client, &quic.Config{HandshakeIdleTimeout: 10 * time.Second})
	round := targets(dead(b), frozen(b), live)
	for b.Loop() {
		won, err := race(context.Background(), &sync.WaitGroup{}, round, minStagger, dial)
		if err != nil {
			b.Fatal(err)
		}
		won.conn.CloseWithError(0, "")
	}
}
