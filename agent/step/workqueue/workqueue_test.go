package workqueue

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/casarerpa/casare/agent/step"
	"github.com/casarerpa/casare/agent/step/workqueue/queuetest"
)

func run(t *testing.T, env *step.Env, name string, with map[string]any) (map[string]any, error) {
	t.Helper()
	a, err := step.NewCatalogue(Actions()...).Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	return a.Run(context.Background(), env, with)
}

func TestAddRefusesBadItemsBeforeCallingTheControlPlane(t *testing.T) {
	t.Parallel()
	many := make([]any, MaxAddItems+1)
	for i := range many {
		many[i] = map[string]any{}
	}
	for _, c := range []struct {
		name string
		with map[string]any
		says string
	}{
		{"ErrQueueRequired", map[string]any{"data": map[string]any{}}, "with.queue: required"},
		{"ErrQueueEmpty", map[string]any{"queue": " "}, "with.queue: empty"},
		{"ErrDataNotAnObject", map[string]any{"queue": "q", "data": []any{1}}, "with.data: want an object"},
		{"ErrPriority", map[string]any{"queue": "q", "priority": "urgent"}, `with.priority: "urgent" is not low, normal or high`},
		{"ErrDeadline", map[string]any{"queue": "q", "deadline": "tomorrow"}, `with.deadline: "tomorrow" is neither an RFC 3339 time`},
		{"ErrOneAndMany", map[string]any{"queue": "q", "reference": "a", "items": []any{map[string]any{}}}, "with.items: not with reference"},
		{"ErrNoItems", map[string]any{"queue": "q", "items": []any{}}, "with.items: empty"},
		{"ErrTooMany", map[string]any{"queue": "q", "items": many}, "with.items: 10001 items, the limit is 10000"},
		{"ErrItemField", map[string]any{"queue": "q", "items": []any{map[string]any{}, map[string]any{"refrence": "x"}}}, "with.items[1].refrence: unknown parameter"},
		{"ErrItemPriority", map[string]any{"queue": "q", "items": []any{map[string]any{"priority": "top"}}}, `with.items[0].priority: "top"`},
		{"ErrItemData", map[string]any{"queue": "q", "items": []any{map[string]any{"data": "text"}}}, "with.items[0].data: want an object"},
	} {
		t.Run(c.name, func(t *testing.T) {
			q := queuetest.New("q")
			_, err := run(t, &step.Env{WorkItems: q}, "queue.add", c.with)
			if err == nil || !step.IsBusiness(err) || !strings.Contains(err.Error(), c.says) {
				t.Fatalf("err = %v, want a business error saying %q", err, c.says)
			}
			if n := len(q.Items()); n != 0 {
				t.Errorf("%d items stored", n)
			}
		})
	}
}

func TestAddReadsTimesAndPriorities(t *testing.T) {
	t.Parallel()
	p := addParams{Queue: "q", Items: []map[string]any{
		{"reference": "a", "defer_until": "2h", "deadline": "2030-01-02T03:04:05Z", "priority": "high"},
		{"reference": "b"},
	}}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	items, err := p.items(now)
	if err != nil {
		t.Fatal(err)
	}
	if !items[0].DeferUntil.Equal(now.Add(2*time.Hour)) || !items[0].Deadline.Equal(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)) || items[0].Priority != "high" {
		t.Errorf("item a: %+v", items[0])
	}
	if !items[1].DeferUntil.IsZero() || !items[1].Deadline.IsZero() || items[1].Reference != "b" {
		t.Errorf("item b: %+v", items[1])
	}
}

func TestItemStepsTakeAnIDOrAnItem(t *testing.T) {
	t.Parallel()
	q := queuetest.New("q")
	q.Put("q", "a", map[string]any{"n": 1.0})
	env := &step.Env{WorkItems: q}
	out, err := run(t, env, "queue.next", map[string]any{"queue": "q"})
	if err != nil || out["found"] != true {
		t.Fatalf("next = %v, %v", out, err)
	}
	item := out["item"].(map[string]any)
	if item["reference"] != "a" || item["retry"] != float64(0) || item["deadline"] != nil || item["priority"] != "normal" {
		t.Errorf("item %v", item)
	}
	for _, c := range []struct {
		name string
		item any
		says string
	}{
		{"ErrNull", nil, "with.item: required"},
		{"ErrEmpty", "", "got an empty text"},
		{"ErrNoID", map[string]any{"reference": "a"}, "got an object without an id"},
		{"ErrList", []any{"x"}, "got a list"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := run(t, env, "queue.progress", map[string]any{"item": c.item, "progress": "x"})
			if err == nil || !step.IsBusiness(err) || !strings.Contains(err.Error(), c.says) {
				t.Fatalf("err = %v, want %q", err, c.says)
			}
		})
	}
	if _, err := run(t, env, "queue.fail", map[string]any{"item": item, "type": "fatal"}); err == nil || !strings.Contains(err.Error(), `with.type: "fatal" is not business or application`) {
		t.Fatalf("fail with a bad type: %v", err)
	}
	if _, err := run(t, env, "queue.fail", map[string]any{"item": item, "type": "application", "reason": "down"}); err != nil {
		t.Fatal(err)
	}
	if it := q.Item(item["id"].(string)); it.Status != "FAILED" || it.Exception != step.ApplicationException || it.Reason != "down" {
		t.Errorf("item %+v", it)
	}
	// Ended, the item is no longer the job's: the refusal is a business error.
	if _, err := run(t, env, "queue.complete", map[string]any{"item": item["id"]}); err == nil || !step.IsBusiness(err) {
		t.Errorf("completing an item the job does not hold: %v", err)
	}
	out, err = run(t, env, "queue.next", map[string]any{"queue": "q"})
	if err != nil || out["found"] != false || out["item"] != nil {
		t.Errorf("next on an empty queue = %v, %v; want found false and a null item", out, err)
	}
}

func TestStepsWithoutAControlPlane(t *testing.T) {
	t.Parallel()
	for name, with := range map[string]map[string]any{
		"queue.add":      {"queue": "q"},
		"queue.next":     {"queue": "q"},
		"queue.complete": {"item": "i"},
		"queue.fail":     {"item": "i", "type": "business"},
		"queue.progress": {"item": "i", "progress": "p"},
	} {
		_, err := run(t, &step.Env{}, name, with)
		if !errors.Is(err, step.ErrNoControlPlane) || !strings.Contains(err.Error(), "queue steps need a control plane: run this workflow as a job") {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := run(t, &step.Env{}, "queue.process", map[string]any{"queue": "q"}); err == nil || !strings.Contains(err.Error(), "needs nested steps") {
		t.Errorf("queue.process run without its steps: %v", err)
	}
}
