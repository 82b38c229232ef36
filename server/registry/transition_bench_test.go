package registry

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkTransitionJobs moves jobs the way each dispatched job moves,
// pending → assigned → running → succeeded, on PostgreSQL, in batches of
// one (an idle control plane) and of 64 (a busy one). An op is one job's
// three transitions.
func BenchmarkTransitionJobs(b *testing.B) {
	for _, size := range []int{1, 64} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			ctx := context.Background()
			r := openPostgres(b)
			robot := "robot-1"
			steps := []Transition{
				{From: []JobStatus{JobPending}, Attempt: 1, To: JobAssigned, RobotID: &robot, Message: "assigned"},
				{From: []JobStatus{JobAssigned}, Attempt: 1, Robot: robot, To: JobRunning, Message: "running"},
				{From: []JobStatus{JobRunning}, Attempt: 1, Robot: robot, To: JobSucceeded, Message: "succeeded"},
			}
			jobs := make([]*Job, size)
			batch := make([]Transition, size)
			b.ReportAllocs()
			for b.Loop() {
				b.StopTimer()
				for i := range jobs {
					jobs[i] = newJob("bench")
				}
				if _, err := r.db.NewInsert().Model(&jobs).Exec(ctx); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				for _, step := range steps {
					for i, job := range jobs {
						batch[i] = step
						batch[i].JobID = job.ID
					}
					for _, res := range r.TransitionJobs(ctx, batch) {
						if res.Err != nil {
							b.Fatal(res.Err)
						}
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*size), "µs/job")
		})
	}
}
