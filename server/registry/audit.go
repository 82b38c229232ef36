package registry

import (
	"context"
	"fmt"
	"strconv"

	"github.com/uptrace/bun"
)

// InsertAudit writes an audit event on its own, for calls that changed
// nothing (denied or failed) and so had no transaction to write it in.
func (r *Registry) InsertAudit(ctx context.Context, e *AuditEvent) error {
	return insertAudit(ctx, r.db, e)
}

// AuditFilter narrows ListAudit; zero fields match everything.
type AuditFilter struct {
	Actor  string
	Target string
}

// ListAudit returns audit events newest first.
func (r *Registry) ListAudit(ctx context.Context, f AuditFilter, p Page) ([]AuditEvent, string, error) {
	query := []any{"audit", f.Actor, f.Target}
	after, err := decodePageToken(p.Token, query...)
	if err != nil {
		return nil, "", fmt.Errorf("list audit events: %w", err)
	}
	var events []AuditEvent
	q := r.db.NewSelect().Model(&events)
	if f.Actor != "" {
		q = q.Where("actor = ?", f.Actor)
	}
	if f.Target != "" {
		q = q.Where("target = ?", f.Target)
	}
	if after != "" {
		id, err := strconv.ParseInt(after, 10, 64)
		if err != nil {
			return nil, "", fmt.Errorf("list audit events: %w", ErrInvalidPageToken)
		}
		q = q.Where("id < ?", id)
	}
	size := p.size()
	if err := q.OrderExpr("id DESC").Limit(int64(size + 1)).Scan(ctx); err != nil {
		return nil, "", fmt.Errorf("list audit events: %w", err)
	}
	next := ""
	if len(events) > size {
		events = events[:size]
		next = encodePageToken(strconv.FormatInt(events[size-1].ID, 10), query...)
	}
	return events, next, nil
}

// insertAudited inserts the row of a new resource with its audit event in
// one transaction; a name another row has is ErrAlreadyExists.
func (r *Registry) insertAudited(ctx context.Context, row any, audit *AuditEvent, kind, name string) error {
	err := r.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.NewInsert().Model(row).Exec(ctx); err != nil {
			return err
		}
		return insertAudit(ctx, tx, audit)
	})
	if isUniqueViolation(err) {
		return fmt.Errorf("create %s %s: %w", kind, name, ErrAlreadyExists)
	}
	if err != nil {
		return fmt.Errorf("create %s %s: %w", kind, name, err)
	}
	return nil
}
