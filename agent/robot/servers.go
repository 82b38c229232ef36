package robot

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"
)

// servers is the list of control plane addresses a robot may dial: the
// replicas it was given (host:port, comma separated), each name expanded
// to every address DNS gives it. A robot races them (see race), so a dead
// or frozen replica costs a stagger, not a dial timeout.
type servers struct {
	entries []string // host:port as given
	// lookup resolves a host name to its addresses; net's resolver unless
	// a test sets it.
	lookup func(ctx context.Context, host string) ([]string, error)

	mu    sync.Mutex
	addrs []target // the last round, expanded
	next  int      // where the next round starts in addrs
}

// target is one address to dial and the name its certificate must carry.
type target struct {
	addr       string // ip:port or host:port
	serverName string
}

// parseServers checks a comma-separated list of host:port addresses.
func parseServers(list string) (*servers, error) {
	s := &servers{lookup: net.DefaultResolver.LookupHost}
	for e := range strings.SplitSeq(list, ",") {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		host, port, err := net.SplitHostPort(e)
		if err != nil || host == "" || port == "" {
			return nil, fmt.Errorf("server address %q: want host:port", e)
		}
		s.entries = append(s.entries, e)
	}
	if len(s.entries) == 0 {
		return nil, fmt.Errorf("server address %q: want host:port, or several separated by commas", list)
	}
	return s, nil
}

// round returns the addresses to race now, every replica once. Each
// round resolves the names again, so replicas added to or removed from a
// DNS name are seen, and starts after the replica the last connection
// went to (see dialled), so a robot that lost its replica tries the
// others first. A name that does not resolve is dialled as it is and
// fails there with the resolver's reason.
func (s *servers) round(ctx context.Context) []target {
	addrs := s.expand(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.addrs = addrs
	first := s.next % len(addrs)
	// The next round starts one further on even if this one wins nothing,
	// so a replica that hangs every dial is not always the first tried.
	s.next = first + 1
	return append(addrs[first:len(addrs):len(addrs)], addrs[:first]...)
}

// dialled says the connection went to the i-th address of the last round.
func (s *servers) dialled(i int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.next = (s.next - 1 + i + 1) % max(len(s.addrs), 1)
}

func (s *servers) expand(ctx context.Context) []target {
	var out []target
	for _, e := range s.entries {
		host, port, _ := net.SplitHostPort(e)
		if net.ParseIP(host) != nil {
			out = append(out, target{addr: e, serverName: host})
			continue
		}
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ips, err := s.lookup(lctx, host)
		cancel()
		if err != nil || len(ips) == 0 {
			out = append(out, target{addr: e, serverName: host})
			continue
		}
		for _, ip := range ips {
			out = append(out, target{addr: net.JoinHostPort(ip, port), serverName: host})
		}
	}
	return out
}

// String is the list as given, for logs.
func (s *servers) String() string { return strings.Join(s.entries, ",") }
