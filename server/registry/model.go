package registry

import (
	"time"

	"github.com/uptrace/bun"
)

// JobStatus is a job's status as stored: the lower-case name of the API enum
// without its prefix, so rows read well in SQL.
type JobStatus string

// Job statuses. See DESIGN.md "Jobs" for the transitions.
const (
	JobPending   JobStatus = "pending"
	JobAssigned  JobStatus = "assigned"
	JobRunning   JobStatus = "running"
	JobSucceeded JobStatus = "succeeded"
	JobFailed    JobStatus = "failed"
	JobCancelled JobStatus = "cancelled"
)

// FinishedStatuses are the statuses no transition leaves.
var FinishedStatuses = []JobStatus{JobSucceeded, JobFailed, JobCancelled}

// Finished reports whether no transition can leave the status.
func (s JobStatus) Finished() bool {
	return s == JobSucceeded || s == JobFailed || s == JobCancelled
}

// Priority orders dispatch; higher runs first. The values match the API enum.
type Priority int16

// Priorities.
const (
	PriorityLow      Priority = 1
	PriorityNormal   Priority = 2
	PriorityHigh     Priority = 3
	PriorityCritical Priority = 4
)

// RobotStatus is a robot's status as stored: the lower-case name of the
// API enum without its prefix.
type RobotStatus string

// Robot statuses.
const (
	RobotIdle     RobotStatus = "idle"
	RobotBusy     RobotStatus = "busy"
	RobotDraining RobotStatus = "draining"
	RobotOffline  RobotStatus = "offline"
)

// RobotStatuses lists every robot status, for metrics that report each.
var RobotStatuses = []RobotStatus{RobotIdle, RobotBusy, RobotDraining, RobotOffline}

// Job is a row of jobs: one run of a workflow. JSON columns hold protojson
// text so both dialects store them the same way.
type Job struct {
	bun.BaseModel `bun:"table:jobs"`

	ID              string     `bun:"id,pk"`
	WorkflowName    string     `bun:"workflow_name,notnull"`
	WorkflowVersion int32      `bun:"workflow_version,notnull"`
	Workflow        string     `bun:"workflow,notnull"` // protojson of casare.v1.Workflow
	Status          JobStatus  `bun:"status,notnull"`
	StatusMessage   string     `bun:"status_message,notnull"`
	Priority        Priority   `bun:"priority,notnull"`
	Attempt         int32      `bun:"attempt,notnull"`
	MaxAttempts     int32      `bun:"max_attempts,notnull"`
	RobotID         string     `bun:"robot_id,notnull"`
	Inputs          string     `bun:"inputs,notnull"`   // protojson of google.protobuf.Struct
	Requires        string     `bun:"requires,notnull"` // protojson of casare.v1.Requirements
	Result          string     `bun:"result,notnull"`   // protojson of google.protobuf.Struct, "" until it succeeds
	TimeoutMillis   int64      `bun:"timeout_ms,notnull"`
	IdempotencyKey  *string    `bun:"idempotency_key"`
	CreatedBy       string     `bun:"created_by,notnull"`
	CreatedAt       time.Time  `bun:"created_at,notnull"`
	UpdatedAt       time.Time  `bun:"updated_at,notnull"`
	StartedAt       *time.Time `bun:"started_at"`
	FinishedAt      *time.Time `bun:"finished_at"`
	Progress        int32      `bun:"progress,notnull"`
	CurrentStep     string     `bun:"current_step,notnull"`
	// SecretInputs holds the inputs the workflow declares secret, sealed
	// by the vault as one JSON object; Inputs holds the others.
	SecretInputs string `bun:"secret_inputs,notnull"`
}

// JobEvent is a row of job_events: one transition of a job.
type JobEvent struct {
	bun.BaseModel `bun:"table:job_events"`

	ID         int64     `bun:"id,pk,autoincrement"`
	JobID      string    `bun:"job_id,notnull"`
	Time       time.Time `bun:"time,notnull"`
	FromStatus JobStatus `bun:"from_status,notnull"` // "" for the event that created the job
	ToStatus   JobStatus `bun:"to_status,notnull"`
	Attempt    int32     `bun:"attempt,notnull"`
	RobotID    string    `bun:"robot_id,notnull"`
	Reason     string    `bun:"reason,notnull"`
	Actor      string    `bun:"actor,notnull"`
}

// JobLog is a row of job_logs: one line a job wrote. ID orders a job's
// lines across attempts; (JobID, Attempt, Line) is unique, so a line a
// robot resends after a reconnect is stored once.
type JobLog struct {
	bun.BaseModel `bun:"table:job_logs"`

	ID      int64     `bun:"id,pk,autoincrement"`
	JobID   string    `bun:"job_id,notnull"`
	Attempt int32     `bun:"attempt,notnull"`
	Line    int64     `bun:"line,notnull"`
	Time    time.Time `bun:"time,notnull"`
	Level   string    `bun:"level,notnull"`
	StepID  string    `bun:"step_id,notnull"`
	Message string    `bun:"message,notnull"`
}

// WorkflowVersion is a row of workflows: one immutable version of a stored
// workflow. (name, version) is the key.
type WorkflowVersion struct {
	bun.BaseModel `bun:"table:workflows"`

	Name        string    `bun:"name,pk"`
	Version     int32     `bun:"version,pk"`
	Digest      string    `bun:"digest,notnull"`
	Definition  string    `bun:"definition,notnull"` // protojson of casare.v1.Workflow
	Description string    `bun:"description,notnull"`
	CreatedBy   string    `bun:"created_by,notnull"`
	CreatedAt   time.Time `bun:"created_at,notnull"`
}

// WorkflowSummary is a stored workflow described by its latest version.
type WorkflowSummary struct {
	Name          string
	LatestVersion int32
	Description   string
	UpdatedAt     time.Time
}

// Role names as stored.
const (
	RoleViewer   = "viewer"
	RoleOperator = "operator"
	RoleAdmin    = "admin"
)

// APIToken is a row of api_tokens. Only the SHA-256 of the secret is kept.
type APIToken struct {
	bun.BaseModel `bun:"table:api_tokens"`

	ID         string     `bun:"id,pk"`
	Name       string     `bun:"name,notnull"`
	Role       string     `bun:"role,notnull"`
	Hash       string     `bun:"hash,notnull"` // hex SHA-256 of the secret
	CreatedBy  string     `bun:"created_by,notnull"`
	CreatedAt  time.Time  `bun:"created_at,notnull"`
	ExpiresAt  *time.Time `bun:"expires_at"`
	RevokedAt  *time.Time `bun:"revoked_at"`
	LastUsedAt *time.Time `bun:"last_used_at"`
}

// AuditEvent is a row of audit_events: one mutation through the API.
type AuditEvent struct {
	bun.BaseModel `bun:"table:audit_events"`

	ID           int64     `bun:"id,pk,autoincrement"`
	Time         time.Time `bun:"time,notnull"`
	Actor        string    `bun:"actor,notnull"`
	ActorTokenID string    `bun:"actor_token_id,notnull"`
	Action       string    `bun:"action,notnull"` // the procedure
	Target       string    `bun:"target,notnull"` // kind/id, e.g. job/0190…
	Outcome      string    `bun:"outcome,notnull"`
	Details      string    `bun:"details,notnull"` // JSON object, "" when none
	Peer         string    `bun:"peer,notnull"`
}

// Robot is a row of robots: an enrolled robot and its last known state.
type Robot struct {
	bun.BaseModel `bun:"table:robots"`

	ID             string      `bun:"id,pk"`
	Name           string      `bun:"name,notnull"`
	Labels         string      `bun:"labels,notnull"`       // JSON object
	Capabilities   string      `bun:"capabilities,notnull"` // JSON array
	Version        string      `bun:"version,notnull"`
	OS             string      `bun:"os,notnull"`
	Hostname       string      `bun:"hostname,notnull"`
	Status         RobotStatus `bun:"status,notnull"`
	MaxJobs        int32       `bun:"max_jobs,notnull"`
	ConnectedSince *time.Time  `bun:"connected_since"`
	LastSeen       *time.Time  `bun:"last_seen"`
	CertSerial     string      `bun:"cert_serial,notnull"`
	CertExpiresAt  *time.Time  `bun:"cert_expires_at"`
	CreatedAt      time.Time   `bun:"created_at,notnull"`
	UpdatedAt      time.Time   `bun:"updated_at,notnull"`
	// ProtocolVersion is the robot protocol version of its last hello;
	// ProtocolProblem says why that hello was refused, if it was.
	ProtocolVersion int32  `bun:"protocol_version,notnull"`
	ProtocolProblem string `bun:"protocol_problem,notnull"`
}

// EnrollmentToken is a row of enrollment_tokens: a one-time permission for
// a new robot to enrol. Only the SHA-256 of the secret is kept.
type EnrollmentToken struct {
	bun.BaseModel `bun:"table:enrollment_tokens"`

	ID        string     `bun:"id,pk"`
	Hash      string     `bun:"hash,notnull"`
	Name      string     `bun:"name,notnull"`   // the robot's name
	Labels    string     `bun:"labels,notnull"` // JSON object
	CreatedBy string     `bun:"created_by,notnull"`
	CreatedAt time.Time  `bun:"created_at,notnull"`
	ExpiresAt time.Time  `bun:"expires_at,notnull"`
	UsedAt    *time.Time `bun:"used_at"`
	RobotID   string     `bun:"robot_id,notnull"` // the robot it enrolled
}

// RevokedCertificate is a row of revoked_certificates.
type RevokedCertificate struct {
	bun.BaseModel `bun:"table:revoked_certificates"`

	Serial    string    `bun:"serial,pk"`
	RobotID   string    `bun:"robot_id,notnull"`
	RevokedAt time.Time `bun:"revoked_at,notnull"`
}

// Trigger auth schemes as stored.
const (
	TriggerAuthStandardWebhooks = "standard-webhooks"
	TriggerAuthBearer           = "bearer"
)

// Trigger is a row of triggers: an inbound webhook that starts a stored
// workflow. Secret is the Standard Webhooks key itself, since checking an
// HMAC needs it, or the hex SHA-256 of a bearer token; PreviousSecret is
// the one a rotation replaced, valid until PreviousSecretExpiresAt.
type Trigger struct {
	bun.BaseModel `bun:"table:triggers"`

	ID                      string     `bun:"id,pk"`
	Name                    string     `bun:"name,notnull"`
	WorkflowName            string     `bun:"workflow_name,notnull"`
	WorkflowVersion         int32      `bun:"workflow_version,notnull"`
	Inputs                  string     `bun:"inputs,notnull"` // JSON object: input name → CEL
	Priority                Priority   `bun:"priority,notnull"`
	Requires                string     `bun:"requires,notnull"` // protojson of casare.v1.Requirements
	MaxAttempts             int32      `bun:"max_attempts,notnull"`
	Auth                    string     `bun:"auth,notnull"`
	RatePerSecond           float64    `bun:"rate_per_second,notnull"`
	Burst                   int32      `bun:"burst,notnull"`
	Secret                  string     `bun:"secret,notnull"`
	PreviousSecret          string     `bun:"previous_secret,notnull"`
	PreviousSecretExpiresAt *time.Time `bun:"previous_secret_expires_at"`
	CreatedBy               string     `bun:"created_by,notnull"`
	CreatedAt               time.Time  `bun:"created_at,notnull"`
	UpdatedAt               time.Time  `bun:"updated_at,notnull"`
}

// AssetType is an asset's type as stored: the lower-case name of the API
// enum without its prefix.
type AssetType string

// Asset types.
const (
	AssetText       AssetType = "text"
	AssetNumber     AssetType = "number"
	AssetBool       AssetType = "bool"
	AssetJSON       AssetType = "json"
	AssetSecret     AssetType = "secret"
	AssetCredential AssetType = "credential"
)

// AssetTypes lists every asset type, for metrics that report each.
var AssetTypes = []AssetType{AssetText, AssetNumber, AssetBool, AssetJSON, AssetSecret, AssetCredential}

// Sealed reports whether values of the type are kept sealed.
func (t AssetType) Sealed() bool { return t == AssetSecret || t == AssetCredential }

// Asset is a row of assets: a named value, or its override for robots
// whose labels match Selector. (Name, Selector) is the key; the row with
// an empty Selector is the value every other robot gets.
type Asset struct {
	bun.BaseModel `bun:"table:assets"`

	Name     string    `bun:"name,pk"`
	Selector string    `bun:"selector,pk"` // canonical: k=v pairs sorted by key, comma-separated
	Type     AssetType `bun:"type,notnull"`
	// Value is the value of text, number, bool and JSON assets, in the
	// text form the API takes; empty for the sealed types.
	Value    string `bun:"value,notnull"`
	Username string `bun:"username,notnull"`
	// Sealed is the secret text or the credential's password, sealed by
	// the vault under the data key KeyID.
	Sealed    string    `bun:"sealed,notnull"`
	KeyID     string    `bun:"key_id,notnull"`
	CreatedAt time.Time `bun:"created_at,notnull"`
	UpdatedAt time.Time `bun:"updated_at,notnull"`
	UpdatedBy string    `bun:"updated_by,notnull"`
}

// VaultKey is a row of vault_keys: a data key sealed under a
// key-encryption key.
type VaultKey struct {
	bun.BaseModel `bun:"table:vault_keys"`

	ID        string    `bun:"id,pk"`
	KEKID     string    `bun:"kek_id,notnull"`
	Sealed    string    `bun:"sealed,notnull"` // base64
	CreatedAt time.Time `bun:"created_at,notnull"`
}
