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
	jsonData := data
	if data[0] != '{' {
		// YAML 1.2: only true and false are booleans, so an id like "y"
		// or "on" stays the string it looks like.
		var doc any
		if err := yaml.Unmarshal(data, &doc); err != nil {
			return nil, fmt.Errorf("parse workflow: %w", err)
		}
		var err error
		if jsonData, err = json.Marshal(doc); err != nil {
			return nil, fmt.Errorf("parse workflow: %w (mapping keys must be strings)", err)
		}
	}
	wf := &casarev1.Workflow{}
	if err := protojson.Unmarshal(jsonData, wf); err != nil {
		return nil, fmt.Errorf("parse workflow: %s", cleanProtoError(err))
	}
	return wf, nil
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
