package expr

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"

	"cel.dev/cel-go/interpreter"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

func TestParseTemplate(t *testing.T) {
	for _, tc := range []struct {
		in     string
		pieces []Piece
		lone   bool
		err    string
	}{
		{in: "plain", pieces: []Piece{{Text: "plain"}}},
		{in: "${{ a.b }}", pieces: []Piece{{Expr: "a.b", IsExpr: true}}, lone: true},
		{in: "x ${{a}}y${{ b }}", pieces: []Piece{{Text: "x "}, {Expr: "a", IsExpr: true}, {Text: "y"}, {Expr: "b", IsExpr: true}}},
		{in: "${{ {'k': 1} }}", pieces: []Piece{{Expr: "{'k': 1}", IsExpr: true}}, lone: true},
		// The first }} ends an expression: nested maps need a space, } }.
		{in: "${{ {'a': {'b': 1}} }}", pieces: []Piece{{Expr: "{'a': {'b': 1", IsExpr: true}, {Text: " }}"}}},
		{in: "${{ a", err: "${{ without a closing }}"},
		{in: "${{ }}", err: "empty ${{ }}"},
	} {
		got, err := ParseTemplate(tc.in)
		if tc.err != "" {
			if err == nil || err.Error() != tc.err {
				t.Errorf("%q: err = %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got.Pieces, tc.pieces) || got.Lone() != tc.lone {
			t.Errorf("%q: %+v (lone %v), %v; want %+v", tc.in, got.Pieces, got.Lone(), err, tc.pieces)
		}
	}
	if Bare(" ${{ a > 1 }} ") != "a > 1" || Bare("a > 1") != "a > 1" {
		t.Error("Bare does not unwrap")
	}
}

func eval(t *testing.T, src string, vars map[string]any) (any, error) {
	t.Helper()
	p, err := Compile(src, 0)
	if err != nil {
		t.Fatalf("compile %q: %v", src, err)
	}
	act, err := interpreter.NewActivation(vars)
	if err != nil {
		t.Fatal(err)
	}
	return p.Eval(act)
}

func TestNative(t *testing.T) {
	vars := map[string]any{"inputs": map[string]any{"l": []any{"a"}, "m": map[string]any{"k": 1.0}}}
	for src, want := range map[string]any{
		"1":                                 1.0,
		"1u":                                1.0,
		"1.5":                               1.5,
		"'x'":                               "x",
		"null":                              nil,
		"b'hi'":                             "aGk=",
		"duration('1m30s')":                 "1m30s",
		"timestamp('2026-01-02T03:04:05Z')": "2026-01-02T03:04:05Z",
		"[1, 'a', [true]]":                  []any{1.0, "a", []any{true}},
		"{'a': {'b': 2}, 3: 'x'}":           map[string]any{"a": map[string]any{"b": 2.0}, "3": "x"},
		"inputs.l":                          []any{"a"},
		"inputs.m":                          map[string]any{"k": 1.0},
	} {
		got, err := eval(t, src, vars)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%s = %#v, %v; want %#v", src, got, err, want)
		}
	}
}

func TestCostLimit(t *testing.T) {
	p, err := Compile("lists.range(100).map(i, lists.range(100).map(j, i * j)).size()", 1000)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Eval(interpreter.EmptyActivation()); !errors.Is(err, ErrTooCostly) {
		t.Fatalf("err = %v, want ErrTooCostly", err)
	}
}

func TestCheckerKnowsInputTypes(t *testing.T) {
	c, err := NewChecker(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Check("inputs.n + 1"); err != nil {
		t.Errorf("undeclared inputs are dyn: %v", err)
	}
	if _, err := c.Check("nope + 1"); err == nil || !strings.Contains(err.Error(), "undeclared reference to 'nope'") {
		t.Errorf("unknown names: %v", err)
	}
	if CheckInputTypes := InputType("integer"); CheckInputTypes.String() != "int" {
		t.Errorf("integer is %s", CheckInputTypes)
	}
}

func TestReferences(t *testing.T) {
	c, err := NewChecker(map[string]*casarev1.InputSpec{"n": {Type: "integer"}})
	if err != nil {
		t.Fatal(err)
	}
	// Names inside a comprehension, a map and a call's target count, and
	// a declared input the checker resolved into one name is still read.
	checked, err := c.Check("steps.a.outputs.rows.all(r, r > inputs.n) && {'k': item}.size() > index && steps.b.x.startsWith(inputs.s)")
	if err != nil {
		t.Fatal(err)
	}
	got := References(checked)
	slices.Sort(got.Steps)
	slices.Sort(got.Inputs)
	slices.Sort(got.Idents)
	want := Refs{
		Steps:  []string{"a", "b"},
		Inputs: []string{"n", "s"},
		Idents: []string{"@result", "@result", "@result", "index", "inputs", "inputs", "item", "r", "steps", "steps"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("References = %+v, want %+v", got, want)
	}
}

// TestSyntaxErrorsStopAtTheFirst checks that the parser gives up after the
// first syntax error rather than recovering to report what follows from
// it, which took milliseconds for an expression like [[[[...
func TestSyntaxErrorsStopAtTheFirst(t *testing.T) {
	for src, want := range map[string]string{
		"{'a': 1, 'b' 2, 'c' 3}": "column 14: Syntax error: expected ':' in map entry",
		strings.Repeat("[", 64):  "column 65: Syntax error: expected ']'",
	} {
		_, err := parse(src)
		if got := issuesError(err).Error(); got != want {
			t.Errorf("%.20s: %q, want %q", src, got, want)
		}
		if _, err := Compile(src, 0); err == nil || err.Error() != want {
			t.Errorf("Compile(%.20s) = %v, want %q", src, err, want)
		}
	}
}

func TestCheckInput(t *testing.T) {
	for _, tc := range []struct {
		typ  string
		in   any
		want any
		err  string
	}{
		{"integer", 3.0, int64(3), ""},
		{"integer", 3.5, nil, "want integer, got 3.5"},
		{"number", 3.5, 3.5, ""},
		{"string", 1.0, nil, "want string, got 1"},
		{"", []any{}, []any{}, ""},
		{"date", "x", nil, `unknown type "date"`},
	} {
		got, err := CheckInput(tc.typ, tc.in)
		if tc.err != "" {
			if err == nil || err.Error() != tc.err {
				t.Errorf("%s %v: err = %v, want %q", tc.typ, tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s %v = %#v, %v", tc.typ, tc.in, got, err)
		}
	}
}

// BenchmarkCheckSyntaxError checks an expression whose syntax error sends
// the parser back through 64 open brackets: a workflow may hold a
// thousand different ones.
func BenchmarkCheckSyntaxError(b *testing.B) {
	c, err := NewChecker(nil)
	if err != nil {
		b.Fatal(err)
	}
	src := strings.Repeat("[", 64)
	for b.Loop() {
		if _, err := c.Check(src); err == nil {
			b.Fatal("no error")
		}
	}
}
