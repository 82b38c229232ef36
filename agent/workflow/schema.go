package workflow

import (
	"bytes"
	"encoding/json"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/casarerpa/casare/agent/workflow/spec"
	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

// SchemaID names the schema editors fetch.
const SchemaID = "https://casarerpa.dev/schemas/workflow.schema.json"

// Schema returns the JSON Schema of workflow files for editors: the shape
// of casare.v1.Workflow with, per action of cat, the parameters its with
// takes and which of them are required. A parameter may always be written
// as a ${{ }} expression instead of a literal.
func Schema(cat spec.Catalogue) ([]byte, error) {
	defs := map[string]any{}
	root := messageSchema((&casarev1.Workflow{}).ProtoReflect().Descriptor(), defs)
	root["$schema"] = "https://json-schema.org/draft/2020-12/schema"
	root["$id"] = SchemaID
	root["title"] = "CasareRPA workflow"

	step := defs["Step"].(map[string]any)
	props := step["properties"].(map[string]any)
	names := cat.Names()
	props["uses"] = map[string]any{
		"description": "The action, family.action (browser.click) or a core step (log).",
		"enum":        names,
	}
	var cases []any
	for _, name := range names {
		a := cat[name]
		defs["with."+name] = withSchema(a)
		cases = append(cases, map[string]any{
			"if": map[string]any{
				"properties": map[string]any{"uses": map[string]any{"const": name}},
				"required":   []string{"uses"},
			},
			"then": map[string]any{
				"properties": map[string]any{"with": map[string]any{"$ref": "#/$defs/with." + name}},
			},
		})
	}
	step["allOf"] = cases
	root["$defs"] = defs

	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(root); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// withSchema describes the parameters of one action.
func withSchema(a *spec.Action) map[string]any {
	s := map[string]any{"type": "object", "description": a.Summary}
	if a.AnyParams {
		// Free-form parameters (set): any key goes.
		return s
	}
	props := map[string]any{}
	required := []string{}
	for _, f := range a.Params {
		p := orExpression(fieldType(f.Type))
		if f.Doc != "" {
			p["description"] = f.Doc
		}
		props[f.Name] = p
		if f.Required {
			required = append(required, f.Name)
		}
	}
	s["properties"] = props
	s["additionalProperties"] = false
	if len(required) > 0 {
		s["required"] = required
	}
	return s
}

// expression matches a string holding a ${{ }} expression.
var expression = map[string]any{"type": "string", "pattern": `\$\{\{`}

// orExpression lets a parameter be given as an expression too.
func orExpression(t map[string]any) map[string]any {
	if t["type"] == "string" || len(t) == 0 {
		return t
	}
	return map[string]any{"anyOf": []any{t, expression}}
}

// fieldType turns the catalogue's type names into schema types.
func fieldType(name string) map[string]any {
	if elem, ok := strings.CutPrefix(name, "list of "); ok {
		return map[string]any{"type": "array", "items": orExpression(fieldType(elem))}
	}
	switch name {
	case "string", "number", "integer", "boolean", "object":
		return map[string]any{"type": name}
	case "duration":
		return map[string]any{"type": []string{"string", "number"}, "pattern": `^([0-9.]+(ns|us|µs|ms|s|m|h))+$|\$\{\{`}
	}
	return map[string]any{}
}

// messageSchema describes a proto message as its JSON (YAML) form, with
// snake_case names, registering the messages it refers to in defs.
func messageSchema(md protoreflect.MessageDescriptor, defs map[string]any) map[string]any {
	props := map[string]any{}
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		props[string(fd.Name())] = fieldSchema(fd, defs)
	}
	return map[string]any{"type": "object", "properties": props, "additionalProperties": false}
}

func fieldSchema(fd protoreflect.FieldDescriptor, defs map[string]any) map[string]any {
	if fd.IsMap() {
		return map[string]any{"type": "object", "additionalProperties": singular(fd.MapValue(), defs)}
	}
	if fd.IsList() {
		return map[string]any{"type": "array", "items": singular(fd, defs)}
	}
	return singular(fd, defs)
}

func singular(fd protoreflect.FieldDescriptor, defs map[string]any) map[string]any {
	switch fd.Kind() {
	case protoreflect.StringKind:
		return map[string]any{"type": "string"}
	case protoreflect.BoolKind:
		return map[string]any{"type": "boolean"}
	case protoreflect.Int32Kind, protoreflect.Int64Kind, protoreflect.Uint32Kind, protoreflect.Uint64Kind,
		protoreflect.Sint32Kind, protoreflect.Sint64Kind:
		return map[string]any{"type": "integer"}
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		return map[string]any{"type": "number"}
	case protoreflect.EnumKind:
		return map[string]any{"type": "string"}
	case protoreflect.MessageKind:
		md := fd.Message()
		switch md.FullName() {
		case "google.protobuf.Duration":
			return map[string]any{"type": "string", "pattern": `^-?[0-9]+(\.[0-9]+)?s$`, "description": "A duration in seconds, like 2s or 1.5s."}
		case "google.protobuf.Struct":
			return map[string]any{"type": "object"}
		case "google.protobuf.Value":
			return map[string]any{}
		case "google.protobuf.Timestamp":
			return map[string]any{"type": "string", "format": "date-time"}
		}
		name := string(md.Name())
		if _, ok := defs[name]; !ok {
			defs[name] = nil // recursion guard: Step holds Steps
			defs[name] = messageSchema(md, defs)
		}
		return map[string]any{"$ref": "#/$defs/" + name}
	}
	return map[string]any{}
}
