-- Outbound event subscriptions. event_types is a comma list with a comma
-- at each end (",job.failed,robot.offline,"), so one LIKE matches a type
-- on both dialects without a join table.
CREATE TABLE webhook_subscriptions (
    id                   text PRIMARY KEY,
    name                 text NOT NULL UNIQUE,
    url                  text NOT NULL,
    event_types          text NOT NULL,
    workflow_name        text NOT NULL,
    secret               text NOT NULL,
    enabled              boolean NOT NULL,
    disabled_reason      text NOT NULL,
    consecutive_failures integer NOT NULL,
    created_by           text NOT NULL,
    created_at           timestamp NOT NULL,
    updated_at           timestamp NOT NULL
);
--bun:split
-- The outbox: written in the transaction of the change it reports. seq
-- orders a resource's events; id is what receivers see as webhook-id.
CREATE TABLE events (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    id            text NOT NULL UNIQUE,
    type          text NOT NULL,
    resource_kind text NOT NULL,
    resource_id   text NOT NULL,
    workflow_name text NOT NULL,
    time          timestamp NOT NULL,
    payload       text NOT NULL,
    dedupe_key    text
);
--bun:split
-- An event that must happen once per resource (a job waiting too long)
-- carries a key; a second replica's insert of it does nothing.
CREATE UNIQUE INDEX events_dedupe_key ON events (dedupe_key) WHERE dedupe_key IS NOT NULL;
--bun:split
CREATE INDEX events_time ON events (time);
--bun:split
-- One event for one subscription. Only the oldest pending delivery of a
-- resource for a subscription is due, so a resource's events arrive in
-- order; lease_until keeps a second worker off a delivery in flight. No
-- foreign key to the subscription: a subscription deleted while a job's
-- transition commits must not fail the transition; deliveries of a deleted
-- subscription are deleted with it, and claims join the subscription.
CREATE TABLE webhook_deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    subscription_id text NOT NULL,
    event_seq       bigint NOT NULL REFERENCES events (seq) ON DELETE CASCADE,
    resource_id     text NOT NULL,
    state           text NOT NULL,
    attempts        integer NOT NULL,
    next_attempt_at timestamp NOT NULL,
    lease_owner     text NOT NULL,
    lease_until     timestamp,
    created_at      timestamp NOT NULL,
    finished_at     timestamp,
    UNIQUE (subscription_id, event_seq)
);
--bun:split
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
--bun:split
CREATE INDEX webhook_deliveries_resource ON webhook_deliveries (subscription_id, resource_id, event_seq) WHERE state = 'pending';
--bun:split
CREATE INDEX webhook_deliveries_event ON webhook_deliveries (event_seq);
--bun:split
-- Every try of a delivery, for the history an operator reads.
CREATE TABLE webhook_attempts (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id     bigint NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    subscription_id text NOT NULL,
    event_seq       bigint NOT NULL,
    time            timestamp NOT NULL,
    status_code     integer NOT NULL,
    latency_ms      bigint NOT NULL,
    error           text NOT NULL,
    outcome         text NOT NULL
);
--bun:split
CREATE INDEX webhook_attempts_subscription ON webhook_attempts (subscription_id, id);
