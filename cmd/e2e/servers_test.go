package e2e

import (
	"testing"
	"time"
)

// TestAgentDialsTheNextReplica gives a robot two addresses, the first
// of which nobody answers: it registers through the second.
func TestAgentDialsTheNextReplica(t *testing.T) {
	t.Parallel()
	s := startServer(t, t.TempDir(), "--heartbeat-interval", "500ms")
	f := newFleet(t, s)
	live := quicListening.FindStringSubmatch(s.log.String())[1]
	f.enrol("two", "--server", freeUDPAddr(t)+","+live)
	waitStatuses(t, s, map[string]string{"two": "IDLE"}, 30*time.Second)
	waitLog(t, f.agents["two"].log, "server="+live, 1)
}
