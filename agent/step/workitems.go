package step

import (
	"context"
	"errors"
	"time"
)

// WorkItems is a job's way to the control plane's work queues: the robot
// gives one to every job it runs (Env.WorkItems), and the queue steps use
// it. Calls are made under the job's attempt, so an item taken by a job
// that since lost it cannot be completed. Refusals are *Error: business
// when the call's content was wrong (an unknown queue, a reference that
// exists, an item the job does not hold), application when the control
// plane could not be reached in time.
type WorkItems interface {
	// Add stores items in queue and returns their ids, in order: all of
	// them or none.
	Add(ctx context.Context, queue string, items []NewWorkItem) ([]string, error)
	// Next takes queue's next item for the job; nil without an error when
	// the queue has none to give.
	Next(ctx context.Context, queue string) (*WorkItem, error)
	// Complete ends a held item successfully with output.
	Complete(ctx context.Context, itemID string, output map[string]any) error
	// Fail ends a held item with an exception: business (never retried)
	// or application (retried while the queue allows).
	Fail(ctx context.Context, itemID string, exception Exception, reason string) error
	// Progress records how far the job got with a held item.
	Progress(ctx context.Context, itemID, progress string) error
}

// Exception is the kind of an item's failure, as work queues name it.
type Exception string

const (
	// BusinessException: the item's data was wrong; never retried.
	BusinessException Exception = "business"
	// ApplicationException: the system failed; retried while the queue's
	// max retries allow.
	ApplicationException Exception = "application"
)

// ExceptionOf is the exception a step error makes of an item's failure.
func ExceptionOf(err error) Exception {
	if IsBusiness(err) {
		return BusinessException
	}
	return ApplicationException
}

// NewWorkItem is an item to add.
type NewWorkItem struct {
	Reference string
	// Priority is low, normal or high; empty means normal.
	Priority string
	Data     map[string]any
	// DeferUntil and Deadline are zero when not set.
	DeferUntil time.Time
	Deadline   time.Time
}

// WorkItem is an item a job took.
type WorkItem struct {
	ID        string
	Queue     string
	Reference string
	Priority  string
	Data      map[string]any
	// Retry is 0 for a first try, n for the nth retry.
	Retry int
	// Deadline is zero when the item has none.
	Deadline time.Time
}

// ErrNoControlPlane is the error of every queue step in a local run.
var ErrNoControlPlane = &Error{Message: "queue steps need a control plane: run this workflow as a job", Business: true, Err: errors.ErrUnsupported}
