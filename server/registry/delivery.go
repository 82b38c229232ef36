package registry

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/uptrace/bun"
)

// DueSubscriptions returns the enabled subscriptions with a delivery due
// at now that no worker holds. It locks nothing: a worker then claims.
func (r *Registry) DueSubscriptions(ctx context.Context, now time.Time) ([]string, error) {
	var ids []string
	err := r.db.NewSelect().Model((*Delivery)(nil)).ColumnExpr("DISTINCT delivery.subscription_id").
		Join("JOIN webhook_subscriptions AS s ON s.id = delivery.subscription_id").
		Where("delivery.state = ?", DeliveryPending).
		Where("delivery.next_attempt_at <= ?", normalize(now)).
		Where("(delivery.lease_until IS NULL OR delivery.lease_until < ?)", normalize(now)).
		Where("s.enabled").
		Where(headOfResource).
		Scan(ctx, &ids)
	if err != nil {
		return nil, fmt.Errorf("due subscriptions: %w", err)
	}
	return ids, nil
}

// headOfResource holds for a delivery no earlier event of its resource
// waits before, for the same subscription.
const headOfResource = `NOT EXISTS (SELECT 1 FROM webhook_deliveries AS p WHERE p.subscription_id = delivery.subscription_id
	AND p.resource_id = delivery.resource_id AND p.state = 'pending' AND p.event_seq < delivery.event_seq)`

// Claim is a delivery a worker holds, with what it needs to make it.
type Claim struct {
	Delivery     Delivery
	Event        Event
	Subscription Subscription
}

// ClaimDeliveries leases up to limit deliveries of the subscription that
// are due at now to owner until now+lease, and returns them. A delivery is
// due only when no earlier event of its resource waits for the same
// subscription, so a resource's events arrive in order. On PostgreSQL,
// workers of every replica claim at once and never get the same delivery
// (FOR UPDATE SKIP LOCKED); SQLite has one writer.
func (r *Registry) ClaimDeliveries(ctx context.Context, subscriptionID, owner string, now time.Time, lease time.Duration, limit int) ([]Claim, error) {
	now = normalize(now)
	due := r.db.NewSelect().Model((*Delivery)(nil)).Column("delivery.id").
		Where("delivery.subscription_id = ?", subscriptionID).
		Where("delivery.state = ?", DeliveryPending).
		Where("delivery.next_attempt_at <= ?", now).
		Where("(delivery.lease_until IS NULL OR delivery.lease_until < ?)", now).
		Where(headOfResource).
		OrderExpr("delivery.next_attempt_at ASC, delivery.id ASC").Limit(int64(limit))
	if r.dialect == "postgres" {
		due = due.For("UPDATE SKIP LOCKED")
	}
	var claimed []Delivery
	_, err := r.db.NewUpdate().Model((*Delivery)(nil)).
		Set("lease_owner = ?", owner).
		Set("lease_until = ?", now.Add(lease)).
		Where("delivery.id IN (?)", due).
		Returning("*").
		Exec(ctx, &claimed)
	if err != nil {
		return nil, fmt.Errorf("claim deliveries: %w", err)
	}
	if len(claimed) == 0 {
		return nil, nil
	}
	sub := new(Subscription)
	if err := r.db.NewSelect().Model(sub).Where("id = ?", subscriptionID).Scan(ctx); err != nil {
		return nil, fmt.Errorf("claim deliveries: read subscription: %w", err)
	}
	seqs := make([]int64, len(claimed))
	for i := range claimed {
		seqs[i] = claimed[i].EventSeq
	}
	var events []Event
	if err := r.db.NewSelect().Model(&events).Where("seq IN (?)", bun.In(seqs)).Scan(ctx); err != nil {
		return nil, fmt.Errorf("claim deliveries: read events: %w", err)
	}
	bySeq := make(map[int64]Event, len(events))
	for _, e := range events {
		bySeq[e.Seq] = e
	}
	out := make([]Claim, len(claimed))
	for i := range claimed {
		out[i] = Claim{Delivery: claimed[i], Event: bySeq[claimed[i].EventSeq], Subscription: *sub}
	}
	return out, nil
}

// FixPayload stores payload as the event's body unless one was stored
// already, and returns the body stored: every try and every subscription
// sends the same bytes.
func (r *Registry) FixPayload(ctx context.Context, seq int64, payload string) (string, error) {
	_, err := r.db.NewUpdate().Model((*Event)(nil)).Set("payload = ?", payload).
		Where("seq = ?", seq).Where("payload = ''").Exec(ctx)
	if err != nil {
		return "", fmt.Errorf("store event payload: %w", err)
	}
	var stored string
	if err := r.db.NewSelect().Model((*Event)(nil)).Column("payload").Where("seq = ?", seq).Scan(ctx, &stored); err != nil {
		return "", fmt.Errorf("store event payload: %w", err)
	}
	return stored, nil
}

// Outcome is how a try of a delivery ended; see FinishDelivery.
type Outcome struct {
	Claim      *Claim
	Owner      string
	At         time.Time
	StatusCode int32
	Latency    time.Duration
	Error      string
	Delivered  bool
	// RetryAt is when to try again after a failure; zero gives up on the
	// delivery (it ran out of time).
	RetryAt time.Time
	// MaxFailures disables the subscription at that many failures in a
	// row; 0 never does.
	MaxFailures int32
}

// FinishDelivery records a try: its history row, the delivery's new state
// and the subscription's count of failures in a row, in one transaction.
// A subscription that reaches MaxFailures, or gives up on a delivery, is
// disabled in that transaction with a subscription.disabled event and an
// audit event, and returned. ErrConflict when owner no longer holds the
// delivery (its lease ran out and another worker took it): nothing is
// written.
func (r *Registry) FinishDelivery(ctx context.Context, o Outcome) (disabled *Subscription, err error) {
	at := normalize(o.At)
	d := &o.Claim.Delivery
	err = r.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		state, outcome := DeliveryPending, "retry"
		next := d.NextAttemptAt
		var finished *time.Time
		switch {
		case o.Delivered:
			state, outcome, finished = DeliveryDelivered, "delivered", &at
		case o.RetryAt.IsZero():
			state, outcome, finished = DeliveryFailed, "failed", &at
		default:
			next = normalize(o.RetryAt)
		}
		res, err := tx.NewUpdate().Model((*Delivery)(nil)).
			Set("state = ?", state).
			Set("attempts = attempts + 1").
			Set("next_attempt_at = ?", next).
			Set("finished_at = ?", finished).
			Set("lease_owner = ''").
			Set("lease_until = NULL").
			Where("id = ?", d.ID).Where("lease_owner = ?", o.Owner).Where("state = ?", DeliveryPending).
			Exec(ctx)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("delivery %d is no longer held by %s: %w", d.ID, o.Owner, ErrConflict)
		}
		attempt := &DeliveryAttempt{DeliveryID: d.ID, SubscriptionID: d.SubscriptionID, EventSeq: d.EventSeq, Time: at,
			StatusCode: o.StatusCode, LatencyMillis: o.Latency.Milliseconds(), Error: CleanText(o.Error), Outcome: outcome}
		if _, err := tx.NewInsert().Model(attempt).Exec(ctx); err != nil {
			return err
		}
		if o.Delivered {
			_, err := tx.NewUpdate().Model((*Subscription)(nil)).Set("consecutive_failures = 0").
				Where("id = ?", d.SubscriptionID).Where("consecutive_failures <> 0").Exec(ctx)
			return err
		}
		sub := new(Subscription)
		_, err = tx.NewUpdate().Model(sub).Set("consecutive_failures = consecutive_failures + 1").
			Where("id = ?", d.SubscriptionID).Returning("*").Exec(ctx)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if sub.ID == "" {
			return nil // deleted meanwhile
		}
		var reason string
		switch {
		case !sub.Enabled:
			return nil
		case o.MaxFailures > 0 && sub.ConsecutiveFailures >= o.MaxFailures:
			reason = fmt.Sprintf("%d deliveries in a row failed; the last: %s", sub.ConsecutiveFailures, o.Error)
		case o.RetryAt.IsZero():
			reason = fmt.Sprintf("event %s could not be delivered in time; the last error: %s", o.Claim.Event.ID, o.Error)
		default:
			return nil
		}
		disabled, err = disableSubscription(ctx, tx, sub, CleanText(reason), at)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("finish delivery %d: %w", d.ID, err)
	}
	return disabled, nil
}

// disableSubscription disables sub in tx, which tells the subscriptions
// that want it and the audit log.
func disableSubscription(ctx context.Context, tx bun.IDB, sub *Subscription, reason string, at time.Time) (*Subscription, error) {
	sub.Enabled, sub.DisabledReason, sub.UpdatedAt = false, reason, at
	if _, err := tx.NewUpdate().Model(sub).Column("enabled", "disabled_reason", "updated_at").WherePK().Exec(ctx); err != nil {
		return nil, err
	}
	err := AppendEvents(ctx, tx, Event{Type: EventSubscriptionDisabled, ResourceKind: ResourceSubscription, ResourceID: sub.ID, Time: at})
	if err != nil {
		return nil, err
	}
	details, _ := json.Marshal(map[string]any{"name": sub.Name, "reason": reason})
	audit := &AuditEvent{Time: at, Actor: "casare-server", Action: "webhook subscription disable", Target: "subscription/" + sub.ID,
		Outcome: "ok", Details: string(details)}
	if err := insertAudit(ctx, tx, audit); err != nil {
		return nil, err
	}
	return sub, nil
}
