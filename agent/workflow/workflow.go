// Package workflow reads and checks workflow definitions. The control plane
// and casarectl import it to validate; it imports nothing else of agent/.
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

// ValidationError lists every problem of a workflow, each with its path.
type ValidationError struct {
	Problems []string
}

func (e *ValidationError) Error() string {
	return "invalid workflow:\n  " + strings.Join(e.Problems, "\n  ")
}

var validator = func() protovalidate.Validator {
	v, err := protovalidate.New()
	if err != nil {
		panic(err)
	}
	return v
}()

// Validate checks a workflow against the rules of the API and returns a
// *ValidationError with every problem at once, or nil.
func Validate(wf *casarev1.Workflow) error {
	err := validator.Validate(wf)
	if err == nil {
		return nil
	}
	var verr *protovalidate.ValidationError
	if !errors.As(err, &verr) {
		return fmt.Errorf("validate workflow: %w", err)
	}
	problems := make([]string, len(verr.Violations))
	for i, v := range verr.Violations {
		problems[i] = v.String()
	}
	return &ValidationError{Problems: problems}
}
