// Package workflow reads and checks workflow definitions. The control plane
// and casarectl import it to validate against the step catalogue.
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
	if data[0] == '{' {
		// Checked before decoding: decoding thousands of levels costs
		// far more than this one pass.
		if jsonDepth(data) > maxSyntaxDepth {
			return nil, fmt.Errorf("parse workflow: nested more than %d deep, the limit is %d", maxSyntaxDepth, maxSyntaxDepth)
		}
	} else {
		// YAML 1.2: only true and false are booleans, so an id like "y"
		// or "on" stays the string it looks like.
		var node yaml.Node
		if err := yaml.Unmarshal(data, &node); err != nil {
			return nil, fmt.Errorf("parse workflow: %w", err)
		}
		if nodeDepth(&node, 0) > maxSyntaxDepth {
			return nil, fmt.Errorf("parse workflow: nested more than %d deep, the limit is %d", maxSyntaxDepth, maxSyntaxDepth)
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

// jsonDepth returns how deeply objects and arrays nest in data, which
// need not be valid JSON: the decoder reports what else is wrong. It
// stops counting past maxSyntaxDepth.
func jsonDepth(data []byte) int {
	depth, deepest := 0, 0
	inString, escaped := false, false
	for _, b := range data {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case b == '\\':
				escaped = true
			case b == '"':
				inString = false
			}
		case b == '"':
			inString = true
		case b == '{' || b == '[':
			if depth++; depth > deepest {
				if deepest = depth; deepest > maxSyntaxDepth {
					return deepest
				}
			}
		case b == '}' || b == ']':
			depth--
		}
	}
	return deepest
}

// nodeDepth returns how deeply a YAML node nests, stopping past
// maxSyntaxDepth. Aliases are not followed, which could take time
// exponential in their nesting: the YAML decoder bounds what they expand
// to, and the protobuf decoder's recursion limit what that nests.
func nodeDepth(n *yaml.Node, depth int) int {
	if n == nil || depth > maxSyntaxDepth {
		return depth
	}
	deepest := depth
	for _, c := range n.Content {
		deepest = max(deepest, nodeDepth(c, depth+1))
		if deepest > maxSyntaxDepth {
			break
		}
	}
	return deepest
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
