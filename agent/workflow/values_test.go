package workflow

import (
	"fmt"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

// typical is a workflow of n computing steps with the fields real ones
// have: a with of a few values, an if, and every few steps a retry.
func typical(n int) *casarev1.Workflow {
	wf := &casarev1.Workflow{
		Name:    "typical",
		Inputs:  map[string]*casarev1.InputSpec{"region": {Type: "string", Default: structpb.NewStringValue("eu")}},
		Outputs: map[string]string{"rows": "${{ steps.fetch.outputs.rows }}"},
		Timeout: durationpb.New(time.Hour),
	}
	wf.Steps = append(wf.Steps, &casarev1.Step{Id: "fetch", Uses: "log", With: message("x")})
	for g := 0; len(wf.Steps) < n; g++ {
		w, _ := structpb.NewStruct(map[string]any{
			"message": fmt.Sprintf("${{ steps.fetch.outputs.rows.size() > %d && inputs.region == 'eu' }}", g),
			"tags":    []any{"a", "b"},
			"extra":   map[string]any{"n": 1, "ok": true, "none": nil},
		})
		s := &casarev1.Step{Id: fmt.Sprintf("s%d", g), Name: "compute", Uses: "log", If: "inputs.region == 'eu'", With: w}
		if g%4 == 0 {
			s.Retry = &casarev1.Retry{Attempts: 3, Backoff: durationpb.New(time.Second)}
			s.OnError = []*casarev1.Step{{Id: "report", Uses: "log", With: message("failed")}}
		}
		wf.Steps = append(wf.Steps, s)
	}
	return wf
}

// TestValuesCountedAlike checks that a workflow's values are counted the
// same whether it arrives as a message, as JSON or as YAML, so that one
// accepted by the API can be written out and parsed again.
func TestValuesCountedAlike(t *testing.T) {
	for _, tc := range []struct {
		name string
		wf   *casarev1.Workflow
	}{
		{"Typical", typical(50)},
		{"Nested", nested(MaxDepth)},
		{"Groups", groups(3, 10)},
		{"Empty", &casarev1.Workflow{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data, err := protojson.Marshal(tc.wf)
			if err != nil {
				t.Fatal(err)
			}
			c := &limitCheck{}
			if err := c.check(tc.wf); err != nil {
				t.Fatal(err)
			}
			_, fromJSON := jsonShape(data)
			var doc any
			if err := yaml.Unmarshal(data, &doc); err != nil {
				t.Fatal(err)
			}
			yamlData, err := yaml.Marshal(doc)
			if err != nil {
				t.Fatal(err)
			}
			var node yaml.Node
			if err := yaml.Unmarshal(yamlData, &node); err != nil {
				t.Fatal(err)
			}
			_, fromYAML := nodeShape(&node)
			if c.values != fromJSON || fromJSON != fromYAML {
				t.Fatalf("%d values in the message, %d in its JSON, %d in its YAML:\n%s", c.values, fromJSON, fromYAML, data)
			}
			t.Logf("%d values", c.values)
		})
	}
	if _, n := jsonShape([]byte(`{"a": [ ], "b": {}, "c": [1, "x,]{", {"d": null}], "e": "\"["}`)); n != 9 {
		t.Errorf("%d values, want 9", n)
	}
}
