package server_test

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect/v2"
	"connectrpc.com/connect/v2/connecthttp"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/rpc/casare/v1/casarev1connect"
	"github.com/casarerpa/casare/server"
)

var (
	backlogRun     = flag.Duration("backlog.run", 120*time.Second, "BenchmarkEmbeddedBacklog: how long to submit flat out")
	backlogJobs    = flag.Int("backlog.jobs", 50_000, "BenchmarkEmbeddedBacklog: the fewest pending jobs before the idle window")
	backlogTopUp   = flag.Duration("backlog.topup", 10*time.Minute, "BenchmarkEmbeddedBacklog: the longest to submit after the run to reach -backlog.jobs")
	backlogIdle    = flag.Duration("backlog.idle", 60*time.Second, "BenchmarkEmbeddedBacklog: the idle window whose CPU is measured")
	backlogProfile = flag.String("backlog.profile", "", "BenchmarkEmbeddedBacklog: write a CPU profile of the idle window to this file")
)

// BenchmarkEmbeddedBacklog is the new user's first run: SQLite and the
// embedded Redis, no robot. It submits flat out for -backlog.run (then up
// to -backlog.jobs pending jobs if that run made fewer), and reports the
// submit rate in the first and the last 10 s of the run and the CPU the
// process burns over an idle window of -backlog.idle with that backlog.
// Targets: idle CPU under 2 % of a core, the last rate within 20 % of the
// first. Run it once, e.g.
//
//	go test ./server -run '^$' -bench EmbeddedBacklog -benchtime 1x -timeout 30m
func BenchmarkEmbeddedBacklog(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg, err := server.ConfigFromEnv()
	if err != nil {
		b.Fatal(err)
	}
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.QUICAddr = "127.0.0.1:0"
	cfg.DataDir = b.TempDir()
	cfg.DatabaseURL = ""
	cfg.RedisURL = ""
	srv, err := server.New(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() { srv.Run(ctx); close(done) }()
	defer func() { cancel(); <-done; srv.Close() }()
	token, err := os.ReadFile(filepath.Join(cfg.DataDir, server.AdminTokenFile))
	if err != nil {
		b.Fatal(err)
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = 256
	jobs := casarev1connect.NewJobServiceClient(connect.NewClient(
		connecthttp.NewTransport(&http.Client{Transport: transport}, "http://"+srv.Addr()),
		bearer(strings.TrimSpace(string(token))),
	))

	for range b.N {
		// Submits per second of the run, by the second they finished in.
		perSecond := make([]atomic.Int64, int(*backlogRun/time.Second)+1)
		var total atomic.Int64
		var lastJob atomic.Value
		// The process's CPU time at each second of the run: the CPU a
		// submit costs does not depend on what else the machine runs.
		cpuAt := make([]time.Duration, len(perSecond)+1)
		start := time.Now()
		cpuAt[0] = processCPU(b)
		stopProgress := make(chan struct{})
		progressDone := make(chan struct{})
		go func() {
			defer close(progressDone)
			tick := time.NewTicker(time.Second)
			defer tick.Stop()
			for s := 1; ; s++ {
				select {
				case <-stopProgress:
					return
				case <-tick.C:
				}
				if s < len(cpuAt) {
					cpuAt[s] = processCPU(b)
				}
				if s%10 == 0 {
					fmt.Fprintf(os.Stderr, "%3ds: %d submitted\n", s, total.Load())
				}
			}
		}()
		submit := func(until func() bool) {
			var wg sync.WaitGroup
			for range 32 {
				wg.Go(func() {
					for !until() && !b.Failed() {
						res, err := jobs.SubmitJob(ctx, benchRequest)
						if err != nil {
							b.Error(err)
							return
						}
						lastJob.Store(res.GetJob().GetId())
						total.Add(1)
						if s := int(time.Since(start) / time.Second); s < len(perSecond) {
							perSecond[s].Add(1)
						}
					}
				})
			}
			wg.Wait()
		}
		submit(func() bool { return time.Since(start) >= *backlogRun })
		submitted := total.Load()
		topUp := time.Now()
		submit(func() bool { return total.Load() >= int64(*backlogJobs) || time.Since(topUp) > *backlogTopUp })
		close(stopProgress)
		<-progressDone
		if b.Failed() {
			return
		}
		window := func(from, to int) float64 {
			var n int64
			for s := from; s < to && s < len(perSecond); s++ {
				n += perSecond[s].Load()
			}
			return float64(n) / float64(to-from)
		}
		last := int(*backlogRun / time.Second)
		first10, last10 := window(0, 10), window(last-10, last)
		cpuPerSubmit := func(from, to int) float64 {
			return float64(cpuAt[to]-cpuAt[from]) / float64(time.Millisecond) / (window(from, to) * float64(to-from))
		}
		firstCPU, lastCPU := cpuPerSubmit(0, 10), cpuPerSubmit(last-10, last)
		b.Logf("run of %s: %d submits; first 10 s %.0f/s, last 10 s %.0f/s (%+.0f %%); topped up to %d pending",
			*backlogRun, submitted, first10, last10, 100*(last10-first10)/first10, total.Load())
		b.Logf("CPU per submit: first 10 s %.2f ms, last 10 s %.2f ms (%+.0f %%)",
			firstCPU, lastCPU, 100*(lastCPU-firstCPU)/firstCPU)

		// Let the work the submits left finish (the dispatcher says in
		// each job's message what it waits for, in the order they came),
		// then measure a quiet window that holds reconcile passes.
		settle := time.Now()
		for time.Since(settle) < 10*time.Minute {
			res, err := jobs.GetJob(ctx, &casarev1.GetJobRequest{Id: lastJob.Load().(string)})
			if err != nil {
				b.Fatal(err)
			}
			if res.GetJob().GetStatusMessage() != "waiting for a robot" {
				break
			}
			time.Sleep(time.Second)
		}
		b.Logf("the last job's waiting message said %s after the submits", time.Since(settle).Round(time.Second))
		time.Sleep(5 * time.Second)
		if *backlogProfile != "" {
			f, err := os.Create(*backlogProfile)
			if err != nil {
				b.Fatal(err)
			}
			if err := pprof.StartCPUProfile(f); err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			defer pprof.StopCPUProfile()
		}
		cpu0, t0 := processCPU(b), time.Now()
		time.Sleep(*backlogIdle)
		idle := float64(processCPU(b)-cpu0) / float64(time.Since(t0))
		b.Logf("idle with %d pending jobs for %s: %.2f %% of a core", total.Load(), *backlogIdle, 100*idle)
		b.ReportMetric(first10, "first10s-submits/s")
		b.ReportMetric(last10, "last10s-submits/s")
		b.ReportMetric(100*idle, "idle-cpu-%")
		b.ReportMetric(firstCPU, "first10s-cpu-ms/submit")
		b.ReportMetric(lastCPU, "last10s-cpu-ms/submit")
	}
}

// processCPU returns the user and system CPU time this process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
