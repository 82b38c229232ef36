package server_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect/v2"
	"connectrpc.com/connect/v2/connecthttp"
	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/types/known/structpb"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/rpc/casare/v1/casarev1connect"
	"github.com/casarerpa/casare/server"
	"github.com/casarerpa/casare/server/queue/queuetest"
	"github.com/casarerpa/casare/server/registry/registrytest"
)

// startProduction starts a control plane in this process on PostgreSQL (a
// schema of its own) and Redis (DB 11, flushed), serving on a loopback
// port, and returns a JobService client that calls it over HTTP.
func startProduction(b *testing.B) casarev1connect.JobServiceClient {
	b.Helper()
	redisURL := queuetest.RedisURL(b, 11)
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)

	ropts, err := redis.ParseURL(redisURL)
	if err != nil {
		b.Fatal(err)
	}
	rdb := redis.NewClient(ropts)
	b.Cleanup(func() { rdb.FlushDB(context.Background()); rdb.Close() })
	if err := rdb.FlushDB(ctx).Err(); err != nil {
		b.Fatal(err)
	}

	cfg, err := server.ConfigFromEnv()
	if err != nil {
		b.Fatal(err)
	}
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.DataDir = b.TempDir()
	cfg.DatabaseURL = registrytest.DatabaseURL(b)
	cfg.RedisURL = redisURL
	srv, err := server.New(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() { srv.Run(ctx); close(done) }()
	b.Cleanup(func() { cancel(); <-done; srv.Close() })

	token, err := os.ReadFile(filepath.Join(cfg.DataDir, server.AdminTokenFile))
	if err != nil {
		b.Fatal(err)
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = 256
	client := connect.NewClient(
		connecthttp.NewTransport(&http.Client{Transport: transport}, "http://"+srv.Addr()),
		bearer(strings.TrimSpace(string(token))),
	)
	jobs := casarev1connect.NewJobServiceClient(client)
	warmUp(b, jobs)
	return jobs
}

// warmUp opens the HTTP and database connections a steady load uses, so
// the measurement is of serving, not of dialling.
func warmUp(b *testing.B, jobs casarev1connect.JobServiceClient) {
	b.Helper()
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for range 20 {
				if _, err := jobs.SubmitJob(context.Background(), benchRequest); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func bearer(token string) connect.ClientInterceptor {
	return func(next connect.ClientFunc) connect.ClientFunc {
		return func(ctx context.Context, spec connect.Spec) (connect.ClientStream, error) {
			if info, ok := connect.CallInfoForClientContext(ctx); ok {
				info.RequestHeader().Set("Authorization", "Bearer "+token)
			}
			return next(ctx, spec)
		}
	}
}

var benchRequest = &casarev1.SubmitJobRequest{
	Source: &casarev1.SubmitJobRequest_Workflow{Workflow: &casarev1.Workflow{
		Name:  "bench",
		Steps: []*casarev1.Step{{Id: "noop", Uses: "log", With: &structpb.Struct{Fields: map[string]*structpb.Value{"message": structpb.NewStringValue("noop")}}}},
	}},
}

// BenchmarkSubmitJob measures durable submits (committed to PostgreSQL and
// queued in Redis before the call returns) with 32 concurrent clients
// through the real HTTP stack. Target: 3,000/s on 2 cores.
func BenchmarkSubmitJob(b *testing.B) {
	jobs := startProduction(b)
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := jobs.SubmitJob(context.Background(), benchRequest); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "submits/s")
}

// BenchmarkSubmitJobLatencyAt1000PerSecond submits at a steady 1,000 per
// second (b.N submits, one every millisecond, each on its own goroutine)
// and reports the latency percentiles. Target: p99 under 20 ms.
func BenchmarkSubmitJobLatencyAt1000PerSecond(b *testing.B) {
	jobs := startProduction(b)
	latencies := make([]time.Duration, b.N)
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		if wait := time.Until(start.Add(time.Duration(i) * time.Millisecond)); wait > 0 {
			time.Sleep(wait)
		}
		wg.Go(func() {
			t0 := time.Now()
			if _, err := jobs.SubmitJob(context.Background(), benchRequest); err != nil {
				b.Error(err)
			}
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
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "submits/s")
}
