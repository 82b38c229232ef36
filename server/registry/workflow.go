package registry

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/uptrace/bun"
)

// PutWorkflow stores v as the next version of v.Name, 1 for a new name, and
// writes the audit event with it. When the latest version has the same
// digest it writes nothing and returns that version with created false.
func (r *Registry) PutWorkflow(ctx context.Context, v *WorkflowVersion, audit *AuditEvent) (saved *WorkflowVersion, created bool, err error) {
	v.CreatedAt = normalize(v.CreatedAt)
	// Two pushes of one name may race for the next version; the primary
	// key lets one win and the other tries again with the version after.
	for range 10 {
		var latest *WorkflowVersion
		err = r.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			found := new(WorkflowVersion)
			err := tx.NewSelect().Model(found).Where("name = ?", v.Name).OrderExpr("version DESC").Limit(1).Scan(ctx)
			switch {
			case errors.Is(err, sql.ErrNoRows):
				v.Version = 1
			case err != nil:
				return err
			case found.Digest == v.Digest:
				latest = found
				return nil
			default:
				v.Version = found.Version + 1
			}
			if _, err := tx.NewInsert().Model(v).Exec(ctx); err != nil {
				return err
			}
			return insertAudit(ctx, tx, audit)
		})
		if isUniqueViolation(err) {
			continue
		}
		if err != nil {
			return nil, false, fmt.Errorf("put workflow %s: %w", v.Name, err)
		}
		if latest != nil {
			return latest, false, nil
		}
		return v, true, nil
	}
	return nil, false, fmt.Errorf("put workflow %s: too many concurrent pushes: %w", v.Name, ErrConflict)
}

// GetWorkflow returns a version of the named workflow, the latest when
// version is 0, or ErrNotFound.
func (r *Registry) GetWorkflow(ctx context.Context, name string, version int32) (*WorkflowVersion, error) {
	v := new(WorkflowVersion)
	q := r.db.NewSelect().Model(v).Where("name = ?", name)
	if version > 0 {
		q = q.Where("version = ?", version)
	} else {
		q = q.OrderExpr("version DESC").Limit(1)
	}
	err := q.Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("get workflow %s version %d: %w", name, version, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get workflow %s: %w", name, err)
	}
	return v, nil
}

// ListWorkflows returns the stored workflows by name, each described by its
// latest version.
func (r *Registry) ListWorkflows(ctx context.Context, p Page) ([]WorkflowSummary, string, error) {
	after, err := decodePageToken(p.Token, "workflows")
	if err != nil {
		return nil, "", fmt.Errorf("list workflows: %w", err)
	}
	latest := r.db.NewSelect().Model((*WorkflowVersion)(nil)).
		ColumnExpr("name").ColumnExpr("MAX(version) AS version").Group("name")
	if after != "" {
		latest = latest.Where("name > ?", after)
	}
	var rows []WorkflowVersion
	size := p.size()
	err = r.db.NewSelect().Model(&rows).
		Join("JOIN (?) AS latest ON latest.name = workflow_version.name AND latest.version = workflow_version.version", latest).
		OrderExpr("workflow_version.name ASC").Limit(int64(size + 1)).Scan(ctx)
	if err != nil {
		return nil, "", fmt.Errorf("list workflows: %w", err)
	}
	next := ""
	if len(rows) > size {
		rows = rows[:size]
		next = encodePageToken(rows[size-1].Name, "workflows")
	}
	out := make([]WorkflowSummary, len(rows))
	for i, w := range rows {
		out[i] = WorkflowSummary{Name: w.Name, LatestVersion: w.Version, Description: w.Description, UpdatedAt: w.CreatedAt}
	}
	return out, next, nil
}
