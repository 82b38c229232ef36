package step

import (
	"encoding"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"

	"github.com/casarerpa/casare/agent/workflow/spec"
)

// LiteralKinder is a parameter type that decodes itself (Duration, a
// text that also takes numbers): it says which spec.Kind its decoding
// takes, so that workflows are checked as the robot decodes them.
type LiteralKinder interface {
	LiteralKind() spec.Kind
}

// Spec returns what the action declares, as the data workflows are
// checked against and the catalogue and schema are written from.
func (a *Action) Spec() *spec.Action {
	s := &spec.Action{
		Name:       a.Name,
		Summary:    a.Summary,
		Capability: a.Capability,
		AnyParams:  a.Params == nil,
		Outputs:    Fields(a.Outputs),
		Errors:     slices.Clone(a.Errors),
		Nested:     a.Nested,
		AfterSteps: slices.Clone(a.AfterSteps),
	}
	params, err := paramSpecs(a.Params)
	if err != nil {
		// Define refuses such parameters.
		panic("step: " + a.Name + ": " + err.Error())
	}
	s.Params = params
	return s
}

// paramSpecs lists the fields of a parameter struct with their shapes.
func paramSpecs(t reflect.Type) ([]spec.Field, error) {
	fields := Fields(t)
	if len(fields) == 0 {
		return nil, nil
	}
	for i := range fields {
		sf, _ := fieldByJSONName(t, fields[i].Name)
		shape, err := shapeOf(sf.Type)
		if err != nil {
			return nil, fmt.Errorf("parameter %s: %w", fields[i].Name, err)
		}
		fields[i].Shape = shape
	}
	return fields, nil
}

// fieldByJSONName finds the struct field Fields names name.
func fieldByJSONName(t reflect.Type, name string) (reflect.StructField, bool) {
	for f := range t.Fields() {
		if jsonName(f) == name {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

var (
	literalKinder    = reflect.TypeFor[LiteralKinder]()
	jsonUnmarshaler  = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshaler  = reflect.TypeFor[encoding.TextUnmarshaler]()
	unsupportedShape = "type %s is not one a workflow can be checked against: use string, bool, int, int64, float64, Duration, a slice or map[string] of those, or any"
)

// shapeOf is what encoding/json takes for a value of type t.
func shapeOf(t reflect.Type) (spec.Shape, error) {
	if t.Kind() == reflect.Pointer && t.Elem().Implements(literalKinder) {
		// json hands null to a type that decodes itself, unless it is
		// behind a pointer: the shape would not say so.
		return spec.Shape{}, fmt.Errorf("type %s: use %s, not a pointer to it", t, t.Elem())
	}
	if t.Implements(literalKinder) {
		return spec.Shape{Kind: reflect.Zero(t).Interface().(LiteralKinder).LiteralKind()}, nil
	}
	if t.Implements(jsonUnmarshaler) || reflect.PointerTo(t).Implements(jsonUnmarshaler) ||
		t.Implements(textUnmarshaler) || reflect.PointerTo(t).Implements(textUnmarshaler) {
		return spec.Shape{}, fmt.Errorf("type %s decodes itself: give it a LiteralKind method", t)
	}
	switch t.Kind() {
	case reflect.String:
		return spec.Shape{Kind: spec.String}, nil
	case reflect.Bool:
		return spec.Shape{Kind: spec.Boolean}, nil
	case reflect.Int, reflect.Int64:
		return spec.Shape{Kind: spec.Integer}, nil
	case reflect.Float64:
		return spec.Shape{Kind: spec.Number}, nil
	case reflect.Interface:
		if t.NumMethod() == 0 {
			return spec.Shape{Kind: spec.Any}, nil
		}
	case reflect.Pointer:
		// A pointer only tells a missing value from a zero one.
		return shapeOf(t.Elem())
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			break // json takes []byte as base64 text
		}
		elem, err := shapeOf(t.Elem())
		if err != nil {
			return spec.Shape{}, err
		}
		return spec.Shape{Kind: spec.List, Elem: &elem}, nil
	case reflect.Map:
		if t.Key().Kind() != reflect.String {
			break
		}
		elem, err := shapeOf(t.Elem())
		if err != nil {
			return spec.Shape{}, err
		}
		return spec.Shape{Kind: spec.Map, Elem: &elem}, nil
	}
	return spec.Shape{}, fmt.Errorf(unsupportedShape, t)
}
