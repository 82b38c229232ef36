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
// at now that no worker holds. It locks nothing and does not look at the
// order of resources (a due delivery may wait behind an earlier one of its
// resource): a worker then claims what is due.
func (r *Registry) DueSubscriptions(ctx context.Context, now time.Time) ([]string, error) {
	var ids []string
	err := r.db.NewSelect().Model((*Delivery)(nil)).ColumnExpr("DISTINCT delivery.subscription_id").
		Join("JOIN webhook_subscriptions AS s ON s.id = delivery.subscription_id").
		Where("delivery.state = ?", DeliveryPending).
		Where("delivery.next_attempt_at <= ?", normalize(now)).
		Where("(delivery.lease_until IS NULL OR delivery.lease_until < ?)", normalize(now)).
		Where("s.enabled").
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
		// A subscription disabled meanwhile gets nothing more.
		Where("EXISTS (SELECT 1 FROM webhook_subscriptions AS s WHERE s.id = ? AND s.enabled)", subscriptionID).
		OrderExpr("delivery.next_attempt_at ASC, delivery.id ASC").Limit(int64(limit))
	if r.dialect == "postgres" {
		// The oldest pending delivery of each resource, in one pass over
		// the subscription's pending deliveries in index order, made an
		// array once: a correlated NOT EXISTS, or IN over the subquery, is
		// planned as a nested loop running it again for every row until
		// the table's statistics catch up (a new table, a burst).
		heads := r.db.NewSelect().Model((*Delivery)(nil)).ModelTableExpr("webhook_deliveries AS h").
			DistinctOn("h.resource_id").Column("h.id").
			Where("h.subscription_id = ?", subscriptionID).Where("h.state = ?", DeliveryPending).
			OrderExpr("h.resource_id, h.event_seq")
		due = due.Where("delivery.id = ANY (ARRAY(?))", heads).For("UPDATE OF delivery SKIP LOCKED")
	} else {
		due = due.Where(headOfResource)
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

// FixPayloads stores each payload (by event seq) as its event's body
// unless one was stored already, in one transaction, and returns the
// bodies stored: every try and every subscription sends the same bytes.
func (r *Registry) FixPayloads(ctx context.Context, payloads map[int64]string) (map[int64]string, error) {
	if len(payloads) == 0 {
		return nil, nil
	}
	seqs := make([]int64, 0, len(payloads))
	err := r.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		for seq, payload := range payloads {
			seqs = append(seqs, seq)
			if _, err := tx.NewUpdate().Model((*Event)(nil)).Set("payload = ?", payload).
				Where("seq = ?", seq).Where("payload = ''").Exec(ctx); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store event payloads: %w", err)
	}
	var stored []Event
	if err := r.db.NewSelect().Model(&stored).Column("seq", "payload").Where("seq IN (?)", bun.In(seqs)).Scan(ctx); err != nil {
		return nil, fmt.Errorf("store event payloads: %w", err)
	}
	out := make(map[int64]string, len(stored))
	for _, e := range stored {
		out[e.Seq] = e.Payload
	}
	return out, nil
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

// FinishDelivery records one try; see FinishDeliveries. ErrConflict when
// o.Owner no longer holds the delivery.
func (r *Registry) FinishDelivery(ctx context.Context, o Outcome) (disabled *Subscription, err error) {
	disabled, held, err := r.FinishDeliveries(ctx, []Outcome{o})
	if err == nil && held == 0 {
		err = fmt.Errorf("finish delivery %d: no longer held by %s: %w", o.Claim.Delivery.ID, o.Owner, ErrConflict)
	}
	return disabled, err
}

// FinishDeliveries records tries of one subscription's deliveries, in the
// order they ended, in one transaction: their history rows, each
// delivery's new state and the subscription's count of failures in a row.
// A try whose owner no longer holds its delivery (its lease ran out and
// another worker took it) is left out; held counts the others. A
// subscription that reaches MaxFailures, or gives up on a delivery, is
// disabled in that transaction with a subscription.disabled event and an
// audit event, and returned.
func (r *Registry) FinishDeliveries(ctx context.Context, outcomes []Outcome) (disabled *Subscription, held int, err error) {
	if len(outcomes) == 0 {
		return nil, 0, nil
	}
	subID := outcomes[0].Claim.Delivery.SubscriptionID
	err = r.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		held = 0
		var attempts []DeliveryAttempt
		// failures counts those after the last success; reset says a
		// success came, so the count starts again from there.
		failures, reset := int32(0), false
		var last *Outcome
		gaveUp := false
		for i := range outcomes {
			o := &outcomes[i]
			d := &o.Claim.Delivery
			at := normalize(o.At)
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
				continue
			}
			held++
			attempts = append(attempts, DeliveryAttempt{DeliveryID: d.ID, SubscriptionID: d.SubscriptionID, EventSeq: d.EventSeq, Time: at,
				StatusCode: o.StatusCode, LatencyMillis: o.Latency.Milliseconds(), Error: CleanText(o.Error), Outcome: outcome})
			if o.Delivered {
				failures, reset = 0, true
				continue
			}
			failures++
			last = o
			gaveUp = gaveUp || o.RetryAt.IsZero()
		}
		if held == 0 {
			return nil
		}
		if _, err := tx.NewInsert().Model(&attempts).Exec(ctx); err != nil {
			return err
		}
		q := tx.NewUpdate().Model((*Subscription)(nil)).Where("id = ?", subID)
		switch {
		case reset && failures == 0:
			_, err := q.Set("consecutive_failures = 0").Where("consecutive_failures <> 0").Exec(ctx)
			return err
		case reset:
			q = q.Set("consecutive_failures = ?", failures)
		default:
			q = q.Set("consecutive_failures = consecutive_failures + ?", failures)
		}
		sub := new(Subscription)
		if _, err := q.Returning("*").Exec(ctx, sub); err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if sub.ID == "" || !sub.Enabled || last == nil {
			return nil // deleted or disabled meanwhile
		}
		var reason string
		switch {
		case last.MaxFailures > 0 && sub.ConsecutiveFailures >= last.MaxFailures:
			reason = fmt.Sprintf("%d deliveries in a row failed; the last: %s", sub.ConsecutiveFailures, last.Error)
		case gaveUp:
			reason = fmt.Sprintf("an event could not be delivered in time; the last error: %s", last.Error)
		default:
			return nil
		}
		var err error
		disabled, err = disableSubscription(ctx, tx, sub, CleanText(reason), normalize(last.At))
		return err
	})
	if err != nil {
		return nil, 0, fmt.Errorf("finish deliveries: %w", err)
	}
	return disabled, held, nil
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

// PruneEvents removes up to limit events that happened before before and
// have no delivery left to make, with their deliveries and tries, and
// returns how many it removed: the history of deliveries is kept that
// long. Replicas may prune together: a row goes once.
func (r *Registry) PruneEvents(ctx context.Context, before time.Time, limit int) (int, error) {
	done := r.db.NewSelect().Model((*Event)(nil)).Column("event.seq").
		Where("event.time < ?", normalize(before)).
		Where("NOT EXISTS (SELECT 1 FROM webhook_deliveries AS d WHERE d.event_seq = event.seq AND d.state = ?)", DeliveryPending).
		OrderExpr("event.seq ASC").Limit(int64(limit))
	// Deliveries and their tries go with the event (ON DELETE CASCADE).
	res, err := r.db.NewDelete().Model((*Event)(nil)).Where("seq IN (?)", done).Exec(ctx)
	if err != nil {
		return 0, fmt.Errorf("prune events: %w", err)
	}
	n, _ := res.RowsAffected()
	return int(n), nil
}
