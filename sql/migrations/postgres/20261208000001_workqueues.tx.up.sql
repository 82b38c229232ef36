-- casare_uuidv7 makes a time-ordered id (UUIDv7) like the server's NewID,
-- for rows a statement adds on its own (the retries of abandoned items).
CREATE FUNCTION casare_uuidv7() RETURNS text AS $$
    SELECT encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid())
        PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
        FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid::text
$$ LANGUAGE sql VOLATILE;
--bun:split
-- Work queues: items that jobs take one at a time. A queue's trigger, when
-- enabled, starts jobs of a stored workflow while the queue has NEW items.
CREATE TABLE work_queues (
    name                     text PRIMARY KEY,
    description              text NOT NULL,
    max_retries              integer NOT NULL,
    unique_references        boolean NOT NULL,
    sla_ms                   bigint NOT NULL,
    trigger_enabled          boolean NOT NULL,
    trigger_workflow_name    text NOT NULL,
    trigger_workflow_version integer NOT NULL,
    trigger_min_items        integer NOT NULL,
    trigger_items_per_job    integer NOT NULL,
    trigger_max_jobs         integer NOT NULL,
    trigger_priority         smallint NOT NULL,
    trigger_requires         text NOT NULL,
    created_at               timestamptz NOT NULL,
    updated_at               timestamptz NOT NULL,
    updated_by               text NOT NULL
);
--bun:split
-- Items. unique_reference copies the queue's unique_references when the
-- item is added (the flag cannot change while the queue holds items), so a
-- partial index can hold references unique. status is the lower-case name
-- of the API enum; end_status is the status the item ended with
-- (successful, failed, retried or abandoned), which an operator's retry or
-- delete later changes status from but not end_status: with created_at,
-- started_at and ended_at it is the item's history of adding, taking and
-- ending, which is not written again as events. exception is '',
-- 'business' or 'application'. breached
-- is set once the item is past its SLA or deadline, and counted then.
CREATE TABLE work_items (
    id               text PRIMARY KEY,
    queue            text NOT NULL REFERENCES work_queues (name) ON DELETE CASCADE,
    reference        text NOT NULL,
    unique_reference boolean NOT NULL,
    priority         smallint NOT NULL,
    data             text NOT NULL,
    defer_until      timestamptz,
    deadline         timestamptz,
    status           text NOT NULL,
    end_status       text NOT NULL,
    output           text NOT NULL,
    progress         text NOT NULL,
    exception        text NOT NULL,
    reason           text NOT NULL,
    retry            integer NOT NULL,
    retry_of         text NOT NULL,
    job_id           text NOT NULL,
    attempt          integer NOT NULL,
    robot_id         text NOT NULL,
    breached         boolean NOT NULL,
    created_by       text NOT NULL,
    created_at       timestamptz NOT NULL,
    started_at       timestamptz,
    ended_at         timestamptz,
    updated_at       timestamptz NOT NULL
);
--bun:split
-- The order items are taken in, over NEW items only.
CREATE INDEX work_items_take ON work_items (queue, priority DESC, deadline, created_at, id) WHERE status = 'new';
-- Items churn: each is written as it is added, taken and ended, and the
-- take index's head fills with entries of items taken already. With
-- autovacuum's defaults (statistics read again once a tenth of the table
-- changed, dead rows cleaned once a fifth) a busy queue's takes walk those
-- entries and are planned on counts from before its last burst; these
-- settings do both once a fiftieth changed.
ALTER TABLE work_items SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);
--bun:split
-- A retried or abandoned item's copy shares its reference, and a deleted
-- item gives its reference up: only the items that are still the
-- reference's live one hold it.
CREATE UNIQUE INDEX work_items_unique_reference ON work_items (queue, reference)
    WHERE unique_reference AND status IN ('new', 'in_progress', 'successful', 'failed');
--bun:split
-- The oldest NEW item, for the queue's figures.
CREATE INDEX work_items_new_created ON work_items (queue, created_at) WHERE status = 'new';
--bun:split
CREATE INDEX work_items_retry_of ON work_items (retry_of) WHERE retry_of <> '';
--bun:split
CREATE INDEX work_items_reference ON work_items (queue, reference);
--bun:split
CREATE INDEX work_items_queue_created ON work_items (queue, created_at, id);
--bun:split
-- The items a job's attempt holds, read whenever a job's attempt ends:
-- only IN_PROGRESS items are in it, so jobs that hold none pay a lookup in
-- an empty or small index.
CREATE INDEX work_items_held ON work_items (job_id, attempt) WHERE status = 'in_progress';
--bun:split
-- Items not yet counted as past their SLA or deadline, for the sweeper.
CREATE INDEX work_items_open ON work_items (queue, created_at) WHERE status IN ('new', 'in_progress') AND NOT breached;
--bun:split
CREATE INDEX work_items_open_deadline ON work_items (deadline) WHERE status IN ('new', 'in_progress') AND NOT breached AND deadline IS NOT NULL;
--bun:split
-- What an item's row does not tell of its history: progress reports and
-- operators' retries, deferrals and deletions.
CREATE TABLE work_item_events (
    id       bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    item_id  text NOT NULL REFERENCES work_items (id) ON DELETE CASCADE,
    time     timestamptz NOT NULL,
    status   text NOT NULL,
    job_id   text NOT NULL,
    attempt  integer NOT NULL,
    robot_id text NOT NULL,
    message  text NOT NULL
);
--bun:split
CREATE INDEX work_item_events_item ON work_item_events (item_id, id);
--bun:split
-- Counters kept as items move, so a queue's figures never count its items.
-- status is an item status, or 'processed' (items that ended: n, and the
-- sum of their processing times in duration_ms) or 'breached' (items past
-- their SLA or deadline). Each change adds to one of a few shards chosen
-- at random, so concurrent takers do not queue on one row; readers sum the
-- shards.
CREATE TABLE work_queue_counts (
    queue       text NOT NULL REFERENCES work_queues (name) ON DELETE CASCADE,
    status      text NOT NULL,
    shard       integer NOT NULL,
    n           bigint NOT NULL,
    duration_ms bigint NOT NULL,
    PRIMARY KEY (queue, status, shard)
);
--bun:split
-- Items ended per minute (minute = Unix seconds / 60), sharded like
-- work_queue_counts; the sweeper drops minutes older than an hour.
CREATE TABLE work_queue_minutes (
    queue  text NOT NULL REFERENCES work_queues (name) ON DELETE CASCADE,
    minute bigint NOT NULL,
    shard  integer NOT NULL,
    n      bigint NOT NULL,
    PRIMARY KEY (queue, minute, shard)
);
