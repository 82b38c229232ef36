package dispatch

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"

	agentv1 "github.com/casarerpa/casare/rpc/casare/agent/v1"
	"github.com/casarerpa/casare/server/registry"
)

// Artifact stores one artifact a robot sends, when the robot holds the job
// on the attempt the artifact names, and returns the answer for the robot:
// stored, refused for good, or failed for now (send it again).
func (d *Dispatcher) Artifact(ctx context.Context, robotID string, hdr *agentv1.ArtifactHeader, frames *agentv1.FrameReader) *agentv1.ArtifactStored {
	answer := &agentv1.ArtifactStored{JobId: hdr.GetJobId(), Attempt: hdr.GetAttempt(), Name: hdr.GetName(), Sha256: hdr.GetSha256()}
	log := d.log.With("robot", robotID, "job", hdr.GetJobId(), "attempt", hdr.GetAttempt(), "artifact", hdr.GetName())
	refuse := func(err error) *agentv1.ArtifactStored {
		log.Warn("refused an artifact", "err", err)
		answer.Error = err.Error()
		return answer
	}
	if err := agentv1.CheckArtifactHeader(hdr); err != nil {
		return refuse(err)
	}
	// A robot writes only into a job it holds. Asked before the bytes are
	// read, so a robot the job was taken from does not send 64 MiB for
	// nothing; the store asks again as it writes.
	job, err := d.opts.Store.GetJob(ctx, hdr.GetJobId())
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return refuse(fmt.Errorf("job %s does not exist", hdr.GetJobId()))
	case err != nil:
		log.Error("look up the job of an artifact", "err", err)
		answer.Error, answer.Temporary = "the control plane cannot store artifacts now", true
		return answer
	case job.RobotID != robotID || job.Attempt != hdr.GetAttempt() || job.Status.Finished() || job.Status == registry.JobPending:
		return refuse(fmt.Errorf("this robot does not hold job %s on attempt %d (it is %s on attempt %d)", job.ID, hdr.GetAttempt(), job.Status, job.Attempt))
	}
	data, err := agentv1.ReadArtifact(frames, hdr)
	if err != nil {
		return refuse(err)
	}
	err = d.opts.Store.PutJobArtifact(ctx, &registry.JobArtifact{
		JobID:       hdr.GetJobId(),
		Name:        hdr.GetName(),
		Attempt:     hdr.GetAttempt(),
		ContentType: hdr.GetContentType(),
		Size:        int64(len(data)),
		SHA256:      hex.EncodeToString(hdr.GetSha256()),
		Data:        data,
	}, robotID, agentv1.MaxArtifactsPerJob)
	switch {
	case err == nil:
		log.Info("artifact stored", "bytes", len(data), "content_type", hdr.GetContentType())
		return answer
	case isConflict(err):
		return refuse(fmt.Errorf("this robot no longer holds job %s on attempt %d", hdr.GetJobId(), hdr.GetAttempt()))
	case errors.Is(err, registry.ErrTooManyArtifacts):
		return refuse(fmt.Errorf("job %s already keeps %d artifacts, the most a job may", hdr.GetJobId(), agentv1.MaxArtifactsPerJob))
	}
	log.Error("store an artifact", "err", err)
	answer.Error, answer.Temporary = "the control plane could not store the artifact", true
	return answer
}
