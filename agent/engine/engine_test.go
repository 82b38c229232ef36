package engine

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

type recorder struct {
	mu       sync.Mutex
	lines    []string
	progress []int32
}

func (r *recorder) Log(level, stepID, message string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if level != "debug" {
		r.lines = append(r.lines, level+" "+stepID+": "+message)
	}
}

func (r *recorder) Progress(_ string, percent int32, _ string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.progress = append(r.progress, percent)
}

func step(id, uses string, with map[string]any) *casarev1.Step {
	w, err := structpb.NewStruct(with)
	if err != nil {
		panic(err)
	}
	return &casarev1.Step{Id: id, Uses: uses, With: w}
}

func TestRun(t *testing.T) {
	wf := &casarev1.Workflow{
		Inputs: map[string]*casarev1.InputSpec{"who": {Default: structpb.NewStringValue("world")}, "n": {}},
		Steps: []*casarev1.Step{
			step("greet", "log", map[string]any{"message": "hello ${{ inputs.who }}"}),
			step("keep", "set", map[string]any{"count": "${{ inputs.n }}", "list": []any{"a", "${{ inputs.n }}"}}),
			{Id: "skipped", If: "false", Uses: "fail"},
			{Id: "flag", If: "${{ inputs.flagged }}", Uses: "fail"},
			{Id: "soft", Uses: "fail", ContinueOnError: true},
			{Id: "group", Steps: []*casarev1.Step{step("inner", "log", map[string]any{"message": "n=${{ vars.count }} list=${{ vars.list }}", "level": "warn"})}},
			step("pause", "delay", map[string]any{"duration": "1ms"}),
		},
		Outputs: map[string]string{"count": "${{ vars.count }}", "said": "${{ steps.greet.outputs.message }}"},
	}
	r := &recorder{}
	out, err := New().Run(context.Background(), wf, map[string]any{"n": 3.0, "flagged": false}, r)
	if err != nil {
		t.Fatal(err)
	}
	if out["count"] != 3.0 || out["said"] != "hello world" {
		t.Errorf("outputs %v", out)
	}
	want := []string{"info greet: hello world", "warn inner: n=3 list=[\"a\",3]"}
	if len(r.lines) < 2 || r.lines[0] != want[0] || r.lines[2] != want[1] {
		t.Errorf("log %q, want %q around a warning for flag", r.lines, want)
	}
	if !strings.Contains(r.lines[1], "warn soft: failed, going on") {
		t.Errorf("continue_on_error was not reported: %q", r.lines)
	}
	if last := r.progress[len(r.progress)-1]; last != 100 {
		t.Errorf("progress ends at %d", last)
	}
}

func TestFailures(t *testing.T) {
	for _, tc := range []struct {
		name     string
		wf       *casarev1.Workflow
		inputs   map[string]any
		want     string
		business bool
	}{
		{"fail step", &casarev1.Workflow{Steps: []*casarev1.Step{step("boom", "fail", map[string]any{"message": "no invoice", "business": true})}}, nil, "step boom: no invoice", true},
		{"unknown name", &casarev1.Workflow{Steps: []*casarev1.Step{step("greet", "log", map[string]any{"message": "${{ inputs.nme }}"})}}, nil, `step greet: ${{ inputs.nme }}: unknown name "inputs.nme"`, false},
		{"unknown step", &casarev1.Workflow{Steps: []*casarev1.Step{step("x", "brower.click", nil)}}, nil, `unknown step "brower.click"`, false},
		{"missing parameter", &casarev1.Workflow{Steps: []*casarev1.Step{step("say", "log", nil)}}, nil, "with.message: required", true},
		{"required input", &casarev1.Workflow{Inputs: map[string]*casarev1.InputSpec{"url": {Required: true}}, Steps: []*casarev1.Step{step("a", "log", map[string]any{"message": "x"})}}, nil, "input url is required", true},
		{"step timeout", &casarev1.Workflow{Steps: []*casarev1.Step{{Id: "slow", Uses: "delay", With: step("", "", map[string]any{"duration": "10s"}).With, Timeout: durationpb.New(20 * time.Millisecond)}}}, nil, "step slow: timed out after 20ms", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New().Run(context.Background(), tc.wf, tc.inputs, &recorder{})
			var ee *Error
			if !errors.As(err, &ee) || !strings.Contains(err.Error(), tc.want) || ee.Business != tc.business {
				t.Fatalf("err = %v (business %v), want %q (business %v)", err, ee != nil && ee.Business, tc.want, tc.business)
			}
		})
	}
}

func TestRetryAndOnError(t *testing.T) {
	failing := &casarev1.Step{Id: "flaky", Uses: "fail", Retry: &casarev1.Retry{Attempts: 3}, OnError: []*casarev1.Step{step("report", "log", map[string]any{"message": "caught: ${{ vars.error }}"})}}
	r := &recorder{}
	_, err := New().Run(context.Background(), &casarev1.Workflow{Steps: []*casarev1.Step{failing}}, nil, r)
	if err == nil {
		t.Fatal("a failing step succeeded")
	}
	joined := strings.Join(r.lines, "\n")
	if strings.Count(joined, "attempt") != 2 || !strings.Contains(joined, "caught: step flaky: failed by the workflow") {
		t.Errorf("log:\n%s", joined)
	}
}

func TestCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := New().Run(ctx, &casarev1.Workflow{Steps: []*casarev1.Step{step("wait", "delay", map[string]any{"duration": 10.0})}}, nil, &recorder{})
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "cancelled") {
			t.Fatalf("err = %v, want cancelled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context was cancelled")
	}
}
