package expr

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/common/types/traits"
)

// Native turns a CEL value into the JSON-like form steps and results use:
// string, float64, bool, nil, []any and map[string]any. Numbers become
// float64 as they would through JSON; bytes become base64 text,
// timestamps RFC 3339 and durations text like 1.5s.
func Native(v ref.Val) (any, error) {
	switch v := v.(type) {
	case types.String:
		return string(v), nil
	case types.Double:
		return float64(v), nil
	case types.Int:
		return float64(v), nil
	case types.Uint:
		return float64(v), nil
	case types.Bool:
		return bool(v), nil
	case types.Null:
		return nil, nil
	case types.Bytes:
		return base64.StdEncoding.EncodeToString(v), nil
	case types.Timestamp:
		return v.Time.Format(time.RFC3339Nano), nil
	case types.Duration:
		return v.Duration.String(), nil
	case *types.Err:
		return nil, v
	}
	// Values that came in from the scope unchanged go back out as they
	// are, without a copy.
	switch raw := v.Value().(type) {
	case map[string]any:
		return raw, nil
	case []any:
		return raw, nil
	}
	switch v := v.(type) {
	case traits.Lister:
		n, _ := v.Size().(types.Int)
		out := make([]any, 0, int(n))
		for it := v.Iterator(); it.HasNext() == types.True; {
			e, err := Native(it.Next())
			if err != nil {
				return nil, err
			}
			out = append(out, e)
		}
		return out, nil
	case traits.Mapper:
		out := map[string]any{}
		for it := v.Iterator(); it.HasNext() == types.True; {
			k := it.Next()
			e, err := Native(v.Get(k))
			if err != nil {
				return nil, err
			}
			key, ok := k.(types.String)
			if !ok {
				kn, err := Native(k)
				if err != nil {
					return nil, err
				}
				out[Format(kn)] = e
				continue
			}
			out[string(key)] = e
		}
		return out, nil
	}
	if t, ok := v.Value().(fmt.Stringer); ok {
		return t.String(), nil
	}
	return nil, fmt.Errorf("a value of type %s cannot leave an expression", v.Type())
}

// Format writes a value into text: integral numbers without a trailing
// .0, null as nothing, maps and lists as JSON.
func Format(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	case float32:
		return strconv.FormatFloat(float64(v), 'f', -1, 32)
	case nil:
		return ""
	case bool, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64:
		return fmt.Sprint(v)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// Describe names a value's kind for error messages, in workflow terms.
func Describe(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case string:
		return fmt.Sprintf("the string %q", v)
	case bool:
		return fmt.Sprint(v)
	case float64, float32, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64:
		return "the number " + Format(v)
	case map[string]any:
		return "a map"
	case []any:
		return "a list"
	}
	return fmt.Sprintf("a %T", v)
}
