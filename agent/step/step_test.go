package step

import (
	"context"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/casarerpa/casare/agent/workflow/spec"
)

type greetParams struct {
	Name  string   `json:"name" step:"required" doc:"Who to greet."`
	Times int      `json:"times" doc:"How often."`
	Wait  Duration `json:"wait" doc:"Pause first."`
}

type greetOutputs struct {
	Text string `json:"text" doc:"The greeting."`
}

var greet = Define("demo.greet", "Greets someone.",
	func(_ context.Context, _ *Env, p greetParams) (greetOutputs, error) {
		return greetOutputs{Text: "hello " + p.Name}, nil
	}, Rejects("the name is empty"))

func TestDefineDecodesAndEncodes(t *testing.T) {
	out, err := greet.Run(context.Background(), &Env{}, map[string]any{"name": "ada", "times": 2.0, "wait": "1.5s"})
	if err != nil {
		t.Fatal(err)
	}
	if out["text"] != "hello ada" {
		t.Fatalf("outputs = %v", out)
	}
}

func TestDecodeNamesTheParameter(t *testing.T) {
	for _, tc := range []struct {
		with map[string]any
		want string
	}{
		{map[string]any{}, "with.name: required"},
		{map[string]any{"name": nil}, "with.name: required"},
		{map[string]any{"name": "a", "tims": 1.0}, "with.tims: unknown parameter"},
		{map[string]any{"name": "a", "times": "two"}, "with.times: want a whole number, got string"},
		{map[string]any{"name": "a", "wait": "soon"}, `"soon" is not a duration like 1.5s`},
	} {
		_, err := greet.Run(context.Background(), &Env{}, tc.with)
		if err == nil || !IsBusiness(err) {
			t.Fatalf("%v: err = %v, want a business error", tc.with, err)
		}
		if got := err.Error(); !strings.Contains(got, tc.want) {
			t.Errorf("%v: err = %q, want it to contain %q", tc.with, got, tc.want)
		}
	}
}

func TestDurationAcceptsSecondsAndText(t *testing.T) {
	var p greetParams
	if err := Decode(map[string]any{"name": "x", "wait": 2.5}, &p); err != nil || p.Wait.D() != 2500*time.Millisecond {
		t.Fatalf("wait = %v, err = %v", p.Wait.D(), err)
	}
}

func TestFieldsDocumentTheStruct(t *testing.T) {
	f := Fields(greet.Params)
	if len(f) != 3 || f[0] != (Field{Name: "name", Type: "string", Required: true, Doc: "Who to greet."}) || f[2].Type != "duration" {
		t.Fatalf("fields = %+v", f)
	}
	if len(greet.Errors) != 1 || !greet.Errors[0].Business {
		t.Fatalf("errors = %+v", greet.Errors)
	}
}

func TestLookupSuggestsTheClosestName(t *testing.T) {
	c := NewCatalogue(greet, Define("browser.click", "", func(context.Context, *Env, map[string]any) (map[string]any, error) { return nil, nil }))
	if _, err := c.Lookup("brower.click"); err == nil || err.Error() != `unknown step "brower.click"; did you mean "browser.click"?` {
		t.Fatalf("err = %v", err)
	}
	if _, err := c.Lookup("spreadsheet.open"); err == nil || err.Error() != `unknown step "spreadsheet.open"` {
		t.Fatalf("err = %v", err)
	}
	if a, err := c.Lookup("demo.greet"); err != nil || a != greet {
		t.Fatalf("lookup = %v, %v", a, err)
	}
}

type closer struct {
	closed *[]string
	name   string
}

func (c closer) Close() error { *c.closed = append(*c.closed, c.name); return nil }

func TestEnvClosesResourcesNewestFirst(t *testing.T) {
	var closed []string
	env := &Env{}
	for _, name := range []string{"a", "b"} {
		if _, err := env.Resource(name, func() (io.Closer, error) { return closer{&closed, name}, nil }); err != nil {
			t.Fatal(err)
		}
	}
	opened := 0
	if _, err := env.Resource("a", func() (io.Closer, error) { opened++; return nil, nil }); err != nil || opened != 0 {
		t.Fatalf("second use opened again: %d, %v", opened, err)
	}
	if err := env.Close(); err != nil {
		t.Fatal(err)
	}
	if len(closed) != 2 || closed[0] != "b" || closed[1] != "a" {
		t.Fatalf("closed = %v", closed)
	}
	if _, err := env.Resource("c", func() (io.Closer, error) { return nil, errors.New("unreachable") }); err == nil {
		t.Fatal("a resource opened after the job ended")
	}
}

func TestSpecDescribesTheParameters(t *testing.T) {
	s := greet.Spec()
	want := []Field{
		{Name: "name", Type: "string", Required: true, Doc: "Who to greet.", Shape: spec.Shape{Kind: spec.String}},
		{Name: "times", Type: "integer", Doc: "How often.", Shape: spec.Shape{Kind: spec.Integer}},
		{Name: "wait", Type: "duration", Doc: "Pause first.", Shape: spec.Shape{Kind: spec.Duration}},
	}
	if s.Name != "demo.greet" || s.AnyParams || len(s.Params) != len(want) || len(s.Outputs) != 1 || len(s.Errors) != 1 {
		t.Fatalf("spec = %+v", s)
	}
	for i := range want {
		if s.Params[i] != want[i] {
			t.Errorf("params[%d] = %+v, want %+v", i, s.Params[i], want[i])
		}
	}
	free := Define("demo.free", "", func(context.Context, *Env, map[string]any) (map[string]any, error) { return nil, nil })
	if s := free.Spec(); !s.AnyParams || s.Params != nil {
		t.Errorf("free-form spec = %+v", s)
	}
}

func TestShapeOf(t *testing.T) {
	for _, tc := range []struct {
		name string
		typ  reflect.Type
		want string // the shape's kinds, outer first, or the start of the error
	}{
		{"ListOfInt", reflect.TypeFor[[]int](), "List Integer"},
		{"MapOfAny", reflect.TypeFor[map[string]any](), "Map Any"},
		{"PointerToBool", reflect.TypeFor[*bool](), "Boolean"},
		{"Duration", reflect.TypeFor[Duration](), "Duration"},
		{"ErrPointerToDuration", reflect.TypeFor[*Duration](), "type *step.Duration: use step.Duration"},
		{"ErrTime", reflect.TypeFor[time.Time](), "type time.Time decodes itself"},
		{"ErrStruct", reflect.TypeFor[struct{ A int }](), "type struct { A int } is not one"},
		{"ErrUint", reflect.TypeFor[uint](), "type uint is not one"},
		{"ErrBytes", reflect.TypeFor[[]byte](), "type []uint8 is not one"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := shapeOf(tc.typ)
			got := ""
			if err != nil {
				got = err.Error()
			} else {
				for e := &s; e != nil; e = e.Elem {
					got += " " + e.Kind.String()
				}
				got = strings.TrimSpace(got)
			}
			if !strings.HasPrefix(got, tc.want) {
				t.Fatalf("shapeOf(%s) = %q, want %q", tc.typ, got, tc.want)
			}
		})
	}
}

func TestDefineRefusesAParameterItCannotDescribe(t *testing.T) {
	defer func() {
		if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "demo.bad: parameter at: type time.Time decodes itself") {
			t.Fatalf("recovered %v", r)
		}
	}()
	Define("demo.bad", "", func(context.Context, *Env, struct {
		At time.Time `json:"at"`
	}) (struct{}, error) {
		return struct{}{}, nil
	})
}
