package auth

import (
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect/v2"
	"github.com/prometheus/client_golang/prometheus/testutil"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

// lockedBuffer is a log sink the test reads while the limiter writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestFailedAuthenticationIsRateLimited: after FailureBurst bad tokens a
// peer is refused with resource_exhausted and a Retry-After, even with a
// right token, until the window passes; every refusal is counted by
// reason and the peer is logged once a minute.
func TestFailedAuthenticationIsRateLimited(t *testing.T) {
	b := setup(t)
	var logs lockedBuffer
	b.auth.logger = slog.New(slog.NewTextHandler(&logs, nil))
	b.auth.limit.logger = b.auth.logger
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	b.auth.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }

	for i := range FailureBurst {
		_, err := b.client.ListJobs(withToken(NewToken()), &casarev1.ListJobsRequest{})
		if connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Fatalf("bad token %d: %v, want unauthenticated", i+1, err)
		}
	}
	ctx := withToken(b.tokens["viewer"])
	_, err := b.client.ListJobs(ctx, &casarev1.ListJobsRequest{})
	if connect.CodeOf(err) != connect.CodeResourceExhausted || !strings.Contains(err.Error(), "too many failed authentications") {
		t.Fatalf("a right token after %d bad ones: %v, want resource_exhausted", FailureBurst, err)
	}
	if info, ok := connect.CallInfoForClientContext(ctx); !ok || info.ResponseHeader().Get("Retry-After") != "6" {
		t.Errorf("Retry-After is not 6 seconds")
	}
	if got := testutil.ToFloat64(b.auth.limit.failures.WithLabelValues(ReasonUnknown)); got != FailureBurst {
		t.Errorf("casare_auth_failures_total{reason=unknown} = %v, want %d", got, FailureBurst)
	}
	if got := testutil.ToFloat64(b.auth.limit.failures.WithLabelValues(ReasonRateLimited)); got != 1 {
		t.Errorf("casare_auth_failures_total{reason=rate_limited} = %v, want 1", got)
	}

	// The window passes: one more try is allowed, and a right one works.
	advance(FailureEvery)
	if _, err := b.client.ListJobs(withToken(b.tokens["viewer"]), &casarev1.ListJobsRequest{}); err != nil {
		t.Fatalf("a right token after the window: %v", err)
	}
	// One failure spends the try that came back.
	b.client.ListJobs(withToken(NewToken()), &casarev1.ListJobsRequest{})
	if _, err := b.client.ListJobs(withToken(b.tokens["viewer"]), &casarev1.ListJobsRequest{}); connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Fatalf("after the try that came back was spent: %v, want resource_exhausted", err)
	}
	if n := strings.Count(logs.String(), "failed API authentication"); n != 1 {
		t.Errorf("%d log lines within a minute, want 1:\n%s", n, logs.String())
	}
	advance(time.Minute)
	b.client.ListJobs(withToken(NewToken()), &casarev1.ListJobsRequest{})
	if n := strings.Count(logs.String(), "failed API authentication"); n != 2 {
		t.Errorf("%d log lines after a minute, want 2:\n%s", n, logs.String())
	}
}

// TestFailureLimiterStaysBounded: an attacker cycling addresses keeps at
// most maxPeers of them in memory, and the peers it pushes out first are
// those whose allowance came back.
func TestFailureLimiterStaysBounded(t *testing.T) {
	l := newFailureLimiter(slog.New(slog.DiscardHandler))
	now := time.Now()
	l.failed("192.0.2.1", ReasonUnknown, now)
	for i := range 3 * maxPeers {
		for range FailureBurst {
			l.failed(fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255), ReasonUnknown, now)
		}
		if len(l.peers) > maxPeers {
			t.Fatalf("%d peers tracked, want at most %d", len(l.peers), maxPeers)
		}
	}
	// A late peer over the limit is still refused.
	last := fmt.Sprintf("10.%d.%d.%d", (3*maxPeers-1)>>16&255, (3*maxPeers-1)>>8&255, (3*maxPeers-1)&255)
	if l.blocked(last, now) == 0 {
		t.Errorf("the last peer over the limit is not refused")
	}
}

func TestPeerIP(t *testing.T) {
	for in, want := range map[string]string{"10.0.0.1:5555": "10.0.0.1", "[::1]:80": "::1", "pipe": "pipe"} {
		if got := peerIP(in); got != want {
			t.Errorf("peerIP(%q) = %q, want %q", in, got, want)
		}
	}
}
