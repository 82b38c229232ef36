package gateway

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// maxLoggedPeers bounds the peers whose refusals are remembered, so a
// flood of peers cannot grow the memory that keeps their log lines down.
const maxLoggedPeers = 4096

// peerLog decides which refusals are logged: at most one line per period
// for each peer and kind of refusal. It remembers at most max peers and
// kinds; beyond that, while every one it holds is recent, the refusals of
// all further peers share one line per period.
type peerLog struct {
	every time.Duration
	max   int

	mu        sync.Mutex
	seen      map[peerKind]*peerEntry
	overflow  peerEntry
	lastSweep time.Time
}

type peerKind struct{ peer, kind string }

type peerEntry struct {
	at      time.Time // when its last line was logged
	repeats int       // refusals not logged since
}

func newPeerLog(every time.Duration, max int) *peerLog {
	return &peerLog{every: every, max: max, seen: map[peerKind]*peerEntry{}}
}

// allow says whether a refusal of this kind from peer (host:port) is
// logged now, and how many were not logged since the last line for it.
func (p *peerLog) allow(peer, kind string, now time.Time) (ok bool, repeats int) {
	key := peerKind{peerKey(peer), kind}
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.seen[key]
	if e == nil {
		if len(p.seen) >= p.max && now.Sub(p.lastSweep) >= time.Second {
			p.lastSweep = now
			for k, old := range p.seen {
				if now.Sub(old.at) >= p.every {
					delete(p.seen, k)
				}
			}
		}
		if len(p.seen) >= p.max {
			e = &p.overflow
		} else {
			p.seen[key] = &peerEntry{at: now}
			return true, 0
		}
	}
	if !e.at.IsZero() && now.Sub(e.at) < p.every {
		e.repeats++
		return false, 0
	}
	repeats = e.repeats
	e.at, e.repeats = now, 0
	return true, repeats
}

// peerKey is the host of a peer's address, and for IPv6 its /64: the
// port, or the rest of one network's addresses, are the peer's to choose.
func peerKey(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	ip = ip.Unmap()
	if ip.Is6() {
		prefix, _ := ip.Prefix(64)
		return prefix.String()
	}
	return ip.String()
}
