package expr

import (
	"encoding/json"
	"fmt"
	"math"
)

// CheckInput checks v, a JSON-like value, against an input type (string,
// number, integer, boolean, object, array, any or empty) and returns it as
// expressions see it: integers as int64, so that `inputs.count + 1` is
// integer arithmetic.
func CheckInput(want string, v any) (any, error) {
	ok := true
	switch want {
	case "", "any":
	case "string":
		_, ok = v.(string)
	case "number":
		_, ok = v.(float64)
	case "integer":
		f, isNum := v.(float64)
		if isNum && f == math.Trunc(f) && math.Abs(f) < 1<<53 {
			return int64(f), nil
		}
		ok = false
	case "boolean":
		_, ok = v.(bool)
	case "object":
		_, ok = v.(map[string]any)
	case "array":
		_, ok = v.([]any)
	default:
		return nil, fmt.Errorf("unknown type %q", want)
	}
	if !ok {
		return nil, fmt.Errorf("want %s, got %s", want, shortJSON(v))
	}
	return v, nil
}

// shortJSON shows a value in an error as the JSON it came in, cut short.
func shortJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	if len(b) > 60 {
		return string(b[:57]) + "..."
	}
	return string(b)
}
