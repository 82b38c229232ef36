-- Calendars are named restrictions that schedules share.
CREATE TABLE calendars (
    name           text PRIMARY KEY,
    description    text NOT NULL,
    excluded_dates text NOT NULL,
    weekdays       text NOT NULL,
    hours          text NOT NULL,
    created_by     text NOT NULL,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL
);
--bun:split
CREATE TABLE schedules (
    id               text PRIMARY KEY,
    name             text NOT NULL UNIQUE,
    description      text NOT NULL,
    workflow_name    text NOT NULL,
    workflow_version integer NOT NULL,
    cron             text NOT NULL,
    time_zone        text NOT NULL,
    inputs           text NOT NULL,
    priority         smallint NOT NULL,
    requires         text NOT NULL,
    max_attempts     integer NOT NULL,
    start_time       timestamptz,
    end_time         timestamptz,
    overlap_policy   text NOT NULL,
    misfire_policy   text NOT NULL,
    misfire_limit    integer NOT NULL,
    paused           boolean NOT NULL,
    next_fire_time   timestamptz,
    last_fire_time   timestamptz,
    last_job_id      text NOT NULL,
    queued_fire_time timestamptz,
    created_by       text NOT NULL,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL
);
--bun:split
-- The scheduler takes the due schedules from this index, never a scan.
CREATE INDEX schedules_due ON schedules (next_fire_time) WHERE NOT paused AND next_fire_time IS NOT NULL;
--bun:split
-- The few schedules holding a fire for their running job (queue_one).
CREATE INDEX schedules_queued ON schedules (queued_fire_time) WHERE queued_fire_time IS NOT NULL;
--bun:split
CREATE INDEX schedules_workflow_name ON schedules (workflow_name, name);
--bun:split
CREATE TABLE schedule_calendars (
    schedule_id   text NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
    calendar_name text NOT NULL REFERENCES calendars (name),
    position      integer NOT NULL,
    PRIMARY KEY (schedule_id, calendar_name)
);
--bun:split
CREATE INDEX schedule_calendars_calendar ON schedule_calendars (calendar_name);
