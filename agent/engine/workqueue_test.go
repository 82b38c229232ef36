package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/casarerpa/casare/agent/step"
	"github.com/casarerpa/casare/agent/step/core"
	"github.com/casarerpa/casare/agent/step/workqueue"
	"github.com/casarerpa/casare/agent/step/workqueue/queuetest"
	"github.com/casarerpa/casare/agent/workflow"
	"github.com/casarerpa/casare/agent/workflow/builtin"
	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

// flaky fails with an application error for the items whose data says so.
var flaky = step.Define("test.flaky", "Fails when told to.", func(_ context.Context, _ *step.Env, p map[string]any) (map[string]any, error) {
	if p["fail"] == true {
		return nil, step.Failf("the system is down")
	}
	return map[string]any{"ok": true}, nil
})

func queueEngine() Engine {
	return New(step.NewCatalogue(append(append(core.Actions(), flaky), workqueue.Actions()...)...), Options{})
}

func process(id, queue string, with map[string]any, steps ...*casarev1.Step) *casarev1.Step {
	if with == nil {
		with = map[string]any{}
	}
	with["queue"] = queue
	s := action(id, "queue.process", with)
	s.Steps = steps
	return s
}

func runQueue(t *testing.T, items step.WorkItems, wf *casarev1.Workflow, inputs map[string]any) (map[string]any, *recorder, error) {
	t.Helper()
	r := &recorder{}
	env := &step.Env{JobID: "j1", Attempt: 1, WorkItems: items}
	out, err := queueEngine().Run(context.Background(), wf, inputs, env, r)
	return out, r, err
}

func TestProcessCompletesItemsWithTheNestedOutputs(t *testing.T) {
	t.Parallel()
	q := queuetest.New("invoices")
	first := q.Put("invoices", "inv-1", map[string]any{"invoice": "A-1", "amount": 10.0})
	second := q.Put("invoices", "inv-2", map[string]any{"invoice": "A-2", "amount": 20.0})
	wf := withOutputs(wfOf(
		process("loop", "invoices", nil,
			action("seen", "set", map[string]any{"invoice": "${{ item.data.invoice }}", "ref": "${{ item.reference }}", "n": "${{ index }}"}),
			logStep("say", "paying ${{ item.data.invoice }}"),
		),
	), map[string]string{"done": "${{ steps.loop.outputs.succeeded }}"})
	out, r, err := runQueue(t, q, wf, nil)
	if err != nil {
		t.Fatal(err)
	}
	if out["done"] != float64(2) {
		t.Errorf("outputs %v, want done 2", out)
	}
	for i, c := range []struct{ id, invoice, ref string }{{first, "A-1", "inv-1"}, {second, "A-2", "inv-2"}} {
		it := q.Item(c.id)
		want := map[string]any{"seen": map[string]any{"invoice": c.invoice, "ref": c.ref, "n": int64(i)}, "say": map[string]any{"message": "paying " + c.invoice}}
		if it.Status != "SUCCESSFUL" || fmt.Sprint(it.Output) != fmt.Sprint(want) {
			t.Errorf("item %s: %s with output %#v, want SUCCESSFUL with %#v", c.id, it.Status, it.Output, want)
		}
	}
	if n := r.count("info say: paying A-2"); n != 1 {
		t.Errorf("the nested log step ran %d times for A-2:\n%v", n, r.lines)
	}
}

func TestProcessFailsItemsByTheirErrorsKindAndGoesOn(t *testing.T) {
	t.Parallel()
	q := queuetest.New("invoices")
	bad := q.Put("invoices", "bad", map[string]any{"check": false})
	down := q.Put("invoices", "down", map[string]any{"check": true, "fail": true})
	good := q.Put("invoices", "good", map[string]any{"check": true})
	wf := wfOf(
		process("loop", "invoices", nil,
			action("check", "assert", map[string]any{"condition": "item.data.check", "message": "invoice ${{ item.reference }} is wrong"}),
			action("pay", "test.flaky", map[string]any{"fail": "${{ has(item.data.fail) && item.data.fail }}"}),
		),
		action("after", "set", map[string]any{"p": "${{ steps.loop.outputs.processed }}", "s": "${{ steps.loop.outputs.succeeded }}", "f": "${{ steps.loop.outputs.failed }}"}),
	)
	wf.Outputs = map[string]string{"counts": "${{ [steps.after.outputs.p, steps.after.outputs.s, steps.after.outputs.f] }}"}
	out, _, err := runQueue(t, q, wf, nil)
	if err != nil {
		t.Fatalf("a failed item failed the job: %v", err)
	}
	if !reflect.DeepEqual(out["counts"], []any{float64(3), float64(1), float64(2)}) {
		t.Errorf("counts %v, want processed 3, succeeded 1, failed 2", out["counts"])
	}
	for _, c := range []struct {
		id        string
		status    string
		exception step.Exception
		reason    string
	}{
		{bad, "FAILED", step.BusinessException, "step check: invoice bad is wrong"},
		{down, "FAILED", step.ApplicationException, "step pay: the system is down"},
		{good, "SUCCESSFUL", "", ""},
	} {
		it := q.Item(c.id)
		if it.Status != c.status || it.Exception != c.exception || it.Reason != c.reason {
			t.Errorf("item %s: %s %q %q, want %s %q %q", it.Reference, it.Status, it.Exception, it.Reason, c.status, c.exception, c.reason)
		}
	}
}

func TestProcessStopsAtTheLimitOrAnEmptyQueue(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name      string
		items     int
		limit     any
		processed float64
	}{
		{"Limit", 5, 2, 2},
		{"LimitFromAnExpression", 5, "${{ 1 + 2 }}", 3},
		{"EmptyQueue", 0, nil, 0},
		{"LimitAboveTheItems", 2, 10, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			q := queuetest.New("q")
			for range c.items {
				q.Put("q", "", map[string]any{})
			}
			with := map[string]any{}
			if c.limit != nil {
				with["limit"] = c.limit
			}
			wf := withOutputs(wfOf(process("loop", "q", with, logStep("say", "item ${{ item.id }}"))),
				map[string]string{"n": "${{ steps.loop.outputs.processed }}"})
			out, _, err := runQueue(t, q, wf, nil)
			if err != nil {
				t.Fatal(err)
			}
			if out["n"] != c.processed {
				t.Errorf("processed %v, want %v", out["n"], c.processed)
			}
			if got := q.Statuses()["NEW"]; got != c.items-int(c.processed) {
				t.Errorf("%d items left NEW, want %d", got, c.items-int(c.processed))
			}
		})
	}
}

// A nested step that fails and is handled does not fail the item; the
// reason given to the control plane is masked like the job's errors.
func TestProcessHonoursContinueOnErrorAndMasksReasons(t *testing.T) {
	t.Parallel()
	q := queuetest.New("q")
	handled := q.Put("q", "handled", nil)
	leaky := q.Put("q", "leaky", nil)
	tolerant := action("tolerant", "fail", map[string]any{"message": "ignored"})
	tolerant.If = `item.reference == "handled"`
	tolerant.ContinueOnError = true
	boom := action("boom", "fail", map[string]any{"message": "password ${{ inputs.password }} refused", "business": true})
	boom.If = `item.reference == "leaky"`
	wf := wfOf(process("loop", "q", nil, tolerant, boom))
	wf.Inputs = map[string]*casarev1.InputSpec{"password": {Type: "string", Secret: true}}
	if _, _, err := runQueue(t, q, wf, map[string]any{"password": "hunter2"}); err != nil {
		t.Fatal(err)
	}
	if it := q.Item(handled); it.Status != "SUCCESSFUL" {
		t.Errorf("a handled failure left the item %s: %s", it.Status, it.Reason)
	}
	if it := q.Item(leaky); it.Status != "FAILED" || it.Reason != "step boom: password *** refused" || it.Exception != step.BusinessException {
		t.Errorf("item %s %s %q, want FAILED business with the password masked", it.Status, it.Exception, it.Reason)
	}
}

// A job cancelled mid-item leaves the item held: the control plane
// abandons it with the job and retries it.
func TestProcessLeavesTheItemToTheControlPlaneWhenTheJobStops(t *testing.T) {
	t.Parallel()
	q := queuetest.New("q")
	id := q.Put("q", "slow", nil)
	q.Put("q", "next", nil)
	wf := wfOf(process("loop", "q", nil, action("wait", "delay", map[string]any{"duration": "1m"})))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := queueEngine().Run(ctx, wf, nil, &step.Env{JobID: "j1", Attempt: 1, WorkItems: q}, &recorder{})
		done <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for q.Item(id).Status != "IN_PROGRESS" {
		if time.Now().After(deadline) {
			t.Fatal("the item was never taken")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err == nil || !strings.Contains(err.Error(), "cancelled") {
		t.Fatalf("err = %v, want cancelled", err)
	}
	if st := q.Statuses(); st["IN_PROGRESS"] != 1 || st["NEW"] != 1 || st["FAILED"] != 0 {
		t.Errorf("statuses %v, want the item held and the next one untouched", st)
	}
}

// The loop's own failures (the control plane unreachable) fail the step,
// and retry applies to them as to any application error.
func TestProcessFailsWhenTheControlPlaneDoes(t *testing.T) {
	t.Parallel()
	q := queuetest.New("q")
	q.Put("q", "a", nil)
	q.SetDown(step.Failf("the control plane could not be reached"))
	s := process("loop", "q", nil, logStep("say", "x"))
	s.Retry = &casarev1.Retry{Attempts: 2}
	_, r, err := runQueue(t, q, wfOf(s), nil)
	var ee *Error
	if !errors.As(err, &ee) || ee.Business || ee.StepID != "loop" || !strings.Contains(err.Error(), "could not be reached") {
		t.Fatalf("err = %#v, want an application error of step loop", err)
	}
	if n := len(r.logged()); n == 0 {
		t.Error("no retry was logged")
	}
}

func TestQueueStepsInALocalRunSayTheyNeedAControlPlane(t *testing.T) {
	t.Parallel()
	for _, s := range []*casarev1.Step{
		process("loop", "q", nil, logStep("say", "x")),
		action("next", "queue.next", map[string]any{"queue": "q"}),
		action("add", "queue.add", map[string]any{"queue": "q", "data": map[string]any{}}),
	} {
		_, err := queueEngine().Run(context.Background(), wfOf(s), nil, nil, &recorder{})
		var ee *Error
		if !errors.As(err, &ee) || !ee.Business || !strings.Contains(err.Error(), "queue steps need a control plane: run this workflow as a job") {
			t.Errorf("%s: err = %v, want a business error asking for a control plane", s.GetUses(), err)
		}
	}
}

func TestQueueStepsOneAtATime(t *testing.T) {
	t.Parallel()
	q := queuetest.New("q")
	wf := wfOf(
		action("add", "queue.add", map[string]any{"queue": "q", "items": []any{
			map[string]any{"reference": "a", "data": map[string]any{"n": 1}},
			map[string]any{"reference": "b", "priority": "high"},
		}}),
		action("take", "queue.next", map[string]any{"queue": "q"}),
		action("note", "queue.progress", map[string]any{"item": "${{ steps.take.outputs.item }}", "progress": "half way"}),
		action("done", "queue.complete", map[string]any{"item": "${{ steps.take.outputs.item.id }}", "output": map[string]any{"n": "${{ steps.take.outputs.item.data.n }}"}}),
		action("again", "queue.next", map[string]any{"queue": "q"}),
		action("no", "queue.fail", map[string]any{"item": "${{ steps.again.outputs.item }}", "type": "business", "reason": "no data"}),
		action("empty", "queue.next", map[string]any{"queue": "q"}),
	)
	wf.Outputs = map[string]string{"ids": "${{ steps.add.outputs.ids }}", "found": "${{ steps.empty.outputs.found }}", "none": "${{ steps.empty.outputs.item == null }}"}
	out, _, err := runQueue(t, q, wf, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(out, map[string]any{"ids": []any{"item-1", "item-2"}, "found": false, "none": true}) {
		t.Errorf("outputs %v", out)
	}
	a, b := q.Item("item-1"), q.Item("item-2")
	if a.Status != "SUCCESSFUL" || !reflect.DeepEqual(a.Output, map[string]any{"n": float64(1)}) || !reflect.DeepEqual(a.Progress, []string{"half way"}) {
		t.Errorf("item a: %+v", a)
	}
	if b.Status != "FAILED" || b.Exception != step.BusinessException || b.Reason != "no data" || b.Priority != "high" {
		t.Errorf("item b: %+v", b)
	}
}

// The data of items a step marked secret takes is masked like a secret
// input: in the log, in the item's output and in its failure's reason.
func TestProcessMarkedSecretMasksItemData(t *testing.T) {
	t.Parallel()
	q := queuetest.New("cards")
	ok := q.Put("cards", "ok", map[string]any{"pin": "4711-9"})
	bad := q.Put("cards", "bad", map[string]any{"pin": "0000-1", "bad": true})
	say := logStep("say", "pin ${{ item.data.pin }}")
	keep := action("keep", "set", map[string]any{"pin": "${{ item.data.pin }}"})
	boom := action("boom", "fail", map[string]any{"message": "pin ${{ item.data.pin }} refused", "business": true})
	boom.If = "has(item.data.bad)"
	loop := process("loop", "cards", nil, say, keep, boom)
	loop.Secret = true
	_, r, err := runQueue(t, q, wfOf(loop), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range r.lines {
		if strings.Contains(l, "4711") || strings.Contains(l, "0000-1") {
			t.Errorf("logged %q", l)
		}
	}
	if it := q.Item(ok); it.Status != "SUCCESSFUL" || fmt.Sprint(it.Output) != "map[keep:*** say:***]" {
		t.Errorf("item ok: %s %v", it.Status, it.Output)
	}
	if it := q.Item(bad); it.Status != "FAILED" || it.Reason != "step boom: pin *** refused" {
		t.Errorf("item bad: %s %q", it.Status, it.Reason)
	}
}

// The example workflow of the queue steps' documentation runs as it says.
func TestProcessTheDocumentedExample(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("testdata/invoice-queue.yaml")
	if err != nil {
		t.Fatal(err)
	}
	wf, err := workflow.Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	if err := workflow.Validate(wf, builtin.Steps); err != nil {
		t.Fatal(err)
	}
	q := queuetest.New("invoices")
	out, r, err := runQueue(t, q, wf, nil)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(out) != "map[added:[item-1 item-2 item-3] failed:1 processed:3 succeeded:2]" {
		t.Errorf("outputs %v", out)
	}
	bad := q.Item("item-3")
	if bad.Status != "FAILED" || bad.Exception != step.BusinessException || bad.Reason != "step check: invoice A-3 has a negative amount" {
		t.Errorf("item inv-bad: %s %s %q", bad.Status, bad.Exception, bad.Reason)
	}
	if good := q.Item("item-2"); good.Status != "SUCCESSFUL" || !reflect.DeepEqual(good.Progress, []string{"checked inv-2"}) || fmt.Sprint(good.Output) != "map[amount:20 paid:A-2]" {
		t.Errorf("item inv-2: %+v", good)
	}
	if n := r.count("info report: 2 paid, 1 failed of 3"); n != 1 {
		t.Errorf("the report was not logged: %v", r.logged())
	}
}

// with.output, evaluated per item after the nested steps, is what the
// item is completed with; one that is not an object fails the item.
func TestProcessCompletesItemsWithTheirOutput(t *testing.T) {
	t.Parallel()
	q := queuetest.New("q")
	a := q.Put("q", "a", map[string]any{"invoice": "A-1"})
	b := q.Put("q", "b", map[string]any{"invoice": "B-1", "odd": true})
	wf := wfOf(process("loop", "q", map[string]any{
		"output": "${{ has(item.data.odd) ? 'not an object' : {'invoice': item.data.invoice, 'ok': steps.pay.outputs.ok, 'n': index} }}",
	}, action("pay", "test.flaky", map[string]any{})))
	if _, _, err := runQueue(t, q, wf, nil); err != nil {
		t.Fatal(err)
	}
	if it := q.Item(a); it.Status != "SUCCESSFUL" || fmt.Sprint(it.Output) != "map[invoice:A-1 n:0 ok:true]" {
		t.Errorf("item a: %s %v", it.Status, it.Output)
	}
	if it := q.Item(b); it.Status != "FAILED" || it.Exception != step.BusinessException || it.Reason != "with.output: want an object, got a text" {
		t.Errorf("item b: %s %s %q", it.Status, it.Exception, it.Reason)
	}
}
