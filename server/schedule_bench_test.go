package server

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/casarerpa/casare/server/queue/queuetest"
	"github.com/casarerpa/casare/server/registry"
	"github.com/casarerpa/casare/server/registry/registrytest"
)

// BenchmarkSchedulesDueTogether: 10,000 schedules due on the same instant,
// on PostgreSQL and Redis. It reports how long after the instant the last
// job was committed (total_s) and the lateness of the jobs, committed
// minus scheduled (lateness_p50_s, lateness_p99_s).
func BenchmarkSchedulesDueTogether(b *testing.B) {
	const n = 10_000
	redisURL := queuetest.RedisURL(b, scheduleRedisDB)
	ropts, err := redis.ParseURL(redisURL)
	if err != nil {
		b.Fatal(err)
	}
	rdb := redis.NewClient(ropts)
	b.Cleanup(func() { rdb.FlushDB(context.Background()); rdb.Close() })
	if err := rdb.FlushDB(context.Background()).Err(); err != nil {
		b.Fatal(err)
	}
	sc := startScheduling(b, b.TempDir(), registrytest.DatabaseURL(b), redisURL, "")
	reg := sc.srv.reg
	ctx := context.Background()
	var total, p50, p99 float64
	for i := range b.N {
		// Due a few seconds ahead, so the leader's wait is set by them
		// rather than by the tick it was in when they were written.
		at := time.Now().Add(3 * time.Second).Truncate(time.Second)
		rows := make([]registry.Schedule, n)
		for j := range rows {
			rows[j] = registry.Schedule{
				ID: registry.NewID(), Name: fmt.Sprintf("bench-%d-%05d", i, j), WorkflowName: "tick", Cron: "@every 24h",
				Inputs: "{}", Requires: "{}", OverlapPolicy: "skip", MisfirePolicy: "skip",
				NextFireTime: &at, CreatedBy: "bench", CreatedAt: time.Now().UTC(), UpdatedAt: time.Now().UTC().Truncate(time.Microsecond),
			}
		}
		for start := 0; start < n; start += 1000 {
			chunk := rows[start:min(start+1000, n)]
			if _, err := reg.DB().NewInsert().Model(&chunk).Exec(ctx); err != nil {
				b.Fatal(err)
			}
		}
		b.ResetTimer()
		mine := reg.DB().NewSelect().Model((*registry.Job)(nil)).Where("created_by LIKE ?", "schedule/bench-"+fmt.Sprint(i)+"-%")
		deadline := time.Now().Add(2 * time.Minute)
		for {
			count, err := mine.Count(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if count >= n || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		var jobs []registry.Job
		err := reg.DB().NewSelect().Model(&jobs).Column("idempotency_key", "created_at").
			Where("created_by LIKE ?", "schedule/bench-"+fmt.Sprint(i)+"-%").Scan(ctx)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		b.Logf("fires: created %v failed %v skipped %v missed %v", sc.fires("created"), sc.fires("failed"), sc.fires("skipped_overlap"), sc.fires("missed"))
		if len(jobs) != n {
			b.Fatalf("%d jobs of %d schedules after 2 minutes", len(jobs), n)
		}
		late := make([]float64, len(jobs))
		last := at
		for j, job := range jobs {
			if !strings.HasSuffix(*job.IdempotencyKey, at.UTC().Format(time.RFC3339Nano)) {
				b.Fatalf("job for %s, want %s", *job.IdempotencyKey, at.UTC().Format(time.RFC3339Nano))
			}
			late[j] = job.CreatedAt.Sub(at).Seconds()
			if job.CreatedAt.After(last) {
				last = job.CreatedAt
			}
		}
		slices.Sort(late)
		total += last.Sub(at).Seconds()
		p50 += late[len(late)/2]
		p99 += late[len(late)*99/100]
	}
	b.ReportMetric(total/float64(b.N), "total_s")
	b.ReportMetric(p50/float64(b.N), "lateness_p50_s")
	b.ReportMetric(p99/float64(b.N), "lateness_p99_s")
}
