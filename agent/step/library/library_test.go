package library

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/casarerpa/casare/agent/step"
	"github.com/casarerpa/casare/agent/workflow"
	"github.com/casarerpa/casare/agent/workflow/builtin"
	"github.com/casarerpa/casare/agent/workflow/spec"
)

// The generated files must be what the definitions give now: a step added
// or changed without go generate fails here.
func TestGeneratedFilesAreCurrent(t *testing.T) {
	specs := Catalogue(Config{}).Specs()
	schema, err := workflow.Schema(specs)
	if err != nil {
		t.Fatal(err)
	}
	table, err := SpecTable(specs)
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string][]byte{
		"../../workflow/workflow.schema.json": schema,
		"CATALOGUE.md":                        Markdown(specs),
		TablePath:                             table,
	} {
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is stale: run go generate ./agent/step/library", path)
		}
	}
}

// The table the control plane and casarectl validate with is, compiled,
// what the families declare.
func TestBuiltinStepsAreWhatTheFamiliesDeclare(t *testing.T) {
	if diff := cmp.Diff(Catalogue(Config{}).Specs(), builtin.Steps); diff != "" {
		t.Fatalf("builtin.Steps differs from the families (-declared +table):\n%s", diff)
	}
}

func TestCatalogueDocumentsEveryAction(t *testing.T) {
	cat := Catalogue(Config{})
	md := string(Markdown(cat.Specs()))
	for _, name := range cat.Names() {
		if !strings.Contains(md, "### `"+name+"`") {
			t.Errorf("CATALOGUE.md lacks %s", name)
		}
	}
	for _, want := range []string{"| `message` | string | yes |", "Needs a robot with the `shell` capability.", "- business error: the condition does not hold", "Parameters: Any keys: each becomes `vars.KEY`"} {
		if !strings.Contains(md, want) {
			t.Errorf("CATALOGUE.md lacks %q", want)
		}
	}
}

func TestSchemaDescribesActions(t *testing.T) {
	data, err := workflow.Schema(Catalogue(Config{}).Specs())
	if err != nil {
		t.Fatal(err)
	}
	var schema struct {
		Defs map[string]struct {
			Required             []string       `json:"required"`
			Properties           map[string]any `json:"properties"`
			AdditionalProperties *bool          `json:"additionalProperties"`
		} `json:"$defs"`
	}
	if err := json.Unmarshal(data, &schema); err != nil {
		t.Fatal(err)
	}
	log := schema.Defs["with.log"]
	if len(log.Required) != 1 || log.Required[0] != "message" || log.AdditionalProperties == nil || *log.AdditionalProperties {
		t.Errorf("with.log = %+v", log)
	}
	if _, ok := schema.Defs["with.set"]; !ok || schema.Defs["with.set"].AdditionalProperties != nil {
		t.Errorf("set takes any keys: %+v", schema.Defs["with.set"])
	}
	for _, field := range []string{"id", "uses", "with", "if", "foreach", "parallelism", "steps", "retry", "timeout", "continue_on_error", "on_error"} {
		if _, ok := schema.Defs["Step"].Properties[field]; !ok {
			t.Errorf("Step lacks %s", field)
		}
	}
}

// decodeLiteral is how a literal parameter was checked before the specs
// were data, and how the robot decodes it: encoding/json into the
// action's parameter struct. The spec's check must say the same.
func decodeLiteral(params reflect.Type, f step.Field, value any) error {
	data, err := json.Marshal(map[string]any{f.Name: value})
	if err != nil {
		return err
	}
	err = json.Unmarshal(data, reflect.New(params).Interface())
	var typeErr *json.UnmarshalTypeError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &typeErr):
		return fmt.Errorf("want %s, got %s", f.Type, typeErr.Value)
	}
	return errors.New(strings.TrimPrefix(err.Error(), "json: "))
}

// literals are values of every kind, and the edges of the ones that have
// them: whole numbers and their range, durations, nulls and wrong values
// inside lists and maps, numbers JSON cannot write.
func literals() []*structpb.Value {
	var out []*structpb.Value
	for _, src := range []string{
		`""`, `"x"`, `"2s"`, `"1h2m"`, `"-1s"`, `"soon"`, `"<&>"`, `"true"`, `"3"`,
		`0`, `-0`, `1`, `-1`, `1.5`, `-2.5`, `3e9`, `1e20`, `1e21`, `-1e-7`, `9223372036854775807`, `-9223372036854775808`, `9007199254740993`,
		`true`, `false`,
		`[]`, `[1]`, `[-3]`, `["a"]`, `[1.5]`, `[true]`, `[null]`, `["a", 1]`, `[1, "a", true]`, `[{}]`, `[[1]]`, `["2s", "x"]`,
		`{}`, `{"a": 1}`, `{"a": "x"}`, `{"b": 1, "a": "x"}`, `{"a": null}`, `{"a": [1]}`, `{"a": {"b": 1}}`, `{"b": "x", "a": true}`,
	} {
		var v any
		if err := json.Unmarshal([]byte(src), &v); err != nil {
			panic(src + ": " + err.Error())
		}
		out = append(out, must(structpb.NewValue(v)))
	}
	for _, n := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		out = append(out,
			structpb.NewNumberValue(n),
			structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{structpb.NewStringValue("x"), structpb.NewNumberValue(n)}}),
			structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{"z": structpb.NewNumberValue(n), "a": structpb.NewBoolValue(true)}}))
	}
	return out
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// checkAgrees fails t when the spec of param of a does not check v as the
// robot decodes it.
func checkAgrees(t *testing.T, a *step.Action, param int, v *structpb.Value) {
	t.Helper()
	f := a.Spec().Params[param]
	want := decodeLiteral(a.Params, f, v.AsInterface())
	got := f.Check(v)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("%s with.%s = %s: spec says %v, the robot's decoding %v", a.Name, f.Name, must(json.Marshal(v.AsInterface())), got, want)
	}
}

func TestLiteralChecksDecodeAsTheRobotDoes(t *testing.T) {
	cat := Catalogue(Config{})
	checked := map[spec.Kind]bool{}
	for _, name := range cat.Names() {
		a := cat[name]
		for i, f := range a.Spec().Params {
			checked[f.Shape.Kind] = true
			for _, v := range literals() {
				checkAgrees(t, a, i, v)
			}
		}
	}
	for _, k := range []spec.Kind{spec.Any, spec.String, spec.Text, spec.Boolean, spec.Integer, spec.Duration, spec.List, spec.Map} {
		if !checked[k] {
			t.Errorf("no parameter of kind %s was checked", k)
		}
	}
}

func FuzzLiteralCheck(f *testing.F) {
	for i, v := range literals() {
		if data, err := json.Marshal(v.AsInterface()); err == nil {
			f.Add(data, uint(i))
		}
	}
	cat := Catalogue(Config{})
	type param struct {
		a *step.Action
		i int
	}
	var params []param
	for _, name := range cat.Names() {
		for i := range cat[name].Spec().Params {
			params = append(params, param{cat[name], i})
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, which uint) {
		var v any
		if json.Unmarshal(data, &v) != nil || v == nil {
			return
		}
		value, err := structpb.NewValue(v)
		if err != nil {
			return
		}
		p := params[which%uint(len(params))]
		checkAgrees(t, p.a, p.i, value)
	})
}
