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

// Event types a subscription may ask for.
const (
	EventJobSucceeded         = "job.succeeded"
	EventJobFailed            = "job.failed"
	EventJobCancelled         = "job.cancelled"
	EventJobWaiting           = "job.waiting"
	EventRobotOffline         = "robot.offline"
	EventScheduleMissed       = "schedule.missed"
	EventSubscriptionDisabled = "subscription.disabled"
	// EventPing is sent by TestSubscription to the one subscription tested;
	// no subscription asks for it.
	EventPing = "ping"
)

// EventTypes lists the types a subscription may ask for.
var EventTypes = []string{
	EventJobSucceeded, EventJobFailed, EventJobCancelled, EventJobWaiting,
	EventRobotOffline, EventScheduleMissed, EventSubscriptionDisabled,
}

// Resource kinds of events.
const (
	ResourceJob          = "job"
	ResourceRobot        = "robot"
	ResourceSchedule     = "schedule"
	ResourceSubscription = "subscription"
)

// Event is a row of events, the outbox: something that happened, written in
// the transaction of the change, delivered to each subscription that wanted
// it when it was written.
type Event struct {
	bun.BaseModel `bun:"table:events"`

	// Seq orders events; a resource's events are delivered in its order.
	Seq int64 `bun:"seq,pk,autoincrement"`
	// ID is stable across retries and redeliveries: receivers dedupe on it.
	ID           string    `bun:"id,notnull"`
	Type         string    `bun:"type,notnull"`
	ResourceKind string    `bun:"resource_kind,notnull"`
	ResourceID   string    `bun:"resource_id,notnull"`
	WorkflowName string    `bun:"workflow_name,notnull"` // of a job event, for subscriptions' filter
	Time         time.Time `bun:"time,notnull"`
	// Payload is the body sent, fixed at the first try so every try and
	// every subscription gets the same bytes; "" until then.
	Payload string `bun:"payload,notnull"`
	// DedupeKey, when set, makes the event happen once: a second append
	// with the key writes nothing.
	DedupeKey *string `bun:"dedupe_key"`
}

// Subscription is a row of webhook_subscriptions: a receiver of events.
type Subscription struct {
	bun.BaseModel `bun:"table:webhook_subscriptions"`

	ID   string `bun:"id,pk"`
	Name string `bun:"name,notnull"`
	URL  string `bun:"url,notnull"`
	// EventTypes is a comma list with a comma at each end; see Types.
	EventTypes string `bun:"event_types,notnull"`
	// WorkflowName, when set, narrows job events to jobs of that workflow.
	WorkflowName string `bun:"workflow_name,notnull"`
	// Secret signs the deliveries (whsec_…). It is needed to sign, so it
	// is stored as given; reads of the API never return it.
	Secret              string    `bun:"secret,notnull"`
	Enabled             bool      `bun:"enabled,notnull"`
	DisabledReason      string    `bun:"disabled_reason,notnull"`
	ConsecutiveFailures int32     `bun:"consecutive_failures,notnull"`
	CreatedBy           string    `bun:"created_by,notnull"`
	CreatedAt           time.Time `bun:"created_at,notnull"`
	UpdatedAt           time.Time `bun:"updated_at,notnull"`
}

// JoinEventTypes stores types as Subscription.EventTypes holds them.
func JoinEventTypes(types []string) string {
	return "," + strings.Join(types, ",") + ","
}

// Types returns the event types the subscription asks for.
func (s *Subscription) Types() []string {
	return strings.FieldsFunc(s.EventTypes, func(r rune) bool { return r == ',' })
}

// Wants reports whether the subscription gets e; subscriptionWants says the
// same in SQL.
func (s *Subscription) Wants(e *Event) bool {
	return s.Enabled && slices.Contains(s.Types(), e.Type) &&
		(s.WorkflowName == "" || e.ResourceKind != ResourceJob || s.WorkflowName == e.WorkflowName)
}

// subscriptionWants is Subscription.Wants in SQL, for subscription s and an
// event whose type, resource kind and workflow are the expressions given.
func subscriptionWants(typ, kind, workflow string) string {
	return "s.enabled AND s.event_types LIKE '%,' || " + typ + " || ',%' AND (s.workflow_name = '' OR " +
		kind + " <> 'job' OR s.workflow_name = " + workflow + ")"
}

// DeliveryState is where a delivery stands.
type DeliveryState string

// Delivery states.
const (
	DeliveryPending   DeliveryState = "pending"
	DeliveryDelivered DeliveryState = "delivered"
	// DeliveryFailed: retries ran out (the event grew too old) or the
	// subscription was deleted.
	DeliveryFailed DeliveryState = "failed"
)

// Delivery is a row of webhook_deliveries: one event for one subscription.
type Delivery struct {
	bun.BaseModel `bun:"table:webhook_deliveries"`

	ID             int64         `bun:"id,pk,autoincrement"`
	SubscriptionID string        `bun:"subscription_id,notnull"`
	EventSeq       int64         `bun:"event_seq,notnull"`
	ResourceID     string        `bun:"resource_id,notnull"`
	State          DeliveryState `bun:"state,notnull"`
	Attempts       int32         `bun:"attempts,notnull"`
	NextAttemptAt  time.Time     `bun:"next_attempt_at,notnull"`
	// LeaseOwner and LeaseUntil keep other workers off a delivery in
	// flight; a worker that dies lets its lease run out.
	LeaseOwner string     `bun:"lease_owner,notnull"`
	LeaseUntil *time.Time `bun:"lease_until"`
	CreatedAt  time.Time  `bun:"created_at,notnull"`
	FinishedAt *time.Time `bun:"finished_at"`
}

// DeliveryAttempt is a row of webhook_attempts: one try of a delivery.
type DeliveryAttempt struct {
	bun.BaseModel `bun:"table:webhook_attempts"`

	ID             int64     `bun:"id,pk,autoincrement"`
	DeliveryID     int64     `bun:"delivery_id,notnull"`
	SubscriptionID string    `bun:"subscription_id,notnull"`
	EventSeq       int64     `bun:"event_seq,notnull"`
	Time           time.Time `bun:"time,notnull"`
	StatusCode     int32     `bun:"status_code,notnull"` // 0 when no answer came
	LatencyMillis  int64     `bun:"latency_ms,notnull"`
	Error          string    `bun:"error,notnull"`
	Outcome        string    `bun:"outcome,notnull"` // "delivered", "retry", "failed"

	// EventID and EventType come with ListDeliveryAttempts.
	EventID   string `bun:"event_id,scanonly"`
	EventType string `bun:"event_type,scanonly"`
}

// AppendEvents writes events in tx, the transaction of the change they
// report, with a delivery for each enabled subscription that wants it.
// An event no subscription wants is not written: with no subscription the
// cost is one read of the subscriptions, which is in tx and so never stale.
// A subscription created after tx read them did not exist when the change
// happened and does not get its event. An event whose DedupeKey was written
// before is skipped. Schedules call it for schedule.missed.
func AppendEvents(ctx context.Context, tx bun.IDB, events ...Event) error {
	if len(events) == 0 {
		return nil
	}
	var subs []Subscription
	if err := tx.NewSelect().Model(&subs).Where("enabled").Scan(ctx); err != nil {
		return fmt.Errorf("append events: read subscriptions: %w", err)
	}
	if len(subs) == 0 {
		return nil
	}
	for i := range events {
		e := &events[i]
		var wanted []string
		for k := range subs {
			if subs[k].Wants(e) {
				wanted = append(wanted, subs[k].ID)
			}
		}
		if len(wanted) == 0 {
			continue
		}
		if err := insertEvent(ctx, tx, e, wanted); err != nil {
			return err
		}
	}
	return nil
}

// insertEvent writes e and its deliveries to the subscriptions with ids.
func insertEvent(ctx context.Context, tx bun.IDB, e *Event, subscriptions []string) error {
	if e.ID == "" {
		e.ID = NewID()
	}
	e.Time = normalize(e.Time)
	q := tx.NewInsert().Model(e).Returning("seq")
	if e.DedupeKey != nil {
		q = q.On("CONFLICT (dedupe_key) WHERE dedupe_key IS NOT NULL DO NOTHING")
	}
	res, err := q.Exec(ctx)
	if err != nil {
		return fmt.Errorf("append event %s: %w", e.Type, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return nil
	}
	deliveries := make([]Delivery, len(subscriptions))
	for i, id := range subscriptions {
		deliveries[i] = Delivery{SubscriptionID: id, EventSeq: e.Seq, ResourceID: e.ResourceID, State: DeliveryPending,
			NextAttemptAt: e.Time, CreatedAt: e.Time}
	}
	if _, err := tx.NewInsert().Model(&deliveries).Exec(ctx); err != nil {
		return fmt.Errorf("append event %s: deliveries: %w", e.Type, err)
	}
	return nil
}

// jobEvent is the event of a job a transition finished, or nil when the
// job did not finish.
func jobEvent(job *Job) (Event, bool) {
	if !job.Status.Finished() {
		return Event{}, false
	}
	return Event{Type: "job." + string(job.Status), ResourceKind: ResourceJob, ResourceID: job.ID,
		WorkflowName: job.WorkflowName, Time: job.UpdatedAt}, true
}

// appendJobEvents appends the events of the jobs that finished, in tx.
func appendJobEvents(ctx context.Context, tx bun.IDB, jobs ...*Job) error {
	var events []Event
	for _, job := range jobs {
		if e, ok := jobEvent(job); ok {
			events = append(events, e)
		}
	}
	return AppendEvents(ctx, tx, events...)
}

// jobEventsCTE extends transitionQuery: the events of the jobs it
// finished, and their deliveries, in the same statement and commit. Both
// read the subscriptions in the statement's snapshot; with none, nothing
// is written.
var jobEventsCTE = `,
ev AS (INSERT INTO events (id, type, resource_kind, resource_id, workflow_name, time, payload)
	SELECT gen_random_uuid()::text, 'job.' || u.status, 'job', u.id, u.workflow_name, u.updated_at, '' FROM upd AS u
	WHERE u.status IN ('succeeded', 'failed', 'cancelled')
		AND EXISTS (SELECT 1 FROM webhook_subscriptions AS s WHERE ` + subscriptionWants("('job.' || u.status)", "'job'", "u.workflow_name") + `)
	RETURNING seq, type, resource_kind, resource_id, workflow_name, time),
dl AS (INSERT INTO webhook_deliveries (subscription_id, event_seq, resource_id, state, attempts, next_attempt_at, lease_owner, created_at)
	SELECT s.id, e.seq, e.resource_id, 'pending', 0, e.time, '', e.time FROM ev AS e
	JOIN webhook_subscriptions AS s ON ` + subscriptionWants("e.type", "e.resource_kind", "e.workflow_name") + `)`

// EventByID returns the event with the id, or ErrNotFound.
func (r *Registry) EventByID(ctx context.Context, id string) (*Event, error) {
	e := new(Event)
	err := r.db.NewSelect().Model(e).Where("id = ?", id).Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("get event %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get event %s: %w", id, err)
	}
	return e, nil
}
