package api

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"connectrpc.com/connect/v2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/casarerpa/casare/agent/workflow"
	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/rpc/casare/v1/casarev1connect"
	"github.com/casarerpa/casare/server/auth"
	"github.com/casarerpa/casare/server/queue"
	"github.com/casarerpa/casare/server/registry"
)

// jobService serves jobs.
type jobService struct {
	*Services
}

var _ casarev1connect.JobServiceHandler = (*jobService)(nil)

// SubmitJob commits the job as PENDING with its first event and audit entry
// in one transaction, then queues it. A failed enqueue does not fail the
// call: the job is already durable and the reconciler queues it.
func (s *jobService) SubmitJob(ctx context.Context, req *casarev1.SubmitJobRequest) (*casarev1.SubmitJobResponse, error) {
	saved, existing, err := s.Submit(ctx, req, actor(ctx))
	if err != nil {
		return nil, err
	}
	if existing {
		auth.SetAuditTarget(ctx, "job/"+saved.ID)
	}
	return &casarev1.SubmitJobResponse{Job: s.jobToProto(saved), Existing: existing}, nil
}

// Submit is the one path by which a job comes to be, whoever asks: an API
// call, a schedule's fire, a webhook trigger. It resolves and checks the
// workflow and inputs as SubmitJob documents, commits the job PENDING (with
// the audit event of ctx's call, when there is one) and queues it. With an
// idempotency key that a job has already, it returns that job and existing
// true, and queues nothing. createdBy names who asked (a token, or
// "schedule/NAME"). Errors are Connect errors naming the field at fault.
func (s *Services) Submit(ctx context.Context, req *casarev1.SubmitJobRequest, createdBy string) (saved *registry.Job, existing bool, err error) {
	wf, name, version, err := s.resolveWorkflow(ctx, req)
	if err != nil {
		return nil, false, err
	}
	inputs, err := checkInputs(wf, req.GetInputs())
	if err != nil {
		return nil, false, err
	}
	if req.GetWorkflow() != nil {
		if err := validateWorkflow(ctx, wf); err != nil {
			return nil, false, err
		}
	}
	if err := s.checkAssetUses(ctx, wf); err != nil {
		return nil, false, err
	}
	if err := s.checkQueueUses(ctx, wf); err != nil {
		return nil, false, err
	}
	requires, err := mergeRequirements(workflow.Requirements(wf, stepCatalogue), req.GetRequires())
	if err != nil {
		return nil, false, err
	}
	priority := req.GetPriority()
	if priority == casarev1.JobPriority_JOB_PRIORITY_UNSPECIFIED {
		priority = casarev1.JobPriority_JOB_PRIORITY_NORMAL
	}
	maxAttempts := req.GetMaxAttempts()
	if maxAttempts == 0 {
		maxAttempts = s.defaultMaxAttempts
	}
	job := &registry.Job{
		ID:              registry.NewID(),
		WorkflowName:    name,
		WorkflowVersion: version,
		StatusMessage:   "waiting for a robot",
		Priority:        registry.Priority(priority),
		MaxAttempts:     maxAttempts,
		CreatedBy:       createdBy,
	}
	if req.GetTimeout() != nil {
		job.TimeoutMillis = req.GetTimeout().AsDuration().Milliseconds()
	}
	if key := req.GetIdempotencyKey(); key != "" {
		job.IdempotencyKey = &key
	}
	if job.Workflow, err = marshalJSON(wf); err != nil {
		return nil, false, toConnect(fmt.Errorf("encode workflow: %w", err))
	}
	if err := s.sealSecretInputs(job, wf, inputs); err != nil {
		return nil, false, toConnect(err)
	}
	if job.Inputs, err = marshalJSON(inputs); err != nil {
		return nil, false, toConnect(fmt.Errorf("encode inputs: %w", err))
	}
	if job.Requires, err = marshalJSON(requires); err != nil {
		return nil, false, toConnect(fmt.Errorf("encode requirements: %w", err))
	}
	audit := auth.AuditEvent(ctx, "job/"+job.ID, map[string]any{"workflow": name})
	saved, existing, err = s.jobs.Submit(ctx, job, audit)
	if err != nil {
		return nil, false, toConnect(err)
	}
	if existing {
		return saved, true, nil
	}
	if s.dispatch != nil {
		// The queue carries the job to whichever replica has a robot for
		// it; offering it here as well saves an idle system the queue's
		// polling delay. Offered first, the job is known here when its
		// task comes back to this replica, which then need not read it.
		s.dispatch.Offer(saved)
	}
	task := queue.Task{JobID: saved.ID, Attempt: saved.Attempt, Priority: saved.Priority}
	if err := s.queue.Enqueue(ctx, task); err != nil {
		s.logger.Warn("enqueue job; the reconciler will queue it", "job", saved.ID, "err", err)
	}
	s.queue.PublishJobChange(ctx, saved.ID)
	return saved, false, nil
}

// resolveWorkflow returns the definition the job runs, its name and its
// stored version (0 for an inline workflow).
func (s *Services) resolveWorkflow(ctx context.Context, req *casarev1.SubmitJobRequest) (*casarev1.Workflow, string, int32, error) {
	if wf := req.GetWorkflow(); wf != nil {
		return wf, wf.GetName(), 0, nil
	}
	name := req.GetWorkflowName()
	if v := req.GetWorkflowVersion(); v > 0 {
		if wf := s.versions.get(name, v); wf != nil {
			return wf, name, v, nil
		}
	}
	stored, err := s.reg.GetWorkflow(ctx, name, req.GetWorkflowVersion())
	if errors.Is(err, registry.ErrNotFound) {
		if req.GetWorkflowVersion() != 0 {
			return nil, "", 0, connect.Errorf(connect.CodeNotFound, "workflow_version: workflow %q has no version %d", name, req.GetWorkflowVersion())
		}
		return nil, "", 0, connect.Errorf(connect.CodeNotFound, "workflow_name: no stored workflow named %q (push it with casarectl workflows push)", name)
	}
	if err != nil {
		return nil, "", 0, toConnect(err)
	}
	wf, err := stored.DecodeDefinition()
	if err != nil {
		return nil, "", 0, toConnect(err)
	}
	s.versions.put(stored.Name, stored.Version, wf)
	return wf, stored.Name, stored.Version, nil
}

// checkInputs applies the workflow's input declarations: defaults fill in,
// required inputs must be there, values must have the declared type, and a
// workflow that declares inputs accepts no others.
func checkInputs(wf *casarev1.Workflow, given *structpb.Struct) (*structpb.Struct, error) {
	out := &structpb.Struct{Fields: map[string]*structpb.Value{}}
	if given != nil {
		maps.Copy(out.Fields, given.GetFields())
	}
	specs := wf.GetInputs()
	if len(specs) == 0 {
		return out, nil
	}
	var problems []string
	for _, name := range slices.Sorted(maps.Keys(out.Fields)) {
		if _, ok := specs[name]; !ok {
			problems = append(problems, fmt.Sprintf("inputs.%s: not an input of the workflow (it takes %s)", name, strings.Join(slices.Sorted(maps.Keys(specs)), ", ")))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(specs)) {
		spec := specs[name]
		v, ok := out.Fields[name]
		if !ok || isNull(v) {
			switch {
			case spec.GetDefault() != nil:
				out.Fields[name] = proto.CloneOf(spec.GetDefault())
			case spec.GetRequired():
				problems = append(problems, fmt.Sprintf("inputs.%s: required", name))
			}
			continue
		}
		if want := spec.GetType(); !hasType(v, want) {
			problems = append(problems, fmt.Sprintf("inputs.%s: must be of type %s", name, want))
		}
	}
	if len(problems) > 0 {
		return nil, connect.NewError(connect.CodeInvalidArgument, strings.Join(problems, "; "))
	}
	return out, nil
}

func isNull(v *structpb.Value) bool {
	_, ok := v.Kind.(*structpb.Value_NullValue)
	return ok
}

func hasType(v *structpb.Value, want string) bool {
	switch want {
	case "", "any":
		return true
	case "string":
		_, ok := v.Kind.(*structpb.Value_StringValue)
		return ok
	case "number":
		_, ok := v.Kind.(*structpb.Value_NumberValue)
		return ok
	case "integer":
		n, ok := v.Kind.(*structpb.Value_NumberValue)
		return ok && n.NumberValue == float64(int64(n.NumberValue))
	case "boolean":
		_, ok := v.Kind.(*structpb.Value_BoolValue)
		return ok
	case "object":
		_, ok := v.Kind.(*structpb.Value_StructValue)
		return ok
	case "array":
		_, ok := v.Kind.(*structpb.Value_ListValue)
		return ok
	}
	return false
}

// mergeRequirements adds the request's requirements to the workflow's. A
// label both set to different values can never be met, so it is refused.
func mergeRequirements(workflow, request *casarev1.Requirements) (*casarev1.Requirements, error) {
	caps := slices.Concat(workflow.GetCapabilities(), request.GetCapabilities())
	slices.Sort(caps)
	out := &casarev1.Requirements{Capabilities: slices.Compact(caps), Labels: map[string]string{}}
	maps.Copy(out.Labels, workflow.GetLabels())
	for k, v := range request.GetLabels() {
		if have, ok := out.Labels[k]; ok && have != v {
			return nil, invalid("requires.labels."+k, "the workflow requires %q, the request %q", have, v)
		}
		out.Labels[k] = v
	}
	return out, nil
}

func (s *jobService) GetJob(ctx context.Context, req *casarev1.GetJobRequest) (*casarev1.GetJobResponse, error) {
	job, err := s.reg.GetJob(ctx, req.GetId())
	if errors.Is(err, registry.ErrNotFound) {
		return nil, connect.Errorf(connect.CodeNotFound, "job %q not found", req.GetId())
	}
	if err != nil {
		return nil, toConnect(err)
	}
	events, err := s.reg.JobEvents(ctx, job.ID)
	if err != nil {
		return nil, toConnect(err)
	}
	secrets := s.secretsOf(job)
	res := &casarev1.GetJobResponse{Job: secrets.job(job), Events: make([]*casarev1.JobEvent, len(events))}
	for i := range events {
		res.Events[i] = secrets.event(&events[i])
	}
	return res, nil
}

func (s *jobService) ListJobs(ctx context.Context, req *casarev1.ListJobsRequest) (*casarev1.ListJobsResponse, error) {
	filter := registry.JobFilter{WorkflowName: req.GetWorkflowName(), RobotID: req.GetRobotId()}
	for _, st := range req.GetStatuses() {
		filter.Statuses = append(filter.Statuses, jobStatusFromProto(st))
	}
	jobs, next, err := s.reg.ListJobs(ctx, filter, registry.Page{Size: int(req.GetPageSize()), Token: req.GetPageToken()})
	if err != nil {
		return nil, toConnect(err)
	}
	res := &casarev1.ListJobsResponse{Jobs: make([]*casarev1.Job, len(jobs)), NextPageToken: next}
	for i := range jobs {
		res.Jobs[i] = s.jobToProto(&jobs[i])
	}
	return res, nil
}

// CancelJob cancels a job that has not finished. A pending job's task
// leaves the queue; a job on a robot is stopped there (the robot confirms).
func (s *jobService) CancelJob(ctx context.Context, req *casarev1.CancelJobRequest) (*casarev1.CancelJobResponse, error) {
	auth.SetAuditTarget(ctx, "job/"+req.GetId())
	reason := req.GetReason()
	if reason == "" {
		reason = "cancelled by " + actor(ctx)
	}
	job, err := s.Cancel(ctx, req.GetId(), reason, actor(ctx), auth.AuditEvent(ctx, "job/"+req.GetId(), map[string]any{"reason": reason}))
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return nil, connect.Errorf(connect.CodeNotFound, "job %q not found", req.GetId())
	case errors.Is(err, registry.ErrConflict) && job != nil:
		return nil, connect.Errorf(connect.CodeFailedPrecondition, "job %s is %s and can no longer be cancelled",
			job.ID, strings.ToUpper(string(job.Status)))
	case err != nil:
		return nil, toConnect(err)
	}
	return &casarev1.CancelJobResponse{Job: s.jobToProto(job)}, nil
}

// Cancel cancels a job that has not finished, whoever asks: CancelJob, or
// a schedule whose overlap policy cancels its previous job. A pending
// job's task leaves the queue; a job on a robot is stopped there. It
// returns the registry's errors: ErrNotFound, or ErrConflict with the job
// when it has finished already.
func (s *Services) Cancel(ctx context.Context, id, reason, actor string, audit *registry.AuditEvent) (*registry.Job, error) {
	job, err := s.jobs.Cancel(ctx, id, reason, actor, audit)
	if err != nil {
		return job, err
	}
	task := queue.Task{JobID: job.ID, Attempt: job.Attempt, Priority: job.Priority}
	if err := s.queue.Remove(ctx, task); err != nil && !errors.Is(err, queue.ErrTaskActive) {
		// The job row says cancelled; a task left behind is dropped when
		// it is dispatched, so this costs nothing but a log line.
		s.logger.Warn("remove cancelled job from the queue", "job", job.ID, "err", err)
	}
	s.queue.PublishJobChange(ctx, job.ID)
	s.queue.PublishJobStop(job.ID)
	return job, nil
}

// WatchJobs sends the jobs matching the filter, newest first, then SYNCED,
// then each change: an UPSERT for a job that matches, a DELETE for one that
// matched and no longer does.
func (s *jobService) WatchJobs(ctx context.Context, req *casarev1.WatchJobsRequest, stream casarev1connect.JobServiceWatchJobsServerStream) error {
	ctx, endStream := s.streamContext(ctx)
	defer endStream()
	// Subscribe before reading the snapshot, so no change falls between.
	changed, cancel := s.jobChanges.Subscribe()
	defer cancel()
	filter := registry.JobFilter{WorkflowName: req.GetWorkflowName(), RobotID: req.GetRobotId()}
	for _, st := range req.GetStatuses() {
		filter.Statuses = append(filter.Statuses, jobStatusFromProto(st))
	}
	// sent holds the version (last update) of each job the watcher has, so a
	// late or repeated notice about a job it already has is not resent.
	sent := map[string]int64{}
	if ids := req.GetJobIds(); len(ids) > 0 {
		msg := &casarev1.WatchJobsResponse{Type: casarev1.WatchEventType_WATCH_EVENT_TYPE_SNAPSHOT}
		for _, id := range ids {
			job, err := s.reg.GetJob(ctx, id)
			if errors.Is(err, registry.ErrNotFound) {
				continue
			}
			if err != nil {
				return toConnect(err)
			}
			if p := s.jobToProto(job); jobMatches(p, req) {
				msg.Jobs = append(msg.Jobs, p)
				sent[job.ID] = job.UpdatedAt.UnixNano()
			}
		}
		if err := stream.Send(msg); err != nil {
			return err
		}
	} else {
		page := registry.Page{Size: 500}
		for {
			jobs, next, err := s.reg.ListJobs(ctx, filter, page)
			if err != nil {
				return toConnect(err)
			}
			msg := &casarev1.WatchJobsResponse{Type: casarev1.WatchEventType_WATCH_EVENT_TYPE_SNAPSHOT}
			for i := range jobs {
				msg.Jobs = append(msg.Jobs, s.jobToProto(&jobs[i]))
				sent[jobs[i].ID] = jobs[i].UpdatedAt.UnixNano()
			}
			if err := stream.Send(msg); err != nil {
				return err
			}
			if next == "" {
				break
			}
			page.Token = next
		}
	}
	if err := stream.Send(&casarev1.WatchJobsResponse{Type: casarev1.WatchEventType_WATCH_EVENT_TYPE_SYNCED}); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case id := <-changed:
			job, err := s.reg.GetJob(ctx, id)
			if errors.Is(err, registry.ErrNotFound) {
				continue
			}
			if err != nil {
				return toConnect(err)
			}
			p := s.jobToProto(job)
			msg := &casarev1.WatchJobsResponse{Type: casarev1.WatchEventType_WATCH_EVENT_TYPE_UPSERT, Jobs: []*casarev1.Job{p}}
			version, had := sent[id]
			switch {
			case jobMatches(p, req):
				if had && version == job.UpdatedAt.UnixNano() {
					continue
				}
				sent[id] = job.UpdatedAt.UnixNano()
			case had:
				delete(sent, id)
				msg.Type = casarev1.WatchEventType_WATCH_EVENT_TYPE_DELETE
			default:
				continue
			}
			if err := stream.Send(msg); err != nil {
				return err
			}
		}
	}
}

// jobMatches reports whether a job passes a watch filter.
func jobMatches(j *casarev1.Job, req *casarev1.WatchJobsRequest) bool {
	return (len(req.GetStatuses()) == 0 || slices.Contains(req.GetStatuses(), j.GetStatus())) &&
		(req.GetWorkflowName() == "" || req.GetWorkflowName() == j.GetWorkflowName()) &&
		(req.GetRobotId() == "" || req.GetRobotId() == j.GetRobotId()) &&
		(len(req.GetJobIds()) == 0 || slices.Contains(req.GetJobIds(), j.GetId()))
}
