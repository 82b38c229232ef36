package e2e

import (
	"net/http"
	"strings"
	"testing"
)

// TestFailedAuthenticationIsLimitedPerPeer: after ten bad tokens from one
// address the server answers 429 (resource_exhausted) with a Retry-After,
// to a right token too; the metric counts every refusal by reason and the
// log names the peer once.
func TestFailedAuthenticationIsLimitedPerPeer(t *testing.T) {
	t.Parallel()
	s := startServer(t, t.TempDir())
	admin := s.adminToken()
	for i := range 10 {
		if status, body := call(t, s.url(), "csr_notarealtoken", listJobs, `{}`); status != http.StatusUnauthorized {
			t.Fatalf("bad token %d: HTTP %d %s, want 401", i+1, status, body)
		}
	}
	status, body := call(t, s.url(), admin, listJobs, `{}`)
	if status != http.StatusTooManyRequests || !strings.Contains(string(body), "resource_exhausted") || !strings.Contains(string(body), "too many failed authentications from 127.0.0.1") {
		t.Fatalf("the admin token after 10 bad ones: HTTP %d %s, want 429 resource_exhausted", status, body)
	}
	req, _ := http.NewRequest(http.MethodPost, s.url()+listJobs, strings.NewReader(`{}`))
	req.Header.Set("Content-Type", "application/json")
	res, err := http1.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusTooManyRequests || res.Header.Get("Retry-After") == "" {
		t.Errorf("a call over the limit: HTTP %d, Retry-After %q; want 429 with a Retry-After", res.StatusCode, res.Header.Get("Retry-After"))
	}
	if v := metricValue(t, s, "casare_auth_failures_total", `reason="malformed"`); v != 10 {
		t.Errorf(`casare_auth_failures_total{reason="malformed"} = %v, want 10`, v)
	}
	if v := metricValue(t, s, "casare_auth_failures_total", `reason="rate_limited"`); v != 2 {
		t.Errorf(`casare_auth_failures_total{reason="rate_limited"} = %v, want 2`, v)
	}
	if n := strings.Count(s.log.String(), `msg="failed API authentication" peer=127.0.0.1`); n != 1 {
		t.Errorf("%d log lines about the peer, want 1:\n%s", n, s.log.String())
	}
}
