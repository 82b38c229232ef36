package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"connectrpc.com/connect/v2"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/casarerpa/casare/agent/workflow"
	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/rpc/casare/v1/casarev1connect"
	"github.com/casarerpa/casare/server/auth"
	"github.com/casarerpa/casare/server/registry"
	"github.com/casarerpa/casare/server/schedule"
)

// scheduleService serves schedules and the calendars they share.
type scheduleService struct {
	*Services
}

var _ casarev1connect.ScheduleServiceHandler = (*scheduleService)(nil)

var overlapPolicies = map[casarev1.OverlapPolicy]string{
	casarev1.OverlapPolicy_OVERLAP_POLICY_UNSPECIFIED:     schedule.OverlapSkip,
	casarev1.OverlapPolicy_OVERLAP_POLICY_ALLOW:           schedule.OverlapAllow,
	casarev1.OverlapPolicy_OVERLAP_POLICY_SKIP:            schedule.OverlapSkip,
	casarev1.OverlapPolicy_OVERLAP_POLICY_QUEUE_ONE:       schedule.OverlapQueueOne,
	casarev1.OverlapPolicy_OVERLAP_POLICY_CANCEL_PREVIOUS: schedule.OverlapCancelPrevious,
}

var misfirePolicies = map[casarev1.MisfirePolicy]string{
	casarev1.MisfirePolicy_MISFIRE_POLICY_UNSPECIFIED: schedule.MisfireSkip,
	casarev1.MisfirePolicy_MISFIRE_POLICY_SKIP:        schedule.MisfireSkip,
	casarev1.MisfirePolicy_MISFIRE_POLICY_RUN_ONCE:    schedule.MisfireRunOnce,
	casarev1.MisfirePolicy_MISFIRE_POLICY_RUN_ALL:     schedule.MisfireRunAll,
}

func overlapToProto(p string) casarev1.OverlapPolicy {
	for k, v := range overlapPolicies {
		if v == p && k != casarev1.OverlapPolicy_OVERLAP_POLICY_UNSPECIFIED {
			return k
		}
	}
	return casarev1.OverlapPolicy_OVERLAP_POLICY_UNSPECIFIED
}

func misfireToProto(p string) casarev1.MisfirePolicy {
	for k, v := range misfirePolicies {
		if v == p && k != casarev1.MisfirePolicy_MISFIRE_POLICY_UNSPECIFIED {
			return k
		}
	}
	return casarev1.MisfirePolicy_MISFIRE_POLICY_UNSPECIFIED
}

func scheduleToProto(s *registry.Schedule, lastStatus registry.JobStatus) *casarev1.Schedule {
	out := &casarev1.Schedule{
		Id:              s.ID,
		Name:            s.Name,
		Description:     s.Description,
		WorkflowName:    s.WorkflowName,
		WorkflowVersion: s.WorkflowVersion,
		Cron:            s.Cron,
		TimeZone:        s.TimeZone,
		OverlapPolicy:   overlapToProto(s.OverlapPolicy),
		MisfirePolicy:   misfireToProto(s.MisfirePolicy),
		MisfireLimit:    s.MisfireLimit,
		Paused:          s.Paused,
		NextFireTime:    timestampPtr(s.NextFireTime),
		Priority:        casarev1.JobPriority(s.Priority),
		MaxAttempts:     s.MaxAttempts,
		StartTime:       timestampPtr(s.StartTime),
		EndTime:         timestampPtr(s.EndTime),
		Calendars:       s.Calendars,
		LastFireTime:    timestampPtr(s.LastFireTime),
		LastJobId:       s.LastJobID,
		LastJobStatus:   jobStatusToProto(lastStatus),
		CreatedAt:       timestamp(s.CreatedAt),
		UpdatedAt:       timestamp(s.UpdatedAt),
		CreatedBy:       s.CreatedBy,
	}
	if s.Inputs != "" {
		out.Inputs = &structpb.Struct{}
		out.Inputs = readable(out.Inputs, protojson.Unmarshal([]byte(s.Inputs), out.Inputs))
	}
	if s.Requires != "" && s.Requires != "{}" {
		out.Requires = &casarev1.Requirements{}
		out.Requires = readable(out.Requires, protojson.Unmarshal([]byte(s.Requires), out.Requires))
	}
	return out
}

func timePtr(ts *timestamppb.Timestamp) *time.Time {
	if ts == nil {
		return nil
	}
	t := ts.AsTime()
	return &t
}

// specError turns a schedule.FieldError into invalid_argument naming the
// field under prefix.
func specError(prefix string, err error) error {
	var ferr *schedule.FieldError
	if errors.As(err, &ferr) {
		return invalid(prefix+ferr.Field, "%s", ferr.Msg)
	}
	return toConnect(err)
}

// prefixed puts the field prefix in front of a Connect error's message.
func prefixed(prefix string, err error) error {
	var cerr *connect.Error
	if errors.As(err, &cerr) && !cerr.IsRemote() && cerr.Code() != connect.CodeInternal && cerr.Code() != connect.CodeUnavailable {
		return connect.NewError(cerr.Code(), prefix+cerr.Message())
	}
	return err
}

// calendarsOf returns the stored calendars named, not_found naming the
// field when one is missing.
func (s *scheduleService) calendarsOf(ctx context.Context, names []string) (map[string]*registry.Calendar, error) {
	cals, err := s.reg.GetCalendars(ctx, names)
	if errors.Is(err, registry.ErrNotFound) {
		return nil, connect.Errorf(connect.CodeNotFound, "schedule.calendars: %s (create it with casarectl calendars create)", err.Error())
	}
	if err != nil {
		return nil, toConnect(err)
	}
	return cals, nil
}

// scheduleFromProto checks a schedule of a Create or Update and returns it
// as stored, its next fire computed. Nothing of the request that the
// server fills is taken.
func (s *scheduleService) scheduleFromProto(ctx context.Context, p *casarev1.Schedule, now time.Time) (*registry.Schedule, error) {
	if p.GetName() == "" {
		return nil, invalid("schedule.name", "required")
	}
	if p.GetWorkflowName() == "" {
		return nil, invalid("schedule.workflow_name", "required: the stored workflow the schedule runs")
	}
	out := &registry.Schedule{
		Name:            p.GetName(),
		Description:     p.GetDescription(),
		WorkflowName:    p.GetWorkflowName(),
		WorkflowVersion: p.GetWorkflowVersion(),
		Cron:            p.GetCron(),
		TimeZone:        p.GetTimeZone(),
		Priority:        registry.Priority(p.GetPriority()),
		MaxAttempts:     p.GetMaxAttempts(),
		StartTime:       timePtr(p.GetStartTime()),
		EndTime:         timePtr(p.GetEndTime()),
		OverlapPolicy:   overlapPolicies[p.GetOverlapPolicy()],
		MisfirePolicy:   misfirePolicies[p.GetMisfirePolicy()],
		MisfireLimit:    p.GetMisfireLimit(),
		Paused:          p.GetPaused(),
		Calendars:       p.GetCalendars(),
		UpdatedAt:       now,
		CreatedAt:       now,
	}
	cals, err := s.calendarsOf(ctx, out.Calendars)
	if err != nil {
		return nil, err
	}
	spec, err := schedule.SpecOf(out, cals, now)
	if err != nil {
		return nil, specError("schedule.", err)
	}
	// The jobs it will make must be valid now: the workflow stored, the
	// inputs what it takes, the requirements compatible.
	probe := &casarev1.SubmitJobRequest{
		Source:          &casarev1.SubmitJobRequest_WorkflowName{WorkflowName: out.WorkflowName},
		WorkflowVersion: out.WorkflowVersion,
		Inputs:          p.GetInputs(),
		Requires:        p.GetRequires(),
	}
	wf, _, _, err := s.resolveWorkflow(ctx, probe)
	if err != nil {
		return nil, prefixed("schedule.", err)
	}
	if _, err := checkInputs(wf, p.GetInputs()); err != nil {
		return nil, prefixed("schedule.", err)
	}
	if _, err := mergeRequirements(workflow.Requirements(wf, stepCatalogue), p.GetRequires()); err != nil {
		return nil, prefixed("schedule.", err)
	}
	inputs := p.GetInputs()
	if inputs == nil {
		inputs = &structpb.Struct{}
	}
	if out.Inputs, err = marshalJSON(inputs); err != nil {
		return nil, toConnect(fmt.Errorf("encode inputs: %w", err))
	}
	if out.Requires, err = marshalJSON(p.GetRequires()); err != nil {
		return nil, toConnect(fmt.Errorf("encode requirements: %w", err))
	}
	if out.Requires == "" {
		out.Requires = "{}"
	}
	if !out.Paused {
		if next, ok := spec.Next(now); ok {
			out.NextFireTime = &next
		}
	}
	return out, nil
}

// withLastStatus answers a schedule with the status of the job it made
// last.
func (s *scheduleService) withLastStatus(ctx context.Context, sch *registry.Schedule) (*casarev1.Schedule, error) {
	list, err := s.withLastStatuses(ctx, []*registry.Schedule{sch})
	if err != nil {
		return nil, err
	}
	return list[0], nil
}

func (s *scheduleService) withLastStatuses(ctx context.Context, list []*registry.Schedule) ([]*casarev1.Schedule, error) {
	var ids []string
	for _, sch := range list {
		if sch.LastJobID != "" {
			ids = append(ids, sch.LastJobID)
		}
	}
	statuses, err := s.reg.JobStatuses(ctx, ids)
	if err != nil {
		return nil, toConnect(err)
	}
	out := make([]*casarev1.Schedule, len(list))
	for i, sch := range list {
		out[i] = scheduleToProto(sch, statuses[sch.LastJobID])
	}
	return out, nil
}

func scheduleNotFound(name string, err error) error {
	if errors.Is(err, registry.ErrNotFound) {
		return connect.Errorf(connect.CodeNotFound, "schedule %q not found", name)
	}
	return toConnect(err)
}

// CreateSchedule stores a schedule with its first fire and the audit
// event in one transaction.
func (s *scheduleService) CreateSchedule(ctx context.Context, req *casarev1.CreateScheduleRequest) (*casarev1.CreateScheduleResponse, error) {
	auth.SetAuditTarget(ctx, "schedule/"+req.GetSchedule().GetName())
	sch, err := s.scheduleFromProto(ctx, req.GetSchedule(), time.Now().UTC())
	if err != nil {
		return nil, err
	}
	sch.ID = registry.NewID()
	sch.CreatedBy = actor(ctx)
	audit := auth.AuditEvent(ctx, "schedule/"+sch.Name, map[string]any{"workflow": sch.WorkflowName, "cron": sch.Cron, "time_zone": sch.TimeZone})
	err = s.reg.CreateSchedule(ctx, sch, audit)
	switch {
	case errors.Is(err, registry.ErrAlreadyExists):
		return nil, connect.Errorf(connect.CodeAlreadyExists, "schedule.name: a schedule named %q exists; update it or pick another name", sch.Name)
	case errors.Is(err, registry.ErrNotFound):
		return nil, connect.Errorf(connect.CodeNotFound, "schedule.calendars: %v", err)
	case err != nil:
		return nil, toConnect(err)
	}
	return &casarev1.CreateScheduleResponse{Schedule: scheduleToProto(sch, "")}, nil
}

func (s *scheduleService) GetSchedule(ctx context.Context, req *casarev1.GetScheduleRequest) (*casarev1.GetScheduleResponse, error) {
	sch, err := s.reg.GetSchedule(ctx, req.GetName())
	if err != nil {
		return nil, scheduleNotFound(req.GetName(), err)
	}
	p, err := s.withLastStatus(ctx, sch)
	if err != nil {
		return nil, err
	}
	return &casarev1.GetScheduleResponse{Schedule: p}, nil
}

func (s *scheduleService) ListSchedules(ctx context.Context, req *casarev1.ListSchedulesRequest) (*casarev1.ListSchedulesResponse, error) {
	list, next, err := s.reg.ListSchedules(ctx, registry.ScheduleFilter{WorkflowName: req.GetWorkflowName()},
		registry.Page{Size: int(req.GetPageSize()), Token: req.GetPageToken()})
	if err != nil {
		return nil, toConnect(err)
	}
	out, err := s.withLastStatuses(ctx, list)
	if err != nil {
		return nil, err
	}
	return &casarev1.ListSchedulesResponse{Schedules: out, NextPageToken: next}, nil
}

// UpdateSchedule replaces a schedule's definition and computes its next
// fire from now; its last fire stays.
func (s *scheduleService) UpdateSchedule(ctx context.Context, req *casarev1.UpdateScheduleRequest) (*casarev1.UpdateScheduleResponse, error) {
	auth.SetAuditTarget(ctx, "schedule/"+req.GetSchedule().GetName())
	sch, err := s.scheduleFromProto(ctx, req.GetSchedule(), time.Now().UTC())
	if err != nil {
		return nil, err
	}
	audit := auth.AuditEvent(ctx, "schedule/"+sch.Name, map[string]any{"workflow": sch.WorkflowName, "cron": sch.Cron, "time_zone": sch.TimeZone})
	if err := s.reg.UpdateSchedule(ctx, sch, audit); err != nil {
		if errors.Is(err, registry.ErrNotFound) {
			return nil, connect.Errorf(connect.CodeNotFound, "schedule.name: %v", err)
		}
		return nil, toConnect(err)
	}
	p, err := s.withLastStatus(ctx, sch)
	if err != nil {
		return nil, err
	}
	return &casarev1.UpdateScheduleResponse{Schedule: p}, nil
}

func (s *scheduleService) DeleteSchedule(ctx context.Context, req *casarev1.DeleteScheduleRequest) (*casarev1.DeleteScheduleResponse, error) {
	auth.SetAuditTarget(ctx, "schedule/"+req.GetName())
	if err := s.reg.DeleteSchedule(ctx, req.GetName(), auth.AuditEvent(ctx, "schedule/"+req.GetName(), nil)); err != nil {
		return nil, scheduleNotFound(req.GetName(), err)
	}
	return &casarev1.DeleteScheduleResponse{}, nil
}

func (s *scheduleService) setPaused(ctx context.Context, name string, paused bool) (*casarev1.Schedule, error) {
	auth.SetAuditTarget(ctx, "schedule/"+name)
	now := time.Now().UTC()
	next := func(sch *registry.Schedule, cals map[string]*registry.Calendar) (*time.Time, error) {
		spec, err := schedule.SpecOf(sch, cals, now)
		if err != nil {
			return nil, err
		}
		if t, ok := spec.Next(now); ok {
			return &t, nil
		}
		return nil, nil
	}
	sch, err := s.reg.SetSchedulePaused(ctx, name, paused, next, auth.AuditEvent(ctx, "schedule/"+name, map[string]any{"paused": paused}))
	if err != nil {
		var ferr *schedule.FieldError
		if errors.As(err, &ferr) {
			return nil, connect.Errorf(connect.CodeFailedPrecondition, "schedule %s cannot fire: %v; update it", name, ferr)
		}
		return nil, scheduleNotFound(name, err)
	}
	return s.withLastStatus(ctx, sch)
}

func (s *scheduleService) PauseSchedule(ctx context.Context, req *casarev1.PauseScheduleRequest) (*casarev1.PauseScheduleResponse, error) {
	p, err := s.setPaused(ctx, req.GetName(), true)
	if err != nil {
		return nil, err
	}
	return &casarev1.PauseScheduleResponse{Schedule: p}, nil
}

func (s *scheduleService) ResumeSchedule(ctx context.Context, req *casarev1.ResumeScheduleRequest) (*casarev1.ResumeScheduleResponse, error) {
	p, err := s.setPaused(ctx, req.GetName(), false)
	if err != nil {
		return nil, err
	}
	return &casarev1.ResumeScheduleResponse{Schedule: p}, nil
}

// TriggerSchedule makes a job of the schedule now. It has no idempotency
// key: each "run now" is a run of its own.
func (s *scheduleService) TriggerSchedule(ctx context.Context, req *casarev1.TriggerScheduleRequest) (*casarev1.TriggerScheduleResponse, error) {
	auth.SetAuditTarget(ctx, "schedule/"+req.GetName())
	sch, err := s.reg.GetSchedule(ctx, req.GetName())
	if err != nil {
		return nil, scheduleNotFound(req.GetName(), err)
	}
	submit, err := schedule.JobRequest(sch, "")
	if err != nil {
		return nil, toConnect(err)
	}
	job, _, err := s.Submit(ctx, submit, actor(ctx))
	if err != nil {
		return nil, prefixed("schedule "+sch.Name+": ", err)
	}
	if err := s.reg.RecordScheduleTriggered(ctx, sch.ID, job.CreatedAt, job.ID); err != nil {
		// The job exists and runs; only the schedule's note of it is
		// lost.
		s.logger.Warn("record the job of a run-now", "schedule", sch.Name, "job", job.ID, "err", err)
	}
	return &casarev1.TriggerScheduleResponse{Job: s.jobToProto(job)}, nil
}

// PreviewSchedule lists the next fire times of a stored schedule or of a
// spec not stored.
func (s *scheduleService) PreviewSchedule(ctx context.Context, req *casarev1.PreviewScheduleRequest) (*casarev1.PreviewScheduleResponse, error) {
	after := time.Now().UTC()
	if req.GetAfter() != nil {
		after = req.GetAfter().AsTime()
	}
	sch := &registry.Schedule{}
	if name := req.GetName(); name != "" {
		var err error
		if sch, err = s.reg.GetSchedule(ctx, name); err != nil {
			return nil, scheduleNotFound(name, err)
		}
	} else {
		p := req.GetSchedule()
		sch = &registry.Schedule{Cron: p.GetCron(), TimeZone: p.GetTimeZone(), StartTime: timePtr(p.GetStartTime()), EndTime: timePtr(p.GetEndTime()), Calendars: p.GetCalendars()}
	}
	cals, err := s.calendarsOf(ctx, sch.Calendars)
	if err != nil {
		return nil, err
	}
	spec, err := schedule.SpecOf(sch, cals, after)
	if err != nil {
		return nil, specError("schedule.", err)
	}
	n := int(req.GetCount())
	if n == 0 {
		n = 10
	}
	res := &casarev1.PreviewScheduleResponse{}
	for at := after; len(res.FireTimes) < n; {
		next, ok := spec.Next(at)
		if !ok {
			break
		}
		res.FireTimes = append(res.FireTimes, timestamppb.New(next))
		at = next
	}
	return res, nil
}

func calendarToProto(c *registry.Calendar) *casarev1.Calendar {
	out := &casarev1.Calendar{Name: c.Name, Description: c.Description, CreatedAt: timestamp(c.CreatedAt), UpdatedAt: timestamp(c.UpdatedAt)}
	// Stored by this server from checked lists; see readable.
	_ = json.Unmarshal([]byte(c.ExcludedDates), &out.ExcludedDates)
	_ = json.Unmarshal([]byte(c.Weekdays), &out.Weekdays)
	_ = json.Unmarshal([]byte(c.Hours), &out.Hours)
	return out
}

// calendarFromProto checks a calendar and returns it as stored.
func calendarFromProto(p *casarev1.Calendar, now time.Time) (*registry.Calendar, error) {
	if _, err := schedule.NewCalendar(p.GetName(), p.GetExcludedDates(), p.GetWeekdays(), p.GetHours()); err != nil {
		return nil, specError("calendar.", err)
	}
	lists := make([]string, 3)
	for i, v := range []any{p.GetExcludedDates(), p.GetWeekdays(), p.GetHours()} {
		b, err := json.Marshal(v)
		if err != nil {
			return nil, toConnect(err)
		}
		lists[i] = string(b)
		if lists[i] == "null" {
			lists[i] = "[]"
		}
	}
	return &registry.Calendar{
		Name: p.GetName(), Description: p.GetDescription(),
		ExcludedDates: lists[0], Weekdays: lists[1], Hours: lists[2],
		CreatedAt: now, UpdatedAt: now,
	}, nil
}

func calendarNotFound(name string, err error) error {
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return connect.Errorf(connect.CodeNotFound, "calendar %q not found", name)
	case errors.Is(err, registry.ErrConflict):
		return connect.NewError(connect.CodeFailedPrecondition, strings.TrimSuffix(err.Error(), ": "+registry.ErrConflict.Error()))
	}
	return toConnect(err)
}

func (s *scheduleService) CreateCalendar(ctx context.Context, req *casarev1.CreateCalendarRequest) (*casarev1.CreateCalendarResponse, error) {
	auth.SetAuditTarget(ctx, "calendar/"+req.GetCalendar().GetName())
	c, err := calendarFromProto(req.GetCalendar(), time.Now().UTC())
	if err != nil {
		return nil, err
	}
	c.CreatedBy = actor(ctx)
	err = s.reg.CreateCalendar(ctx, c, auth.AuditEvent(ctx, "calendar/"+c.Name, nil))
	if errors.Is(err, registry.ErrAlreadyExists) {
		return nil, connect.Errorf(connect.CodeAlreadyExists, "calendar.name: a calendar named %q exists; update it or pick another name", c.Name)
	}
	if err != nil {
		return nil, toConnect(err)
	}
	return &casarev1.CreateCalendarResponse{Calendar: calendarToProto(c)}, nil
}

func (s *scheduleService) GetCalendar(ctx context.Context, req *casarev1.GetCalendarRequest) (*casarev1.GetCalendarResponse, error) {
	c, err := s.reg.GetCalendar(ctx, req.GetName())
	if err != nil {
		return nil, calendarNotFound(req.GetName(), err)
	}
	return &casarev1.GetCalendarResponse{Calendar: calendarToProto(c)}, nil
}

func (s *scheduleService) ListCalendars(ctx context.Context, req *casarev1.ListCalendarsRequest) (*casarev1.ListCalendarsResponse, error) {
	list, next, err := s.reg.ListCalendars(ctx, registry.Page{Size: int(req.GetPageSize()), Token: req.GetPageToken()})
	if err != nil {
		return nil, toConnect(err)
	}
	res := &casarev1.ListCalendarsResponse{NextPageToken: next}
	for _, c := range list {
		res.Calendars = append(res.Calendars, calendarToProto(c))
	}
	return res, nil
}

// UpdateCalendar replaces a calendar and, in the same transaction, the
// next fire of each schedule using it. A change that would leave one of
// them no fire at all is refused, naming it.
func (s *scheduleService) UpdateCalendar(ctx context.Context, req *casarev1.UpdateCalendarRequest) (*casarev1.UpdateCalendarResponse, error) {
	auth.SetAuditTarget(ctx, "calendar/"+req.GetCalendar().GetName())
	now := time.Now().UTC()
	c, err := calendarFromProto(req.GetCalendar(), now)
	if err != nil {
		return nil, err
	}
	var refused error
	next := func(sch *registry.Schedule, cals map[string]*registry.Calendar) (*time.Time, error) {
		spec, err := schedule.SpecOf(sch, cals, now)
		if err != nil {
			refused = invalid("calendar", "schedule %s would never fire: %v", sch.Name, err)
			return nil, refused
		}
		if t, ok := spec.Next(now); ok {
			return &t, nil
		}
		return nil, nil
	}
	if err := s.reg.UpdateCalendar(ctx, c, next, auth.AuditEvent(ctx, "calendar/"+c.Name, nil)); err != nil {
		if refused != nil {
			return nil, refused
		}
		return nil, calendarNotFound(c.Name, err)
	}
	return &casarev1.UpdateCalendarResponse{Calendar: calendarToProto(c)}, nil
}

func (s *scheduleService) DeleteCalendar(ctx context.Context, req *casarev1.DeleteCalendarRequest) (*casarev1.DeleteCalendarResponse, error) {
	auth.SetAuditTarget(ctx, "calendar/"+req.GetName())
	if err := s.reg.DeleteCalendar(ctx, req.GetName(), auth.AuditEvent(ctx, "calendar/"+req.GetName(), nil)); err != nil {
		return nil, calendarNotFound(req.GetName(), err)
	}
	return &casarev1.DeleteCalendarResponse{}, nil
}
