package registry

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/uptrace/bun"
)

// WorkItemStatus is an item's status as stored: the lower-case name of the
// API enum without its prefix.
type WorkItemStatus string

// Work item statuses. See WorkQueueService in rpc/casare/v1/workqueue.proto.
const (
	ItemNew        WorkItemStatus = "new"
	ItemInProgress WorkItemStatus = "in_progress"
	ItemSuccessful WorkItemStatus = "successful"
	ItemFailed     WorkItemStatus = "failed"
	ItemAbandoned  WorkItemStatus = "abandoned"
	ItemRetried    WorkItemStatus = "retried"
	ItemDeleted    WorkItemStatus = "deleted"
)

// WorkItemStatuses lists every item status, for figures that report each.
var WorkItemStatuses = []WorkItemStatus{ItemNew, ItemInProgress, ItemSuccessful, ItemFailed, ItemAbandoned, ItemRetried, ItemDeleted}

// WorkItemException is the kind of failure an item ended with.
type WorkItemException string

// Exceptions. A business exception is never retried; an application one is
// while the queue's max retries allow.
const (
	ExceptionNone        WorkItemException = ""
	ExceptionBusiness    WorkItemException = "business"
	ExceptionApplication WorkItemException = "application"
)

// Limits of work items.
const (
	// MaxWorkItemsPerAdd is how many items one AddWorkItems takes.
	MaxWorkItemsPerAdd = 10000
	// MaxWorkItemData is the size of an item's data or output, JSON encoded.
	MaxWorkItemData = 1 << 20
	// MaxWorkItemReference is the length of a reference in bytes.
	MaxWorkItemReference = 256
	// MaxWorkItemProgress is the length of an item's progress text.
	MaxWorkItemProgress = 1024
	// MaxWorkItemReason is the length of a failure's reason.
	MaxWorkItemReason = 4096
)

// counterShards is how many rows each counter of a queue is spread over on
// PostgreSQL, so that concurrent takers seldom wait on one another's
// counter row; SQLite has one writer and uses one.
const counterShards = 64

// WorkQueue is a row of work_queues.
type WorkQueue struct {
	bun.BaseModel `bun:"table:work_queues"`

	Name             string `bun:"name,pk"`
	Description      string `bun:"description,notnull"`
	MaxRetries       int32  `bun:"max_retries,notnull"`
	UniqueReferences bool   `bun:"unique_references,notnull"`
	// SLAMillis is 0 for no SLA.
	SLAMillis              int64     `bun:"sla_ms,notnull"`
	TriggerEnabled         bool      `bun:"trigger_enabled,notnull"`
	TriggerWorkflowName    string    `bun:"trigger_workflow_name,notnull"`
	TriggerWorkflowVersion int32     `bun:"trigger_workflow_version,notnull"`
	TriggerMinItems        int32     `bun:"trigger_min_items,notnull"`
	TriggerItemsPerJob     int32     `bun:"trigger_items_per_job,notnull"`
	TriggerMaxJobs         int32     `bun:"trigger_max_jobs,notnull"`
	TriggerPriority        Priority  `bun:"trigger_priority,notnull"`
	TriggerRequires        string    `bun:"trigger_requires,notnull"` // protojson of casare.v1.Requirements
	CreatedAt              time.Time `bun:"created_at,notnull"`
	UpdatedAt              time.Time `bun:"updated_at,notnull"`
	UpdatedBy              string    `bun:"updated_by,notnull"`
}

// SLA returns the queue's SLA, 0 for none.
func (q *WorkQueue) SLA() time.Duration { return time.Duration(q.SLAMillis) * time.Millisecond }

// WorkItem is a row of work_items.
type WorkItem struct {
	bun.BaseModel `bun:"table:work_items"`

	ID              string         `bun:"id,pk"`
	Queue           string         `bun:"queue,notnull"`
	Reference       string         `bun:"reference,notnull"`
	UniqueReference bool           `bun:"unique_reference,notnull"`
	Priority        Priority       `bun:"priority,notnull"`
	Data            string         `bun:"data,notnull"` // a JSON object
	DeferUntil      *time.Time     `bun:"defer_until"`
	Deadline        *time.Time     `bun:"deadline"`
	Status          WorkItemStatus `bun:"status,notnull"`
	// EndStatus is the status it ended with; "" while open.
	EndStatus WorkItemStatus    `bun:"end_status,notnull"`
	Output    string            `bun:"output,notnull"` // a JSON object, "" until it succeeds
	Progress  string            `bun:"progress,notnull"`
	Exception WorkItemException `bun:"exception,notnull"`
	Reason    string            `bun:"reason,notnull"`
	Retry     int32             `bun:"retry,notnull"`
	RetryOf   string            `bun:"retry_of,notnull"`
	JobID     string            `bun:"job_id,notnull"`
	Attempt   int32             `bun:"attempt,notnull"`
	RobotID   string            `bun:"robot_id,notnull"`
	Breached  bool              `bun:"breached,notnull"`
	CreatedBy string            `bun:"created_by,notnull"`
	CreatedAt time.Time         `bun:"created_at,notnull"`
	StartedAt *time.Time        `bun:"started_at"`
	EndedAt   *time.Time        `bun:"ended_at"`
	UpdatedAt time.Time         `bun:"updated_at,notnull"`
}

// WorkItemEvent is a row of work_item_events: one change of an item.
type WorkItemEvent struct {
	bun.BaseModel `bun:"table:work_item_events"`

	ID      int64          `bun:"id,pk,autoincrement"`
	ItemID  string         `bun:"item_id,notnull"`
	Time    time.Time      `bun:"time,notnull"`
	Status  WorkItemStatus `bun:"status,notnull"`
	JobID   string         `bun:"job_id,notnull"`
	Attempt int32          `bun:"attempt,notnull"`
	RobotID string         `bun:"robot_id,notnull"`
	Message string         `bun:"message,notnull"`
}

// workQueueCount is a row of work_queue_counts: one shard of one counter.
type workQueueCount struct {
	bun.BaseModel `bun:"table:work_queue_counts,alias:wqc"`

	Queue      string `bun:"queue,pk"`
	Status     string `bun:"status,pk"`
	Shard      int    `bun:"shard,pk"`
	N          int64  `bun:"n,notnull"`
	DurationMs int64  `bun:"duration_ms,notnull"`
}

// workQueueMinute is a row of work_queue_minutes.
type workQueueMinute struct {
	bun.BaseModel `bun:"table:work_queue_minutes,alias:wqm"`

	Queue  string `bun:"queue,pk"`
	Minute int64  `bun:"minute,pk"`
	Shard  int    `bun:"shard,pk"`
	N      int64  `bun:"n,notnull"`
}

// Counters of work_queue_counts besides the item statuses.
const (
	counterProcessed = "processed"
	counterBreached  = "breached"
)

// ItemHolder is the job attempt, on its robot, that takes and ends items.
// Every change a job makes to items is fenced by it: only while the job is
// RUNNING on that attempt and robot.
type ItemHolder struct {
	JobID   string
	Attempt int32
	RobotID string
}

func (h ItemHolder) String() string {
	return fmt.Sprintf("job %s attempt %d", h.JobID, h.Attempt)
}

// CreateWorkQueue stores q with the audit event. ErrAlreadyExists when a
// queue of the name exists.
func (r *Registry) CreateWorkQueue(ctx context.Context, q *WorkQueue, audit *AuditEvent) error {
	at := now()
	q.CreatedAt, q.UpdatedAt = at, at
	err := r.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.NewInsert().Model(q).Exec(ctx); err != nil {
			if isUniqueViolation(err) {
				return fmt.Errorf("work queue %s: %w", q.Name, ErrAlreadyExists)
			}
			return err
		}
		return insertAudit(ctx, tx, audit)
	})
	if err != nil {
		return fmt.Errorf("create work queue %s: %w", q.Name, err)
	}
	return nil
}

// UpdateWorkQueue replaces the queue of q's name, keeping its creation
// time, with the audit event. ErrNotFound when there is none; ErrConflict
// when q changes unique_references while the queue holds items.
func (r *Registry) UpdateWorkQueue(ctx context.Context, q *WorkQueue, audit *AuditEvent) error {
	err := r.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		old := new(WorkQueue)
		if err := r.lockRow(ctx, tx.NewSelect().Model(old).Where("name = ?", q.Name)); err != nil {
			return err
		}
		if old.UniqueReferences != q.UniqueReferences {
			held, err := tx.NewSelect().Model((*WorkItem)(nil)).Where("queue = ?", q.Name).Exists(ctx)
			if err != nil {
				return err
			}
			if held {
				return fmt.Errorf("%w: unique_references cannot change while the queue holds items; delete them or make a new queue", ErrConflict)
			}
		}
		q.CreatedAt, q.UpdatedAt = old.CreatedAt, normalize(time.Time{})
		if _, err := tx.NewUpdate().Model(q).WherePK().Exec(ctx); err != nil {
			return err
		}
		return insertAudit(ctx, tx, audit)
	})
	if err != nil {
		return fmt.Errorf("update work queue %s: %w", q.Name, err)
	}
	return nil
}

// DeleteWorkQueue deletes the queue with its items, their history and its
// counters, with the audit event. ErrNotFound when there is none.
func (r *Registry) DeleteWorkQueue(ctx context.Context, name string, audit *AuditEvent) error {
	err := r.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		res, err := tx.NewDelete().Model((*WorkQueue)(nil)).Where("name = ?", name).Exec(ctx)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		return insertAudit(ctx, tx, audit)
	})
	if err != nil {
		return fmt.Errorf("delete work queue %s: %w", name, err)
	}
	return nil
}

// GetWorkQueue returns the queue of the name, or ErrNotFound.
func (r *Registry) GetWorkQueue(ctx context.Context, name string) (*WorkQueue, error) {
	q := new(WorkQueue)
	err := r.db.NewSelect().Model(q).Where("name = ?", name).Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("work queue %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get work queue %s: %w", name, err)
	}
	return q, nil
}

// WorkQueueNames returns which of names are stored queues.
func (r *Registry) WorkQueueNames(ctx context.Context, names ...string) (map[string]bool, error) {
	out := map[string]bool{}
	if len(names) == 0 {
		return out, nil
	}
	var found []string
	err := r.db.NewSelect().Model((*WorkQueue)(nil)).Column("name").Where("name IN (?)", bun.In(names)).Scan(ctx, &found)
	if err != nil {
		return nil, fmt.Errorf("read work queues: %w", err)
	}
	for _, n := range found {
		out[n] = true
	}
	return out, nil
}

// ListWorkQueues returns queues by name.
func (r *Registry) ListWorkQueues(ctx context.Context, p Page) ([]WorkQueue, string, error) {
	query := []any{"work_queues"}
	after, err := decodePageToken(p.Token, query...)
	if err != nil {
		return nil, "", fmt.Errorf("list work queues: %w", err)
	}
	var rows []WorkQueue
	q := r.db.NewSelect().Model(&rows)
	if after != "" {
		q = q.Where("name > ?", after)
	}
	size := p.size()
	if err := q.OrderExpr("name").Limit(int64(size + 1)).Scan(ctx); err != nil {
		return nil, "", fmt.Errorf("list work queues: %w", err)
	}
	next := ""
	if len(rows) > size {
		rows = rows[:size]
		next = encodePageToken(rows[size-1].Name, query...)
	}
	return rows, next, nil
}

// TriggeredWorkQueues returns the queues whose trigger is enabled.
func (r *Registry) TriggeredWorkQueues(ctx context.Context) ([]WorkQueue, error) {
	var rows []WorkQueue
	if err := r.db.NewSelect().Model(&rows).Where("trigger_enabled").OrderExpr("name").Scan(ctx); err != nil {
		return nil, fmt.Errorf("list triggered work queues: %w", err)
	}
	return rows, nil
}

// TakeableWorkItems counts the queue's NEW items that may be taken now
// (not deferred), up to limit: what a queue trigger has work for. The
// counters count deferred items as NEW too.
func (r *Registry) TakeableWorkItems(ctx context.Context, queue string, limit int64) (int64, error) {
	n, err := r.db.NewSelect().TableExpr("(?) AS t", r.db.NewSelect().Model((*WorkItem)(nil)).ColumnExpr("1").
		Where("queue = ?", queue).Where("status = ?", ItemNew).
		Where("defer_until IS NULL OR defer_until <= ?", now()).Limit(limit)).Count(ctx)
	if err != nil {
		return 0, fmt.Errorf("count the items of %s to take: %w", queue, err)
	}
	return int64(n), nil
}

// shard picks the counter shard a transaction adds to.
func (r *Registry) shard() int {
	if r.dialect != "postgres" {
		return 0
	}
	return rand.IntN(counterShards)
}

// shardOf picks the counter shard of a job's calls: a job takes and ends
// its items one after the other, so jobs working at once mostly add to
// shards of their own and seldom wait on each other's counter rows.
func (r *Registry) shardOf(jobID string) int {
	if r.dialect != "postgres" {
		return 0
	}
	h := fnv.New32a()
	h.Write([]byte(jobID))
	return int(h.Sum32() % counterShards)
}

// counts collects the changes a transaction makes to a queue's counters,
// written together by flush.
type counts struct {
	rows    map[[2]string]*workQueueCount
	minutes map[string]map[int64]int64
}

func (c *counts) add(queue, status string, n, durationMs int64) {
	if c.rows == nil {
		c.rows = map[[2]string]*workQueueCount{}
	}
	k := [2]string{queue, status}
	row := c.rows[k]
	if row == nil {
		row = &workQueueCount{Queue: queue, Status: status}
		c.rows[k] = row
	}
	row.N += n
	row.DurationMs += durationMs
}

// move counts an item leaving one status for another.
func (c *counts) move(queue string, from, to WorkItemStatus) {
	if from != "" {
		c.add(queue, string(from), -1, 0)
	}
	c.add(queue, string(to), 1, 0)
}

// ended counts an item that finished processing at at.
func (c *counts) ended(item *WorkItem, at time.Time) {
	var ms int64
	if item.StartedAt != nil {
		ms = at.Sub(*item.StartedAt).Milliseconds()
	}
	c.add(item.Queue, counterProcessed, 1, ms)
	if c.minutes == nil {
		c.minutes = map[string]map[int64]int64{}
	}
	if c.minutes[item.Queue] == nil {
		c.minutes[item.Queue] = map[int64]int64{}
	}
	c.minutes[item.Queue][at.Unix()/60]++
}

// flush writes the counters in key order, so that two transactions lock
// counter rows in the same order and never wait on each other in a cycle.
func (c *counts) flush(ctx context.Context, tx bun.IDB, shard int) error {
	if len(c.rows) > 0 {
		rows := make([]workQueueCount, 0, len(c.rows))
		for _, row := range c.rows {
			if row.N == 0 && row.DurationMs == 0 {
				continue
			}
			row.Shard = shard
			rows = append(rows, *row)
		}
		sortCounts(rows)
		if len(rows) > 0 {
			if _, err := tx.NewInsert().Model(&rows).
				On("CONFLICT (queue, status, shard) DO UPDATE").
				Set("n = wqc.n + EXCLUDED.n").
				Set("duration_ms = wqc.duration_ms + EXCLUDED.duration_ms").
				Exec(ctx); err != nil {
				return fmt.Errorf("count work items: %w", err)
			}
		}
	}
	if len(c.minutes) > 0 {
		var rows []workQueueMinute
		for queue, ms := range c.minutes {
			for m, n := range ms {
				rows = append(rows, workQueueMinute{Queue: queue, Minute: m, Shard: shard, N: n})
			}
		}
		sortMinutes(rows)
		if _, err := tx.NewInsert().Model(&rows).
			On("CONFLICT (queue, minute, shard) DO UPDATE").
			Set("n = wqm.n + EXCLUDED.n").
			Exec(ctx); err != nil {
			return fmt.Errorf("count work items per minute: %w", err)
		}
	}
	return nil
}

func sortCounts(rows []workQueueCount) {
	slices.SortFunc(rows, func(a, b workQueueCount) int {
		return cmp.Or(cmp.Compare(a.Queue, b.Queue), cmp.Compare(a.Status, b.Status))
	})
}

func sortMinutes(rows []workQueueMinute) {
	slices.SortFunc(rows, func(a, b workQueueMinute) int {
		return cmp.Or(cmp.Compare(a.Queue, b.Queue), cmp.Compare(a.Minute, b.Minute))
	})
}

// itemEvent is the history row of item as it is now.
func itemEvent(item *WorkItem, at time.Time, message string) WorkItemEvent {
	return WorkItemEvent{
		ItemID: item.ID, Time: at, Status: item.Status, JobID: item.JobID, Attempt: item.Attempt,
		RobotID: item.RobotID, Message: CleanText(message),
	}
}

// CheckWorkItemData says what is wrong with data as an item's data or
// output: it must be a JSON object of at most MaxWorkItemData bytes.
func CheckWorkItemData(data string) error {
	if len(data) > MaxWorkItemData {
		return fmt.Errorf("is %d bytes encoded, over the limit of %d (1 MiB)", len(data), MaxWorkItemData)
	}
	if t := strings.TrimSpace(data); t != "" && t[0] != '{' {
		return errors.New("must be a JSON object")
	}
	return nil
}

// fence checks, in tx, that h's job is RUNNING on h's attempt and robot,
// and keeps the job from moving on until tx ends, so that an item is never
// taken by an attempt that has already ended. ErrConflict otherwise.
func (r *Registry) fence(ctx context.Context, tx bun.IDB, h ItemHolder) error {
	var job struct {
		Status  JobStatus `bun:"status"`
		Attempt int32     `bun:"attempt"`
		RobotID string    `bun:"robot_id"`
	}
	q := tx.NewSelect().Model((*Job)(nil)).Column("status", "attempt", "robot_id").Where("id = ?", h.JobID)
	if r.dialect == "postgres" {
		q = q.For("SHARE")
	}
	err := q.Scan(ctx, &job)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("%w: job %s does not exist", ErrConflict, h.JobID)
	case err != nil:
		return err
	case !holdsItems(job.Status):
		return fmt.Errorf("%w: job %s is %s, not assigned or running", ErrConflict, h.JobID, job.Status)
	case job.Attempt != h.Attempt:
		return fmt.Errorf("%w: job %s is on attempt %d, not %d", ErrConflict, h.JobID, job.Attempt, h.Attempt)
	case h.RobotID != "" && job.RobotID != h.RobotID:
		return fmt.Errorf("%w: job %s runs on another robot", ErrConflict, h.JobID)
	}
	return nil
}
