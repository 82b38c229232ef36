package e2e

import (
	"context"
	"strings"
	"testing"

	"connectrpc.com/connect/v2"
	"connectrpc.com/connect/v2/connecthttp"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/rpc/casare/v1/casarev1connect"
)

// TestShutdownEndsStreams: watch and log streams never go idle, so a
// graceful shutdown ends them rather than wait its whole timeout for
// them; calls that merely ran long would be cut off at that timeout and
// say so in the log.
func TestShutdownEndsStreams(t *testing.T) {
	t.Parallel()
	s := startServer(t, t.TempDir(), "--shutdown-timeout", "10m")
	client := connect.NewClient(connecthttp.NewTransport(http1, s.url()), bearer(s.adminToken()))
	jobs := casarev1connect.NewJobServiceClient(client)
	robots := casarev1connect.NewRobotServiceClient(client)
	ctx := context.Background()

	watchJobs, err := jobs.WatchJobs(ctx, &casarev1.WatchJobsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	watchRobots, err := robots.WatchRobots(ctx, &casarev1.WatchRobotsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// Both streams are open once their snapshots have been sent.
	if _, err := watchJobs.Receive(); err != nil {
		t.Fatalf("job watch: %v", err)
	}
	if _, err := watchRobots.Receive(); err != nil {
		t.Fatalf("robot watch: %v", err)
	}

	// stop fails the test unless the server exits 0 well before 10m.
	s.stop()
	for {
		if _, err := watchJobs.Receive(); err != nil {
			break
		}
	}
	for {
		if _, err := watchRobots.Receive(); err != nil {
			break
		}
	}
	if strings.Contains(s.log.String(), "cut off") {
		t.Errorf("the shutdown waited for the streams:\n%s", s.log.String())
	}
}
