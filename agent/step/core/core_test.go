package core

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/casarerpa/casare/agent/step"
)

// Without an engine's scope, log writes through the env and set only
// returns its outputs: the actions still work on their own.
func TestWithoutAScope(t *testing.T) {
	var lines []string
	env := &step.Env{Log: func(level, message string) { lines = append(lines, level+" "+message) }}
	out, err := Log.Run(context.Background(), env, map[string]any{"message": 42.0, "level": "warn"})
	if err != nil || out["message"] != "42" {
		t.Fatalf("log = %v, %v", out, err)
	}
	if !reflect.DeepEqual(lines, []string{"warn 42"}) {
		t.Errorf("env log = %q", lines)
	}
	out, err = Set.Run(context.Background(), env, map[string]any{"a": 1.0})
	if err != nil || out["a"] != 1.0 {
		t.Fatalf("set = %v, %v", out, err)
	}
	if _, err := Assert.Run(context.Background(), env, map[string]any{"condition": "1 == 1"}); err == nil || !step.IsBusiness(err) {
		t.Errorf("an expression without an engine: %v", err)
	}
}

type scope struct {
	logged []string
	vars   map[string]any
}

func (s *scope) Log(level, message string)   { s.logged = append(s.logged, level+" "+message) }
func (s *scope) SetVars(vars map[string]any) { s.vars = vars }

func TestWithAScope(t *testing.T) {
	s := &scope{}
	ctx := WithScope(context.Background(), s)
	if _, err := Log.Run(ctx, &step.Env{}, map[string]any{"message": true}); err != nil {
		t.Fatal(err)
	}
	if _, err := Set.Run(ctx, &step.Env{}, map[string]any{"x": "y"}); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(s.logged, []string{"info true"}) || s.vars["x"] != "y" {
		t.Errorf("scope saw %q and %v", s.logged, s.vars)
	}
	ctx = WithCondition(ctx, func(_ context.Context, expr string) (bool, error) { return expr == "yes", nil })
	if _, err := Assert.Run(ctx, &step.Env{}, map[string]any{"condition": "yes"}); err != nil {
		t.Errorf("a holding condition: %v", err)
	}
	if _, err := Assert.Run(ctx, &step.Env{}, map[string]any{"condition": "no", "message": "nope"}); err == nil || err.Error() != "nope" || !step.IsBusiness(err) {
		t.Errorf("a failing condition: %v", err)
	}
}

func TestDelayStopsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := Delay.Run(ctx, &step.Env{}, map[string]any{"duration": "10s"}); err == nil {
		t.Fatal("a cancelled delay succeeded")
	}
	if time.Since(start) > 2*time.Second {
		t.Error("the delay outlived its context")
	}
}

func TestFail(t *testing.T) {
	_, err := Fail.Run(context.Background(), &step.Env{}, nil)
	if err == nil || err.Error() != "failed by the workflow" || step.IsBusiness(err) {
		t.Errorf("fail = %v", err)
	}
	_, err = Fail.Run(context.Background(), &step.Env{}, map[string]any{"message": "bad data", "business": true})
	if err == nil || err.Error() != "bad data" || !step.IsBusiness(err) {
		t.Errorf("fail business = %v", err)
	}
}
