package engine

import (
	"encoding/json"
	"maps"
	"slices"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/casarerpa/casare/agent/workflow/expr"
	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

// applyInputs fills defaults, checks required inputs and declared types,
// and returns the inputs the workflow sees with the texts of its secret
// values, without changing the caller's map. Integer inputs become int64
// so that `inputs.count + 1` is integer arithmetic in CEL.
func applyInputs(specs map[string]*casarev1.InputSpec, given map[string]any) (map[string]any, []string, error) {
	out := make(map[string]any, len(given)+len(specs))
	for k, v := range given {
		out[k] = normalize(v)
	}
	var secrets []string
	for _, name := range slices.Sorted(maps.Keys(specs)) {
		spec := specs[name]
		v, ok := out[name]
		if !ok || v == nil {
			switch {
			case spec.GetDefault() != nil:
				v = spec.GetDefault().AsInterface()
			case spec.GetRequired():
				return nil, nil, &Error{Message: "input " + name + " is required", Business: true}
			default:
				continue
			}
		}
		v, err := expr.CheckInput(spec.GetType(), v)
		if err != nil {
			return nil, nil, &Error{Message: "input " + name + ": " + err.Error(), Business: true}
		}
		out[name] = v
		if spec.GetSecret() {
			if text := expr.Format(v); text != "" {
				secrets = append(secrets, text)
			}
		}
	}
	return out, secrets, nil
}

// normalize turns Go values into the JSON-like forms a workflow sees
// (float64, string, bool, nil, []any, map[string]any), so that inputs
// given as int or []string behave like those that came over the wire.
func normalize(v any) any {
	if pv, err := structpb.NewValue(v); err == nil {
		return pv.AsInterface()
	}
	// structpb takes only []any and map[string]any; JSON takes any slice,
	// map or struct a Go caller may pass.
	b, err := json.Marshal(v)
	if err != nil {
		return v
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		return v
	}
	return out
}
