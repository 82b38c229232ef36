package registry

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/uptrace/bun"
)

// JobArtifact is a row of job_artifacts: a file a job saved. (JobID, Name)
// is the key, so a robot that sends an artifact again after a reconnect, or
// a later attempt that saves the same name, replaces it.
type JobArtifact struct {
	bun.BaseModel `bun:"table:job_artifacts"`

	JobID       string    `bun:"job_id,pk"`
	Name        string    `bun:"name,pk"`
	Attempt     int32     `bun:"attempt,notnull"`
	ContentType string    `bun:"content_type,notnull"`
	Size        int64     `bun:"size,notnull"`
	SHA256      string    `bun:"sha256,notnull"` // lower-case hex
	Data        []byte    `bun:"data,notnull"`   // empty when listed
	CreatedAt   time.Time `bun:"created_at,notnull"`
}

// ErrTooManyArtifacts: the job keeps as many artifacts as it may.
var ErrTooManyArtifacts = errors.New("too many artifacts")

// PutJobArtifact stores a, replacing the job's artifact of the same name,
// when robotID holds the job (assigned or running) on a.Attempt: a robot
// the job was taken from cannot write into it. Otherwise it stores nothing
// and returns an error wrapping ErrConflict, or ErrNotFound when there is
// no such job. A new name beyond maxPerJob artifacts gives
// ErrTooManyArtifacts.
func (r *Registry) PutJobArtifact(ctx context.Context, a *JobArtifact, robotID string, maxPerJob int) error {
	a.CreatedAt = normalize(a.CreatedAt)
	if a.Data == nil {
		// NOT NULL: an empty file is zero bytes, not no bytes.
		a.Data = []byte{}
	}
	err := r.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		job := new(Job)
		// Locked until commit: the job cannot move to another robot
		// between the check and the insert, and two artifacts of one job
		// are counted one after the other.
		if err := r.lockRow(ctx, tx.NewSelect().Model(job).Column("id", "status", "attempt", "robot_id").Where("id = ?", a.JobID)); err != nil {
			return err
		}
		fence := Transition{From: ActiveStatuses, Attempt: a.Attempt, Robot: robotID}
		if err := fence.conflict(job); err != nil {
			return err
		}
		n, err := tx.NewSelect().Model((*JobArtifact)(nil)).
			Where("job_id = ?", a.JobID).Where("name <> ?", a.Name).Count(ctx)
		if err != nil {
			return err
		}
		if n >= int64(maxPerJob) {
			return fmt.Errorf("job %s keeps %d artifacts, the most a job may: %w", a.JobID, n, ErrTooManyArtifacts)
		}
		_, err = tx.NewInsert().Model(a).
			On("CONFLICT (job_id, name) DO UPDATE").
			Set("attempt = EXCLUDED.attempt").
			Set("content_type = EXCLUDED.content_type").
			Set("size = EXCLUDED.size").
			Set("sha256 = EXCLUDED.sha256").
			Set("data = EXCLUDED.data").
			Set("created_at = EXCLUDED.created_at").
			Exec(ctx)
		return err
	})
	if err != nil {
		return fmt.Errorf("store artifact %q of job %s: %w", a.Name, a.JobID, err)
	}
	return nil
}

// ListJobArtifacts returns the job's artifacts by name, without their
// bytes.
func (r *Registry) ListJobArtifacts(ctx context.Context, jobID string) ([]JobArtifact, error) {
	var out []JobArtifact
	err := r.db.NewSelect().Model(&out).ExcludeColumn("data").
		Where("job_id = ?", jobID).OrderExpr("name ASC").Scan(ctx)
	if err != nil {
		return nil, fmt.Errorf("artifacts of job %s: %w", jobID, err)
	}
	return out, nil
}

// GetJobArtifact returns the job's artifact with its bytes, or ErrNotFound.
func (r *Registry) GetJobArtifact(ctx context.Context, jobID, name string) (*JobArtifact, error) {
	a := new(JobArtifact)
	err := r.db.NewSelect().Model(a).Where("job_id = ?", jobID).Where("name = ?", name).Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("job %s has no artifact %q: %w", jobID, name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("artifact %q of job %s: %w", name, jobID, err)
	}
	return a, nil
}
