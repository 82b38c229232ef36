// Package workqueue holds the queue.* steps: a job adds items to the
// control plane's work queues, takes them one at a time, and ends each
// successfully or with a business or application exception, as the
// orchestrators RPA developers know do it. queue.process is the loop most
// workflows want: it takes items until the queue is empty or a limit is
// reached, runs its nested steps once per item and ends the item by how
// they went, so that one bad item never stops the others.
package workqueue

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/casarerpa/casare/agent/step"
)

// MaxAddItems bounds the items of one queue.add, as the control plane
// bounds one AddItems call.
const MaxAddItems = 10_000

// Actions returns the queue.* steps.
func Actions() []*step.Action {
	return []*step.Action{addAction, nextAction, completeAction, failAction, progressAction, processAction}
}

var noQueue = step.Rejects("the queue does not exist")

// item is an item to add, as a workflow writes it.
type item struct {
	Reference  string         `json:"reference" doc:"The item's reference, unique within the queue when the queue requires it."`
	Priority   string         `json:"priority" doc:"low, normal or high. Default normal."`
	Data       map[string]any `json:"data" doc:"The item's data, a JSON object of at most 1 MiB."`
	DeferUntil string         `json:"defer_until" doc:"Not taken before this time: RFC 3339 (2026-01-31T09:00:00Z) or a duration from now (2h)."`
	Deadline   string         `json:"deadline" doc:"Must be finished by this time: RFC 3339 or a duration from now."`
}

type addParams struct {
	Queue      string           `json:"queue" step:"required" doc:"Name of the work queue."`
	Reference  string           `json:"reference" doc:"One item's reference, unique within the queue when the queue requires it. Not with items."`
	Priority   string           `json:"priority" doc:"One item's priority: low, normal or high. Default normal."`
	Data       map[string]any   `json:"data" doc:"One item's data, a JSON object of at most 1 MiB."`
	DeferUntil string           `json:"defer_until" doc:"One item is not taken before this time: RFC 3339 (2026-01-31T09:00:00Z) or a duration from now (2h)."`
	Deadline   string           `json:"deadline" doc:"One item must be finished by this time: RFC 3339 or a duration from now."`
	Items      []map[string]any `json:"items" doc:"Many items at once (up to 10,000), each an object with reference, priority, data, defer_until and deadline. Not with the one-item parameters."`
}

type addOutputs struct {
	IDs []string `json:"ids" doc:"The ids of the items added, in the order given."`
}

var addAction = step.Define("queue.add", "Adds one item, or many at once, to a work queue: all of them or, when one is refused, none.",
	func(ctx context.Context, env *step.Env, p addParams) (addOutputs, error) {
		items, err := p.items(time.Now())
		if err != nil {
			return addOutputs{}, err
		}
		wi, err := workItems(env, p.Queue, true)
		if err != nil {
			return addOutputs{}, err
		}
		ids, err := wi.Add(ctx, p.Queue, items)
		if err != nil {
			return addOutputs{}, err
		}
		return addOutputs{IDs: ids}, nil
	},
	noQueue,
	step.Rejects("a reference already exists in a queue that requires unique references (a bulk add names every such row and stores none)"),
	step.Rejects("an item's data is over 1 MiB, a priority is not low, normal or high, or a time does not parse"),
	step.Rejects("more than 10,000 items, or items and one item's parameters together"),
	step.Fails("the control plane could not be reached in time"),
)

// items returns the items p describes, checked.
func (p addParams) items(now time.Time) ([]step.NewWorkItem, error) {
	one := p.Reference != "" || p.Priority != "" || p.Data != nil || p.DeferUntil != "" || p.Deadline != ""
	switch {
	case p.Items != nil && one:
		return nil, step.Businessf("with.items: not with reference, priority, data, defer_until or deadline: give one item or a list")
	case p.Items == nil:
		it, err := newItem(item{p.Reference, p.Priority, p.Data, p.DeferUntil, p.Deadline}, "with.", now)
		if err != nil {
			return nil, err
		}
		return []step.NewWorkItem{it}, nil
	case len(p.Items) == 0:
		return nil, step.Businessf("with.items: empty; give at least one item")
	case len(p.Items) > MaxAddItems:
		return nil, step.Businessf("with.items: %d items, the limit is %d a step; add them in batches", len(p.Items), MaxAddItems)
	}
	out := make([]step.NewWorkItem, len(p.Items))
	for i, raw := range p.Items {
		prefix := fmt.Sprintf("with.items[%d].", i)
		var it item
		if err := step.Decode(raw, &it); err != nil {
			return nil, step.Businessf("%s", strings.Replace(err.Error(), "with.", prefix, 1))
		}
		checked, err := newItem(it, prefix, now)
		if err != nil {
			return nil, err
		}
		out[i] = checked
	}
	return out, nil
}

func newItem(it item, prefix string, now time.Time) (step.NewWorkItem, error) {
	out := step.NewWorkItem{Reference: it.Reference, Priority: it.Priority, Data: it.Data}
	switch it.Priority {
	case "", "low", "normal", "high":
	default:
		return out, step.Businessf("%spriority: %q is not low, normal or high", prefix, it.Priority)
	}
	var err error
	if out.DeferUntil, err = parseTime(it.DeferUntil, now); err != nil {
		return out, step.Businessf("%sdefer_until: %v", prefix, err)
	}
	if out.Deadline, err = parseTime(it.Deadline, now); err != nil {
		return out, step.Businessf("%sdeadline: %v", prefix, err)
	}
	return out, nil
}

// parseTime reads an RFC 3339 time or a duration from now; empty is the
// zero time.
func parseTime(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(d), nil
	}
	return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time (2026-01-31T09:00:00Z) nor a duration (2h)", s)
}

type nextParams struct {
	Queue string `json:"queue" step:"required" doc:"Name of the work queue."`
}

type nextOutputs struct {
	Found bool           `json:"found" doc:"Whether an item was taken: false when the queue has none to give, which is not an error."`
	Item  map[string]any `json:"item" doc:"The item taken (id, queue, reference, priority, data, retry, deadline), held by the job until queue.complete or queue.fail; null when none."`
}

var nextAction = step.Define("queue.next", "Takes the next item of a work queue for the job: the highest priority, then the nearest deadline, then the oldest, skipping deferred ones.",
	func(ctx context.Context, env *step.Env, p nextParams) (nextOutputs, error) {
		wi, err := workItems(env, p.Queue, true)
		if err != nil {
			return nextOutputs{}, err
		}
		it, err := wi.Next(ctx, p.Queue)
		if err != nil || it == nil {
			return nextOutputs{}, err
		}
		return nextOutputs{Found: true, Item: ItemValue(it)}, nil
	},
	noQueue,
	step.Fails("the control plane could not be reached in time"),
)

// ItemValue is how a workflow sees an item it took: queue.next's item
// output, and item inside queue.process.
func ItemValue(it *step.WorkItem) map[string]any {
	data := it.Data
	if data == nil {
		data = map[string]any{}
	}
	var deadline any
	if !it.Deadline.IsZero() {
		deadline = it.Deadline.UTC().Format(time.RFC3339Nano)
	}
	return map[string]any{
		"id": it.ID, "queue": it.Queue, "reference": it.Reference, "priority": it.Priority,
		"data": data, "retry": int64(it.Retry), "deadline": deadline,
	}
}

type completeParams struct {
	Item   any            `json:"item" step:"required" doc:"The item: its id, or the item as queue.next gives it (its id is used)."`
	Output map[string]any `json:"output" doc:"What processing the item gave, a JSON object of at most 1 MiB kept with it."`
}

type failParams struct {
	Item   any    `json:"item" step:"required" doc:"The item: its id, or the item as queue.next gives it (its id is used)."`
	Type   string `json:"type" step:"required" doc:"business (the item's data was wrong: never retried) or application (the system failed: retried while the queue's max retries allow)."`
	Reason string `json:"reason" doc:"Why the item failed, kept with it."`
}

type progressParams struct {
	Item     any    `json:"item" step:"required" doc:"The item: its id, or the item as queue.next gives it (its id is used)."`
	Progress string `json:"progress" step:"required" doc:"How far the job got, at most 1,024 characters, shown with the item."`
}

type none struct{}

var notHeld = step.Rejects("the job does not hold the item (another job took it, or this attempt of the job is no longer the robot's)")

var completeAction = step.Define("queue.complete", "Ends an item the job holds successfully, keeping its output.",
	func(ctx context.Context, env *step.Env, p completeParams) (none, error) {
		id, err := itemID(p.Item)
		if err != nil {
			return none{}, err
		}
		wi, err := workItems(env, "", false)
		if err != nil {
			return none{}, err
		}
		return none{}, wi.Complete(ctx, id, p.Output)
	},
	notHeld, step.Rejects("the output is over 1 MiB"), step.Fails("the control plane could not be reached in time"),
)

var failAction = step.Define("queue.fail", "Ends an item the job holds with a business exception (never retried) or an application exception (retried while the queue allows).",
	func(ctx context.Context, env *step.Env, p failParams) (none, error) {
		id, err := itemID(p.Item)
		if err != nil {
			return none{}, err
		}
		exc := step.Exception(p.Type)
		if exc != step.BusinessException && exc != step.ApplicationException {
			return none{}, step.Businessf("with.type: %q is not business or application", p.Type)
		}
		wi, err := workItems(env, "", false)
		if err != nil {
			return none{}, err
		}
		return none{}, wi.Fail(ctx, id, exc, p.Reason)
	},
	notHeld, step.Fails("the control plane could not be reached in time"),
)

var progressAction = step.Define("queue.progress", "Records how far the job got with an item it holds.",
	func(ctx context.Context, env *step.Env, p progressParams) (none, error) {
		id, err := itemID(p.Item)
		if err != nil {
			return none{}, err
		}
		wi, err := workItems(env, "", false)
		if err != nil {
			return none{}, err
		}
		return none{}, wi.Progress(ctx, id, p.Progress)
	},
	notHeld, step.Fails("the control plane could not be reached in time"),
)

type processParams struct {
	Queue string `json:"queue" step:"required" doc:"Name of the work queue."`
	Limit int64  `json:"limit" doc:"Process at most this many items; default until the queue has none to give."`
	// Output never reaches the action: the engine evaluates it after
	// the nested steps of each item (AfterSteps) and hands it over in
	// the round.
	Output map[string]any `json:"output" doc:"The output each item is completed with, a JSON object evaluated after the nested steps with item and their outputs in scope; default the nested steps' outputs by step id."`
}

type processOutputs struct {
	Processed int64 `json:"processed" doc:"How many items the loop took."`
	Succeeded int64 `json:"succeeded" doc:"How many it completed."`
	Failed    int64 `json:"failed" doc:"How many it failed."`
}

var processAction = step.DefineConstruct("queue.process",
	"Takes a work queue's items one at a time until it has none to give or the limit is reached, and runs the nested steps for each with the item as item: when they succeed the item is completed with with.output (by default their outputs, by step id), when one fails the item is failed with a business or application exception as that step's error was, and the loop goes on.",
	func(ctx context.Context, env *step.Env, p processParams, body step.Body) (processOutputs, error) {
		var out processOutputs
		if p.Limit < 0 {
			return out, step.Businessf("with.limit: %d; give a positive number, or none for no limit", p.Limit)
		}
		wi, err := workItems(env, p.Queue, true)
		if err != nil {
			return out, err
		}
		for p.Limit == 0 || out.Processed < p.Limit {
			it, err := wi.Next(ctx, p.Queue)
			if err != nil {
				return out, err
			}
			if it == nil {
				break
			}
			ok, err := process(ctx, env, wi, it, int(out.Processed), body)
			out.Processed++
			if err != nil {
				return out, err
			}
			if ok {
				out.Succeeded++
			} else {
				out.Failed++
			}
		}
		env.Logf("info", "%s: %d items processed, %d succeeded, %d failed", p.Queue, out.Processed, out.Succeeded, out.Failed)
		return out, nil
	},
	step.EvaluatedAfterSteps("output"),
	noQueue,
	step.Fails("the control plane could not be reached in time, or an item could not be ended"),
)

// process runs the nested steps for one item and ends it by how they
// went. It returns whether the item succeeded; an error stops the loop.
func process(ctx context.Context, env *step.Env, wi step.WorkItems, it *step.WorkItem, index int, body step.Body) (bool, error) {
	round, err := body(ctx, ItemValue(it), index)
	outputs := round.Outputs
	if raw, ok := round.Params["output"]; ok && raw != nil {
		if outputs, ok = raw.(map[string]any); !ok {
			err = step.Businessf("with.output: want an object, got %s", describe(raw))
		}
	}
	if err != nil {
		if ctx.Err() != nil {
			// The job was cancelled or ran out of time: the control plane
			// abandons the item with the job, and retries it.
			return false, err
		}
		exc := step.ExceptionOf(err)
		env.Logf("warn", "item %s (%s) failed with a %s exception: %v", it.ID, it.Reference, exc, err)
		if ferr := wi.Fail(ctx, it.ID, exc, err.Error()); ferr != nil {
			return false, fmt.Errorf("fail item %s: %w", it.ID, ferr)
		}
		return false, nil
	}
	err = wi.Complete(ctx, it.ID, outputs)
	if err == nil {
		return true, nil
	}
	if !step.IsBusiness(err) {
		return false, fmt.Errorf("complete item %s: %w", it.ID, err)
	}
	// The control plane refused the output (over its limit): the item
	// cannot succeed with it, and is not left held until the job ends.
	reason := "its output was refused: " + err.Error()
	env.Logf("warn", "item %s (%s) could not be completed: %s", it.ID, it.Reference, reason)
	if ferr := wi.Fail(ctx, it.ID, step.BusinessException, reason); ferr != nil {
		return false, fmt.Errorf("fail item %s: %w", it.ID, errors.Join(err, ferr))
	}
	return false, nil
}

// workItems returns the job's way to the work queues, after checking
// the queue's name when the step takes one (named).
func workItems(env *step.Env, queue string, named bool) (step.WorkItems, error) {
	if named && strings.TrimSpace(queue) == "" {
		return nil, step.Businessf("with.queue: empty; name a work queue")
	}
	if env == nil || env.WorkItems == nil {
		return nil, step.ErrNoControlPlane
	}
	return env.WorkItems, nil
}

// itemID reads an item's id from an id or an item value.
func itemID(v any) (string, error) {
	switch it := v.(type) {
	case string:
		if it != "" {
			return it, nil
		}
	case map[string]any:
		if id, ok := it["id"].(string); ok && id != "" {
			return id, nil
		}
	}
	return "", step.Businessf("with.item: want an item's id or the item queue.next gives, got %s", describe(v))
}

func describe(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case string:
		if v == "" {
			return "an empty text"
		}
		return "a text"
	case map[string]any:
		return "an object without an id"
	case []any:
		return "a list"
	case bool:
		return "a boolean"
	default:
		return fmt.Sprintf("%v", v)
	}
}
