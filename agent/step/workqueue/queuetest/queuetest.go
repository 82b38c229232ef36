// Package queuetest is an in-memory step.WorkItems for the tests of the
// queue steps, the engine and the robot: queues that hand out their items
// in the order added and record how each ended.
package queuetest

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/casarerpa/casare/agent/step"
)

// Item is an item with what happened to it.
type Item struct {
	step.WorkItem
	// Status is NEW, IN_PROGRESS, SUCCESSFUL or FAILED.
	Status    string
	Output    map[string]any
	Exception step.Exception
	Reason    string
	Progress  []string
}

// Fake is a step.WorkItems over queues in memory. It is safe for
// concurrent use.
type Fake struct {
	mu     sync.Mutex
	queues map[string][]string // NEW item ids by queue, oldest first
	items  map[string]*Item
	added  int
	// Down, while set, is the error of every call.
	down error
}

// New returns a Fake with the named queues, empty.
func New(queues ...string) *Fake {
	f := &Fake{queues: map[string][]string{}, items: map[string]*Item{}}
	for _, q := range queues {
		f.queues[q] = nil
	}
	return f
}

// Put adds a NEW item to queue and returns its id.
func (f *Fake) Put(queue, reference string, data map[string]any) string {
	ids, err := f.Add(context.Background(), queue, []step.NewWorkItem{{Reference: reference, Data: data}})
	if err != nil {
		panic(err)
	}
	return ids[0]
}

// SetDown makes every call fail with err until it is set to nil.
func (f *Fake) SetDown(err error) {
	f.mu.Lock()
	f.down = err
	f.mu.Unlock()
}

// Item returns a copy of the item with id, or nil.
func (f *Fake) Item(id string) *Item {
	f.mu.Lock()
	defer f.mu.Unlock()
	it, ok := f.items[id]
	if !ok {
		return nil
	}
	c := *it
	c.Progress = slices.Clone(it.Progress)
	return &c
}

// Statuses counts the items by status.
func (f *Fake) Statuses() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]int{}
	for _, it := range f.items {
		out[it.Status]++
	}
	return out
}

// Items returns copies of every item, by id.
func (f *Fake) Items() map[string]*Item {
	f.mu.Lock()
	ids := slices.Collect(maps.Keys(f.items))
	f.mu.Unlock()
	out := map[string]*Item{}
	for _, id := range ids {
		out[id] = f.Item(id)
	}
	return out
}

func (f *Fake) Add(_ context.Context, queue string, items []step.NewWorkItem) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down != nil {
		return nil, f.down
	}
	if _, ok := f.queues[queue]; !ok {
		return nil, step.Businessf("work queue %q not found", queue)
	}
	ids := make([]string, len(items))
	for i, n := range items {
		f.added++
		id := fmt.Sprintf("item-%d", f.added)
		priority := n.Priority
		if priority == "" {
			priority = "normal"
		}
		f.items[id] = &Item{WorkItem: step.WorkItem{ID: id, Queue: queue, Reference: n.Reference, Priority: priority, Data: n.Data, Deadline: n.Deadline}, Status: "NEW"}
		f.queues[queue] = append(f.queues[queue], id)
		ids[i] = id
	}
	return ids, nil
}

func (f *Fake) Next(_ context.Context, queue string) (*step.WorkItem, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down != nil {
		return nil, f.down
	}
	pending, ok := f.queues[queue]
	if !ok {
		return nil, step.Businessf("work queue %q not found", queue)
	}
	if len(pending) == 0 {
		return nil, nil
	}
	it := f.items[pending[0]]
	f.queues[queue] = pending[1:]
	it.Status = "IN_PROGRESS"
	c := it.WorkItem
	return &c, nil
}

// held returns the item id if a job holds it.
func (f *Fake) held(id string) (*Item, error) {
	if f.down != nil {
		return nil, f.down
	}
	it, ok := f.items[id]
	if !ok || it.Status != "IN_PROGRESS" {
		return nil, step.Businessf("item %s: the job does not hold it", id)
	}
	return it, nil
}

func (f *Fake) Complete(_ context.Context, id string, output map[string]any) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	it, err := f.held(id)
	if err != nil {
		return err
	}
	it.Status, it.Output = "SUCCESSFUL", output
	return nil
}

func (f *Fake) Fail(_ context.Context, id string, exc step.Exception, reason string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	it, err := f.held(id)
	if err != nil {
		return err
	}
	it.Status, it.Exception, it.Reason = "FAILED", exc, reason
	return nil
}

func (f *Fake) Progress(_ context.Context, id, progress string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	it, err := f.held(id)
	if err != nil {
		return err
	}
	it.Progress = append(it.Progress, progress)
	return nil
}
