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
// to every address DNS gives it. A robot whose replica failed it dials
// the next one, so a dead or frozen replica costs one failed dial, not a
// wait for it to come back.
type servers struct {
	entries []string // host:port as given
	// lookup resolves a host name to its addresses; net's resolver unless
	// a test sets it.
	lookup func(ctx context.Context, host string) ([]string, error)

	mu    sync.Mutex
	addrs []target // the current round, expanded
	next  int
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

// pick returns the address to dial now. The addresses go round in turn;
// a new round resolves the names again, so replicas added to or removed
// from a DNS name are seen. A name that does not resolve is dialled as it
// is and fails there with the resolver's reason.
func (s *servers) pick(ctx context.Context) target {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.next >= len(s.addrs) {
		s.addrs, s.next = s.expand(ctx), 0
	}
	t := s.addrs[s.next]
	s.next++
	return t
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
