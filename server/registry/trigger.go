package registry

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/uptrace/bun"
)

// CreateTrigger stores t with the audit event. ErrAlreadyExists when a
// trigger has its name.
func (r *Registry) CreateTrigger(ctx context.Context, t *Trigger, audit *AuditEvent) error {
	t.CreatedAt = normalize(t.CreatedAt)
	t.UpdatedAt = t.CreatedAt
	return r.insertAudited(ctx, t, audit, "trigger", t.Name)
}

// GetTrigger returns the trigger with the id or, failing that, the name;
// ErrNotFound when there is none.
func (r *Registry) GetTrigger(ctx context.Context, idOrName string) (*Trigger, error) {
	t, err := r.getTrigger(ctx, r.db, idOrName, false)
	if err != nil {
		return nil, fmt.Errorf("get trigger %s: %w", idOrName, err)
	}
	return t, nil
}

// TriggerByID returns the trigger with the id, and only the id: the
// /hooks/ endpoint looks triggers up by the id in its URL, and a name must
// not stand in for it.
func (r *Registry) TriggerByID(ctx context.Context, id string) (*Trigger, error) {
	t := new(Trigger)
	err := r.db.NewSelect().Model(t).Where("id = ?", id).Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("trigger %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("trigger %s: %w", id, err)
	}
	return t, nil
}

// getTrigger looks idOrName up as an id, then as a name; forUpdate locks
// the row on PostgreSQL (SQLite's writer lock serialises on its own).
func (r *Registry) getTrigger(ctx context.Context, db bun.IDB, idOrName string, forUpdate bool) (*Trigger, error) {
	for _, column := range []string{"id", "name"} {
		t := new(Trigger)
		q := db.NewSelect().Model(t).Where("? = ?", bun.Ident(column), idOrName)
		if forUpdate && r.dialect == "postgres" {
			q = q.For("UPDATE")
		}
		err := q.Scan(ctx)
		if errors.Is(err, sql.ErrNoRows) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return t, nil
	}
	return nil, ErrNotFound
}

// TriggerFilter narrows ListTriggers; zero fields match everything.
type TriggerFilter struct {
	WorkflowName string
}

// ListTriggers returns triggers ordered by name.
func (r *Registry) ListTriggers(ctx context.Context, f TriggerFilter, p Page) ([]Trigger, string, error) {
	query := []any{"triggers", f.WorkflowName}
	after, err := decodePageToken(p.Token, query...)
	if err != nil {
		return nil, "", fmt.Errorf("list triggers: %w", err)
	}
	var list []Trigger
	q := r.db.NewSelect().Model(&list)
	if f.WorkflowName != "" {
		q = q.Where("workflow_name = ?", f.WorkflowName)
	}
	if after != "" {
		q = q.Where("name > ?", after)
	}
	size := p.size()
	if err := q.OrderExpr("name ASC").Limit(int64(size + 1)).Scan(ctx); err != nil {
		return nil, "", fmt.Errorf("list triggers: %w", err)
	}
	next := ""
	if len(list) > size {
		list = list[:size]
		next = encodePageToken(list[size-1].Name, query...)
	}
	return list, next, nil
}

// DeleteTrigger deletes the trigger with the id or name and writes the
// audit event, whose target becomes the trigger's id. It returns the
// trigger as it was; ErrNotFound when there is none.
func (r *Registry) DeleteTrigger(ctx context.Context, idOrName string, audit *AuditEvent) (*Trigger, error) {
	var t *Trigger
	err := r.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var err error
		if t, err = r.getTrigger(ctx, tx, idOrName, true); err != nil {
			return err
		}
		if _, err := tx.NewDelete().Model(t).WherePK().Exec(ctx); err != nil {
			return err
		}
		if audit != nil {
			audit.Target = "trigger/" + t.ID
		}
		return insertAudit(ctx, tx, audit)
	})
	if err != nil {
		return nil, fmt.Errorf("delete trigger %s: %w", idOrName, err)
	}
	return t, nil
}

// RotateTriggerSecret makes secret the trigger's secret and keeps the one
// it replaces valid until previousUntil; a previous secret still in its
// own grace period is dropped, as only one rotation is ever pending. It
// writes the audit event (target: the trigger's id) and returns the
// trigger as it is now; ErrNotFound when there is none.
func (r *Registry) RotateTriggerSecret(ctx context.Context, idOrName, secret string, previousUntil time.Time, audit *AuditEvent) (*Trigger, error) {
	previousUntil = normalize(previousUntil)
	var t *Trigger
	err := r.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var err error
		if t, err = r.getTrigger(ctx, tx, idOrName, true); err != nil {
			return err
		}
		t.PreviousSecret, t.Secret = t.Secret, secret
		t.PreviousSecretExpiresAt = &previousUntil
		t.UpdatedAt = now()
		if _, err := tx.NewUpdate().Model(t).
			Column("secret", "previous_secret", "previous_secret_expires_at", "updated_at").
			WherePK().Exec(ctx); err != nil {
			return err
		}
		if audit != nil {
			audit.Target = "trigger/" + t.ID
		}
		return insertAudit(ctx, tx, audit)
	})
	if err != nil {
		return nil, fmt.Errorf("rotate secret of trigger %s: %w", idOrName, err)
	}
	return t, nil
}

// UpdateTrigger replaces what the trigger named t.Name starts and how
// (workflow, version, inputs, priority, requirements, attempts, rate and
// burst) with t's, keeping its id, auth, secrets and creation, and writes
// the audit event (target: the trigger's id). It returns the trigger as it
// is now; ErrNotFound when there is none.
func (r *Registry) UpdateTrigger(ctx context.Context, t *Trigger, audit *AuditEvent) (*Trigger, error) {
	var saved *Trigger
	err := r.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var err error
		if saved, err = r.getTrigger(ctx, tx, t.Name, true); err != nil {
			return err
		}
		saved.WorkflowName, saved.WorkflowVersion, saved.Inputs = t.WorkflowName, t.WorkflowVersion, t.Inputs
		saved.Priority, saved.Requires, saved.MaxAttempts = t.Priority, t.Requires, t.MaxAttempts
		saved.RatePerSecond, saved.Burst = t.RatePerSecond, t.Burst
		saved.UpdatedAt = now()
		if _, err := tx.NewUpdate().Model(saved).
			Column("workflow_name", "workflow_version", "inputs", "priority", "requires", "max_attempts",
				"rate_per_second", "burst", "updated_at").
			WherePK().Exec(ctx); err != nil {
			return err
		}
		if audit != nil {
			audit.Target = "trigger/" + saved.ID
		}
		return insertAudit(ctx, tx, audit)
	})
	if err != nil {
		return nil, fmt.Errorf("update trigger %s: %w", t.Name, err)
	}
	return saved, nil
}
