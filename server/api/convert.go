package api

import (
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
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

var robotStatuses = map[registry.RobotStatus]casarev1.RobotStatus{
	registry.RobotIdle:     casarev1.RobotStatus_ROBOT_STATUS_IDLE,
	registry.RobotBusy:     casarev1.RobotStatus_ROBOT_STATUS_BUSY,
	registry.RobotDraining: casarev1.RobotStatus_ROBOT_STATUS_DRAINING,
	registry.RobotOffline:  casarev1.RobotStatus_ROBOT_STATUS_OFFLINE,
}

func robotStatusFromProto(s casarev1.RobotStatus) registry.RobotStatus {
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

// jsonOpts writes the JSON columns; the registry reads them back.
var jsonOpts = protojson.MarshalOptions{}

func marshalJSON(m proto.Message) (string, error) {
	if m == nil {
		return "", nil
	}
	b, err := jsonOpts.Marshal(m)
	return string(b), err
}

// Read answers show what of a row can be read: the JSON columns were
// stored by this server from valid messages, so one that cannot be read is
// a damaged row, and showing the rest of the job beats hiding it. The
// paths that act on a column (dispatch, submit) take the error instead.
func readable[T any](v T, _ error) T { return v }

// jobToProto is every answer's view of a job: the values of its secret
// inputs show as secret.Mask wherever they appear (inputs, result, status
// message), whoever asks.
func (s *Services) jobToProto(j *registry.Job) *casarev1.Job {
	return s.secretsOf(j).job(j)
}

func (s jobSecrets) job(j *registry.Job) *casarev1.Job {
	out := &casarev1.Job{
		Id:              j.ID,
		WorkflowName:    j.WorkflowName,
		WorkflowVersion: j.WorkflowVersion,
		Status:          jobStatusToProto(j.Status),
		StatusMessage:   s.text(j.StatusMessage),
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
		out.Inputs = s.inputs(readable(j.DecodeInputs()))
	}
	out.Result = s.result(readable(j.DecodeResult()))
	if j.Requires != "" {
		out.Requires = readable(j.DecodeRequires())
	}
	if j.TimeoutMillis > 0 {
		out.Timeout = durationpb.New(time.Duration(j.TimeoutMillis) * time.Millisecond)
	}
	if j.IdempotencyKey != nil {
		out.IdempotencyKey = *j.IdempotencyKey
	}
	return out
}

func (s jobSecrets) event(e *registry.JobEvent) *casarev1.JobEvent {
	return &casarev1.JobEvent{
		Id:         e.ID,
		JobId:      e.JobID,
		Time:       timestamp(e.Time),
		FromStatus: jobStatusToProto(e.FromStatus),
		ToStatus:   jobStatusToProto(e.ToStatus),
		Attempt:    e.Attempt,
		RobotId:    e.RobotID,
		Reason:     s.text(e.Reason),
		Actor:      e.Actor,
	}
}

func workflowVersionToProto(v *registry.WorkflowVersion) *casarev1.WorkflowVersion {
	return &casarev1.WorkflowVersion{
		Name:      v.Name,
		Version:   v.Version,
		Digest:    v.Digest,
		Workflow:  hideSecretDefaults(readable(v.DecodeDefinition())),
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
	out.Details = readable(e.DecodeDetails())
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
		out.Labels = readable(r.DecodeLabels())
	}
	out.Capabilities = readable(r.DecodeCapabilities())
	return out
}
