package event

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/casarerpa/casare/server/registry"
	"github.com/casarerpa/casare/server/registry/registrytest"
)

// BenchmarkDeliveryWithATimingOutReceiver measures deliveries to a fast
// receiver on PostgreSQL while a second subscription's receiver never
// answers within the attempt timeout and is retried all along.
func BenchmarkDeliveryWithATimingOutReceiver(b *testing.B) {
	reg := openRegistry(b, registry.Options{DatabaseURL: registrytest.DatabaseURL(b), MaxOpenConns: 20})
	fast := newReceiver(b, nil)
	slow := newReceiver(b, nil)
	var timedOut atomic.Int64
	slow.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // then the server sees the client give up
		<-r.Context().Done()
		timedOut.Add(1)
	})
	subscribe(b, reg, "fast", fast, registry.EventRobotOffline)
	subscribe(b, reg, "slow", slow, registry.EventRobotOffline)
	// Events of many robots: a resource's events go one at a time.
	resources := make([]string, 256)
	for i := range resources {
		resources[i] = fmt.Sprint("robot-", i)
	}
	for done := 0; done < b.N; done += 1000 {
		appendEvents(b, reg, min(1000, b.N-done), resources...)
	}
	b.ResetTimer()
	// The slow one stays enabled the whole run: it keeps timing out.
	start(b, reg, Options{AttemptTimeout: 200 * time.Millisecond, MaxFailures: 1 << 30,
		Logger: slog.New(slog.DiscardHandler)})
	eventually(b, "the fast receiver got every event", func() bool { n, _ := fast.count(); return n == b.N })
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(timedOut.Load()), "timeouts")
}
