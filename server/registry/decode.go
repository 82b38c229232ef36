package registry

import (
	"encoding/json"
	"fmt"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

// The JSON columns are decoded here and nowhere else, into typed values,
// so a damaged row is an error its reader can act on rather than a value
// silently missing. Stored text is read with DiscardUnknown so rows written
// by a newer version still load.
var unjson = protojson.UnmarshalOptions{DiscardUnknown: true}

func decodeProto[T proto.Message](column, stored string, m T) (T, error) {
	if stored == "" {
		return m, nil
	}
	if err := unjson.Unmarshal([]byte(stored), m); err != nil {
		return m, fmt.Errorf("%s: stored value cannot be read: %w", column, err)
	}
	return m, nil
}

// DecodeInputs returns the job's inputs; empty when it has none. The
// error names the column when the stored text cannot be read.
func (j *Job) DecodeInputs() (*structpb.Struct, error) {
	out, err := decodeProto("inputs", j.Inputs, &structpb.Struct{})
	if err != nil {
		return nil, fmt.Errorf("job %s %w", j.ID, err)
	}
	return out, nil
}

// DecodeResult returns the job's result, nil until it succeeded.
func (j *Job) DecodeResult() (*structpb.Struct, error) {
	if j.Result == "" {
		return nil, nil
	}
	out, err := decodeProto("result", j.Result, &structpb.Struct{})
	if err != nil {
		return nil, fmt.Errorf("job %s %w", j.ID, err)
	}
	return out, nil
}

// DecodeRequires returns what a robot needs to run the job; empty when
// nothing in particular.
func (j *Job) DecodeRequires() (*casarev1.Requirements, error) {
	out, err := decodeProto("requires", j.Requires, &casarev1.Requirements{})
	if err != nil {
		return nil, fmt.Errorf("job %s %w", j.ID, err)
	}
	return out, nil
}

// DecodeDefinition returns the workflow the version holds.
func (w *WorkflowVersion) DecodeDefinition() (*casarev1.Workflow, error) {
	out, err := decodeProto("definition", w.Definition, &casarev1.Workflow{})
	if err != nil {
		return nil, fmt.Errorf("workflow %s version %d %w", w.Name, w.Version, err)
	}
	return out, nil
}

// DecodeDetails returns the event's details, nil when it has none.
func (e *AuditEvent) DecodeDetails() (*structpb.Struct, error) {
	if e.Details == "" {
		return nil, nil
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(e.Details), &m); err != nil {
		return nil, fmt.Errorf("audit event %d details: stored value cannot be read: %w", e.ID, err)
	}
	out, err := structpb.NewStruct(m)
	if err != nil {
		return nil, fmt.Errorf("audit event %d details: %w", e.ID, err)
	}
	return out, nil
}

// DecodeLabels returns the robot's labels, never nil.
func (rb *Robot) DecodeLabels() (map[string]string, error) {
	return decodeLabels("robot "+rb.ID, rb.Labels)
}

func decodeLabels(owner, stored string) (map[string]string, error) {
	labels := map[string]string{}
	if stored == "" {
		return labels, nil
	}
	if err := json.Unmarshal([]byte(stored), &labels); err != nil {
		return map[string]string{}, fmt.Errorf("%s labels: stored value cannot be read: %w", owner, err)
	}
	return labels, nil
}

// DecodeCapabilities returns the capabilities the robot said it has.
func (rb *Robot) DecodeCapabilities() ([]string, error) {
	if rb.Capabilities == "" {
		return nil, nil
	}
	var caps []string
	if err := json.Unmarshal([]byte(rb.Capabilities), &caps); err != nil {
		return nil, fmt.Errorf("robot %s capabilities: stored value cannot be read: %w", rb.ID, err)
	}
	return caps, nil
}

// EncodeLabels is the stored form of labels.
func EncodeLabels(labels map[string]string) string {
	if labels == nil {
		labels = map[string]string{}
	}
	// A map of strings always marshals.
	b, _ := json.Marshal(labels)
	return string(b)
}

// EncodeCapabilities is the stored form of capabilities.
func EncodeCapabilities(caps []string) string {
	if caps == nil {
		caps = []string{}
	}
	b, _ := json.Marshal(caps)
	return string(b)
}

// DecodeWorkflow returns the definition the job runs.
func (j *Job) DecodeWorkflow() (*casarev1.Workflow, error) {
	out, err := decodeProto("workflow", j.Workflow, &casarev1.Workflow{})
	if err != nil {
		return nil, fmt.Errorf("job %s %w", j.ID, err)
	}
	return out, nil
}
