package robot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/quic-go/quic-go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/casarerpa/casare/agent/step"
	agentv1 "github.com/casarerpa/casare/rpc/casare/agent/v1"
)

// Work-queue call limits on the robot's side.
const (
	// maxWorkItemCalls bounds the calls the robot's jobs make at once,
	// below the gateway's bound, so that an honest robot is never refused
	// for making too many.
	maxWorkItemCalls = 8
	// workItemRoundTrip bounds one try of a call: the gateway gives the
	// control plane 30s to answer.
	workItemRoundTrip = 40 * time.Second
	// workItemRetryFor bounds how long a call is tried again while the
	// control plane cannot be reached or asks for another try; the
	// robot reconnects, to another replica if need be, within it.
	workItemRetryFor = 2 * time.Minute
	// workItemConnWait bounds one wait for a connection.
	workItemConnWait = 10 * time.Second
)

// connSource gives the robot's current connection, nil between two, and a
// channel closed when it changes.
type connSource func() (*quic.Conn, <-chan struct{})

// currentConn is the runner's connSource.
func (r *runner) currentConn() (*quic.Conn, <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.link == nil {
		return nil, r.linkChanged
	}
	return r.link.conn, r.linkChanged
}

// workItemClient is a job's step.WorkItems. Each call goes on a new
// bidirectional stream of the robot's current connection: one
// WorkItemCall out, one WorkItemResult back. A call the control plane
// could not serve (unreachable, "unavailable", "resource_exhausted") is
// made again, on the next connection after a reconnect, for as long as
// the job runs and at most workItemRetryFor. A call whose answer was lost
// may so be made twice: an add stores its items again unless the queue
// requires unique references, and a next takes a second item while the
// first stays held by the job until it ends, when the control plane
// abandons and retries it.
type workItemClient struct {
	jobID   string
	attempt int32
	conns   connSource
	// slots bounds the calls in flight, shared by the robot's jobs.
	slots chan struct{}
	log   *slog.Logger
	// retryFor is workItemRetryFor, shorter in tests.
	retryFor time.Duration
}

var _ step.WorkItems = (*workItemClient)(nil)

func (c *workItemClient) Add(ctx context.Context, queue string, items []step.NewWorkItem) ([]string, error) {
	add := &agentv1.AddWorkItems{Queue: queue, Items: make([]*agentv1.NewWorkItem, len(items))}
	for i, it := range items {
		n := &agentv1.NewWorkItem{Reference: it.Reference, Priority: it.Priority, DeferUntil: timestamp(it.DeferUntil), Deadline: timestamp(it.Deadline)}
		if it.Data != nil {
			data, err := structpb.NewStruct(it.Data)
			if err != nil {
				return nil, step.Businessf("item %d: data: %v", i, err)
			}
			n.Data = data
		}
		add.Items[i] = n
	}
	res, err := c.call(ctx, &agentv1.WorkItemCall{Op: &agentv1.WorkItemCall_Add{Add: add}})
	if err != nil {
		return nil, err
	}
	if len(res.GetAddedIds()) != len(items) {
		return nil, step.Failf("the control plane stored %d items of %d", len(res.GetAddedIds()), len(items))
	}
	return res.GetAddedIds(), nil
}

func (c *workItemClient) Next(ctx context.Context, queue string) (*step.WorkItem, error) {
	res, err := c.call(ctx, &agentv1.WorkItemCall{Op: &agentv1.WorkItemCall_Next{Next: &agentv1.NextWorkItem{Queue: queue}}})
	if err != nil || res.GetItem() == nil {
		return nil, err
	}
	it := res.GetItem()
	out := &step.WorkItem{
		ID: it.GetId(), Queue: it.GetQueue(), Reference: it.GetReference(), Priority: it.GetPriority(),
		Data: it.GetData().AsMap(), Retry: int(it.GetRetry()),
	}
	if it.GetDeadline() != nil {
		out.Deadline = it.GetDeadline().AsTime()
	}
	return out, nil
}

func (c *workItemClient) Complete(ctx context.Context, itemID string, output map[string]any) error {
	done := &agentv1.CompleteWorkItem{ItemId: itemID}
	if output != nil {
		out, err := structpb.NewStruct(output)
		if err != nil {
			return step.Businessf("output: %v", err)
		}
		done.Output = out
	}
	_, err := c.call(ctx, &agentv1.WorkItemCall{Op: &agentv1.WorkItemCall_Complete{Complete: done}})
	return err
}

func (c *workItemClient) Fail(ctx context.Context, itemID string, exception step.Exception, reason string) error {
	_, err := c.call(ctx, &agentv1.WorkItemCall{Op: &agentv1.WorkItemCall_Fail{Fail: &agentv1.FailWorkItem{ItemId: itemID, Exception: string(exception), Reason: reason}}})
	return err
}

func (c *workItemClient) Progress(ctx context.Context, itemID, progress string) error {
	_, err := c.call(ctx, &agentv1.WorkItemCall{Op: &agentv1.WorkItemCall_Progress{Progress: &agentv1.WorkItemProgress{ItemId: itemID, Progress: progress}}})
	return err
}

func timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// retryable says whether a refusal is worth another try: the control
// plane could not serve the call then, which says nothing of the call.
func retryable(code string) bool {
	switch code {
	case "unavailable", "resource_exhausted", "aborted", "deadline_exceeded":
		return true
	}
	return false
}

// businessRefusal says whether a refusal is about the call's content (an
// unknown queue, a reference that exists, an item the job does not hold),
// which no retry can change; any other is the control plane failing.
func businessRefusal(code string) bool {
	switch code {
	case "invalid_argument", "not_found", "already_exists", "failed_precondition", "permission_denied", "out_of_range", "unimplemented":
		return true
	}
	return false
}

// call makes one call under the job's attempt and returns the control
// plane's answer, or the refusal as a *step.Error: business when the
// call's content was wrong, application when the control plane could not
// be reached or could not serve it in time.
func (c *workItemClient) call(ctx context.Context, call *agentv1.WorkItemCall) (*agentv1.WorkItemResult, error) {
	call.JobId, call.Attempt = c.jobID, c.attempt
	if size := proto.Size(call); size > agentv1.MaxFrameSize {
		return nil, step.Businessf("the call is %d bytes, over the %d one call carries: add fewer items at once", size, agentv1.MaxFrameSize)
	}
	select {
	case c.slots <- struct{}{}:
		defer func() { <-c.slots }()
	case <-ctx.Done():
		return nil, step.Failf("work queue: %v", context.Cause(ctx))
	}
	retryFor := c.retryFor
	if retryFor <= 0 {
		retryFor = workItemRetryFor
	}
	res, err := backoff.Retry(ctx, func() (*agentv1.WorkItemResult, error) {
		res, err := c.once(ctx, call)
		switch {
		case err != nil:
			return nil, err
		case res.GetError() == "":
			return res, nil
		case retryable(res.GetCode()):
			return nil, &refused{res}
		}
		return nil, backoff.Permanent(&refused{res})
	}, backoff.WithBackOff(&backoff.ExponentialBackOff{
		InitialInterval: 100 * time.Millisecond, RandomizationFactor: 0.5, Multiplier: 2, MaxInterval: 5 * time.Second,
	}), backoff.WithMaxElapsedTime(retryFor), backoff.WithNotify(func(err error, next time.Duration) {
		c.log.Debug("a work-queue call failed; trying again", "job", c.jobID, "err", err, "in", next)
	}))
	if err == nil {
		return res, nil
	}
	var r *refused
	if errors.As(err, &r) {
		return nil, &step.Error{Message: r.res.GetError(), Business: businessRefusal(r.res.GetCode())}
	}
	if ctx.Err() != nil {
		return nil, step.Failf("work queue: the job ended before the control plane answered (%v)", context.Cause(ctx))
	}
	return nil, step.Failf("work queue: the control plane could not be reached: %v", err)
}

// refused is a call the control plane answered with a refusal.
type refused struct{ res *agentv1.WorkItemResult }

func (r *refused) Error() string { return r.res.GetCode() + ": " + r.res.GetError() }

// once makes one try of a call on the current connection, waiting a while
// for one when the robot has none.
func (c *workItemClient) once(ctx context.Context, call *agentv1.WorkItemCall) (*agentv1.WorkItemResult, error) {
	conn, changed := c.conns()
	if conn == nil {
		select {
		case <-changed:
		case <-time.After(workItemConnWait):
		case <-ctx.Done():
		}
		return nil, errNotConnected
	}
	ctx, cancel := context.WithTimeout(ctx, workItemRoundTrip)
	defer cancel()
	s, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, fmt.Errorf("open a stream: %w", err)
	}
	// A job that ends, or a try that runs out of time, stops the stream;
	// the stop is waited for, so nothing touches it after once returns.
	stopped := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		s.CancelWrite(0)
		s.CancelRead(0)
		close(stopped)
	})
	defer func() {
		if !stop() {
			<-stopped
		}
	}()
	if err := agentv1.WriteFrame(s, call); err != nil {
		return nil, fmt.Errorf("send the call: %w", err)
	}
	s.Close()
	res := &agentv1.WorkItemResult{}
	if err := agentv1.NewFrameReader(s).Read(res); err != nil {
		return nil, fmt.Errorf("read the answer: %w", err)
	}
	return res, nil
}
