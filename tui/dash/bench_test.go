package dash

import (
	"context"
	"fmt"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"
	"google.golang.org/protobuf/types/known/timestamppb"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

// benchModel is a 120×40 dashboard holding robots robots and jobs jobs.
func benchModel(b *testing.B, robots, jobs int) *Model {
	b.Helper()
	m := New(context.Background(), Options{Server: "bench", NoColor: true, Now: func() time.Time { return clock }, Location: time.UTC})
	send(m, tea.WindowSizeMsg{Width: 120, Height: 40})
	rs := make([]*casarev1.Robot, robots)
	for i := range rs {
		rs[i] = &casarev1.Robot{Id: fmt.Sprintf("rb-%05d", i), Name: fmt.Sprintf("robot-%05d", i),
			Status: casarev1.RobotStatus(1 + i%4), Labels: map[string]string{"site": fmt.Sprintf("s%d", i%7)},
			Version: "1.4.0", Os: "linux", LastSeen: ago(time.Duration(i%30) * time.Second), MaxJobs: 2}
	}
	js := make([]*casarev1.Job, jobs)
	for i := range js {
		js[i] = benchJob(i, casarev1.JobStatus(1+i%6))
	}
	send(m, batch{robots: []robotOp{{kind: opReplace, robots: rs}}, jobs: []jobOp{{kind: opReplace, jobs: js}},
		streams: map[string]streamState{"robots": {up: true}, "jobs": {up: true}}})
	return m
}

func benchJob(i int, st casarev1.JobStatus) *casarev1.Job {
	return &casarev1.Job{Id: fmt.Sprintf("019a2b3c-0000-7000-8000-%012d", i), WorkflowName: fmt.Sprintf("wf-%d", i%40),
		Status: st, Priority: casarev1.JobPriority(1 + i%4), RobotId: fmt.Sprintf("rb-%05d", i%10000),
		Attempt: 1, MaxAttempts: 3, CreatedAt: timestamppb.New(clock.Add(-time.Duration(i) * time.Second))}
}

// BenchmarkJobsView measures one frame of the jobs view with 100,000 jobs:
// drawing it, drawing it after a new filter, and after a frame's worth of
// changes arrived from the stream.
func BenchmarkJobsView(b *testing.B) {
	m := benchModel(b, 1000, 100_000)
	typeText(m, ":jobs")
	press(m, "enter")
	b.Run("render", func(b *testing.B) {
		for b.Loop() {
			_ = m.View()
		}
	})
	b.Run("filter", func(b *testing.B) {
		filters := []string{"status:failed wf-3", "robot:rb-0004", ""}
		i := 0
		for b.Loop() {
			m.setFilter(filters[i%len(filters)])
			i++
			_ = m.View()
		}
	})
	b.Run("update100", func(b *testing.B) {
		i := 0
		for b.Loop() {
			jobs := make([]*casarev1.Job, 100)
			for k := range jobs {
				jobs[k] = benchJob((i*100+k)%100_000, casarev1.JobStatus(1+(i+k)%6))
			}
			i++
			send(m, batch{jobs: []jobOp{{kind: opUpsert, jobs: jobs}}})
			_ = m.View()
		}
	})
	b.Run("queues", func(b *testing.B) {
		typeText(m, ":queues")
		press(m, "enter")
		for b.Loop() {
			m.queues = nil // as if a second passed
			_ = m.View()
		}
	})
}

// BenchmarkRobotsView measures one frame of the robots view with 10,000
// robots: drawing, filtering, and a frame of heartbeats.
func BenchmarkRobotsView(b *testing.B) {
	m := benchModel(b, 10_000, 0)
	b.Run("render", func(b *testing.B) {
		for b.Loop() {
			_ = m.View()
		}
	})
	b.Run("filter", func(b *testing.B) {
		filters := []string{"status:busy site=s3", "robot-09", ""}
		i := 0
		for b.Loop() {
			m.setFilter(filters[i%len(filters)])
			i++
			_ = m.View()
		}
	})
	b.Run("update100", func(b *testing.B) {
		i := 0
		for b.Loop() {
			rs := make([]*casarev1.Robot, 100)
			for k := range rs {
				n := (i*100 + k) % 10_000
				rs[k] = &casarev1.Robot{Id: fmt.Sprintf("rb-%05d", n), Name: fmt.Sprintf("robot-%05d", n),
					Status: casarev1.RobotStatus(1 + (i+k)%4), LastSeen: ago(0), MaxJobs: 2}
			}
			i++
			send(m, batch{robots: []robotOp{{kind: opUpsert, robots: rs}}})
			_ = m.View()
		}
	})
}
