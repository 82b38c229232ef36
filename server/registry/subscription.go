package registry

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/uptrace/bun"
)

// CreateSubscription stores s with the audit event. ErrAlreadyExists when a
// subscription has the name.
func (r *Registry) CreateSubscription(ctx context.Context, s *Subscription, audit *AuditEvent) error {
	s.CreatedAt = normalize(s.CreatedAt)
	s.UpdatedAt = s.CreatedAt
	return r.insertAudited(ctx, s, audit, "subscription", s.Name)
}

// GetSubscription returns the subscription with the id or else the name, or
// ErrNotFound.
func (r *Registry) GetSubscription(ctx context.Context, idOrName string) (*Subscription, error) {
	s, err := getSubscription(ctx, r.db, idOrName)
	if err != nil {
		return nil, fmt.Errorf("get subscription %s: %w", idOrName, err)
	}
	return s, nil
}

func getSubscription(ctx context.Context, db bun.IDB, idOrName string) (*Subscription, error) {
	s := new(Subscription)
	err := db.NewSelect().Model(s).Where("id = ? OR name = ?", idOrName, idOrName).
		OrderExpr("CASE WHEN id = ? THEN 0 ELSE 1 END", idOrName).Limit(1).Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return s, err
}

// ListSubscriptions returns subscriptions by name.
func (r *Registry) ListSubscriptions(ctx context.Context, p Page) ([]Subscription, string, error) {
	query := []any{"subscriptions"}
	after, err := decodePageToken(p.Token, query...)
	if err != nil {
		return nil, "", fmt.Errorf("list subscriptions: %w", err)
	}
	var subs []Subscription
	q := r.db.NewSelect().Model(&subs)
	if after != "" {
		q = q.Where("name > ?", after)
	}
	size := p.size()
	if err := q.OrderExpr("name ASC").Limit(int64(size + 1)).Scan(ctx); err != nil {
		return nil, "", fmt.Errorf("list subscriptions: %w", err)
	}
	next := ""
	if len(subs) > size {
		subs = subs[:size]
		next = encodePageToken(subs[size-1].Name, query...)
	}
	return subs, next, nil
}

// DeleteSubscription deletes the subscription with the id or name, its
// deliveries and their history, with the audit event, and returns what it
// deleted. ErrNotFound when there is none.
func (r *Registry) DeleteSubscription(ctx context.Context, idOrName string, audit func(*Subscription) *AuditEvent) (*Subscription, error) {
	var s *Subscription
	err := r.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var err error
		if s, err = getSubscription(ctx, tx, idOrName); err != nil {
			return err
		}
		if _, err := tx.NewDelete().Model((*DeliveryAttempt)(nil)).Where("subscription_id = ?", s.ID).Exec(ctx); err != nil {
			return err
		}
		if _, err := tx.NewDelete().Model((*Delivery)(nil)).Where("subscription_id = ?", s.ID).Exec(ctx); err != nil {
			return err
		}
		if _, err := tx.NewDelete().Model(s).WherePK().Exec(ctx); err != nil {
			return err
		}
		return insertAudit(ctx, tx, audit(s))
	})
	if err != nil {
		return nil, fmt.Errorf("delete subscription %s: %w", idOrName, err)
	}
	return s, nil
}

// SubscriptionChange is an edit of a subscription; nil fields stay.
type SubscriptionChange struct {
	URL          *string
	EventTypes   *string
	WorkflowName *string
	// Enabled true also forgets the failures counted so far.
	Enabled *bool
}

// UpdateSubscription applies c to the subscription with the id or name with
// the audit event, and returns it as saved. ErrNotFound when there is none.
func (r *Registry) UpdateSubscription(ctx context.Context, idOrName string, c SubscriptionChange, audit func(*Subscription) *AuditEvent) (*Subscription, error) {
	var s *Subscription
	err := r.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var err error
		if s, err = getSubscription(ctx, tx, idOrName); err != nil {
			return err
		}
		if c.URL != nil {
			s.URL = *c.URL
		}
		if c.EventTypes != nil {
			s.EventTypes = *c.EventTypes
		}
		if c.WorkflowName != nil {
			s.WorkflowName = *c.WorkflowName
		}
		event := audit(s)
		if c.Enabled != nil {
			s.Enabled = *c.Enabled
			switch {
			case s.Enabled:
				s.ConsecutiveFailures, s.DisabledReason = 0, ""
			case event != nil:
				s.DisabledReason = "disabled by " + event.Actor
			default:
				s.DisabledReason = "disabled by an operator"
			}
		}
		s.UpdatedAt = now()
		if _, err := tx.NewUpdate().Model(s).WherePK().Exec(ctx); err != nil {
			return err
		}
		return insertAudit(ctx, tx, event)
	})
	if err != nil {
		return nil, fmt.Errorf("update subscription %s: %w", idOrName, err)
	}
	return s, nil
}

// PingSubscription writes a ping event for the subscription alone, due at
// once, with the audit event, and returns it.
func (r *Registry) PingSubscription(ctx context.Context, s *Subscription, audit *AuditEvent) (*Event, error) {
	e := &Event{Type: EventPing, ResourceKind: ResourceSubscription, ResourceID: s.ID, Time: now()}
	err := r.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if err := insertEvent(ctx, tx, e, []string{s.ID}); err != nil {
			return err
		}
		return insertAudit(ctx, tx, audit)
	})
	if err != nil {
		return nil, fmt.Errorf("ping subscription %s: %w", s.Name, err)
	}
	return e, nil
}

// RedeliverEvent makes the event due again at once for the subscription
// with the id (every subscription that had it when ""), whatever became
// of its earlier deliveries, and writes the audit event. It returns how
// many deliveries it queued; ErrNotFound when the event is unknown or was
// never for that subscription.
func (r *Registry) RedeliverEvent(ctx context.Context, eventID, subscriptionID string, audit *AuditEvent) (int, error) {
	var n int64
	err := r.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		e := new(Event)
		err := tx.NewSelect().Model(e).Where("id = ?", eventID).Scan(ctx)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		at := now()
		q := tx.NewUpdate().Model((*Delivery)(nil)).
			Set("state = ?", DeliveryPending).
			Set("next_attempt_at = ?", at).
			Set("finished_at = NULL").
			Where("event_seq = ?", e.Seq).
			// One in flight finishes first: its answer must not overwrite
			// the redelivery's.
			Where("(lease_until IS NULL OR lease_until < ?)", at)
		if subscriptionID != "" {
			q = q.Where("subscription_id = ?", subscriptionID)
		}
		res, err := q.Exec(ctx)
		if err != nil {
			return err
		}
		if n, _ = res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		return insertAudit(ctx, tx, audit)
	})
	if err != nil {
		return 0, fmt.Errorf("redeliver event %s: %w", eventID, err)
	}
	return int(n), nil
}

// ListDeliveryAttempts returns the tries of deliveries to the subscription,
// newest first.
func (r *Registry) ListDeliveryAttempts(ctx context.Context, subscriptionID string, p Page) ([]DeliveryAttempt, string, error) {
	query := []any{"attempts", subscriptionID}
	after, err := decodePageToken(p.Token, query...)
	if err != nil {
		return nil, "", fmt.Errorf("list deliveries: %w", err)
	}
	var attempts []DeliveryAttempt
	q := r.db.NewSelect().Model(&attempts).
		ColumnExpr("delivery_attempt.*").
		ColumnExpr("e.id AS event_id, e.type AS event_type").
		Join("JOIN events AS e ON e.seq = delivery_attempt.event_seq").
		Where("delivery_attempt.subscription_id = ?", subscriptionID)
	if after != "" {
		var id int64
		if _, err := fmt.Sscan(after, &id); err != nil {
			return nil, "", fmt.Errorf("list deliveries: %w", ErrInvalidPageToken)
		}
		q = q.Where("delivery_attempt.id < ?", id)
	}
	size := p.size()
	if err := q.OrderExpr("delivery_attempt.id DESC").Limit(int64(size + 1)).Scan(ctx); err != nil {
		return nil, "", fmt.Errorf("list deliveries: %w", err)
	}
	next := ""
	if len(attempts) > size {
		attempts = attempts[:size]
		next = encodePageToken(fmt.Sprint(attempts[size-1].ID), query...)
	}
	return attempts, next, nil
}

// CountPendingDeliveries counts deliveries not yet made to enabled
// subscriptions: the outbox's backlog.
func (r *Registry) CountPendingDeliveries(ctx context.Context) (int, error) {
	n, err := r.db.NewSelect().Model((*Delivery)(nil)).
		Join("JOIN webhook_subscriptions AS s ON s.id = delivery.subscription_id").
		Where("delivery.state = ?", DeliveryPending).Where("s.enabled").Count(ctx)
	if err != nil {
		return 0, fmt.Errorf("count pending deliveries: %w", err)
	}
	return int(n), nil
}

// AppendWaitingJobEvents writes a job.waiting event for each job pending
// since before olderThan (up to limit), once per job whichever replica
// looks, and returns how many it wrote. It reads nothing of the jobs when
// no enabled subscription wants job.waiting.
func (r *Registry) AppendWaitingJobEvents(ctx context.Context, olderThan time.Time, limit int) (int, error) {
	wanted, err := r.db.NewSelect().Model((*Subscription)(nil)).
		Where("enabled").Where("event_types LIKE ?", "%,"+EventJobWaiting+",%").Exists(ctx)
	if err != nil || !wanted {
		return 0, err
	}
	// Pending since the job last became pending (a job sent back for
	// another robot starts waiting again), from its job events: a pending
	// job's row changes with its status message too.
	cutoff := normalize(olderThan)
	var jobs []Job
	err = r.db.NewSelect().Model(&jobs).Column("id", "workflow_name").
		Where("status = ?", JobPending).Where("created_at < ?", cutoff).
		Where("(SELECT max(e.time) FROM job_events AS e WHERE e.job_id = job.id AND e.to_status = ?) < ?", JobPending, cutoff).
		Where("NOT EXISTS (SELECT 1 FROM events AS e WHERE e.dedupe_key = 'job.waiting/' || job.id)").
		OrderExpr("id ASC").Limit(int64(limit)).Scan(ctx)
	if err != nil || len(jobs) == 0 {
		return 0, err
	}
	events := make([]Event, len(jobs))
	for i, j := range jobs {
		key := EventJobWaiting + "/" + j.ID
		events[i] = Event{Type: EventJobWaiting, ResourceKind: ResourceJob, ResourceID: j.ID, WorkflowName: j.WorkflowName, DedupeKey: &key}
	}
	err = r.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		return AppendEvents(ctx, tx, events...)
	})
	if err != nil {
		return 0, fmt.Errorf("append job.waiting events: %w", err)
	}
	return len(events), nil
}
