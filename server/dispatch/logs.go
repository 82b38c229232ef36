package dispatch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/cenkalti/backoff/v5"

	agentv1 "github.com/casarerpa/casare/rpc/casare/agent/v1"
	"github.com/casarerpa/casare/server/registry"
)

// logBatch bounds how many lines are stored in one statement, and
// logFlush how long a line waits to be stored with others.
const (
	logBatch = 500
	logFlush = 50 * time.Millisecond
)

// storageRetry is how long the dispatcher waits between tries of a write
// the database could not take: from a quick second try up to every few
// seconds through an outage.
func storageRetry() backoff.BackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 100 * time.Millisecond
	b.MaxInterval = 2 * time.Second
	return b
}

// whileUnavailable runs op until it succeeds, fails for another reason than
// the database being unavailable, or ctx ends.
func whileUnavailable[T any](ctx context.Context, d *Dispatcher, what string, op func() (T, error)) (T, error) {
	tries := 0
	return backoff.Retry(ctx, func() (T, error) {
		v, err := op()
		if err != nil && !registry.Unavailable(err) {
			return v, backoff.Permanent(err)
		}
		return v, err
	}, backoff.WithBackOff(storageRetry()), backoff.WithMaxElapsedTime(0), backoff.WithNotify(func(err error, next time.Duration) {
		tries++
		if tries == 1 {
			d.log.Warn("the database is unavailable; trying again until it is back", "what", what, "err", err)
		}
	}))
}

// Logs stores one job log stream as it comes, in batches, and tells every
// replica's followers. A line read is never dropped: while the database is
// unavailable the batch is tried again and the stream is not read, so the
// robot's writes wait (it keeps every line until the job's end is
// acknowledged, and sends them all again on its next connection).
func (d *Dispatcher) Logs(ctx context.Context, robotID string, hdr *agentv1.LogStreamHeader, frames *agentv1.FrameReader) {
	job, err := whileUnavailable(ctx, d, "check a log stream's job", func() (*registry.Job, error) {
		return d.opts.Store.GetJob(ctx, hdr.GetJobId())
	})
	if err != nil || job.RobotID != robotID {
		// A robot writes only into the log of a job it was given.
		d.log.Warn("refused a log stream for a job the robot was not given", "robot", robotID, "job", hdr.GetJobId(), "err", err)
		return
	}
	key := attemptKey{hdr.GetJobId(), hdr.GetAttempt()}
	entries := make(chan *agentv1.LogEntry, logBatch)
	done := make(chan struct{})
	defer close(done)
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
			select {
			case entries <- e:
			case <-done:
				return
			}
		}
	}()
	ticker := time.NewTicker(logFlush)
	defer ticker.Stop()
	var batch []registry.JobLog
	// flush stores the batch; false means the stream's context ended first
	// and the lines wait for the robot to send them again.
	flush := func() bool {
		if len(batch) == 0 {
			return true
		}
		if !d.storeLogs(ctx, key, batch) {
			return false
		}
		d.markLogs(key, batch[len(batch)-1].Line)
		d.opts.Queue.PublishJobLogs(key.jobID)
		batch = batch[:0]
		return true
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
				Level: e.GetLevel(), StepID: e.GetStepId(), Message: e.GetMessage(),
			})
			if len(batch) >= logBatch && !flush() {
				return
			}
		case <-ticker.C:
			if !flush() {
				return
			}
		}
	}
}

// storeLogs stores the lines, trying again while the database is
// unavailable. A batch the database refuses for another reason is stored
// line by line, and a line refused on its own is stored as a note saying
// so, so one bad line costs only itself and the log stays complete. It
// reports false when ctx ended before the lines were stored.
func (d *Dispatcher) storeLogs(ctx context.Context, key attemptKey, batch []registry.JobLog) bool {
	store := func(lines []registry.JobLog) error {
		_, err := whileUnavailable(ctx, d, "store job log lines", func() (struct{}, error) {
			return struct{}{}, d.opts.Store.AppendJobLogs(ctx, lines)
		})
		return err
	}
	err := store(batch)
	if err == nil {
		return true
	}
	if ctx.Err() != nil {
		return false
	}
	d.log.Error("store job log lines; storing them one by one", "job", key.jobID, "lines", len(batch), "err", err)
	for i := range batch {
		line := batch[i : i+1]
		if err := store(line); err == nil {
			continue
		} else if ctx.Err() != nil {
			return false
		} else {
			d.log.Error("store a job log line", "job", key.jobID, "line", line[0].Line, "err", err)
			note := line[0]
			note.Level = "error"
			note.Message = fmt.Sprintf("this log line could not be stored (%d bytes)", len(line[0].Message))
			if err := store([]registry.JobLog{note}); err != nil && ctx.Err() != nil {
				return false
			}
		}
	}
	return true
}

func (d *Dispatcher) markLogs(key attemptKey, line int64) {
	d.logsMu.Lock()
	defer d.logsMu.Unlock()
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

// logsMarked reports whether the attempt's first n lines were stored here.
func (d *Dispatcher) logsMarked(key attemptKey, n int64) bool {
	if n <= 0 {
		return true
	}
	d.logsMu.Lock()
	defer d.logsMu.Unlock()
	m := d.logs[key]
	return m != nil && m.lines >= n
}

// logsStored waits until the attempt's first n lines are stored, or the
// timeout, and reports whether they are: a job's end is recorded after its
// log, so a follower that sees the end has seen every line. When the
// lines' arrival was not seen here (they were stored before a restart, or
// through another connection) the database has the last word.
func (d *Dispatcher) logsStored(ctx context.Context, key attemptKey, n int64, timeout time.Duration) bool {
	if n <= 0 {
		return true
	}
	expired := time.After(timeout)
	for {
		d.logsMu.Lock()
		m := d.logs[key]
		if m == nil {
			m = &logMark{ch: make(chan struct{})}
			d.logs[key] = m
		}
		if m.lines >= n {
			d.logsMu.Unlock()
			return true
		}
		ch := m.ch
		d.logsMu.Unlock()
		select {
		case <-ch:
			continue
		case <-expired:
		case <-ctx.Done():
		}
		stored, err := d.opts.Store.CountJobLogs(context.WithoutCancel(ctx), key.jobID, key.attempt)
		if err != nil {
			d.log.Warn("count a job's stored log lines", "job", key.jobID, "attempt", key.attempt, "err", err)
			return false
		}
		if stored >= n {
			return true
		}
		d.log.Info("a job ended before all its log lines were stored; its end waits for them", "job", key.jobID, "attempt", key.attempt, "want", n, "stored", stored)
		return false
	}
}
