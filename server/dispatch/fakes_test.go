package dispatch

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	agentv1 "github.com/casarerpa/casare/rpc/casare/agent/v1"
	"github.com/casarerpa/casare/server/jobs"
	"github.com/casarerpa/casare/server/queue"
	"github.com/casarerpa/casare/server/registry"
)

// memStore is the registry in memory: the jobs service runs on it as on
// the database (it is a jobs.Store), and so does the dispatcher (it is a
// Store). Transitions are fenced as the registry fences them, so the real
// transition table decides what a message does to a job.
type memStore struct {
	mu        sync.Mutex
	jobs      map[string]*registry.Job
	events    map[string][]registry.JobEvent
	robots    map[string]*registry.Robot
	logs      map[memLogKey]map[int64]bool
	artifacts map[string]map[string]registry.JobArtifact
	// down makes every call fail as a database that cannot be reached.
	down atomic.Bool
}

type memLogKey struct {
	jobID   string
	attempt int32
}

var (
	_ Store      = (*memStore)(nil)
	_ jobs.Store = (*memStore)(nil)
)

func newMemStore() *memStore {
	return &memStore{
		jobs:      map[string]*registry.Job{},
		events:    map[string][]registry.JobEvent{},
		robots:    map[string]*registry.Robot{},
		logs:      map[memLogKey]map[int64]bool{},
		artifacts: map[string]map[string]registry.JobArtifact{},
	}
}

// storeNow is the current time as the registry stores it.
func storeNow() time.Time {
	return time.Now().UTC().Truncate(time.Microsecond)
}

// unavailable is the error of a call while the store is down: what the
// registry returns when the database cannot serve.
func (s *memStore) unavailable(op string) error {
	if s.down.Load() {
		return fmt.Errorf("%s: %w", op, registry.ErrUnavailable)
	}
	return nil
}

func cloneJob(j *registry.Job) *registry.Job {
	c := *j
	return &c
}

func (s *memStore) GetJob(_ context.Context, id string) (*registry.Job, error) {
	if err := s.unavailable("get job " + id); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	job := s.jobs[id]
	if job == nil {
		return nil, fmt.Errorf("get job %s: %w", id, registry.ErrNotFound)
	}
	return cloneJob(job), nil
}

func (s *memStore) CreateJob(_ context.Context, job *registry.Job, _ *registry.AuditEvent) (*registry.Job, bool, error) {
	if err := s.unavailable("create job"); err != nil {
		return nil, false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if job.IdempotencyKey != nil {
		for _, j := range s.jobs {
			if j.IdempotencyKey != nil && *j.IdempotencyKey == *job.IdempotencyKey {
				return cloneJob(j), true, nil
			}
		}
	}
	if _, ok := s.jobs[job.ID]; ok {
		return nil, false, fmt.Errorf("create job %s: %w", job.ID, registry.ErrAlreadyExists)
	}
	if job.CreatedAt.IsZero() {
		job.CreatedAt = storeNow()
	}
	job.UpdatedAt = job.CreatedAt
	s.jobs[job.ID] = cloneJob(job)
	s.events[job.ID] = append(s.events[job.ID], registry.JobEvent{
		JobID: job.ID, Time: job.CreatedAt, ToStatus: job.Status, Attempt: job.Attempt,
		Reason: "submitted", Actor: job.CreatedBy,
	})
	return job, false, nil
}

// transitionConflict is registry.Transition's fence: why t does not apply
// to job as it is, or nil when it does.
func transitionConflict(t registry.Transition, job *registry.Job) error {
	switch {
	case !slices.Contains(t.From, job.Status):
		return fmt.Errorf("job %s is %s: %w", job.ID, job.Status, registry.ErrConflict)
	case t.Attempt != 0 && t.Attempt != job.Attempt:
		return fmt.Errorf("job %s is on attempt %d, not %d: %w", job.ID, job.Attempt, t.Attempt, registry.ErrConflict)
	case t.Robot != "" && t.Robot != job.RobotID:
		return fmt.Errorf("job %s is on robot %q, not %q: %w", job.ID, job.RobotID, t.Robot, registry.ErrConflict)
	}
	return nil
}

// TransitionJob applies t as the registry's transitionInTx does; refused,
// it changes nothing and returns the job as it is with the conflict.
func (s *memStore) TransitionJob(_ context.Context, t registry.Transition, _ *registry.AuditEvent) (*registry.Job, error) {
	if err := s.unavailable("transition job " + t.JobID); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	job := s.jobs[t.JobID]
	if job == nil {
		return nil, fmt.Errorf("transition job %s to %s: %w", t.JobID, t.To, registry.ErrNotFound)
	}
	if err := transitionConflict(t, job); err != nil {
		return cloneJob(job), err
	}
	at := t.Now
	if at.IsZero() {
		at = storeNow()
	}
	at = at.UTC().Truncate(time.Microsecond)
	from := job.Status
	job.Status = t.To
	job.StatusMessage = registry.CleanText(t.Message)
	job.UpdatedAt = at
	if t.NextAttempt {
		job.Attempt++
	}
	if t.NextAttempt || t.To == registry.JobPending || t.To == registry.JobAssigned {
		job.Progress, job.CurrentStep = 0, ""
	}
	if t.RobotID != nil {
		job.RobotID = *t.RobotID
	}
	if t.Result != nil {
		job.Result = *t.Result
	}
	if t.To == registry.JobRunning && job.StartedAt == nil {
		job.StartedAt = &at
	}
	if t.To.Finished() {
		job.FinishedAt = &at
	}
	if t.To == registry.JobSucceeded {
		job.Progress = 100
	}
	s.events[job.ID] = append(s.events[job.ID], registry.JobEvent{
		JobID: job.ID, Time: at, FromStatus: from, ToStatus: t.To, Attempt: job.Attempt,
		RobotID: job.RobotID, Reason: registry.CleanText(t.Reason), Actor: t.Actor,
	})
	return cloneJob(job), nil
}

func (s *memStore) SetJobProgress(_ context.Context, p registry.ProgressNote) (bool, error) {
	if err := s.unavailable("set progress of job " + p.JobID); err != nil {
		return false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	job := s.jobs[p.JobID]
	if job == nil || job.Attempt != p.Attempt || job.RobotID != p.RobotID || !slices.Contains(p.From, job.Status) {
		return false, nil
	}
	job.Progress, job.CurrentStep, job.UpdatedAt = p.Percent, registry.CleanText(p.Step), storeNow()
	return true, nil
}

func (s *memStore) SetPendingMessage(_ context.Context, jobID string, attempt int32, message string) (bool, error) {
	if err := s.unavailable("set status message of job " + jobID); err != nil {
		return false, err
	}
	message = registry.CleanText(message)
	s.mu.Lock()
	defer s.mu.Unlock()
	job := s.jobs[jobID]
	if job == nil || job.Attempt != attempt || job.Status != registry.JobPending || job.StatusMessage == message {
		return false, nil
	}
	job.StatusMessage, job.UpdatedAt = message, storeNow()
	return true, nil
}

// sortedJobs returns copies of the jobs keep says yes to, in id order.
// s.mu is held.
func (s *memStore) sortedJobs(keep func(*registry.Job) bool) []registry.Job {
	var out []registry.Job
	for _, id := range slices.Sorted(maps.Keys(s.jobs)) {
		if j := s.jobs[id]; keep(j) {
			out = append(out, *j)
		}
	}
	return out
}

func (s *memStore) ActiveJobs(_ context.Context, robotID string) ([]registry.Job, error) {
	if err := s.unavailable("active jobs of robot " + robotID); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sortedJobs(func(j *registry.Job) bool {
		return j.RobotID == robotID && slices.Contains(registry.ActiveStatuses, j.Status)
	}), nil
}

// OrphanedJobs is the registry's query: active jobs not changed since
// staleBefore whose robot has no row, is offline, or was not seen since.
func (s *memStore) OrphanedJobs(_ context.Context, staleBefore time.Time, limit int) ([]registry.Job, error) {
	if err := s.unavailable("orphaned jobs"); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.sortedJobs(func(j *registry.Job) bool {
		if !slices.Contains(registry.ActiveStatuses, j.Status) || !j.UpdatedAt.Before(staleBefore) {
			return false
		}
		r := s.robots[j.RobotID]
		seen := r != nil && r.Status != registry.RobotOffline && r.LastSeen != nil && !r.LastSeen.Before(staleBefore)
		return !seen
	})
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

func (s *memStore) AppendJobLogs(_ context.Context, lines []registry.JobLog) error {
	if err := s.unavailable("store log lines"); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range lines {
		key := memLogKey{l.JobID, l.Attempt}
		if s.logs[key] == nil {
			s.logs[key] = map[int64]bool{}
		}
		s.logs[key][l.Line] = true
	}
	return nil
}

func (s *memStore) CountJobLogs(_ context.Context, jobID string, attempt int32) (int64, error) {
	if err := s.unavailable("count log lines of job " + jobID); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return int64(len(s.logs[memLogKey{jobID, attempt}])), nil
}

// PutJobArtifact stores a when the robot holds the job on a.Attempt, as
// the registry's PutJobArtifact does.
func (s *memStore) PutJobArtifact(_ context.Context, a *registry.JobArtifact, robotID string, maxPerJob int) error {
	if err := s.unavailable("store artifact"); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	job := s.jobs[a.JobID]
	if job == nil {
		return fmt.Errorf("store artifact of job %s: %w", a.JobID, registry.ErrNotFound)
	}
	fence := registry.Transition{From: registry.ActiveStatuses, Attempt: a.Attempt, Robot: robotID}
	if err := transitionConflict(fence, job); err != nil {
		return err
	}
	kept := s.artifacts[a.JobID]
	if kept == nil {
		kept = map[string]registry.JobArtifact{}
		s.artifacts[a.JobID] = kept
	}
	if _, replaces := kept[a.Name]; !replaces && len(kept) >= maxPerJob {
		return fmt.Errorf("job %s keeps %d artifacts: %w", a.JobID, len(kept), registry.ErrTooManyArtifacts)
	}
	kept[a.Name] = *a
	return nil
}

func (s *memStore) ListAllRobots(context.Context) ([]registry.Robot, error) {
	if err := s.unavailable("list robots"); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []registry.Robot
	for _, id := range slices.Sorted(maps.Keys(s.robots)) {
		out = append(out, *s.robots[id])
	}
	return out, nil
}

func (s *memStore) GetRobot(_ context.Context, idOrName string) (*registry.Robot, error) {
	if err := s.unavailable("get robot " + idOrName); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.robots {
		if r.ID == idOrName || r.Name == idOrName {
			c := *r
			return &c, nil
		}
	}
	return nil, fmt.Errorf("get robot %s: %w", idOrName, registry.ErrNotFound)
}

func (s *memStore) SetRobotsStatus(_ context.Context, ids []string, status registry.RobotStatus) error {
	if len(ids) == 0 {
		return nil
	}
	if err := s.unavailable("set robots status"); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		if r := s.robots[id]; r != nil {
			r.Status = status
		}
	}
	return nil
}

// putRobot writes a robot's row, as the gateway does when a robot
// registers.
func (s *memStore) putRobot(r registry.Robot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.robots[r.ID] = &r
}

// jobEvents returns the job's transitions, oldest first.
func (s *memStore) jobEvents(jobID string) []registry.JobEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.events[jobID])
}

// recordingQueue is the dispatch queue of a replica alone: it records the
// tasks queued and carries no notice anywhere.
type recordingQueue struct {
	mu    sync.Mutex
	tasks []queue.Task
}

func (q *recordingQueue) Enqueue(_ context.Context, t queue.Task) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.tasks = append(q.tasks, t)
	return nil
}

func (q *recordingQueue) PublishJobChange(context.Context, string) {}
func (q *recordingQueue) PublishJobLogs(string)                    {}
func (q *recordingQueue) PublishJobWaiting(string)                 {}

// attempts lists the attempts of the job queued, in order.
func (q *recordingQueue) attempts(jobID string) []int32 {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []int32
	for _, t := range q.tasks {
		if t.JobID == jobID {
			out = append(out, t.Attempt)
		}
	}
	return out
}

// fakeRobot is a robot's end of the control stream: what the dispatcher
// sends it is recorded, and what it says goes to the dispatcher's Handle.
type fakeRobot struct {
	id, name     string
	capabilities []string
	labels       map[string]string
	maxJobs      int32
	draining     bool
	// autoAccept makes the robot accept each job as it is sent, on the
	// dispatcher's send: no accept timeout can pass in between.
	autoAccept bool
	// unreachable makes every send fail, as on a connection that broke.
	unreachable bool

	d *Dispatcher

	mu   sync.Mutex
	msgs []*agentv1.ServerMessage
}

func (r *fakeRobot) send(m *agentv1.ServerMessage) error {
	if r.unreachable {
		return errors.New("the connection broke")
	}
	r.mu.Lock()
	r.msgs = append(r.msgs, m)
	r.mu.Unlock()
	if a := m.GetJobAssign(); a != nil && r.autoAccept {
		r.accept(a.GetJobId(), a.GetAttempt())
	}
	return nil
}

func (r *fakeRobot) handle(msg *agentv1.AgentMessage) {
	r.d.Handle(context.Background(), r.id, msg)
}

func (r *fakeRobot) accept(jobID string, attempt int32) {
	r.handle(&agentv1.AgentMessage{Msg: &agentv1.AgentMessage_JobAccept{JobAccept: &agentv1.JobAccept{JobId: jobID, Attempt: attempt}}})
}

func (r *fakeRobot) reject(jobID string, attempt int32, reason string) {
	r.handle(&agentv1.AgentMessage{Msg: &agentv1.AgentMessage_JobReject{JobReject: &agentv1.JobReject{JobId: jobID, Attempt: attempt, Reason: reason}}})
}

func (r *fakeRobot) complete(jobID string, attempt int32) {
	r.completeWith(jobID, attempt, nil)
}

func (r *fakeRobot) completeWith(jobID string, attempt int32, outputs *structpb.Struct) {
	r.handle(&agentv1.AgentMessage{Msg: &agentv1.AgentMessage_JobComplete{JobComplete: &agentv1.JobComplete{
		JobId: jobID, Attempt: attempt, Outputs: outputs,
	}}})
}

func (r *fakeRobot) progress(jobID string, attempt, percent int32, step string) {
	r.handle(&agentv1.AgentMessage{Msg: &agentv1.AgentMessage_JobProgress{JobProgress: &agentv1.JobProgress{
		JobId: jobID, Attempt: attempt, Percent: percent, StepId: step,
	}}})
}

func (r *fakeRobot) fail(jobID string, attempt int32, reason string, stopped bool) {
	r.handle(&agentv1.AgentMessage{Msg: &agentv1.AgentMessage_JobFail{JobFail: &agentv1.JobFail{
		JobId: jobID, Attempt: attempt, Error: reason, Stopped: stopped,
	}}})
}

// heartbeat says the robot runs these jobs and no other.
func (r *fakeRobot) heartbeat(running ...*agentv1.RunningJob) {
	r.handle(&agentv1.AgentMessage{Msg: &agentv1.AgentMessage_Heartbeat{Heartbeat: &agentv1.Heartbeat{RunningJobs: running}}})
}

func runningJob(jobID string, attempt int32) *agentv1.RunningJob {
	return &agentv1.RunningJob{JobId: jobID, Attempt: attempt}
}

func (r *fakeRobot) messages() []*agentv1.ServerMessage {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.msgs)
}

// sentAttempt is a job and attempt a message to a robot names.
type sentAttempt struct {
	jobID   string
	attempt int32
}

// assigned lists the job_assign the robot was sent, in order.
func (r *fakeRobot) assigned() []sentAttempt {
	var out []sentAttempt
	for _, m := range r.messages() {
		if a := m.GetJobAssign(); a != nil {
			out = append(out, sentAttempt{a.GetJobId(), a.GetAttempt()})
		}
	}
	return out
}

// cancelled lists the job_cancel the robot was sent, in order.
func (r *fakeRobot) cancelled() []sentAttempt {
	var out []sentAttempt
	for _, m := range r.messages() {
		if c := m.GetJobCancel(); c != nil {
			out = append(out, sentAttempt{c.GetJobId(), c.GetAttempt()})
		}
	}
	return out
}

// acked lists the job_ack the robot was sent, in order.
func (r *fakeRobot) acked() []sentAttempt {
	var out []sentAttempt
	for _, m := range r.messages() {
		if a := m.GetJobAck(); a != nil {
			out = append(out, sentAttempt{a.GetJobId(), a.GetAttempt()})
		}
	}
	return out
}

// lastAssign returns the last job_assign the robot was sent, or nil.
func (r *fakeRobot) lastAssign() *agentv1.JobAssign {
	msgs := r.messages()
	for i := len(msgs) - 1; i >= 0; i-- {
		if a := msgs[i].GetJobAssign(); a != nil {
			return a
		}
	}
	return nil
}
