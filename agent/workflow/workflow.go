// Package workflow reads and checks workflow definitions against step
// specs (package spec): the robot against its live catalogue's, the control
// plane and casarectl against the generated table in package builtin. It
// imports nothing else of agent/, so neither links the step families.
package workflow

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"buf.build/go/protovalidate"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/casarerpa/casare/agent/workflow/expr"
	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

// Parse reads a workflow written in JSON or YAML. Unknown fields are errors,
// so a misspelt key is reported rather than ignored. Parse does not validate;
// see Validate.
func Parse(data []byte) (*casarev1.Workflow, error) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return nil, errors.New("parse workflow: the file is empty")
	}
	if len(data) > MaxDefinitionBytes {
		return nil, fmt.Errorf("parse workflow: the file is %s, the limit is %s", expr.FormatSize(len(data)), expr.FormatSize(MaxDefinitionBytes))
	}
	jsonData := data
	if data[0] != '{' {
		// YAML 1.2: only true and false are booleans, so an id like "y"
		// or "on" stays the string it looks like.
		var node yaml.Node
		if err := yaml.Unmarshal(data, &node); err != nil {
			return nil, fmt.Errorf("parse workflow: %w", err)
		}
		if err := checkShape(nodeShape(&node)); err != nil {
			return nil, err
		}
		var doc any
		if err := node.Decode(&doc); err != nil {
			return nil, fmt.Errorf("parse workflow: %w", err)
		}
		var err error
		if jsonData, err = json.Marshal(doc); err != nil {
			return nil, fmt.Errorf("parse workflow: %w (mapping keys must be strings)", err)
		}
	}
	// Checked before decoding, in one pass: decoding thousands of levels,
	// or millions of values, costs far more. A YAML file is checked again
	// as the JSON it became, which its aliases may have made larger.
	if err := checkShape(jsonShape(jsonData)); err != nil {
		return nil, err
	}
	wf := &casarev1.Workflow{}
	if err := (protojson.UnmarshalOptions{RecursionLimit: MaxMessageDepth}).Unmarshal(jsonData, wf); err != nil {
		return nil, fmt.Errorf("parse workflow: %s", cleanProtoError(err))
	}
	return wf, nil
}

// MaxMessageDepth is the protobuf recursion limit for decoding a message
// that holds a workflow: room for steps MaxDepth deep, each a message, with
// with values MaxValueDepth deep inside them (a Struct and a Value each).
const MaxMessageDepth = MaxDepth + 2*MaxValueDepth + 8

// checkShape refuses a file that nests past maxSyntaxDepth or holds more
// than MaxValues values.
func checkShape(depth, values int) error {
	if depth > maxSyntaxDepth {
		return fmt.Errorf("parse workflow: nested more than %d deep, the limit is %d", maxSyntaxDepth, maxSyntaxDepth)
	}
	if values > MaxValues {
		return fmt.Errorf("parse workflow: more than %d values in the workflow, the limit is %d", MaxValues, MaxValues)
	}
	return nil
}

// jsonShape returns how deeply objects and arrays nest in data and how
// many values it holds (object keys are not values), stopping past
// maxSyntaxDepth or MaxValues. data need not be valid JSON: the decoder
// reports what else is wrong. A value is the document, or one after a
// comma, or the first in a non-empty object or array: exact for valid
// JSON, without telling values apart.
func jsonShape(data []byte) (depth, values int) {
	level, deepest := 0, 0
	values = 1
	inString, escaped, opened := false, false, false
	for _, b := range data {
		if inString {
			switch {
			case escaped:
				escaped = false
			case b == '\\':
				escaped = true
			case b == '"':
				inString = false
			}
			continue
		}
		if opened {
			// What follows an opening bracket: a first value unless it
			// closes at once.
			switch b {
			case ' ', '\t', '\n', '\r':
				continue
			case '}', ']':
			default:
				values++
			}
			opened = false
		}
		switch b {
		case '"':
			inString = true
		case ',':
			if values++; values > MaxValues {
				return deepest, values
			}
		case '{', '[':
			opened = true
			if level++; level > deepest {
				if deepest = level; deepest > maxSyntaxDepth {
					return deepest, values
				}
			}
		case '}', ']':
			level--
		}
	}
	return deepest, values
}

// nodeShape returns how deeply a YAML node nests and how many values it
// holds (mapping keys are not values), stopping past maxSyntaxDepth or
// MaxValues. Aliases are not followed, which could take time exponential
// in their nesting: each counts once here, and the JSON the file becomes
// is counted again before it is decoded.
func nodeShape(n *yaml.Node) (depth, values int) {
	s := yamlShape{}
	if n != nil && n.Kind == yaml.DocumentNode {
		for _, c := range n.Content {
			s.walk(c, 1)
		}
	} else {
		s.walk(n, 0)
	}
	return s.deepest, s.values
}

type yamlShape struct{ deepest, values int }

// walk reports whether a limit was passed at or below n, at depth.
func (s *yamlShape) walk(n *yaml.Node, depth int) bool {
	if n == nil {
		return false
	}
	s.deepest = max(s.deepest, depth)
	if s.values++; s.deepest > maxSyntaxDepth || s.values > MaxValues {
		return true
	}
	for i, c := range n.Content {
		if n.Kind == yaml.MappingNode && i%2 == 0 {
			// A key: its depth counts, the value it is does not.
			if s.walk(c, depth+1) {
				return true
			}
			s.values--
			continue
		}
		if s.walk(c, depth+1) {
			return true
		}
	}
	return false
}

// cleanProtoError drops the "proto:" prefix and the invisible-space
// formatting protojson uses to keep its messages unstable.
func cleanProtoError(err error) string {
	msg := strings.ReplaceAll(err.Error(), "\u00a0", " ")
	return strings.TrimPrefix(msg, "proto: ")
}

// protovalidateError is the error protovalidate reports violations with.
type protovalidateError = protovalidate.ValidationError

var validator = func() protovalidate.Validator {
	v, err := protovalidate.New()
	if err != nil {
		panic(err)
	}
	return v
}()
