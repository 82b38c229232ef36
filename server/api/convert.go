package api

import (
	"encoding/json"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/server/auth"
	"github.com/casarerpa/casare/server/registry"
)

// Conversions between the API messages and the registry rows live here and
// nowhere else.

var jobStatuses = map[registry.JobStatus]casarev1.JobStatus{
	registry.JobPending:   casarev1.JobStatus_JOB_STATUS_PENDING,
	registry.JobAssigned:  casarev1.JobStatus_JOB_STATUS_ASSIGNED,
	registry.JobRunning:   casarev1.JobStatus_JOB_STATUS_RUNNING,
	registry.JobSucceeded: casarev1.JobStatus_JOB_STATUS_SUCCEEDED,
	registry.JobFailed:    casarev1.JobStatus_JOB_STATUS_FAILED,
	registry.JobCancelled: casarev1.JobStatus_JOB_STATUS_CANCELLED,
}

func jobStatusToProto(s registry.JobStatus) casarev1.JobStatus {
	return jobStatuses[s]
}

func jobStatusFromProto(s casarev1.JobStatus) registry.JobStatus {
	for k, v := range jobStatuses {
		if v == s {
			return k
		}
	}
	return ""
}

var robotStatuses = map[string]casarev1.RobotStatus{
	"idle":     casarev1.RobotStatus_ROBOT_STATUS_IDLE,
	"busy":     casarev1.RobotStatus_ROBOT_STATUS_BUSY,
	"draining": casarev1.RobotStatus_ROBOT_STATUS_DRAINING,
	"offline":  casarev1.RobotStatus_ROBOT_STATUS_OFFLINE,
}

func robotStatusFromProto(s casarev1.RobotStatus) string {
	for k, v := range robotStatuses {
		if v == s {
			return k
		}
	}
	return ""
}

func timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func timestampPtr(t *time.Time) *timestamppb.Timestamp {
	if t == nil {
		return nil
	}
	return timestamppb.New(*t)
}

// jsonOpts writes the JSON columns; stored text is read back with
// DiscardUnknown so rows written by a newer version still load.
var (
	jsonOpts   = protojson.MarshalOptions{}
	unjsonOpts = protojson.UnmarshalOptions{DiscardUnknown: true}
)

func marshalJSON(m proto.Message) (string, error) {
	if m == nil {
		return "", nil
	}
	b, err := jsonOpts.Marshal(m)
	return string(b), err
}

func unmarshalJSON[T proto.Message](s string, m T) T {
	if s == "" {
		return m
	}
	// Stored by this server from a valid message; a failure means a damaged
	// row, and showing the rest of the job beats hiding it.
	_ = unjsonOpts.Unmarshal([]byte(s), m)
	return m
}

func jobToProto(j *registry.Job) *casarev1.Job {
	out := &casarev1.Job{
		Id:              j.ID,
		WorkflowName:    j.WorkflowName,
		WorkflowVersion: j.WorkflowVersion,
		Status:          jobStatusToProto(j.Status),
		StatusMessage:   j.StatusMessage,
		Priority:        casarev1.JobPriority(j.Priority),
		Attempt:         j.Attempt,
		MaxAttempts:     j.MaxAttempts,
		RobotId:         j.RobotID,
		CreatedAt:       timestamp(j.CreatedAt),
		UpdatedAt:       timestamp(j.UpdatedAt),
		StartedAt:       timestampPtr(j.StartedAt),
		FinishedAt:      timestampPtr(j.FinishedAt),
		CreatedBy:       j.CreatedBy,
		Progress:        j.Progress,
		CurrentStep:     j.CurrentStep,
	}
	if j.Inputs != "" {
		out.Inputs = unmarshalJSON(j.Inputs, &structpb.Struct{})
	}
	if j.Result != "" {
		out.Result = unmarshalJSON(j.Result, &structpb.Struct{})
	}
	if j.Requires != "" {
		out.Requires = unmarshalJSON(j.Requires, &casarev1.Requirements{})
	}
	if j.TimeoutMillis > 0 {
		out.Timeout = durationpb.New(time.Duration(j.TimeoutMillis) * time.Millisecond)
	}
	if j.IdempotencyKey != nil {
		out.IdempotencyKey = *j.IdempotencyKey
	}
	return out
}

func jobEventToProto(e *registry.JobEvent) *casarev1.JobEvent {
	return &casarev1.JobEvent{
		Id:         e.ID,
		JobId:      e.JobID,
		Time:       timestamp(e.Time),
		FromStatus: jobStatusToProto(e.FromStatus),
		ToStatus:   jobStatusToProto(e.ToStatus),
		Attempt:    e.Attempt,
		RobotId:    e.RobotID,
		Reason:     e.Reason,
		Actor:      e.Actor,
	}
}

func workflowVersionToProto(v *registry.WorkflowVersion) *casarev1.WorkflowVersion {
	return &casarev1.WorkflowVersion{
		Name:      v.Name,
		Version:   v.Version,
		Digest:    v.Digest,
		Workflow:  unmarshalJSON(v.Definition, &casarev1.Workflow{}),
		CreatedAt: timestamp(v.CreatedAt),
		CreatedBy: v.CreatedBy,
	}
}

func tokenToProto(t *registry.APIToken) *casarev1.ApiToken {
	return &casarev1.ApiToken{
		Id:         t.ID,
		Name:       t.Name,
		Role:       auth.RoleToProto(t.Role),
		CreatedAt:  timestamp(t.CreatedAt),
		CreatedBy:  t.CreatedBy,
		ExpiresAt:  timestampPtr(t.ExpiresAt),
		RevokedAt:  timestampPtr(t.RevokedAt),
		LastUsedAt: timestampPtr(t.LastUsedAt),
	}
}

func auditToProto(e *registry.AuditEvent) *casarev1.AuditEvent {
	out := &casarev1.AuditEvent{
		Id:           e.ID,
		Time:         timestamp(e.Time),
		Actor:        e.Actor,
		ActorTokenId: e.ActorTokenID,
		Action:       e.Action,
		Target:       e.Target,
		Outcome:      e.Outcome,
		Peer:         e.Peer,
	}
	if e.Details != "" {
		var m map[string]any
		if json.Unmarshal([]byte(e.Details), &m) == nil {
			out.Details, _ = structpb.NewStruct(m)
		}
	}
	return out
}

func robotToProto(r *registry.Robot) *casarev1.Robot {
	out := &casarev1.Robot{
		Id:              r.ID,
		Name:            r.Name,
		Status:          robotStatuses[r.Status],
		Version:         r.Version,
		Os:              r.OS,
		Hostname:        r.Hostname,
		MaxJobs:         r.MaxJobs,
		LastSeen:        timestampPtr(r.LastSeen),
		ConnectedSince:  timestampPtr(r.ConnectedSince),
		CreatedAt:       timestamp(r.CreatedAt),
		CertExpiresAt:   timestampPtr(r.CertExpiresAt),
		ProtocolVersion: r.ProtocolVersion,
		ProtocolProblem: r.ProtocolProblem,
	}
	if r.Labels != "" {
		_ = json.Unmarshal([]byte(r.Labels), &out.Labels)
	}
	if r.Capabilities != "" {
		_ = json.Unmarshal([]byte(r.Capabilities), &out.Capabilities)
	}
	return out
}
