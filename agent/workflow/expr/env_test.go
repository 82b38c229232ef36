package expr

import (
	"errors"
	"testing"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/interpreter"
)

func TestEnv(t *testing.T) {
	env, err := NewEnv(map[string]*cel.Type{"body": cel.DynType, "headers": cel.MapType(cel.StringType, cel.StringType)})
	if err != nil {
		t.Fatal(err)
	}
	prg, typ, err := env.Compile("headers['x-id'] + '-' + string(body.n)", 0)
	if err != nil {
		t.Fatal(err)
	}
	if !typ.IsExactType(cel.StringType) {
		t.Errorf("type %s, want string", typ)
	}
	got, err := prg.Eval(activation(map[string]any{"body": map[string]any{"n": 2.0}, "headers": map[string]string{"x-id": "a"}}))
	if err != nil || got != "a-2" {
		t.Fatalf("Eval = %v, %v", got, err)
	}
	for _, bad := range []string{"inputs.x", "headers.x + 1", "body.("} {
		if _, _, err := env.Compile(bad, 0); err == nil {
			t.Errorf("Compile(%q) passed; it names no variable of the environment or does not parse", bad)
		}
	}
	prg, _, err = env.Compile("lists.range(1000).map(i, lists.range(1000).map(j, i*j)).size()", 1000)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := prg.Eval(activation(map[string]any{})); !errors.Is(err, ErrTooCostly) {
		t.Fatalf("a costly mapping: %v, want ErrTooCostly", err)
	}
}

func activation(vars map[string]any) interpreter.Activation {
	a, err := interpreter.NewActivation(vars)
	if err != nil {
		panic(err)
	}
	return a
}
