package api

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/structpb"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

func TestCheckInputs(t *testing.T) {
	wf := &casarev1.Workflow{Inputs: map[string]*casarev1.InputSpec{
		"url":   {Type: "string", Required: true},
		"count": {Type: "integer", Default: structpb.NewNumberValue(5)},
		"tags":  {Type: "array"},
		"any":   {},
	}}
	tests := []struct {
		name    string
		wf      *casarev1.Workflow
		given   map[string]any
		want    map[string]any
		problem string
	}{
		{"DefaultsFillIn", wf, map[string]any{"url": "u"}, map[string]any{"url": "u", "count": 5.0}, ""},
		{"GivenBeatsDefault", wf, map[string]any{"url": "u", "count": 2}, map[string]any{"url": "u", "count": 2.0}, ""},
		{"NullTakesDefault", wf, map[string]any{"url": "u", "count": nil}, map[string]any{"url": "u", "count": 5.0}, ""},
		{"Required", wf, map[string]any{}, nil, "inputs.url: required"},
		{"NotInteger", wf, map[string]any{"url": "u", "count": 1.5}, nil, "inputs.count: must be of type integer"},
		{"WrongType", wf, map[string]any{"url": 3, "tags": "x"}, nil, "inputs.tags: must be of type array"},
		{"Undeclared", wf, map[string]any{"url": "u", "colour": "red"}, nil, "inputs.colour: not an input of the workflow"},
		{"AnyTakesAnything", wf, map[string]any{"url": "u", "any": map[string]any{"a": 1}}, map[string]any{"url": "u", "count": 5.0, "any": map[string]any{"a": 1.0}}, ""},
		{"NoDeclarationsTakeAll", &casarev1.Workflow{}, map[string]any{"x": true}, map[string]any{"x": true}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			given, err := structpb.NewStruct(tt.given)
			if err != nil {
				t.Fatal(err)
			}
			got, err := checkInputs(tt.wf, given)
			if tt.problem != "" {
				if err == nil || !strings.Contains(err.Error(), tt.problem) {
					t.Fatalf("checkInputs() error = %v, want %q", err, tt.problem)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want, _ := structpb.NewStruct(tt.want)
			if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
				t.Fatalf("checkInputs() (-want +got):\n%s", diff)
			}
		})
	}
}

func TestMergeRequirements(t *testing.T) {
	wf := &casarev1.Requirements{Capabilities: []string{"browser", "excel"}, Labels: map[string]string{"app": "sap"}}
	got, err := mergeRequirements(wf, &casarev1.Requirements{Capabilities: []string{"browser", "shell"}, Labels: map[string]string{"site": "hq"}})
	if err != nil {
		t.Fatal(err)
	}
	want := &casarev1.Requirements{Capabilities: []string{"browser", "excel", "shell"}, Labels: map[string]string{"app": "sap", "site": "hq"}}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Fatalf("merged (-want +got):\n%s", diff)
	}
	_, err = mergeRequirements(wf, &casarev1.Requirements{Labels: map[string]string{"app": "oracle"}})
	if err == nil || !strings.Contains(err.Error(), "requires.labels.app") {
		t.Fatalf("conflicting label: %v", err)
	}
}
