package robot

import (
	"strings"
	"testing"
	"time"
)

func TestLeaseClock(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var c leaseClock
	if _, ok := c.expired(t0.Add(time.Hour)); ok {
		t.Fatal("a robot never welcomed has no lease")
	}
	c.welcome(0, t0)
	if _, ok := c.expired(t0.Add(time.Hour)); ok {
		t.Fatal("a welcome without a lease (an older control plane) means none")
	}

	c.welcome(8*time.Second, t0)
	if _, ok := c.expired(t0.Add(8 * time.Second)); ok {
		t.Fatal("expired at the lease, not after it")
	}
	c.hear(t0.Add(5 * time.Second))
	if _, ok := c.expired(t0.Add(12 * time.Second)); ok {
		t.Fatal("a packet heard 7s ago holds a lease of 8s")
	}
	cut, ok := c.expired(t0.Add(13*time.Second + 100*time.Millisecond))
	if !ok {
		t.Fatal("not expired 8.1s after the last word")
	}
	if want := "cut off from the control plane for 8.1s, longer than its lease of 8s"; cut.Error() != want {
		t.Fatalf("cause %q, want %q", cut.Error(), want)
	}
	if _, ok := c.expired(t0.Add(20 * time.Second)); ok {
		t.Fatal("a lease runs out once per silence")
	}
	// Something heard before the silence does not renew the lease.
	c.hear(t0.Add(4 * time.Second))
	if _, ok := c.expired(t0.Add(21 * time.Second)); ok {
		t.Fatal("an older word renewed a spent lease")
	}
	// A reconnect renews it, and the next silence spends it again.
	c.welcome(8*time.Second, t0.Add(30*time.Second))
	if _, ok := c.expired(t0.Add(37 * time.Second)); ok {
		t.Fatal("expired 7s after a welcome")
	}
	if cut, ok := c.expired(t0.Add(39 * time.Second)); !ok || !strings.Contains(cut.Error(), "for 9s") {
		t.Fatalf("after a reconnect: %v %v", cut, ok)
	}
	// A later welcome without a lease ends it.
	c.welcome(0, t0.Add(40*time.Second))
	if _, ok := c.expired(t0.Add(time.Hour)); ok {
		t.Fatal("a welcome without a lease left the old one")
	}
}
