// Package workqueue serves work queues beyond the API: the robots' calls
// from queue steps, the queue triggers that start jobs while items wait,
// the sweeper that lets go of items no running attempt holds, and the
// queues' metrics.
package workqueue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"connectrpc.com/connect/v2"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	agentv1 "github.com/casarerpa/casare/rpc/casare/agent/v1"
	"github.com/casarerpa/casare/server/registry"
)

// Calls serves the work-queue calls of the jobs robots run
// (gateway.WorkItems). Each call is fenced by the job's attempt and robot
// in the registry; each change it makes is an item event, not an audit
// entry: the job's own history says who ran it.
type Calls struct {
	reg     *registry.Registry
	logger  *slog.Logger
	wake    func(queue string)
	metrics *Metrics
}

// CallsOptions configures Calls.
type CallsOptions struct {
	Registry *registry.Registry
	Logger   *slog.Logger
	// Wake, when set, hears of items added to a queue (the triggers).
	Wake func(queue string)
	// Metrics, when set, times the items that end.
	Metrics *Metrics
}

// NewCalls returns the robots' work-queue calls.
func NewCalls(opts CallsOptions) *Calls {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Calls{reg: opts.Registry, logger: opts.Logger, wake: opts.Wake, metrics: opts.Metrics}
}

// Call performs one work-queue operation of robotID's job and answers it,
// with Error and Code set when it is refused.
func (c *Calls) Call(ctx context.Context, robotID string, call *agentv1.WorkItemCall) *agentv1.WorkItemResult {
	h := registry.ItemHolder{JobID: call.GetJobId(), Attempt: call.GetAttempt(), RobotID: robotID}
	res, err := c.call(ctx, h, call)
	if err != nil {
		code, msg := errorCode(err)
		if code == connect.CodeInternal {
			c.logger.Error("work item call", "job", h.JobID, "attempt", h.Attempt, "robot", robotID, "err", err)
		}
		return &agentv1.WorkItemResult{Error: msg, Code: code.String()}
	}
	return res
}

func (c *Calls) call(ctx context.Context, h registry.ItemHolder, call *agentv1.WorkItemCall) (*agentv1.WorkItemResult, error) {
	if h.JobID == "" {
		return nil, fmt.Errorf("%w: job_id: required", registry.ErrInvalidArgument)
	}
	switch op := call.GetOp().(type) {
	case *agentv1.WorkItemCall_Add:
		return c.add(ctx, h, op.Add)
	case *agentv1.WorkItemCall_Next:
		if op.Next.GetQueue() == "" {
			return nil, fmt.Errorf("%w: queue: required", registry.ErrInvalidArgument)
		}
		item, err := c.reg.TakeWorkItem(ctx, h, op.Next.GetQueue())
		if err != nil || item == nil {
			return &agentv1.WorkItemResult{}, err
		}
		return &agentv1.WorkItemResult{Item: heldItem(item)}, nil
	case *agentv1.WorkItemCall_Complete:
		output := ""
		if op.Complete.GetOutput() != nil {
			b, err := protojson.Marshal(op.Complete.GetOutput())
			if err != nil {
				return nil, fmt.Errorf("%w: output: %v", registry.ErrInvalidArgument, err)
			}
			output = string(b)
		}
		item, err := c.reg.CompleteWorkItem(ctx, h, op.Complete.GetItemId(), output)
		if err != nil {
			return nil, err
		}
		c.metrics.ended(item)
		return &agentv1.WorkItemResult{}, nil
	case *agentv1.WorkItemCall_Fail:
		item, retry, err := c.reg.FailWorkItem(ctx, h, op.Fail.GetItemId(),
			registry.WorkItemException(strings.ToLower(op.Fail.GetException())), op.Fail.GetReason())
		if err != nil {
			return nil, err
		}
		c.metrics.ended(item)
		if retry != nil && c.wake != nil {
			c.wake(retry.Queue)
		}
		return &agentv1.WorkItemResult{}, nil
	case *agentv1.WorkItemCall_Progress:
		return &agentv1.WorkItemResult{}, c.reg.WorkItemProgress(ctx, h, op.Progress.GetItemId(), op.Progress.GetProgress())
	}
	return nil, fmt.Errorf("%w: the call names no operation (add, next, complete, fail or progress)", registry.ErrInvalidArgument)
}

func (c *Calls) add(ctx context.Context, h registry.ItemHolder, add *agentv1.AddWorkItems) (*agentv1.WorkItemResult, error) {
	if add.GetQueue() == "" {
		return nil, fmt.Errorf("%w: queue: required", registry.ErrInvalidArgument)
	}
	items := make([]registry.WorkItem, len(add.GetItems()))
	for i, in := range add.GetItems() {
		p, ok := ParsePriority(in.GetPriority())
		if !ok {
			return nil, fmt.Errorf("%w: items[%d].priority %q is not low, normal or high", registry.ErrInvalidArgument, i, in.GetPriority())
		}
		item, err := ItemFromInput(in.GetReference(), p, in.GetData(), in.GetDeferUntil(), in.GetDeadline())
		if err != nil {
			return nil, fmt.Errorf("%w: items[%d].data: %v", registry.ErrInvalidArgument, i, err)
		}
		items[i] = item
	}
	ids, err := c.reg.AddWorkItems(ctx, registry.AddItems{Queue: add.GetQueue(), Items: items, Holder: &h})
	if err != nil {
		return nil, err
	}
	if c.wake != nil {
		c.wake(add.GetQueue())
	}
	return &agentv1.WorkItemResult{AddedIds: ids}, nil
}

// ParsePriority reads a priority as robots send it: "low", "normal" (or
// empty) or "high".
func ParsePriority(s string) (registry.Priority, bool) {
	switch strings.ToLower(s) {
	case "", "normal":
		return registry.PriorityNormal, true
	case "low":
		return registry.PriorityLow, true
	case "high":
		return registry.PriorityHigh, true
	}
	return 0, false
}

// PriorityName is the name robots know a priority by.
func PriorityName(p registry.Priority) string {
	switch p {
	case registry.PriorityLow:
		return "low"
	case registry.PriorityHigh:
		return "high"
	}
	return "normal"
}

// ItemFromInput converts an item to add as the API and robots give it.
func ItemFromInput(reference string, priority registry.Priority, data *structpb.Struct, deferUntil, deadline *timestamppb.Timestamp) (registry.WorkItem, error) {
	item := registry.WorkItem{Reference: reference, Priority: priority, Data: "{}"}
	if data != nil {
		b, err := protojson.Marshal(data)
		if err != nil {
			return item, err
		}
		item.Data = string(b)
	}
	if deferUntil != nil {
		t := deferUntil.AsTime()
		item.DeferUntil = &t
	}
	if deadline != nil {
		t := deadline.AsTime()
		item.Deadline = &t
	}
	return item, nil
}

func heldItem(item *registry.WorkItem) *agentv1.HeldWorkItem {
	out := &agentv1.HeldWorkItem{
		Id: item.ID, Queue: item.Queue, Reference: item.Reference, Priority: PriorityName(item.Priority),
		Retry: item.Retry, Data: &structpb.Struct{Fields: map[string]*structpb.Value{}},
	}
	if item.Data != "" {
		if err := protojson.Unmarshal([]byte(item.Data), out.Data); err != nil {
			out.Data = &structpb.Struct{Fields: map[string]*structpb.Value{}}
		}
	}
	if item.Deadline != nil {
		out.Deadline = timestamppb.New(*item.Deadline)
	}
	return out
}

// errorCode is the one table from the registry's refusals to the codes a
// robot reads: unavailable is worth retrying, the others are not.
func errorCode(err error) (connect.Code, string) {
	msg := err.Error()
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return connect.CodeNotFound, msg
	case errors.Is(err, registry.ErrAlreadyExists):
		return connect.CodeAlreadyExists, msg
	case errors.Is(err, registry.ErrInvalidArgument):
		return connect.CodeInvalidArgument, msg
	case errors.Is(err, registry.ErrConflict):
		return connect.CodeFailedPrecondition, msg
	case errors.Is(err, context.Canceled):
		return connect.CodeCanceled, "cancelled"
	case errors.Is(err, context.DeadlineExceeded):
		return connect.CodeDeadlineExceeded, "deadline exceeded"
	case registry.Unavailable(err):
		return connect.CodeUnavailable, "the database is unavailable now; try again"
	}
	return connect.CodeInternal, "internal error"
}

// since is the processing time of an item that ended.
func since(item *registry.WorkItem) (time.Duration, bool) {
	if item.StartedAt == nil || item.EndedAt == nil {
		return 0, false
	}
	return item.EndedAt.Sub(*item.StartedAt), true
}
