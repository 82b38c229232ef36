package api

import (
	"context"
	"errors"
	"time"

	"connectrpc.com/connect/v2"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/rpc/casare/v1/casarev1connect"
	"github.com/casarerpa/casare/server/dispatch"
	"github.com/casarerpa/casare/server/registry"
)

// logPage is how many lines one message carries at most.
const logPage = 500

// StreamJobLogs sends a job's stored log lines; with follow it then sends
// new ones as robots report them, and ends once the job has ended and its
// last line is sent.
func (s *jobService) StreamJobLogs(ctx context.Context, req *casarev1.StreamJobLogsRequest, stream casarev1connect.JobServiceStreamJobLogsServerStream) error {
	ctx, endStream := s.streamContext(ctx)
	defer endStream()
	var appended, changed <-chan string
	if req.GetFollow() {
		// Subscribe before the first read, so no line falls between.
		var stopLogs, stopChanges func()
		appended, stopLogs = s.jobLogs.Subscribe()
		defer stopLogs()
		changed, stopChanges = s.jobChanges.Subscribe()
		defer stopChanges()
	}
	job, err := s.reg.GetJob(ctx, req.GetJobId())
	if errors.Is(err, registry.ErrNotFound) {
		return connect.Errorf(connect.CodeNotFound, "job %q not found", req.GetJobId())
	}
	if err != nil {
		return toConnect(err)
	}
	secrets := s.secretsOf(job)
	after := req.GetAfterSeq()
	// sendNew sends every line stored after the last one sent.
	sendNew := func() error {
		for {
			lines, err := s.reg.JobLogs(ctx, job.ID, after, logPage)
			if err != nil {
				return toConnect(err)
			}
			if len(lines) == 0 {
				return nil
			}
			msg := &casarev1.StreamJobLogsResponse{Lines: make([]*casarev1.LogLine, len(lines))}
			for i := range lines {
				msg.Lines[i] = logLineToProto(&lines[i])
				msg.Lines[i].Message = secrets.text(msg.Lines[i].Message)
			}
			if err := stream.Send(msg); err != nil {
				return err
			}
			after = lines[len(lines)-1].ID
			if len(lines) < logPage {
				return nil
			}
		}
	}
	if err := sendNew(); err != nil {
		return err
	}
	if !req.GetFollow() || job.Status.Finished() {
		return nil
	}
	// A notice can be lost (pub/sub is best effort), so the log and the
	// job are read again now and then too.
	recheck := time.NewTicker(5 * time.Second)
	defer recheck.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case id := <-appended:
			if id != job.ID {
				continue
			}
		case id := <-changed:
			if id != job.ID {
				continue
			}
		case <-recheck.C:
		}
		// The job's end is recorded after its last line is stored, so the
		// status is read before the lines.
		current, err := s.reg.GetJob(ctx, job.ID)
		if err != nil {
			return toConnect(err)
		}
		if err := sendNew(); err != nil {
			return err
		}
		if current.Status.Finished() {
			return nil
		}
	}
}

func logLineToProto(l *registry.JobLog) *casarev1.LogLine {
	return &casarev1.LogLine{
		Seq:     l.ID,
		Time:    timestamp(l.Time),
		Level:   l.Level,
		StepId:  l.StepID,
		Message: l.Message,
		Attempt: l.Attempt,
	}
}

// ExplainJob says why a job is where it is; for a pending job it judges
// every robot against it.
func (s *jobService) ExplainJob(ctx context.Context, req *casarev1.ExplainJobRequest) (*casarev1.ExplainJobResponse, error) {
	job, err := s.reg.GetJob(ctx, req.GetId())
	if errors.Is(err, registry.ErrNotFound) {
		return nil, connect.Errorf(connect.CodeNotFound, "job %q not found", req.GetId())
	}
	if err != nil {
		return nil, toConnect(err)
	}
	secrets := s.secretsOf(job)
	res := &casarev1.ExplainJobResponse{Job: secrets.job(job)}
	switch job.Status {
	case registry.JobPending:
	case registry.JobAssigned:
		res.Summary = "assigned to robot " + job.RobotID + "; waiting for it to accept"
		return res, nil
	case registry.JobRunning:
		res.Summary = "running on robot " + job.RobotID
		return res, nil
	default:
		res.Summary = "the job has ended: " + string(job.Status)
		if job.StatusMessage != "" {
			res.Summary += ": " + secrets.text(job.StatusMessage)
		}
		return res, nil
	}
	requires, err := dispatch.JobRequirements(job)
	if err != nil {
		return nil, toConnect(err)
	}
	robots, err := s.reg.ListAllRobots(ctx)
	if err != nil {
		return nil, toConnect(err)
	}
	active, err := s.reg.ActiveJobCounts(ctx)
	if err != nil {
		return nil, toConnect(err)
	}
	fits, summary := dispatch.Explain(requires, robots, active, time.Now().Add(-s.robotStaleAfter))
	res.Summary = summary
	for _, f := range fits {
		res.Robots = append(res.Robots, &casarev1.RobotFit{RobotId: f.RobotID, RobotName: f.RobotName, Eligible: f.Eligible, Reasons: f.Reasons})
	}
	return res, nil
}
