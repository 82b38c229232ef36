package auth

import (
	"fmt"
	"log/slog"
	"math"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// Failed authentication is limited per peer address, so that nobody can
// guess tokens at the speed of the network: a peer may fail FailureBurst
// times at once, and then once per FailureEvery; past that it is refused
// for the window, whatever token it sends, with resource_exhausted (HTTP
// 429) and a Retry-After.
const (
	FailureBurst = 10
	FailureEvery = 6 * time.Second
)

// maxPeers bounds the peers tracked: an attacker cycling addresses must
// not grow memory without bound. Past it, peers whose allowance has come
// back whole are dropped first, then any.
const maxPeers = 10_000

// logEvery is how often one peer's failures are logged at most.
const logEvery = time.Minute

// Reasons of casare_auth_failures_total.
const (
	ReasonMissing     = "missing"
	ReasonMalformed   = "malformed"
	ReasonUnknown     = "unknown"
	ReasonRevoked     = "revoked"
	ReasonExpired     = "expired"
	ReasonRateLimited = "rate_limited"
)

// peerState is one peer's allowance of failures and when it was last
// logged.
type peerState struct {
	limiter  *rate.Limiter
	logged   time.Time
	failures int // since the last log line
}

// failureLimiter holds the allowance of each peer.
type failureLimiter struct {
	logger   *slog.Logger
	failures *prometheus.CounterVec
	// logs bounds the log lines of all peers together, so that many
	// addresses cannot flood the log either.
	logs *rate.Limiter

	mu    sync.Mutex
	peers map[string]*peerState
}

func newFailureLimiter(logger *slog.Logger) *failureLimiter {
	l := &failureLimiter{
		logger: logger,
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "casare_auth_failures_total",
			Help: "API calls refused for their bearer token, by reason (missing, malformed, unknown, revoked, expired, rate_limited).",
		}, []string{"reason"}),
		logs:  rate.NewLimiter(rate.Every(100*time.Millisecond), 50),
		peers: map[string]*peerState{},
	}
	// Every reason from zero, so that a rate over the first failure has a
	// series to start from.
	for _, reason := range []string{ReasonMissing, ReasonMalformed, ReasonUnknown, ReasonRevoked, ReasonExpired, ReasonRateLimited} {
		l.failures.WithLabelValues(reason)
	}
	return l
}

// peerIP is the address a call came from, without its port: one client
// opens connections from many ports.
func peerIP(addr string) string {
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return host
	}
	return addr
}

// blocked says how long peer must wait before its next attempt, zero when
// it may try now.
func (l *failureLimiter) blocked(peer string, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	p, ok := l.peers[peer]
	if !ok {
		return 0
	}
	tokens := p.limiter.TokensAt(now)
	if tokens >= 1 {
		return 0
	}
	wait := time.Duration((1 - tokens) * float64(FailureEvery))
	return max(wait, time.Second)
}

// refuse counts a call refused because its peer is over the limit.
func (l *failureLimiter) refuse() {
	l.failures.WithLabelValues(ReasonRateLimited).Inc()
}

// failed takes one failure of peer's allowance, counts it and logs it,
// at most once per logEvery for the peer.
func (l *failureLimiter) failed(peer, reason string, now time.Time) {
	l.failures.WithLabelValues(reason).Inc()
	l.mu.Lock()
	p, ok := l.peers[peer]
	if !ok {
		l.makeRoom(now)
		p = &peerState{limiter: rate.NewLimiter(rate.Every(FailureEvery), FailureBurst)}
		l.peers[peer] = p
	}
	p.limiter.AllowN(now, 1)
	p.failures++
	var n int
	if now.Sub(p.logged) >= logEvery {
		n, p.failures, p.logged = p.failures, 0, now
	}
	l.mu.Unlock()
	if n > 0 && l.logs.AllowN(now, 1) {
		l.logger.Warn("failed API authentication", "peer", peer, "reason", reason, "failures", n,
			"limit", fmt.Sprintf("%d at once, then one per %s", FailureBurst, FailureEvery))
	}
}

// makeRoom drops peers when the map is full: first those whose allowance
// is whole again (they failed long enough ago to be forgotten), then any,
// down to nine tenths of maxPeers, so that the sweep through the map is
// paid once per many new peers, not by each. Called with mu held.
func (l *failureLimiter) makeRoom(now time.Time) {
	if len(l.peers) < maxPeers {
		return
	}
	for peer, p := range l.peers {
		if p.limiter.TokensAt(now) >= FailureBurst && now.Sub(p.logged) >= logEvery {
			delete(l.peers, peer)
		}
	}
	for peer := range l.peers {
		if len(l.peers) <= maxPeers*9/10 {
			break
		}
		delete(l.peers, peer)
	}
}

// retryAfter is the Retry-After header's value for a wait: whole seconds,
// rounded up.
func retryAfter(wait time.Duration) string {
	return fmt.Sprint(int(math.Ceil(wait.Seconds())))
}
