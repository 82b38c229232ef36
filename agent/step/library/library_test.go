package library

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/casarerpa/casare/agent/workflow"
)

// The generated files must be what the definitions give now: a step added
// or changed without go generate fails here.
func TestGeneratedFilesAreCurrent(t *testing.T) {
	cat := Catalogue(Config{})
	schema, err := workflow.Schema(cat)
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string][]byte{
		"../../workflow/workflow.schema.json": schema,
		"CATALOGUE.md":                        Markdown(cat),
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

func TestCatalogueDocumentsEveryAction(t *testing.T) {
	cat := Catalogue(Config{})
	md := string(Markdown(cat))
	for _, name := range cat.Names() {
		if !strings.Contains(md, "### `"+name+"`") {
			t.Errorf("CATALOGUE.md lacks %s", name)
		}
	}
	for _, want := range []string{"| `message` | string | yes |", "Needs a robot with the `shell` capability.", "- business error: the condition does not hold"} {
		if !strings.Contains(md, want) {
			t.Errorf("CATALOGUE.md lacks %q", want)
		}
	}
}

func TestSchemaDescribesActions(t *testing.T) {
	data, err := workflow.Schema(Catalogue(Config{}))
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
