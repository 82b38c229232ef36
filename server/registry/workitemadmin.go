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

// WorkItemFilter narrows ListWorkItems; zero fields match everything.
type WorkItemFilter struct {
	Queue string
	// Statuses, when empty, are all but DELETED.
	Statuses      []WorkItemStatus
	Reference     string
	CreatedAfter  time.Time
	CreatedBefore time.Time
	Exception     WorkItemException
}

// ListWorkItems returns a queue's items newest first.
func (r *Registry) ListWorkItems(ctx context.Context, f WorkItemFilter, p Page) ([]WorkItem, string, error) {
	statuses := slices.Clone(f.Statuses)
	slices.Sort(statuses)
	query := []any{"work_items", f.Queue, statuses, f.Reference, f.CreatedAfter.UnixMicro(), f.CreatedBefore.UnixMicro(), f.Exception}
	after, err := decodePageToken(p.Token, query...)
	if err != nil {
		return nil, "", fmt.Errorf("list work items: %w", err)
	}
	var items []WorkItem
	q := r.db.NewSelect().Model(&items).Where("queue = ?", f.Queue)
	if len(statuses) > 0 {
		q = q.Where("status IN (?)", bun.In(statuses))
	} else {
		q = q.Where("status <> ?", ItemDeleted)
	}
	if f.Reference != "" {
		q = q.Where("reference = ?", f.Reference)
	}
	if !f.CreatedAfter.IsZero() {
		q = q.Where("created_at >= ?", normalize(f.CreatedAfter))
	}
	if !f.CreatedBefore.IsZero() {
		q = q.Where("created_at < ?", normalize(f.CreatedBefore))
	}
	if f.Exception != "" {
		q = q.Where("exception = ?", f.Exception)
	}
	if after != "" {
		micros, id, _ := strings.Cut(after, "/")
		var us int64
		if _, err := fmt.Sscan(micros, &us); err != nil {
			return nil, "", fmt.Errorf("list work items: %w", ErrInvalidPageToken)
		}
		t := time.UnixMicro(us).UTC()
		q = q.Where("created_at < ? OR (created_at = ? AND id < ?)", t, t, id)
	}
	size := p.size()
	if err := q.OrderExpr("created_at DESC, id DESC").Limit(int64(size + 1)).Scan(ctx); err != nil {
		return nil, "", fmt.Errorf("list work items: %w", err)
	}
	next := ""
	if len(items) > size {
		items = items[:size]
		last := items[size-1]
		next = encodePageToken(fmt.Sprintf("%d/%s", last.CreatedAt.UnixMicro(), last.ID), query...)
	}
	return items, next, nil
}

// GetWorkItem returns the item with the id and the history of it, the
// items it retries and its retries, oldest first. ErrNotFound when there
// is no such item.
func (r *Registry) GetWorkItem(ctx context.Context, id string) (*WorkItem, []WorkItemEvent, error) {
	item := new(WorkItem)
	if err := r.db.NewSelect().Model(item).Where("id = ?", id).Scan(ctx); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, nil, fmt.Errorf("work item %s: %w", id, ErrNotFound)
		}
		return nil, nil, fmt.Errorf("get work item %s: %w", id, err)
	}
	chain := []string{item.ID}
	// Retries are bounded by a queue's max retries (100) and operators'
	// retries; the bound keeps a damaged chain from looping.
	for of, n := item.RetryOf, 0; of != "" && n < 1000; n++ {
		var prev []string
		if err := r.db.NewSelect().Model((*WorkItem)(nil)).Column("retry_of").Where("id = ?", of).Scan(ctx, &prev); err != nil && !errors.Is(err, sql.ErrNoRows) {
			return nil, nil, fmt.Errorf("get work item %s: %w", id, err)
		}
		chain = append(chain, of)
		if len(prev) == 0 {
			break
		}
		of = prev[0]
	}
	for cur, n := item.ID, 0; n < 1000; n++ {
		var next []string
		if err := r.db.NewSelect().Model((*WorkItem)(nil)).Column("id").Where("retry_of = ?", cur).Scan(ctx, &next); err != nil && !errors.Is(err, sql.ErrNoRows) {
			return nil, nil, fmt.Errorf("get work item %s: %w", id, err)
		}
		if len(next) == 0 {
			break
		}
		chain = append(chain, next...)
		cur = next[0]
	}
	var rows []WorkItem
	if err := r.db.NewSelect().Model(&rows).Where("id IN (?)", bun.In(chain)).OrderExpr("created_at, id").Scan(ctx); err != nil {
		return nil, nil, fmt.Errorf("get work item %s: %w", id, err)
	}
	var stored []WorkItemEvent
	if err := r.db.NewSelect().Model(&stored).Where("item_id IN (?)", bun.In(chain)).OrderExpr("time, id").Scan(ctx); err != nil {
		return nil, nil, fmt.Errorf("get work item %s: %w", id, err)
	}
	events := make([]WorkItemEvent, 0, 3*len(rows)+len(stored))
	for i := range rows {
		events = append(events, rowEvents(&rows[i])...)
	}
	events = append(events, stored...)
	// Stable: an item's own events, and an item before its retry, keep
	// their order when they share an instant.
	slices.SortStableFunc(events, func(a, b WorkItemEvent) int { return a.Time.Compare(b.Time) })
	return item, events, nil
}

// rowEvents are the events an item's row records: its adding, its taking
// and its end.
func rowEvents(it *WorkItem) []WorkItemEvent {
	added := "added by " + it.CreatedBy
	if it.RetryOf != "" {
		added = fmt.Sprintf("retry %d of %s", it.Retry, it.RetryOf)
	}
	out := []WorkItemEvent{{ItemID: it.ID, Time: it.CreatedAt, Status: ItemNew, Message: added}}
	if it.StartedAt != nil {
		out = append(out, WorkItemEvent{
			ItemID: it.ID, Time: *it.StartedAt, Status: ItemInProgress, JobID: it.JobID, Attempt: it.Attempt, RobotID: it.RobotID,
			Message: fmt.Sprintf("taken by job %s attempt %d", it.JobID, it.Attempt),
		})
	}
	if it.EndedAt != nil && it.EndStatus != "" {
		var msg string
		switch it.EndStatus {
		case ItemSuccessful:
			msg = "completed by job " + it.JobID
		case ItemAbandoned:
			msg = fmt.Sprintf("abandoned: job %s attempt %d: %s", it.JobID, it.Attempt, it.Reason)
		default:
			msg = fmt.Sprintf("%s exception from job %s: %s", it.Exception, it.JobID, it.Reason)
		}
		out = append(out, WorkItemEvent{
			ItemID: it.ID, Time: *it.EndedAt, Status: it.EndStatus, JobID: it.JobID, Attempt: it.Attempt, RobotID: it.RobotID, Message: msg,
		})
	}
	return out
}

// lockItems reads and locks the items of ids, refusing the whole call
// with ErrNotFound naming the ids that do not exist and ErrConflict naming
// those not in one of allowed (or, with noCopy, already retried).
func (r *Registry) lockItems(ctx context.Context, tx bun.IDB, ids []string, allowed []WorkItemStatus, action string) ([]WorkItem, error) {
	ids = uniqueStrings(ids)
	var items []WorkItem
	q := tx.NewSelect().Model(&items).Where("id IN (?)", bun.In(ids)).OrderExpr("id")
	if r.dialect == "postgres" {
		q = q.For("UPDATE")
	}
	if err := q.Scan(ctx); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, err
	}
	if len(items) < len(ids) {
		found := map[string]bool{}
		for _, it := range items {
			found[it.ID] = true
		}
		var missing []string
		for _, id := range ids {
			if !found[id] {
				missing = append(missing, id)
			}
		}
		return nil, fmt.Errorf("%w: no work item %s; nothing was changed", ErrNotFound, listSome(missing))
	}
	var refused []string
	for _, it := range items {
		if !slices.Contains(allowed, it.Status) {
			refused = append(refused, fmt.Sprintf("%s (%s)", it.ID, it.Status))
		}
	}
	if len(refused) > 0 {
		names := make([]string, len(allowed))
		for i, s := range allowed {
			names[i] = strings.ToUpper(string(s))
		}
		return nil, fmt.Errorf("%w: only %s items can be %s, not %s; nothing was changed", ErrConflict, strings.Join(names, " or "), action, listSome(refused))
	}
	return items, nil
}

func uniqueStrings(in []string) []string {
	out := slices.Clone(in)
	slices.Sort(out)
	return slices.Compact(out)
}

func listSome(s []string) string {
	if len(s) > 10 {
		return strings.Join(s[:10], ", ") + fmt.Sprintf(" and %d more", len(s)-10)
	}
	return strings.Join(s, ", ")
}

// RetryWorkItems adds a NEW copy of each FAILED or ABANDONED item, as its
// next retry, and marks a FAILED one RETRIED; all of them or none. It
// returns the copies' ids in the order of ids. An abandoned item already
// retried is refused (ErrConflict).
func (r *Registry) RetryWorkItems(ctx context.Context, ids []string, by string, audit *AuditEvent) ([]string, error) {
	out := make([]string, len(ids))
	err := r.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		items, err := r.lockItems(ctx, tx, ids, []WorkItemStatus{ItemFailed, ItemAbandoned}, "retried")
		if err != nil {
			return err
		}
		var copied []string
		if err := tx.NewSelect().Model((*WorkItem)(nil)).Column("retry_of").
			Where("retry_of IN (?)", bun.In(uniqueStrings(ids))).Scan(ctx, &copied); err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if len(copied) > 0 {
			return fmt.Errorf("%w: already retried: %s; retry the newest copy instead; nothing was changed", ErrConflict, listSome(copied))
		}
		at := now()
		var c counts
		var events []WorkItemEvent
		byID := map[string]string{}
		for i := range items {
			it := &items[i]
			if it.Status == ItemFailed {
				c.move(it.Queue, ItemFailed, ItemRetried)
				it.Status, it.UpdatedAt = ItemRetried, at
				if _, err := tx.NewUpdate().Model(it).Column("status", "updated_at").WherePK().Exec(ctx); err != nil {
					return err
				}
				events = append(events, itemEvent(it, at, "retried by "+by))
			}
			cp := &WorkItem{
				ID: NewID(), Queue: it.Queue, Reference: it.Reference, UniqueReference: it.UniqueReference,
				Priority: it.Priority, Data: it.Data, Deadline: it.Deadline, Status: ItemNew,
				Retry: it.Retry + 1, RetryOf: it.ID, Breached: it.Breached, CreatedBy: by, CreatedAt: at, UpdatedAt: at,
			}
			if _, err := tx.NewInsert().Model(cp).Exec(ctx); err != nil {
				if isUniqueViolation(err) {
					return fmt.Errorf("%w: reference %q of item %s is held by another item of queue %s", ErrAlreadyExists, it.Reference, it.ID, it.Queue)
				}
				return err
			}
			c.move(cp.Queue, "", ItemNew)
			events = append(events, itemEvent(cp, at, fmt.Sprintf("retry %d of %s, by %s", cp.Retry, it.ID, by)))
			byID[it.ID] = cp.ID
		}
		for i, id := range ids {
			out[i] = byID[id]
		}
		if _, err := tx.NewInsert().Model(&events).Exec(ctx); err != nil {
			return err
		}
		if err := c.flush(ctx, tx, r.shard()); err != nil {
			return err
		}
		return insertAudit(ctx, tx, audit)
	})
	if err != nil {
		return nil, fmt.Errorf("retry work items: %w", err)
	}
	return out, nil
}

// DeferWorkItems sets when NEW items may be taken (nil: at once); all of
// them or none.
func (r *Registry) DeferWorkItems(ctx context.Context, ids []string, until *time.Time, by string, audit *AuditEvent) (int, error) {
	until = itemTime(until)
	n := 0
	err := r.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		items, err := r.lockItems(ctx, tx, ids, []WorkItemStatus{ItemNew}, "deferred")
		if err != nil {
			return err
		}
		at := now()
		events := make([]WorkItemEvent, 0, len(items))
		msg := "made available at once by " + by
		if until != nil {
			msg = "deferred until " + until.Format(time.RFC3339) + " by " + by
		}
		for i := range items {
			events = append(events, itemEvent(&items[i], at, msg))
		}
		_, err = tx.NewUpdate().Model((*WorkItem)(nil)).Set("defer_until = ?", until).Set("updated_at = ?", at).
			Where("id IN (?)", bun.In(uniqueStrings(ids))).Exec(ctx)
		if err != nil {
			return err
		}
		if _, err := tx.NewInsert().Model(&events).Exec(ctx); err != nil {
			return err
		}
		n = len(items)
		return insertAudit(ctx, tx, audit)
	})
	if err != nil {
		return 0, fmt.Errorf("defer work items: %w", err)
	}
	return n, nil
}

// DeleteWorkItems marks NEW, FAILED or ABANDONED items DELETED; all of
// them or none.
func (r *Registry) DeleteWorkItems(ctx context.Context, ids []string, by string, audit *AuditEvent) (int, error) {
	n := 0
	err := r.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		items, err := r.lockItems(ctx, tx, ids, []WorkItemStatus{ItemNew, ItemFailed, ItemAbandoned}, "deleted")
		if err != nil {
			return err
		}
		at := now()
		var c counts
		events := make([]WorkItemEvent, 0, len(items))
		for i := range items {
			it := &items[i]
			c.move(it.Queue, it.Status, ItemDeleted)
			it.Status = ItemDeleted
			events = append(events, itemEvent(it, at, "deleted by "+by))
		}
		_, err = tx.NewUpdate().Model((*WorkItem)(nil)).Set("status = ?", ItemDeleted).Set("updated_at = ?", at).
			Where("id IN (?)", bun.In(uniqueStrings(ids))).Exec(ctx)
		if err != nil {
			return err
		}
		if _, err := tx.NewInsert().Model(&events).Exec(ctx); err != nil {
			return err
		}
		if err := c.flush(ctx, tx, r.shard()); err != nil {
			return err
		}
		n = len(items)
		return insertAudit(ctx, tx, audit)
	})
	if err != nil {
		return 0, fmt.Errorf("delete work items: %w", err)
	}
	return n, nil
}

// WorkQueueStats are a queue's figures, read from its counters.
type WorkQueueStats struct {
	Queue             string
	Counts            map[WorkItemStatus]int64
	ItemsPerMinute    float64
	AverageProcessing time.Duration
	SLABreaches       int64
	// OldestNew is nil when no item is NEW.
	OldestNew *time.Time
}

// WorkQueueStats returns the figures of the named queues, from their
// counters: the cost does not grow with the number of items.
func (r *Registry) WorkQueueStats(ctx context.Context, names ...string) (map[string]*WorkQueueStats, error) {
	out := make(map[string]*WorkQueueStats, len(names))
	if len(names) == 0 {
		return out, nil
	}
	for _, n := range names {
		s := &WorkQueueStats{Queue: n, Counts: map[WorkItemStatus]int64{}}
		for _, st := range WorkItemStatuses {
			s.Counts[st] = 0
		}
		out[n] = s
	}
	var rows []struct {
		Queue      string `bun:"queue"`
		Status     string `bun:"status"`
		N          int64  `bun:"n"`
		DurationMs int64  `bun:"duration_ms"`
	}
	err := r.db.NewSelect().Model((*workQueueCount)(nil)).
		ColumnExpr("queue, status, SUM(n) AS n, SUM(duration_ms) AS duration_ms").
		Where("queue IN (?)", bun.In(names)).Group("queue", "status").Scan(ctx, &rows)
	if err != nil {
		return nil, fmt.Errorf("work queue figures: %w", err)
	}
	for _, row := range rows {
		s := out[row.Queue]
		switch row.Status {
		case counterProcessed:
			if row.N > 0 {
				s.AverageProcessing = time.Duration(row.DurationMs/row.N) * time.Millisecond
			}
		case counterBreached:
			s.SLABreaches = row.N
		default:
			s.Counts[WorkItemStatus(row.Status)] = row.N
		}
	}
	at := time.Now()
	minute := at.Unix() / 60
	var mins []struct {
		Queue  string `bun:"queue"`
		Minute int64  `bun:"minute"`
		N      int64  `bun:"n"`
	}
	err = r.db.NewSelect().Model((*workQueueMinute)(nil)).ColumnExpr("queue, minute, SUM(n) AS n").
		Where("queue IN (?) AND minute >= ?", bun.In(names), minute-1).Group("queue", "minute").Scan(ctx, &mins)
	if err != nil {
		return nil, fmt.Errorf("work queue figures: %w", err)
	}
	// The last full minute and the part of this one gone by.
	span := 1 + float64(at.Unix()%60)/60
	for _, m := range mins {
		out[m.Queue].ItemsPerMinute += float64(m.N) / span
	}
	for _, n := range names {
		if out[n].Counts[ItemNew] == 0 {
			continue
		}
		var oldest []time.Time
		err := r.db.NewSelect().Model((*WorkItem)(nil)).Column("created_at").
			Where("queue = ? AND status = ?", n, ItemNew).OrderExpr("created_at").Limit(1).Scan(ctx, &oldest)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("work queue figures: %w", err)
		}
		if len(oldest) == 1 {
			t := oldest[0].UTC()
			out[n].OldestNew = &t
		}
	}
	return out, nil
}

// WorkQueueCounts returns every queue's item counts by status, for
// metrics.
func (r *Registry) WorkQueueCounts(ctx context.Context) (map[string]*WorkQueueStats, error) {
	var names []string
	if err := r.db.NewSelect().Model((*WorkQueue)(nil)).Column("name").Scan(ctx, &names); err != nil {
		return nil, fmt.Errorf("work queue counts: %w", err)
	}
	return r.WorkQueueStats(ctx, names...)
}

// CountActiveJobs counts the jobs created by createdBy that are pending,
// assigned or running.
func (r *Registry) CountActiveJobs(ctx context.Context, createdBy string) (int, error) {
	n, err := r.db.NewSelect().Model((*Job)(nil)).
		Where("status IN (?) AND created_by = ?", bun.In([]JobStatus{JobPending, JobAssigned, JobRunning}), createdBy).Count(ctx)
	if err != nil {
		return 0, fmt.Errorf("count active jobs of %s: %w", createdBy, err)
	}
	return int(n), nil
}
