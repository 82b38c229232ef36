package spec

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/structpb"
)

// Kind is what a literal parameter value may be.
type Kind uint8

const (
	// Any takes every value.
	Any Kind = iota
	// String takes a string.
	String
	// Text takes a string, a number or a boolean, as its text.
	Text
	// Boolean takes true or false.
	Boolean
	// Integer takes a whole number that fits in 64 bits.
	Integer
	// Number takes a number.
	Number
	// Duration takes "1.5s", "2m" or a number of seconds, not negative.
	Duration
	// List takes a list of Elem.
	List
	// Map takes an object whose values are Elem.
	Map
)

var kindNames = [...]string{Any: "Any", String: "String", Text: "Text", Boolean: "Boolean", Integer: "Integer", Number: "Number", Duration: "Duration", List: "List", Map: "Map"}

// String returns the kind's Go name, as the generated table writes it.
func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Shape is what a literal parameter value must be. The robot decodes
// parameters with encoding/json into Go types; a shape says what that
// decoding takes, so that a literal it would refuse is reported when the
// workflow is checked, in the same words.
type Shape struct {
	Kind Kind
	// Elem is the shape of a List's items or a Map's values.
	Elem *Shape
}

// DecodeDuration reads a duration parameter from its JSON: "1.5s", "2m" or
// a number of seconds. A negative duration is an error.
func DecodeDuration(b []byte) (time.Duration, error) {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return 0, err
	}
	return durationOf(v, b)
}

// durationOf is DecodeDuration of the value v that b encodes; b is read
// only for a value that is neither a string nor a number.
func durationOf(v any, b []byte) (time.Duration, error) {
	switch v := v.(type) {
	case string:
		parsed, err := time.ParseDuration(v)
		if err != nil {
			return 0, fmt.Errorf("%q is not a duration like 1.5s", v)
		}
		if parsed < 0 {
			return 0, fmt.Errorf("%q is negative", v)
		}
		return parsed, nil
	case float64:
		if v < 0 {
			return 0, fmt.Errorf("%v is negative", v)
		}
		return time.Duration(v * float64(time.Second)), nil
	}
	return 0, fmt.Errorf("want a duration like 1.5s or a number of seconds, got %s", b)
}

// DecodeText reads a text parameter from its JSON: a string, or a number
// or boolean as its text, because a lone ${{ vars.count }} keeps its
// value's type and writing it into a message should still work. null is
// the empty text. A map or a list is a *json.UnmarshalTypeError, so that
// the decoder names the parameter.
func DecodeText(b []byte) (string, error) {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return "", err
	}
	switch v := v.(type) {
	case string:
		return v, nil
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64), nil
	case bool:
		return strconv.FormatBool(v), nil
	case nil:
		return "", nil
	case map[string]any:
		return "", &json.UnmarshalTypeError{Value: "a map", Type: reflect.TypeFor[string]()}
	}
	return "", &json.UnmarshalTypeError{Value: "a list", Type: reflect.TypeFor[string]()}
}

// Check reports why v is not a literal the action would take as the
// parameter f, in the words the robot's decoder uses: "want integer, got
// number 1.5". A null v leaves the parameter unset and is never wrong.
func (f *Field) Check(v *structpb.Value) error {
	switch v.GetKind().(type) {
	case nil, *structpb.Value_NullValue:
		return nil
	}
	c := checker{}
	err := c.value(&f.Shape, v)
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.As(err, &typeErr):
		return fmt.Errorf("want %s, got %s", f.Type, typeErr.Value)
	case err != nil:
		return errors.New(strings.TrimPrefix(err.Error(), "json: "))
	case c.got != "":
		return fmt.Errorf("want %s, got %s", f.Type, c.got)
	}
	return nil
}

// checker walks a value as encoding/json decodes it: a value of the wrong
// type is remembered, the first one, and the walk goes on; an error of a
// type's own decoding ends it.
type checker struct {
	got string // what the first value of the wrong type was, as json says it
}

func (c *checker) wrong(got string) {
	if c.got == "" {
		c.got = got
	}
}

func (c *checker) value(s *Shape, v *structpb.Value) error {
	switch s.Kind {
	case Any:
		return nil
	case Text:
		switch v.GetKind().(type) {
		case *structpb.Value_StructValue:
			return &json.UnmarshalTypeError{Value: "a map", Type: reflect.TypeFor[string]()}
		case *structpb.Value_ListValue:
			return &json.UnmarshalTypeError{Value: "a list", Type: reflect.TypeFor[string]()}
		}
		return nil
	case Duration:
		switch k := v.GetKind().(type) {
		case *structpb.Value_StringValue:
			if utf8.ValidString(k.StringValue) {
				_, err := durationOf(k.StringValue, nil)
				return err
			}
		case *structpb.Value_NumberValue:
			if n := k.NumberValue; !math.IsNaN(n) && !math.IsInf(n, 0) {
				_, err := durationOf(n, nil)
				return err
			}
		}
		b, err := json.Marshal(v.AsInterface())
		if err != nil {
			return err
		}
		_, err = DecodeDuration(b)
		return err
	}
	switch k := v.GetKind().(type) {
	case nil, *structpb.Value_NullValue:
		// null leaves a Go value as it is.
	case *structpb.Value_StringValue:
		if s.Kind != String {
			c.wrong("string")
		}
	case *structpb.Value_BoolValue:
		if s.Kind != Boolean {
			c.wrong("bool")
		}
	case *structpb.Value_NumberValue:
		n := k.NumberValue
		switch {
		case math.IsNaN(n) || math.IsInf(n, 0):
			// The robot gets these as the strings "NaN", "Infinity"
			// and "-Infinity" (structpb's AsInterface), as JSON has no
			// such numbers.
			if s.Kind != String {
				c.wrong("string")
			}
		case s.Kind == Number:
		case s.Kind == Integer:
			if !isInteger(n) {
				c.wrong("number " + numberText(n))
			}
		default:
			c.wrong("number")
		}
	case *structpb.Value_ListValue:
		if s.Kind != List {
			c.wrong("array")
			return nil
		}
		if s.Elem.Kind == Any {
			return nil
		}
		for _, e := range k.ListValue.GetValues() {
			if err := c.value(s.Elem, e); err != nil {
				return err
			}
		}
	case *structpb.Value_StructValue:
		if s.Kind != Map {
			c.wrong("object")
			return nil
		}
		if s.Elem.Kind == Any {
			return nil
		}
		// In the order the robot's encoder writes them, so that the
		// first wrong value is the one the robot would name.
		fields := k.StructValue.GetFields()
		for _, name := range slices.Sorted(maps.Keys(fields)) {
			if err := c.value(s.Elem, fields[name]); err != nil {
				return err
			}
		}
	}
	return nil
}

// isInteger reports whether encoding/json decodes n into an int64: it
// parses the text it wrote n as, which for a large n is its shortest
// digits padded with zeros, and may then be out of range.
func isInteger(n float64) bool {
	if n == math.Trunc(n) && math.Abs(n) < 1<<53 {
		return true
	}
	_, err := strconv.ParseInt(numberText(n), 10, 64)
	return err == nil
}

// numberText writes n as encoding/json does.
func numberText(n float64) string {
	b, err := json.Marshal(n)
	if err != nil {
		return strconv.FormatFloat(n, 'g', -1, 64)
	}
	return string(b)
}
