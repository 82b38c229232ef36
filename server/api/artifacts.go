package api

import (
	"context"
	"errors"

	"connectrpc.com/connect/v2"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/server/registry"
)

// ListJobArtifacts lists the files a job saved, without their bytes.
func (s *jobService) ListJobArtifacts(ctx context.Context, req *casarev1.ListJobArtifactsRequest) (*casarev1.ListJobArtifactsResponse, error) {
	if err := s.jobExists(ctx, req.GetJobId()); err != nil {
		return nil, err
	}
	list, err := s.reg.ListJobArtifacts(ctx, req.GetJobId())
	if err != nil {
		return nil, toConnect(err)
	}
	res := &casarev1.ListJobArtifactsResponse{Artifacts: make([]*casarev1.JobArtifact, len(list))}
	for i := range list {
		res.Artifacts[i] = artifactToProto(&list[i])
	}
	return res, nil
}

// GetJobArtifact returns one file a job saved, with its bytes.
func (s *jobService) GetJobArtifact(ctx context.Context, req *casarev1.GetJobArtifactRequest) (*casarev1.GetJobArtifactResponse, error) {
	a, err := s.reg.GetJobArtifact(ctx, req.GetJobId(), req.GetName())
	if errors.Is(err, registry.ErrNotFound) {
		// Say which is missing: the job, or the artifact of a job.
		if err := s.jobExists(ctx, req.GetJobId()); err != nil {
			return nil, err
		}
		return nil, connect.Errorf(connect.CodeNotFound, "job %q has no artifact %q", req.GetJobId(), req.GetName())
	}
	if err != nil {
		return nil, toConnect(err)
	}
	return &casarev1.GetJobArtifactResponse{Artifact: artifactToProto(a), Data: a.Data}, nil
}

// jobExists returns a NotFound error naming the job when there is none.
func (s *jobService) jobExists(ctx context.Context, id string) error {
	_, err := s.reg.GetJob(ctx, id)
	if errors.Is(err, registry.ErrNotFound) {
		return connect.Errorf(connect.CodeNotFound, "job %q not found", id)
	}
	return toConnect(err)
}

func artifactToProto(a *registry.JobArtifact) *casarev1.JobArtifact {
	return &casarev1.JobArtifact{
		Name:        a.Name,
		ContentType: a.ContentType,
		Size:        a.Size,
		Sha256:      a.SHA256,
		Attempt:     a.Attempt,
		CreatedAt:   timestamp(a.CreatedAt),
	}
}
