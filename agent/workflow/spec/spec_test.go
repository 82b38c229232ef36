package spec

import (
	"encoding/json"
	"math"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/structpb"
)

func value(t *testing.T, src string) *structpb.Value {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(src), &v); err != nil {
		t.Fatal(err)
	}
	out, err := structpb.NewValue(v)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func shape(k Kind) Shape { return Shape{Kind: k} }

func of(k Kind, elem Kind) Shape { return Shape{Kind: k, Elem: &Shape{Kind: elem}} }

func TestCheckSaysWhatTheDecoderSays(t *testing.T) {
	for _, tc := range []struct {
		name  string
		field Field
		value string
		want  string // empty: accepted
	}{
		{"StringTakesAString", Field{Type: "string", Shape: shape(String)}, `"x"`, ""},
		{"StringRefusesANumber", Field{Type: "string", Shape: shape(String)}, `1`, "want string, got number"},
		{"StringRefusesAList", Field{Type: "string", Shape: shape(String)}, `[]`, "want string, got array"},
		{"BooleanRefusesAString", Field{Type: "boolean", Shape: shape(Boolean)}, `"true"`, "want boolean, got string"},
		{"IntegerTakesAWholeNumber", Field{Type: "integer", Shape: shape(Integer)}, `3`, ""},
		{"IntegerRefusesAFraction", Field{Type: "integer", Shape: shape(Integer)}, `1.5`, "want integer, got number 1.5"},
		{"IntegerRefusesOutOfRange", Field{Type: "integer", Shape: shape(Integer)}, `1e21`, "want integer, got number 1e+21"},
		{"IntegerRefusesTheLowestAsWritten", Field{Type: "integer", Shape: shape(Integer)}, `-9223372036854775808`, "want integer, got number -9223372036854776000"},
		{"TextTakesANumber", Field{Type: "string", Shape: shape(Text)}, `5`, ""},
		{"TextRefusesAMap", Field{Type: "string", Shape: shape(Text)}, `{}`, "want string, got a map"},
		{"DurationTakesText", Field{Type: "duration", Shape: shape(Duration)}, `"1m30s"`, ""},
		{"DurationTakesSeconds", Field{Type: "duration", Shape: shape(Duration)}, `2.5`, ""},
		{"DurationRefusesNonsense", Field{Type: "duration", Shape: shape(Duration)}, `"soon"`, `"soon" is not a duration like 1.5s`},
		{"DurationRefusesNegative", Field{Type: "duration", Shape: shape(Duration)}, `-1`, "-1 is negative"},
		{"DurationRefusesAList", Field{Type: "duration", Shape: shape(Duration)}, `["2s"]`, `want a duration like 1.5s or a number of seconds, got ["2s"]`},
		{"ListNamesTheFirstWrongItem", Field{Type: "list of integer", Shape: of(List, Integer)}, `[1, "a", 1.5]`, "want list of integer, got string"},
		{"ListTakesNullItems", Field{Type: "list of string", Shape: of(List, String)}, `["a", null]`, ""},
		{"MapNamesTheFirstKeyInOrder", Field{Type: "object", Shape: of(Map, String)}, `{"b": 1, "a": true}`, "want object, got bool"},
		{"MapOfAnyTakesAnything", Field{Type: "object", Shape: of(Map, Any)}, `{"a": [1, {}]}`, ""},
		{"AnyTakesAnything", Field{Type: "any", Shape: shape(Any)}, `[{"a": 1}]`, ""},
		{"NullIsUnset", Field{Type: "duration", Shape: shape(Duration)}, `null`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.field.Check(value(t, tc.value))
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Check(%s) = %v, want it accepted", tc.value, err)
			case tc.want != "" && (err == nil || err.Error() != tc.want):
				t.Fatalf("Check(%s) = %v, want %q", tc.value, err, tc.want)
			}
		})
	}
}

// The robot gets numbers JSON cannot write as the strings structpb makes
// of them.
func TestCheckTakesNonFiniteNumbersAsStrings(t *testing.T) {
	nan := structpb.NewNumberValue(math.NaN())
	if err := (&Field{Type: "string", Shape: shape(String)}).Check(nan); err != nil {
		t.Errorf("string: %v", err)
	}
	if err := (&Field{Type: "integer", Shape: shape(Integer)}).Check(nan); err == nil || err.Error() != "want integer, got string" {
		t.Errorf("integer: %v", err)
	}
	if err := (&Field{Type: "duration", Shape: shape(Duration)}).Check(structpb.NewNumberValue(math.Inf(1))); err == nil || err.Error() != `"Infinity" is not a duration like 1.5s` {
		t.Errorf("duration: %v", err)
	}
}

func TestDecodeDuration(t *testing.T) {
	for src, want := range map[string]time.Duration{`"1.5s"`: 1500 * time.Millisecond, `2`: 2 * time.Second, `"0s"`: 0} {
		if got, err := DecodeDuration([]byte(src)); err != nil || got != want {
			t.Errorf("DecodeDuration(%s) = %v, %v; want %v", src, got, err, want)
		}
	}
	if _, err := DecodeDuration([]byte(`"-2s"`)); err == nil || err.Error() != `"-2s" is negative` {
		t.Errorf("negative: %v", err)
	}
}

func TestDecodeText(t *testing.T) {
	for src, want := range map[string]string{`"a"`: "a", `1.25`: "1.25", `true`: "true", `null`: ""} {
		if got, err := DecodeText([]byte(src)); err != nil || got != want {
			t.Errorf("DecodeText(%s) = %q, %v; want %q", src, got, err, want)
		}
	}
	if _, err := DecodeText([]byte(`[1]`)); err == nil {
		t.Error("a list became text")
	}
}

func TestLookupSuggestsTheClosestName(t *testing.T) {
	c := NewCatalogue(&Action{Name: "browser.click"}, &Action{Name: "log"})
	if _, err := c.Lookup("brower.click"); err == nil || err.Error() != `unknown step "brower.click"; did you mean "browser.click"?` {
		t.Fatalf("err = %v", err)
	}
	if _, err := c.Lookup("spreadsheet.open"); err == nil || err.Error() != `unknown step "spreadsheet.open"` {
		t.Fatalf("err = %v", err)
	}
	if a, err := c.Lookup("log"); err != nil || a.Name != "log" {
		t.Fatalf("lookup = %v, %v", a, err)
	}
}

func TestKindNamesItsConstant(t *testing.T) {
	if got := List.String(); got != "List" {
		t.Errorf("List.String() = %q", got)
	}
	if got := Kind(200).String(); got != "Kind(200)" {
		t.Errorf("Kind(200).String() = %q", got)
	}
}
