package server_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

// BenchmarkTriggerLatencyAt200PerSecond posts signed deliveries to a
// webhook trigger at a steady 200 a second (b.N of them, one every 5 ms,
// each on its own goroutine) on PostgreSQL and Redis, and reports the
// latency from request to job created. Target: p99 under 50 ms.
//
//	go test -run '^$' -bench TriggerLatency -benchtime 1000x ./server/
func BenchmarkTriggerLatencyAt200PerSecond(b *testing.B) {
	s := startTriggerServer(b, true, 0)
	ctx := context.Background()
	if _, err := s.workflows.PutWorkflow(ctx, &casarev1.PutWorkflowRequest{Workflow: ordersWorkflow}); err != nil {
		b.Fatal(err)
	}
	created, err := s.webhooks.CreateTrigger(ctx, &casarev1.CreateTriggerRequest{Trigger: &casarev1.Trigger{
		Name: "bench", WorkflowName: "orders", RatePerSecond: 10000, Burst: 10000,
		Inputs: map[string]string{"order": "int(body.order)", "source": "headers['user-agent']"},
	}})
	if err != nil {
		b.Fatal(err)
	}
	path, secret := created.GetTrigger().GetUrlPath(), created.GetSecret()
	post := func(id string) {
		if got := s.post(b, path, delivery{id: id, body: `{"order": 1}`, secret: secret}); got.status != http.StatusAccepted {
			b.Errorf("delivery %s: %+v", id, got)
		}
	}
	// Warm the connections and the trigger's compiled mapping.
	var warm sync.WaitGroup
	for i := range 32 {
		warm.Go(func() { post(fmt.Sprint("warm-", i)) })
	}
	warm.Wait()

	const interval = 5 * time.Millisecond
	latencies := make([]time.Duration, b.N)
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
			time.Sleep(wait)
		}
		wg.Go(func() {
			t0 := time.Now()
			post(fmt.Sprint("msg-", i))
			latencies[i] = time.Since(t0)
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	slices.Sort(latencies)
	pct := func(p float64) float64 {
		return float64(latencies[int(p*float64(len(latencies)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "requests/s")
}
