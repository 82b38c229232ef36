package api

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"connectrpc.com/connect/v2"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/casarerpa/casare/agent/workflow"
	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/rpc/casare/v1/casarev1connect"
	"github.com/casarerpa/casare/server/auth"
	"github.com/casarerpa/casare/server/registry"
	"github.com/casarerpa/casare/server/workqueue"
)

// QueueTriggers hears of items added, so the queue's trigger can start
// jobs at once rather than at its next periodic look.
type QueueTriggers interface {
	Wake(queue string)
}

type workQueueService struct{ *Services }

var _ casarev1connect.WorkQueueServiceHandler = (*workQueueService)(nil)

func (s *workQueueService) CreateWorkQueue(ctx context.Context, req *casarev1.CreateWorkQueueRequest) (*casarev1.CreateWorkQueueResponse, error) {
	in := req.GetQueue()
	auth.SetAuditTarget(ctx, "workqueue/"+in.GetName())
	q, err := s.workQueueFromProto(ctx, in)
	if err != nil {
		return nil, err
	}
	q.UpdatedBy = actor(ctx)
	err = s.reg.CreateWorkQueue(ctx, q, auth.AuditEvent(ctx, "workqueue/"+q.Name, workQueueDetails(q)))
	if errors.Is(err, registry.ErrAlreadyExists) {
		return nil, connect.Errorf(connect.CodeAlreadyExists, "queue.name: a work queue named %q exists", q.Name)
	}
	if err != nil {
		return nil, toConnect(err)
	}
	s.wakeTriggers(q.Name)
	return &casarev1.CreateWorkQueueResponse{Queue: workQueueToProto(q)}, nil
}

func (s *workQueueService) UpdateWorkQueue(ctx context.Context, req *casarev1.UpdateWorkQueueRequest) (*casarev1.UpdateWorkQueueResponse, error) {
	in := req.GetQueue()
	auth.SetAuditTarget(ctx, "workqueue/"+in.GetName())
	q, err := s.workQueueFromProto(ctx, in)
	if err != nil {
		return nil, err
	}
	q.UpdatedBy = actor(ctx)
	err = s.reg.UpdateWorkQueue(ctx, q, auth.AuditEvent(ctx, "workqueue/"+q.Name, workQueueDetails(q)))
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return nil, connect.Errorf(connect.CodeNotFound, "queue.name: no work queue named %q", q.Name)
	case errors.Is(err, registry.ErrConflict):
		return nil, connect.NewError(connect.CodeFailedPrecondition, "queue.unique_references: "+strings.TrimPrefix(err.Error(), "update work queue "+q.Name+": conflict: "))
	case err != nil:
		return nil, toConnect(err)
	}
	s.wakeTriggers(q.Name)
	return &casarev1.UpdateWorkQueueResponse{Queue: workQueueToProto(q)}, nil
}

func (s *workQueueService) DeleteWorkQueue(ctx context.Context, req *casarev1.DeleteWorkQueueRequest) (*casarev1.DeleteWorkQueueResponse, error) {
	auth.SetAuditTarget(ctx, "workqueue/"+req.GetName())
	err := s.reg.DeleteWorkQueue(ctx, req.GetName(), auth.AuditEvent(ctx, "workqueue/"+req.GetName(), nil))
	if errors.Is(err, registry.ErrNotFound) {
		return nil, connect.Errorf(connect.CodeNotFound, "name: no work queue named %q", req.GetName())
	}
	if err != nil {
		return nil, toConnect(err)
	}
	return &casarev1.DeleteWorkQueueResponse{}, nil
}

func (s *workQueueService) GetWorkQueue(ctx context.Context, req *casarev1.GetWorkQueueRequest) (*casarev1.GetWorkQueueResponse, error) {
	q, err := s.reg.GetWorkQueue(ctx, req.GetName())
	if errors.Is(err, registry.ErrNotFound) {
		return nil, connect.Errorf(connect.CodeNotFound, "name: no work queue named %q", req.GetName())
	}
	if err != nil {
		return nil, toConnect(err)
	}
	stats, err := s.reg.WorkQueueStats(ctx, q.Name)
	if err != nil {
		return nil, toConnect(err)
	}
	return &casarev1.GetWorkQueueResponse{Queue: workQueueToProto(q), Stats: workQueueStatsToProto(stats[q.Name])}, nil
}

func (s *workQueueService) ListWorkQueues(ctx context.Context, req *casarev1.ListWorkQueuesRequest) (*casarev1.ListWorkQueuesResponse, error) {
	list, next, err := s.reg.ListWorkQueues(ctx, registry.Page{Size: int(req.GetPageSize()), Token: req.GetPageToken()})
	if err != nil {
		return nil, toConnect(err)
	}
	names := make([]string, len(list))
	for i := range list {
		names[i] = list[i].Name
	}
	stats, err := s.reg.WorkQueueStats(ctx, names...)
	if err != nil {
		return nil, toConnect(err)
	}
	res := &casarev1.ListWorkQueuesResponse{NextPageToken: next}
	for i := range list {
		res.Queues = append(res.Queues, workQueueToProto(&list[i]))
		res.Stats = append(res.Stats, workQueueStatsToProto(stats[list[i].Name]))
	}
	return res, nil
}

// AddWorkItems adds the items, all or none: a reference taken in a queue
// with unique references refuses the batch naming every refused row.
func (s *workQueueService) AddWorkItems(ctx context.Context, req *casarev1.AddWorkItemsRequest) (*casarev1.AddWorkItemsResponse, error) {
	auth.SetAuditTarget(ctx, "workqueue/"+req.GetQueue())
	items := make([]registry.WorkItem, len(req.GetItems()))
	for i, in := range req.GetItems() {
		item, err := workqueue.ItemFromInput(in.GetReference(), registry.Priority(in.GetPriority()), in.GetData(), in.GetDeferUntil(), in.GetDeadline())
		if err != nil {
			return nil, invalid(fmt.Sprintf("items[%d].data", i), "%v", err)
		}
		items[i] = item
	}
	ids, err := s.reg.AddWorkItems(ctx, registry.AddItems{
		Queue: req.GetQueue(), Items: items, By: actor(ctx),
		Audit: auth.AuditEvent(ctx, "workqueue/"+req.GetQueue(), map[string]any{"added": len(items)}),
	})
	if err != nil {
		return nil, workItemError(err, "queue", req.GetQueue())
	}
	s.wakeTriggers(req.GetQueue())
	return &casarev1.AddWorkItemsResponse{Ids: ids}, nil
}

// workItemError converts the registry's refusals of item calls, naming
// the field: an unknown queue, bad rows.
func workItemError(err error, field, queue string) error {
	var conflict *registry.ReferenceConflict
	switch {
	case errors.As(err, &conflict):
		return connect.NewError(connect.CodeAlreadyExists, "items: "+conflict.Error())
	case errors.Is(err, registry.ErrNotFound) && queue != "":
		return connect.Errorf(connect.CodeNotFound, "%s: no work queue named %q", field, queue)
	case errors.Is(err, registry.ErrInvalidArgument):
		msg := err.Error()
		if i := strings.Index(msg, "invalid argument: "); i >= 0 {
			msg = msg[i+len("invalid argument: "):]
		}
		return connect.NewError(connect.CodeInvalidArgument, msg)
	}
	return toConnect(err)
}

func (s *workQueueService) ListWorkItems(ctx context.Context, req *casarev1.ListWorkItemsRequest) (*casarev1.ListWorkItemsResponse, error) {
	f := registry.WorkItemFilter{Queue: req.GetQueue(), Reference: req.GetReference(), Exception: exceptionFromProto(req.GetException())}
	for _, st := range req.GetStatuses() {
		f.Statuses = append(f.Statuses, itemStatusFromProto(st))
	}
	if req.GetCreatedAfter() != nil {
		f.CreatedAfter = req.GetCreatedAfter().AsTime()
	}
	if req.GetCreatedBefore() != nil {
		f.CreatedBefore = req.GetCreatedBefore().AsTime()
	}
	if exists, err := s.reg.WorkQueueNames(ctx, f.Queue); err != nil {
		return nil, toConnect(err)
	} else if !exists[f.Queue] {
		return nil, connect.Errorf(connect.CodeNotFound, "queue: no work queue named %q", f.Queue)
	}
	items, next, err := s.reg.ListWorkItems(ctx, f, registry.Page{Size: int(req.GetPageSize()), Token: req.GetPageToken()})
	if err != nil {
		return nil, toConnect(err)
	}
	res := &casarev1.ListWorkItemsResponse{NextPageToken: next}
	for i := range items {
		res.Items = append(res.Items, workItemToProto(&items[i]))
	}
	return res, nil
}

func (s *workQueueService) GetWorkItem(ctx context.Context, req *casarev1.GetWorkItemRequest) (*casarev1.GetWorkItemResponse, error) {
	item, history, err := s.reg.GetWorkItem(ctx, req.GetId())
	if errors.Is(err, registry.ErrNotFound) {
		return nil, connect.Errorf(connect.CodeNotFound, "id: no work item %q", req.GetId())
	}
	if err != nil {
		return nil, toConnect(err)
	}
	res := &casarev1.GetWorkItemResponse{Item: workItemToProto(item)}
	for _, e := range history {
		res.History = append(res.History, &casarev1.WorkItemEvent{
			Time: timestamppb.New(e.Time), Status: itemStatusToProto(e.Status), JobId: e.JobID,
			Attempt: e.Attempt, RobotId: e.RobotID, Message: e.Message,
		})
	}
	return res, nil
}

func (s *workQueueService) RetryWorkItems(ctx context.Context, req *casarev1.RetryWorkItemsRequest) (*casarev1.RetryWorkItemsResponse, error) {
	auth.SetAuditTarget(ctx, "workitems")
	ids, err := s.reg.RetryWorkItems(ctx, req.GetIds(), actor(ctx),
		auth.AuditEvent(ctx, "workitems", map[string]any{"retried": len(req.GetIds()), "ids": firstIDs(req.GetIds())}))
	if err != nil {
		return nil, idsError(err)
	}
	s.wakeAllTriggers()
	return &casarev1.RetryWorkItemsResponse{Ids: ids}, nil
}

func (s *workQueueService) DeferWorkItems(ctx context.Context, req *casarev1.DeferWorkItemsRequest) (*casarev1.DeferWorkItemsResponse, error) {
	auth.SetAuditTarget(ctx, "workitems")
	var until *time.Time
	if req.GetDeferUntil() != nil {
		t := req.GetDeferUntil().AsTime()
		until = &t
	}
	n, err := s.reg.DeferWorkItems(ctx, req.GetIds(), until, actor(ctx),
		auth.AuditEvent(ctx, "workitems", map[string]any{"deferred": len(req.GetIds()), "ids": firstIDs(req.GetIds())}))
	if err != nil {
		return nil, idsError(err)
	}
	if until == nil {
		s.wakeAllTriggers()
	}
	return &casarev1.DeferWorkItemsResponse{Deferred: int32(n)}, nil
}

func (s *workQueueService) DeleteWorkItems(ctx context.Context, req *casarev1.DeleteWorkItemsRequest) (*casarev1.DeleteWorkItemsResponse, error) {
	auth.SetAuditTarget(ctx, "workitems")
	n, err := s.reg.DeleteWorkItems(ctx, req.GetIds(), actor(ctx),
		auth.AuditEvent(ctx, "workitems", map[string]any{"deleted": len(req.GetIds()), "ids": firstIDs(req.GetIds())}))
	if err != nil {
		return nil, idsError(err)
	}
	return &casarev1.DeleteWorkItemsResponse{Deleted: int32(n)}, nil
}

// idsError names the ids field in the registry's refusal of a bulk change.
func idsError(err error) error {
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return connect.NewError(connect.CodeNotFound, "ids: "+trimCause(err))
	case errors.Is(err, registry.ErrConflict):
		return connect.NewError(connect.CodeFailedPrecondition, "ids: "+trimCause(err))
	case errors.Is(err, registry.ErrAlreadyExists):
		return connect.NewError(connect.CodeAlreadyExists, "ids: "+trimCause(err))
	}
	return toConnect(err)
}

// trimCause drops the operation and sentinel prefixes of a registry
// error, keeping what it says of the rows.
func trimCause(err error) string {
	msg := err.Error()
	for _, sentinel := range []string{"not found: ", "conflict: ", "already exists: "} {
		if i := strings.Index(msg, sentinel); i >= 0 {
			return msg[i+len(sentinel):]
		}
	}
	return msg
}

// firstIDs keeps an audit entry of a bulk change small.
func firstIDs(ids []string) []string {
	if len(ids) > 20 {
		return ids[:20]
	}
	return ids
}

func (s *workQueueService) GetWorkQueueStats(ctx context.Context, req *casarev1.GetWorkQueueStatsRequest) (*casarev1.GetWorkQueueStatsResponse, error) {
	if exists, err := s.reg.WorkQueueNames(ctx, req.GetName()); err != nil {
		return nil, toConnect(err)
	} else if !exists[req.GetName()] {
		return nil, connect.Errorf(connect.CodeNotFound, "name: no work queue named %q", req.GetName())
	}
	stats, err := s.reg.WorkQueueStats(ctx, req.GetName())
	if err != nil {
		return nil, toConnect(err)
	}
	return &casarev1.GetWorkQueueStatsResponse{Stats: workQueueStatsToProto(stats[req.GetName()])}, nil
}

func (s *Services) wakeTriggers(queue string) {
	if s.queueTriggers != nil {
		s.queueTriggers.Wake(queue)
	}
}

func (s *Services) wakeAllTriggers() { s.wakeTriggers("") }

// workQueueFromProto checks what protovalidate cannot (the trigger's
// workflow) and converts.
func (s *Services) workQueueFromProto(ctx context.Context, in *casarev1.WorkQueue) (*registry.WorkQueue, error) {
	q := &registry.WorkQueue{
		Name: in.GetName(), Description: in.GetDescription(), MaxRetries: in.GetMaxRetries(),
		UniqueReferences: in.GetUniqueReferences(), SLAMillis: in.GetSla().AsDuration().Milliseconds(),
		TriggerRequires: "{}", TriggerPriority: registry.PriorityNormal,
	}
	if in.GetSla() == nil {
		q.SLAMillis = 0
	}
	t := in.GetTrigger()
	if t == nil {
		return q, nil
	}
	q.TriggerEnabled, q.TriggerWorkflowName, q.TriggerWorkflowVersion = t.GetEnabled(), t.GetWorkflowName(), t.GetWorkflowVersion()
	q.TriggerMinItems, q.TriggerItemsPerJob, q.TriggerMaxJobs = max(t.GetMinItems(), 1), max(t.GetItemsPerJob(), 1), max(t.GetMaxJobs(), 1)
	if t.GetPriority() != casarev1.JobPriority_JOB_PRIORITY_UNSPECIFIED {
		q.TriggerPriority = registry.Priority(t.GetPriority())
	}
	requires, err := marshalJSON(t.GetRequires())
	if err != nil {
		return nil, toConnect(fmt.Errorf("encode requirements: %w", err))
	}
	if t.GetRequires() == nil {
		requires = "{}"
	}
	q.TriggerRequires = requires
	if t.GetWorkflowName() == "" {
		return nil, invalid("queue.trigger.workflow_name", "required: the stored workflow the trigger starts")
	}
	stored, err := s.reg.GetWorkflow(ctx, t.GetWorkflowName(), t.GetWorkflowVersion())
	if errors.Is(err, registry.ErrNotFound) {
		if t.GetWorkflowVersion() != 0 {
			return nil, connect.Errorf(connect.CodeNotFound, "queue.trigger.workflow_version: workflow %q has no version %d", t.GetWorkflowName(), t.GetWorkflowVersion())
		}
		return nil, connect.Errorf(connect.CodeNotFound, "queue.trigger.workflow_name: no stored workflow named %q (push it with casarectl workflows push)", t.GetWorkflowName())
	}
	if err != nil {
		return nil, toConnect(err)
	}
	wf, err := stored.DecodeDefinition()
	if err != nil {
		return nil, toConnect(err)
	}
	for name, spec := range wf.GetInputs() {
		if name != "queue" && spec.GetRequired() && spec.GetDefault() == nil {
			return nil, invalid("queue.trigger.workflow_name", "workflow %s requires the input %s, and a queue trigger passes only queue", stored.Name, name)
		}
	}
	return q, nil
}

func workQueueDetails(q *registry.WorkQueue) map[string]any {
	d := map[string]any{"max_retries": q.MaxRetries, "unique_references": q.UniqueReferences, "sla_ms": q.SLAMillis}
	if q.TriggerEnabled {
		d["trigger_workflow"] = q.TriggerWorkflowName
	}
	return d
}

func workQueueToProto(q *registry.WorkQueue) *casarev1.WorkQueue {
	out := &casarev1.WorkQueue{
		Name: q.Name, Description: q.Description, MaxRetries: q.MaxRetries, UniqueReferences: q.UniqueReferences,
		CreatedAt: timestamppb.New(q.CreatedAt), UpdatedAt: timestamppb.New(q.UpdatedAt), UpdatedBy: q.UpdatedBy,
	}
	if q.SLAMillis > 0 {
		out.Sla = durationpb.New(q.SLA())
	}
	if q.TriggerWorkflowName != "" {
		out.Trigger = &casarev1.QueueTrigger{
			WorkflowName: q.TriggerWorkflowName, WorkflowVersion: q.TriggerWorkflowVersion,
			MinItems: q.TriggerMinItems, ItemsPerJob: q.TriggerItemsPerJob, MaxJobs: q.TriggerMaxJobs,
			Priority: casarev1.JobPriority(q.TriggerPriority), Enabled: q.TriggerEnabled,
		}
		if q.TriggerRequires != "" && q.TriggerRequires != "{}" {
			req := &casarev1.Requirements{}
			if err := protojson.Unmarshal([]byte(q.TriggerRequires), req); err == nil {
				out.Trigger.Requires = req
			}
		}
	}
	return out
}

func workQueueStatsToProto(s *registry.WorkQueueStats) *casarev1.WorkQueueStats {
	if s == nil {
		return nil
	}
	out := &casarev1.WorkQueueStats{
		Queue: s.Queue, Counts: map[string]int64{}, ItemsPerMinute: s.ItemsPerMinute,
		AverageProcessing: durationpb.New(s.AverageProcessing), SlaBreaches: s.SLABreaches,
	}
	for st, n := range s.Counts {
		out.Counts[strings.ToUpper(string(st))] = n
	}
	if s.OldestNew != nil {
		out.OldestNew = timestamppb.New(*s.OldestNew)
	}
	return out
}

func workItemToProto(it *registry.WorkItem) *casarev1.WorkItem {
	out := &casarev1.WorkItem{
		Queue: it.Queue, Id: it.ID, Reference: it.Reference, Priority: casarev1.WorkItemPriority(it.Priority),
		Status: itemStatusToProto(it.Status), Progress: it.Progress, Exception: exceptionToProto(it.Exception),
		Reason: it.Reason, Retry: it.Retry, RetryOf: it.RetryOf, JobId: it.JobID, Attempt: it.Attempt,
		RobotId: it.RobotID, CreatedAt: timestamppb.New(it.CreatedAt), UpdatedAt: timestamppb.New(it.UpdatedAt),
		CreatedBy: it.CreatedBy,
	}
	out.Data = jsonStruct(it.Data)
	out.Output = jsonStruct(it.Output)
	for _, p := range []struct {
		t   *time.Time
		dst **timestamppb.Timestamp
	}{{it.DeferUntil, &out.DeferUntil}, {it.Deadline, &out.Deadline}, {it.StartedAt, &out.StartedAt}, {it.EndedAt, &out.EndedAt}} {
		if p.t != nil {
			*p.dst = timestamppb.New(*p.t)
		}
	}
	return out
}

// jsonStruct decodes a stored JSON object; nil for none.
func jsonStruct(s string) *structpb.Struct {
	if s == "" {
		return nil
	}
	out := &structpb.Struct{}
	if err := protojson.Unmarshal([]byte(s), out); err != nil {
		return nil
	}
	return out
}

func itemStatusToProto(s registry.WorkItemStatus) casarev1.WorkItemStatus {
	return casarev1.WorkItemStatus(casarev1.WorkItemStatus_value["WORK_ITEM_STATUS_"+strings.ToUpper(string(s))])
}

func itemStatusFromProto(s casarev1.WorkItemStatus) registry.WorkItemStatus {
	return registry.WorkItemStatus(strings.ToLower(strings.TrimPrefix(s.String(), "WORK_ITEM_STATUS_")))
}

func exceptionToProto(e registry.WorkItemException) casarev1.WorkItemException {
	switch e {
	case registry.ExceptionBusiness:
		return casarev1.WorkItemException_WORK_ITEM_EXCEPTION_BUSINESS
	case registry.ExceptionApplication:
		return casarev1.WorkItemException_WORK_ITEM_EXCEPTION_APPLICATION
	}
	return casarev1.WorkItemException_WORK_ITEM_EXCEPTION_UNSPECIFIED
}

func exceptionFromProto(e casarev1.WorkItemException) registry.WorkItemException {
	switch e {
	case casarev1.WorkItemException_WORK_ITEM_EXCEPTION_BUSINESS:
		return registry.ExceptionBusiness
	case casarev1.WorkItemException_WORK_ITEM_EXCEPTION_APPLICATION:
		return registry.ExceptionApplication
	}
	return registry.ExceptionNone
}

// checkQueueUses refuses a workflow whose queue steps name a queue that is
// not stored, naming the step's field and the queue.
func (s *Services) checkQueueUses(ctx context.Context, wf *casarev1.Workflow) error {
	uses := workflow.QueueUses(wf)
	if len(uses) == 0 {
		return nil
	}
	names := make([]string, 0, len(uses))
	for _, u := range uses {
		names = append(names, u.Name)
	}
	exists, err := s.reg.WorkQueueNames(ctx, names...)
	if err != nil {
		return toConnect(err)
	}
	var problems []string
	for _, u := range uses {
		if !exists[u.Name] {
			problems = append(problems, fmt.Sprintf("%s: no work queue named %q (create it with casarectl workqueues create)", u.Path, u.Name))
		}
	}
	if len(problems) > 0 {
		return connect.NewError(connect.CodeInvalidArgument, strings.Join(problems, "; "))
	}
	return nil
}
