package registry

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/uptrace/bun"
)

// ErrInvalidArgument: the request itself is wrong (an item's data is not
// an object, a reference is too long); the message names the field.
var ErrInvalidArgument = errors.New("invalid argument")

// AddItems is a batch of items for AddWorkItems.
type AddItems struct {
	Queue string
	// Items take Reference, Priority, Data, DeferUntil and Deadline; the
	// rest is set by AddWorkItems.
	Items []WorkItem
	// By is the token or job adding them.
	By string
	// Holder, when not nil, is the job adding them: refused unless it is
	// assigned or running on that attempt.
	Holder *ItemHolder
	Audit  *AuditEvent
}

// ReferenceConflict refuses a batch of items to a queue with unique
// references: each row whose reference is taken, by a stored item or an
// earlier row of the batch.
type ReferenceConflict struct {
	Queue string
	Rows  []ReferenceRow
}

// ReferenceRow is one refused row of a batch.
type ReferenceRow struct {
	// Index is the row's place in the batch.
	Index     int
	Reference string
	// Earlier is the index of the earlier row with the reference, or -1
	// when a stored item holds it.
	Earlier int
}

func (e *ReferenceConflict) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "work queue %s requires unique references; %d item(s) refused, nothing added: ", e.Queue, len(e.Rows))
	for i, row := range e.Rows {
		if i == 20 {
			fmt.Fprintf(&b, ", and %d more", len(e.Rows)-i)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		if row.Earlier >= 0 {
			fmt.Fprintf(&b, "items[%d] reference %q repeats items[%d]", row.Index, row.Reference, row.Earlier)
		} else {
			fmt.Fprintf(&b, "items[%d] reference %q already exists", row.Index, row.Reference)
		}
	}
	return b.String()
}

func (e *ReferenceConflict) Unwrap() error { return ErrAlreadyExists }

// liveStatuses are the statuses whose items hold their reference in a
// queue with unique references (see the index work_items_unique_reference).
var liveStatuses = []WorkItemStatus{ItemNew, ItemInProgress, ItemSuccessful, ItemFailed}

// AddWorkItems adds the batch to its queue, all of it or none, and returns
// the new items' ids in order. ErrNotFound when the queue does not exist,
// ErrInvalidArgument naming the row for bad data, a *ReferenceConflict
// (ErrAlreadyExists) listing every refused row, ErrConflict when the
// holder's job no longer runs on its attempt.
func (r *Registry) AddWorkItems(ctx context.Context, add AddItems) ([]string, error) {
	if len(add.Items) == 0 || len(add.Items) > MaxWorkItemsPerAdd {
		return nil, fmt.Errorf("add work items: %w: items: %d given, from 1 to %d allowed", ErrInvalidArgument, len(add.Items), MaxWorkItemsPerAdd)
	}
	for i := range add.Items {
		it := &add.Items[i]
		if err := CheckWorkItemData(it.Data); err != nil {
			return nil, fmt.Errorf("add work items: %w: items[%d].data %v", ErrInvalidArgument, i, err)
		}
		if len(it.Reference) > MaxWorkItemReference {
			return nil, fmt.Errorf("add work items: %w: items[%d].reference is %d bytes, over the limit of %d", ErrInvalidArgument, i, len(it.Reference), MaxWorkItemReference)
		}
		if it.Priority == 0 {
			it.Priority = PriorityNormal
		}
		if it.Priority < PriorityLow || it.Priority > PriorityHigh {
			return nil, fmt.Errorf("add work items: %w: items[%d].priority %d is not low, normal or high", ErrInvalidArgument, i, it.Priority)
		}
		if it.Data == "" {
			it.Data = "{}"
		}
	}
	at := now()
	ids := make([]string, len(add.Items))
	err := r.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if add.Holder != nil {
			if err := r.fence(ctx, tx, *add.Holder); err != nil {
				return err
			}
		}
		queue := new(WorkQueue)
		if err := tx.NewSelect().Model(queue).Where("name = ?", add.Queue).Scan(ctx); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("work queue %s: %w", add.Queue, ErrNotFound)
			}
			return err
		}
		if queue.UniqueReferences {
			if err := r.checkReferences(ctx, tx, add.Queue, add.Items); err != nil {
				return err
			}
		}
		for i := range add.Items {
			it := &add.Items[i]
			it.ID = NewID()
			ids[i] = it.ID
			it.Queue, it.UniqueReference, it.Status = add.Queue, queue.UniqueReferences, ItemNew
			it.CreatedBy, it.CreatedAt, it.UpdatedAt = add.By, at, at
			it.DeferUntil, it.Deadline = itemTime(it.DeferUntil), itemTime(it.Deadline)
			if add.Holder != nil {
				// Who added it, not who holds it: the item is NEW.
				it.CreatedBy = "job/" + add.Holder.JobID
			}
		}
		chunk := 1000
		if r.dialect == "postgres" {
			chunk = MaxWorkItemsPerAdd
		}
		for start := 0; start < len(add.Items); start += chunk {
			part := add.Items[start:min(start+chunk, len(add.Items))]
			var err error
			if r.dialect == "postgres" {
				err = insertItems(ctx, tx, part)
			} else {
				_, err = tx.NewInsert().Model(&part).Exec(ctx)
			}
			if err != nil {
				if isUniqueViolation(err) {
					return fmt.Errorf("%w: an item with one of the references was added meanwhile; try again to see which", ErrAlreadyExists)
				}
				return err
			}
		}
		var c counts
		c.add(add.Queue, string(ItemNew), int64(len(add.Items)), 0)
		if err := c.flush(ctx, tx, r.shard()); err != nil {
			return err
		}
		return insertAudit(ctx, tx, add.Audit)
	})
	if err != nil {
		var conflict *ReferenceConflict
		if errors.As(err, &conflict) {
			return nil, err
		}
		return nil, fmt.Errorf("add work items to %s: %w", add.Queue, err)
	}
	r.refreshItemStatistics(ctx, len(add.Items))
	return ids, nil
}

// Statistics of work_items are read again after a large add, at most once
// per itemStatisticsEvery.
const (
	itemStatisticsAfter = 1000
	itemStatisticsEvery = 30 * time.Second
)

// refreshItemStatistics has PostgreSQL read work_items' statistics again
// after an add of n items, when n is large and they were not read lately.
// Taking an item wants the index in take order; on statistics that predate
// a large add the planner takes the queue's items for a handful and picks
// an index that makes every take sort all of them (8 ms a take at 25,000
// items, and worse as the queue grows). Autovacuum reads them again too,
// but only after a minute or more, which a burst of items does not wait
// for.
func (r *Registry) refreshItemStatistics(ctx context.Context, n int) {
	if r.dialect != "postgres" || n < itemStatisticsAfter {
		return
	}
	last := r.itemStatsAt.Load()
	at := time.Now().UnixNano()
	if at-last < int64(itemStatisticsEvery) || !r.itemStatsAt.CompareAndSwap(last, at) {
		return
	}
	err := r.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		// Not behind a vacuum of the table: the add has its answer
		// already, and autovacuum reads the statistics too.
		if _, err := tx.ExecContext(ctx, "SET LOCAL lock_timeout = '200ms'"); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, "ANALYZE work_items")
		return err
	})
	if err != nil {
		// The planner keeps the statistics it had; autovacuum will read
		// them again.
		r.logger.Warn("read the statistics of work items", "err", err)
	}
}

// itemTime is t as stored, nil for no time.
func itemTime(t *time.Time) *time.Time {
	if t == nil || t.IsZero() {
		return nil
	}
	return normalizePtr(t)
}

// checkReferences refuses items whose reference is empty, repeated in the
// batch or held by a live item of the queue.
func (r *Registry) checkReferences(ctx context.Context, tx bun.IDB, queue string, items []WorkItem) error {
	conflict := &ReferenceConflict{Queue: queue}
	first := make(map[string]int, len(items))
	for i := range items {
		ref := items[i].Reference
		if ref == "" {
			return fmt.Errorf("%w: items[%d].reference: required, queue %s requires unique references", ErrInvalidArgument, i, queue)
		}
		if k, ok := first[ref]; ok {
			conflict.Rows = append(conflict.Rows, ReferenceRow{Index: i, Reference: ref, Earlier: k})
			continue
		}
		first[ref] = i
	}
	refs := make([]string, 0, len(first))
	for ref := range first {
		refs = append(refs, ref)
	}
	taken := map[string]bool{}
	const chunk = 1000
	for start := 0; start < len(refs); start += chunk {
		var found []string
		err := tx.NewSelect().Model((*WorkItem)(nil)).Column("reference").
			Where("queue = ? AND unique_reference AND status IN (?)", queue, bun.In(liveStatuses)).
			Where("reference IN (?)", bun.In(refs[start:min(start+chunk, len(refs))])).Scan(ctx, &found)
		if err != nil {
			return err
		}
		for _, ref := range found {
			taken[ref] = true
		}
	}
	for ref := range taken {
		conflict.Rows = append(conflict.Rows, ReferenceRow{Index: first[ref], Reference: ref, Earlier: -1})
	}
	if len(conflict.Rows) == 0 {
		return nil
	}
	slices.SortFunc(conflict.Rows, func(a, b ReferenceRow) int { return a.Index - b.Index })
	return conflict
}

// TakeWorkItem gives h the queue's next NEW item that is not deferred:
// the highest priority, then the nearest deadline, then the oldest. It
// returns nil when there is none. Concurrent takers never get the same
// item: on PostgreSQL each skips the rows others have locked, on SQLite
// writers take turns. ErrNotFound when the queue does not exist,
// ErrConflict when h's job no longer runs on that attempt.
func (r *Registry) TakeWorkItem(ctx context.Context, h ItemHolder, queue string) (*WorkItem, error) {
	if r.dialect == "postgres" {
		// The common case in one statement; the transaction below then
		// only says why nothing was taken.
		// Takes that arrive together share one statement and commit.
		res := r.takes.do(ctx, takeRequest{holder: h, queue: queue})
		if res.err != nil || res.item != nil {
			return res.item, res.err
		}
	}
	var item *WorkItem
	err := r.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if err := r.fence(ctx, tx, h); err != nil {
			return err
		}
		at := now()
		var ids []string
		q := tx.NewSelect().Model((*WorkItem)(nil)).Column("id").
			Where("queue = ? AND status = ?", queue, ItemNew).
			Where("(defer_until IS NULL OR defer_until <= ?)", at).Limit(1)
		if r.dialect == "postgres" {
			// The order of the index work_items_take (NULL deadlines last).
			q = q.OrderExpr("priority DESC, deadline, created_at, id").For("UPDATE SKIP LOCKED")
		} else {
			q = q.OrderExpr("priority DESC, deadline IS NULL, deadline, created_at, id")
		}
		if err := q.Scan(ctx, &ids); err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if len(ids) == 0 {
			exists, err := tx.NewSelect().Model((*WorkQueue)(nil)).Where("name = ?", queue).Exists(ctx)
			if err == nil && !exists {
				err = fmt.Errorf("work queue %s: %w", queue, ErrNotFound)
			}
			return err
		}
		item = new(WorkItem)
		err := tx.NewUpdate().Model(item).
			Set("status = ?", ItemInProgress).Set("job_id = ?", h.JobID).Set("attempt = ?", h.Attempt).
			Set("robot_id = ?", h.RobotID).Set("started_at = ?", at).Set("updated_at = ?", at).
			Set("progress = ''").Where("id = ?", ids[0]).Returning("*").Scan(ctx)
		if err != nil {
			return err
		}
		var c counts
		c.move(queue, ItemNew, ItemInProgress)
		return c.flush(ctx, tx, r.shard())
	})
	if err != nil {
		return nil, fmt.Errorf("take the next item of %s: %w", queue, err)
	}
	return item, nil
}

func ptr[T any](v T) *T { return &v }

// heldItem reads and locks the item h holds, after fencing h.
func (r *Registry) heldItem(ctx context.Context, tx bun.IDB, h ItemHolder, id string) (*WorkItem, error) {
	if err := r.fence(ctx, tx, h); err != nil {
		return nil, err
	}
	item := new(WorkItem)
	if err := r.lockRow(ctx, tx.NewSelect().Model(item).Where("id = ?", id)); err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil, fmt.Errorf("work item %s: %w", id, ErrNotFound)
		}
		return nil, err
	}
	if item.Status != ItemInProgress || item.JobID != h.JobID || item.Attempt != h.Attempt {
		return nil, fmt.Errorf("%w: work item %s is %s and not held by %s", ErrConflict, id, item.Status, h)
	}
	return item, nil
}

// CompleteWorkItem ends the item h holds as SUCCESSFUL with output (a JSON
// object, or "" for none). ErrNotFound when there is no such item,
// ErrConflict when h does not hold it, ErrInvalidArgument for bad output.
func (r *Registry) CompleteWorkItem(ctx context.Context, h ItemHolder, id, output string) (*WorkItem, error) {
	if err := CheckWorkItemData(output); err != nil {
		return nil, fmt.Errorf("complete work item %s: %w: output %v", id, ErrInvalidArgument, err)
	}
	if r.dialect == "postgres" {
		// The common case in one statement; the transaction below then
		// only says why it was refused.
		// Completions that arrive together share one statement and commit.
		res := r.completes.do(ctx, completeRequest{holder: h, id: id, output: output})
		if res.err != nil || res.item != nil {
			if res.err != nil {
				return nil, fmt.Errorf("complete work item %s: %w", id, res.err)
			}
			return res.item, nil
		}
	}
	var item *WorkItem
	err := r.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var err error
		if item, err = r.heldItem(ctx, tx, h, id); err != nil {
			return err
		}
		e := r.itemEnder(ctx, tx)
		if _, err := e.end(item, ItemSuccessful, ExceptionNone, "", output, now()); err != nil {
			return err
		}
		return e.flush()
	})
	if err != nil {
		return nil, fmt.Errorf("complete work item %s: %w", id, err)
	}
	return item, nil
}

// FailWorkItem ends the item h holds with an exception. An application
// exception with retries left makes it RETRIED and adds a NEW copy, which
// it returns; a business exception, or none left, makes it FAILED.
func (r *Registry) FailWorkItem(ctx context.Context, h ItemHolder, id string, exc WorkItemException, reason string) (item, retry *WorkItem, err error) {
	if exc != ExceptionBusiness && exc != ExceptionApplication {
		return nil, nil, fmt.Errorf("fail work item %s: %w: exception %q is not business or application", id, ErrInvalidArgument, exc)
	}
	if len(reason) > MaxWorkItemReason {
		reason = reason[:MaxWorkItemReason]
	}
	err = r.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var err error
		if item, err = r.heldItem(ctx, tx, h, id); err != nil {
			return err
		}
		e := r.itemEnder(ctx, tx)
		if retry, err = e.end(item, ItemFailed, exc, reason, "", now()); err != nil {
			return err
		}
		return e.flush()
	})
	if err != nil {
		return nil, nil, fmt.Errorf("fail work item %s: %w", id, err)
	}
	return item, retry, nil
}

// WorkItemProgress sets the progress text of the item h holds.
func (r *Registry) WorkItemProgress(ctx context.Context, h ItemHolder, id, progress string) error {
	if len(progress) > MaxWorkItemProgress {
		return fmt.Errorf("work item %s progress: %w: progress is %d bytes, over the limit of %d", id, ErrInvalidArgument, len(progress), MaxWorkItemProgress)
	}
	err := r.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		item, err := r.heldItem(ctx, tx, h, id)
		if err != nil {
			return err
		}
		at := now()
		item.Progress, item.UpdatedAt = CleanText(progress), at
		if _, err := tx.NewUpdate().Model(item).Column("progress", "updated_at").WherePK().Exec(ctx); err != nil {
			return err
		}
		_, err = tx.NewInsert().Model(ptr(itemEvent(item, at, "progress: "+item.Progress))).Exec(ctx)
		return err
	})
	if err != nil {
		return fmt.Errorf("work item %s progress: %w", id, err)
	}
	return nil
}

// itemEnder ends items within one transaction, applying the retry rule,
// and writes their events and counters when flushed.
type itemEnder struct {
	r      *Registry
	ctx    context.Context
	tx     bun.IDB
	queues map[string]*WorkQueue
	c      counts
}

func (r *Registry) itemEnder(ctx context.Context, tx bun.IDB) *itemEnder {
	return &itemEnder{r: r, ctx: ctx, tx: tx, queues: map[string]*WorkQueue{}}
}

func (e *itemEnder) queue(name string) (*WorkQueue, error) {
	if q := e.queues[name]; q != nil {
		return q, nil
	}
	q := new(WorkQueue)
	if err := e.tx.NewSelect().Model(q).Where("name = ?", name).Scan(e.ctx); err != nil {
		return nil, err
	}
	e.queues[name] = q
	return q, nil
}

// end moves item to SUCCESSFUL, FAILED or ABANDONED at at. An application
// exception or an abandonment with retries left instead makes a FAILED
// item RETRIED (an abandoned one stays ABANDONED) and adds a NEW copy
// with the next retry number, which it returns.
func (e *itemEnder) end(item *WorkItem, to WorkItemStatus, exc WorkItemException, reason, output string, at time.Time) (*WorkItem, error) {
	q, err := e.queue(item.Queue)
	if err != nil {
		return nil, err
	}
	from := item.Status
	if !item.Breached && (item.Deadline != nil && at.After(*item.Deadline) ||
		q.SLAMillis > 0 && at.After(item.CreatedAt.Add(q.SLA()))) {
		item.Breached = true
		e.c.add(item.Queue, counterBreached, 1, 0)
	}
	retry := (to == ItemAbandoned || to == ItemFailed && exc == ExceptionApplication) && item.Retry < q.MaxRetries
	if retry && to == ItemFailed {
		to = ItemRetried
	}
	item.Status, item.EndStatus, item.Exception, item.Reason, item.Output = to, to, exc, CleanText(reason), output
	item.EndedAt, item.UpdatedAt = &at, at
	if _, err := e.tx.NewUpdate().Model(item).
		Column("status", "end_status", "exception", "reason", "output", "ended_at", "updated_at", "breached").WherePK().Exec(e.ctx); err != nil {
		return nil, err
	}
	e.c.move(item.Queue, from, to)
	e.c.ended(item, at)
	if !retry {
		return nil, nil
	}
	cp := &WorkItem{
		ID: NewID(), Queue: item.Queue, Reference: item.Reference, UniqueReference: item.UniqueReference,
		Priority: item.Priority, Data: item.Data, Deadline: item.Deadline, Status: ItemNew,
		Retry: item.Retry + 1, RetryOf: item.ID, Breached: item.Breached, CreatedBy: item.CreatedBy,
		CreatedAt: at, UpdatedAt: at,
	}
	if _, err := e.tx.NewInsert().Model(cp).Exec(e.ctx); err != nil {
		return nil, err
	}
	e.c.move(cp.Queue, "", ItemNew)
	return cp, nil
}

func (e *itemEnder) flush() error {
	err := e.c.flush(e.ctx, e.tx, e.r.shard())
	e.c = counts{}
	return err
}

// abandonHeld abandons the items the job's attempt still holds, within
// tx, as the attempt ends; each is retried under the queue's rule.
func (r *Registry) abandonHeld(ctx context.Context, tx bun.IDB, jobID string, attempt int32, at time.Time, why string) (int, error) {
	var items []WorkItem
	q := tx.NewSelect().Model(&items).Where("job_id = ? AND attempt = ? AND status = ?", jobID, attempt, ItemInProgress).OrderExpr("id")
	if r.dialect == "postgres" {
		q = q.For("UPDATE")
	}
	if err := q.Scan(ctx); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return 0, err
	}
	if len(items) == 0 {
		return 0, nil
	}
	e := r.itemEnder(ctx, tx)
	for i := range items {
		if _, err := e.end(&items[i], ItemAbandoned, ExceptionApplication, why, "", at); err != nil {
			return 0, err
		}
	}
	return len(items), e.flush()
}

// attemptEnded reports whether a transition from a job as it was (status,
// attempt) to as it is ends the attempt that could hold items.
func attemptEnded(fromStatus JobStatus, fromAttempt int32, job *Job) bool {
	return holdsItems(fromStatus) && (!holdsItems(job.Status) || job.Attempt != fromAttempt)
}

// holdsItems says whether a job in status may hold items: from its
// assignment on, since a robot starts a job as it accepts it and its first
// call can come before the control plane has recorded the accept.
func holdsItems(status JobStatus) bool {
	return status == JobAssigned || status == JobRunning
}

// heldAttempt is a job's attempt that may hold items.
type heldAttempt struct {
	JobID   string `bun:"job_id"`
	Attempt int32  `bun:"attempt"`
}

// releaseStragglers abandons the items of attempts that a transition
// statement just ended but that it could not see: an item taken by a
// statement that held the job's row until the transition's own snapshot
// was made. It reads the small index of items in progress once for the
// batch; should it fail, the sweeper does the same a few seconds later.
func (r *Registry) releaseStragglers(ctx context.Context, ended []heldAttempt) {
	if len(ended) == 0 {
		return
	}
	ids := make([]string, len(ended))
	for i, e := range ended {
		ids[i] = e.JobID
	}
	var held []heldAttempt
	err := r.db.NewSelect().Model((*WorkItem)(nil)).ColumnExpr("DISTINCT job_id, attempt").
		Where("status = ? AND job_id IN (?)", ItemInProgress, bun.In(ids)).Scan(ctx, &held)
	if err != nil {
		r.logger.Warn("release the work items of ended jobs; the sweeper will", "err", err)
		return
	}
	for _, h := range held {
		if !slices.Contains(ended, h) {
			continue
		}
		if _, err := r.releaseHeld(ctx, h); err != nil {
			r.logger.Warn("release the work items of an ended job; the sweeper will", "job", h.JobID, "err", err)
		}
	}
}

// releaseHeld abandons the items of h, an attempt no longer running, in a
// transaction that holds the job's row.
func (r *Registry) releaseHeld(ctx context.Context, h heldAttempt) (int, error) {
	n := 0
	err := r.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var job []Job
		q := tx.NewSelect().Model(&job).Column("status", "attempt").Where("id = ?", h.JobID)
		if r.dialect == "postgres" {
			q = q.For("UPDATE")
		}
		if err := q.Scan(ctx); err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if len(job) == 1 && holdsItems(job[0].Status) && job[0].Attempt == h.Attempt {
			return nil
		}
		status := "gone"
		if len(job) == 1 {
			status = string(job[0].Status)
		}
		var err error
		n, err = r.abandonHeld(ctx, tx, h.JobID, h.Attempt, now(), "the job's attempt ended: "+status)
		return err
	})
	return n, err
}

// SweepHeldWorkItems abandons, up to limit at a time, the items still
// IN_PROGRESS under a job attempt that is no longer running: the release
// that the job's transition makes could miss an item taken while it was
// being written. It returns how many it abandoned.
func (r *Registry) SweepHeldWorkItems(ctx context.Context, limit int) (int, error) {
	var held []heldAttempt
	err := r.db.NewSelect().TableExpr("work_items AS w").ColumnExpr("DISTINCT w.job_id, w.attempt").
		Join("LEFT JOIN jobs AS j ON j.id = w.job_id").
		Where("w.status = ?", ItemInProgress).
		Where("j.id IS NULL OR j.status NOT IN (?) OR j.attempt <> w.attempt", bun.In([]JobStatus{JobAssigned, JobRunning})).
		Limit(int64(limit)).Scan(ctx, &held)
	if err != nil {
		return 0, fmt.Errorf("sweep held work items: %w", err)
	}
	total := 0
	for _, h := range held {
		n, err := r.releaseHeld(ctx, h)
		total += n
		if err != nil {
			return total, fmt.Errorf("sweep held work items of job %s: %w", h.JobID, err)
		}
	}
	return total, nil
}

// MarkBreachedWorkItems counts, up to limit at a time, the open items that
// are past their queue's SLA or their deadline, once each, and returns how
// many it counted.
func (r *Registry) MarkBreachedWorkItems(ctx context.Context, limit int) (int, error) {
	at := now()
	var queues []WorkQueue
	if err := r.db.NewSelect().Model(&queues).Column("name", "sla_ms").Where("sla_ms > 0").Scan(ctx); err != nil {
		return 0, fmt.Errorf("mark breached work items: %w", err)
	}
	open := []WorkItemStatus{ItemNew, ItemInProgress}
	var ids []string
	for _, q := range queues {
		var part []string
		err := r.db.NewSelect().Model((*WorkItem)(nil)).Column("id").
			Where("queue = ? AND status IN (?) AND NOT breached AND created_at < ?", q.Name, bun.In(open), at.Add(-q.SLA())).
			Limit(int64(limit)).Scan(ctx, &part)
		if err != nil {
			return 0, fmt.Errorf("mark breached work items: %w", err)
		}
		ids = append(ids, part...)
	}
	var late []string
	err := r.db.NewSelect().Model((*WorkItem)(nil)).Column("id").
		Where("status IN (?) AND NOT breached AND deadline IS NOT NULL AND deadline < ?", bun.In(open), at).
		Limit(int64(limit)).Scan(ctx, &late)
	if err != nil {
		return 0, fmt.Errorf("mark breached work items: %w", err)
	}
	ids = append(ids, late...)
	if len(ids) == 0 {
		return 0, nil
	}
	n := 0
	err = r.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var marked []string
		err := tx.NewUpdate().Model((*WorkItem)(nil)).Set("breached = ?", true).
			Where("id IN (?) AND NOT breached AND status IN (?)", bun.In(ids), bun.In(open)).
			Returning("queue").Scan(ctx, &marked)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		var c counts
		for _, q := range marked {
			c.add(q, counterBreached, 1, 0)
		}
		n = len(marked)
		return c.flush(ctx, tx, r.shard())
	})
	if err != nil {
		return 0, fmt.Errorf("mark breached work items: %w", err)
	}
	return n, nil
}

// PruneWorkQueueMinutes drops the per-minute counts older than before.
func (r *Registry) PruneWorkQueueMinutes(ctx context.Context, before time.Time) error {
	_, err := r.db.NewDelete().Model((*workQueueMinute)(nil)).Where("minute < ?", before.Unix()/60).Exec(ctx)
	if err != nil {
		return fmt.Errorf("prune work queue minutes: %w", err)
	}
	return nil
}
