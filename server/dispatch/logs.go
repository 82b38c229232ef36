package dispatch

import (
	"context"
	"errors"
	"io"
	"time"

	agentv1 "github.com/casarerpa/casare/rpc/casare/agent/v1"
	"github.com/casarerpa/casare/server/registry"
)

// logBatch bounds how many lines are stored in one statement, and
// logFlush how long a line waits to be stored with others.
const (
	logBatch = 500
	logFlush = 50 * time.Millisecond
)

// Logs stores one job log stream as it comes, in batches, and tells every
// replica's followers.
func (d *Dispatcher) Logs(ctx context.Context, robotID string, hdr *agentv1.LogStreamHeader, frames *agentv1.FrameReader) {
	job, err := d.opts.Store.GetJob(ctx, hdr.GetJobId())
	if err != nil || job.RobotID != robotID {
		// A robot writes only into the log of a job it was given.
		d.log.Warn("refused a log stream for a job the robot was not given", "robot", robotID, "job", hdr.GetJobId(), "err", err)
		return
	}
	key := attemptKey{hdr.GetJobId(), hdr.GetAttempt()}
	entries := make(chan *agentv1.LogEntry, logBatch)
	go func() {
		defer close(entries)
		for {
			e := &agentv1.LogEntry{}
			if err := frames.Read(e); err != nil {
				if !errors.Is(err, io.EOF) {
					d.log.Debug("log stream ended", "robot", robotID, "job", key.jobID, "err", err)
				}
				return
			}
			entries <- e
		}
	}()
	ticker := time.NewTicker(logFlush)
	defer ticker.Stop()
	var batch []registry.JobLog
	flush := func() {
		if len(batch) == 0 {
			return
		}
		if err := d.opts.Store.AppendJobLogs(ctx, batch); err != nil {
			d.log.Warn("store job log lines", "job", key.jobID, "lines", len(batch), "err", err)
		} else {
			d.markLogs(key, batch[len(batch)-1].Line)
			d.opts.Queue.PublishJobLogs(key.jobID)
		}
		batch = batch[:0]
	}
	for {
		select {
		case e, ok := <-entries:
			if !ok {
				flush()
				return
			}
			batch = append(batch, registry.JobLog{
				JobID: key.jobID, Attempt: key.attempt, Line: e.GetLine(), Time: e.GetTime().AsTime(),
				Level:  registry.CleanText(e.GetLevel()),
				StepID: registry.CleanText(e.GetStepId()), Message: registry.CleanText(e.GetMessage()),
			})
			if len(batch) >= logBatch {
				flush()
			}
		case <-ticker.C:
			flush()
		}
	}
}

func (d *Dispatcher) markLogs(key attemptKey, line int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	m := d.logs[key]
	if m == nil {
		m = &logMark{ch: make(chan struct{})}
		d.logs[key] = m
	}
	if line > m.lines {
		m.lines = line
		close(m.ch)
		m.ch = make(chan struct{})
	}
}

// waitLogs waits until the attempt's first n lines are stored, or the
// timeout: a job's end is recorded after its log, so a follower that sees
// the end has seen every line.
func (d *Dispatcher) waitLogs(key attemptKey, n int64, timeout time.Duration) {
	if n <= 0 {
		return
	}
	expired := time.After(timeout)
	for {
		d.mu.Lock()
		m := d.logs[key]
		if m == nil {
			m = &logMark{ch: make(chan struct{})}
			d.logs[key] = m
		}
		if m.lines >= n {
			d.mu.Unlock()
			return
		}
		ch := m.ch
		d.mu.Unlock()
		select {
		case <-ch:
		case <-expired:
			d.log.Warn("a job ended before all its log lines arrived", "job", key.jobID, "attempt", key.attempt, "want", n)
			return
		}
	}
}
