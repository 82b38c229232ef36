package dash

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"sync"
	"time"

	"connectrpc.com/connect/v2"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

// Backoff limits for reconnecting a stream: the first retry is quick, and
// a server that stays away is tried at most every maxBackoff.
const (
	minBackoff = 250 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// opKind is what one change from a watch does to the data.
type opKind int

const (
	opReplace opKind = iota // a new snapshot: everything else goes
	opUpsert
	opDelete
)

type robotOp struct {
	kind   opKind
	robots []*casarev1.Robot
}

type jobOp struct {
	kind opKind
	jobs []*casarev1.Job
}

// logChunk is log lines of one job, or the end of its log.
type logChunk struct {
	jobID string
	lines []*casarev1.LogLine
	ended bool
}

// streamState is whether one stream is up and, if not, why and when it is
// tried again.
type streamState struct {
	up    bool
	err   string
	retry time.Time
}

// batch is everything the streams delivered since the last frame. The
// model takes it whole once per tick, so a burst of thousands of changes
// costs one update and one render.
type batch struct {
	robots  []robotOp
	jobs    []jobOp
	logs    []logChunk
	streams map[string]streamState
}

func (b *batch) empty() bool {
	return len(b.robots) == 0 && len(b.jobs) == 0 && len(b.logs) == 0 && len(b.streams) == 0
}

// inbox is where the stream goroutines leave what they receive.
type inbox struct {
	mu sync.Mutex
	b  batch
}

func (in *inbox) take() batch {
	in.mu.Lock()
	defer in.mu.Unlock()
	b := in.b
	in.b = batch{}
	return b
}

func (in *inbox) robots(op robotOp) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if op.kind == opReplace {
		in.b.robots = in.b.robots[:0]
	}
	in.b.robots = append(in.b.robots, op)
}

func (in *inbox) jobs(op jobOp) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if op.kind == opReplace {
		in.b.jobs = in.b.jobs[:0]
	}
	in.b.jobs = append(in.b.jobs, op)
}

func (in *inbox) logs(c logChunk) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.b.logs = append(in.b.logs, c)
}

func (in *inbox) state(name string, s streamState) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.b.streams == nil {
		in.b.streams = map[string]streamState{}
	}
	in.b.streams[name] = s
}

// feed owns the streams from the server. Its goroutines stop when the
// context given to start ends.
type feed struct {
	clients Clients
	in      *inbox

	mu       sync.Mutex
	stopLogs context.CancelFunc
	logsJob  string
}

func newFeed(c Clients) *feed {
	return &feed{clients: c, in: &inbox{}}
}

// start runs the robot and job watches until ctx ends.
func (f *feed) start(ctx context.Context) {
	go keepStreaming(ctx, f.in, "robots", f.watchRobots)
	go keepStreaming(ctx, f.in, "jobs", f.watchJobs)
}

// followLogs streams jobID's log, replacing the log stream it had.
func (f *feed) followLogs(ctx context.Context, jobID string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.logsJob == jobID && f.stopLogs != nil {
		return
	}
	if f.stopLogs != nil {
		f.stopLogs()
	}
	ctx, cancel := context.WithCancel(ctx)
	f.stopLogs, f.logsJob = cancel, jobID
	var after int64
	go keepStreaming(ctx, f.in, "logs", func(ctx context.Context, synced func()) error {
		return f.streamLogs(ctx, jobID, &after, synced)
	})
}

// stopFollowing ends the log stream.
func (f *feed) stopFollowing() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopLogs != nil {
		f.stopLogs()
	}
	f.stopLogs, f.logsJob = nil, ""
}

// errDone ends keepStreaming without a retry: the stream has said all
// it will.
var errDone = errors.New("stream complete")

// keepStreaming runs one stream and, each time it breaks, runs it again
// after a capped, jittered backoff. The stream calls synced once it is
// caught up, which marks it up and resets the backoff.
func keepStreaming(ctx context.Context, in *inbox, name string, run func(ctx context.Context, synced func()) error) {
	backoff := minBackoff
	for ctx.Err() == nil {
		err := run(ctx, func() {
			backoff = minBackoff
			in.state(name, streamState{up: true})
		})
		if ctx.Err() != nil || errors.Is(err, errDone) {
			return
		}
		if err == nil {
			err = errors.New("stream ended")
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		in.state(name, streamState{err: describe(err), retry: time.Now().Add(wait)})
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

// describe shortens a stream error to what fits in the header.
func describe(err error) string {
	var cerr *connect.Error
	if errors.As(err, &cerr) {
		switch cerr.Code() {
		case connect.CodeUnavailable, connect.CodeUnknown, connect.CodeInternal:
			return "server unreachable"
		case connect.CodeUnauthenticated:
			return "token rejected"
		case connect.CodePermissionDenied:
			return "permission denied"
		}
		return cerr.Message()
	}
	return "server unreachable"
}

func (f *feed) watchRobots(ctx context.Context, synced func()) error {
	stream, err := f.clients.Robots.WatchRobots(ctx, &casarev1.WatchRobotsRequest{})
	if err != nil {
		return err
	}
	defer stream.Close()
	// The old data stays on screen until the new snapshot is complete.
	var snapshot []*casarev1.Robot
	for {
		msg, err := stream.Receive()
		if err != nil {
			return err
		}
		switch msg.GetType() {
		case casarev1.WatchEventType_WATCH_EVENT_TYPE_SNAPSHOT:
			snapshot = append(snapshot, msg.GetRobots()...)
		case casarev1.WatchEventType_WATCH_EVENT_TYPE_SYNCED:
			f.in.robots(robotOp{kind: opReplace, robots: snapshot})
			snapshot = nil
			synced()
		case casarev1.WatchEventType_WATCH_EVENT_TYPE_UPSERT:
			f.in.robots(robotOp{kind: opUpsert, robots: msg.GetRobots()})
		case casarev1.WatchEventType_WATCH_EVENT_TYPE_DELETE:
			f.in.robots(robotOp{kind: opDelete, robots: msg.GetRobots()})
		}
	}
}

func (f *feed) watchJobs(ctx context.Context, synced func()) error {
	stream, err := f.clients.Jobs.WatchJobs(ctx, &casarev1.WatchJobsRequest{})
	if err != nil {
		return err
	}
	defer stream.Close()
	var snapshot []*casarev1.Job
	for {
		msg, err := stream.Receive()
		if err != nil {
			return err
		}
		switch msg.GetType() {
		case casarev1.WatchEventType_WATCH_EVENT_TYPE_SNAPSHOT:
			snapshot = append(snapshot, msg.GetJobs()...)
		case casarev1.WatchEventType_WATCH_EVENT_TYPE_SYNCED:
			f.in.jobs(jobOp{kind: opReplace, jobs: snapshot})
			snapshot = nil
			synced()
		case casarev1.WatchEventType_WATCH_EVENT_TYPE_UPSERT:
			f.in.jobs(jobOp{kind: opUpsert, jobs: msg.GetJobs()})
		case casarev1.WatchEventType_WATCH_EVENT_TYPE_DELETE:
			f.in.jobs(jobOp{kind: opDelete, jobs: msg.GetJobs()})
		}
	}
}

// streamLogs follows a job's log from after *after, which it advances, so a
// reconnect continues where the broken stream stopped.
func (f *feed) streamLogs(ctx context.Context, jobID string, after *int64, synced func()) error {
	stream, err := f.clients.Jobs.StreamJobLogs(ctx, &casarev1.StreamJobLogsRequest{JobId: jobID, Follow: true, AfterSeq: *after})
	if err != nil {
		return err
	}
	defer stream.Close()
	synced()
	for {
		msg, err := stream.Receive()
		if errors.Is(err, io.EOF) {
			// The server ends a followed log once the job has ended.
			f.in.logs(logChunk{jobID: jobID, ended: true})
			return errDone
		}
		if err != nil {
			if connect.CodeOf(err) == connect.CodeNotFound {
				f.in.logs(logChunk{jobID: jobID, ended: true})
				return errDone
			}
			return err
		}
		if lines := msg.GetLines(); len(lines) > 0 {
			*after = lines[len(lines)-1].GetSeq()
			f.in.logs(logChunk{jobID: jobID, lines: lines})
		}
	}
}
