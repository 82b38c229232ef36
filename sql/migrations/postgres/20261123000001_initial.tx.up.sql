CREATE TABLE jobs (
    id               text PRIMARY KEY,
    workflow_name    text NOT NULL,
    workflow_version integer NOT NULL,
    workflow         text NOT NULL,
    status           text NOT NULL,
    status_message   text NOT NULL,
    priority         smallint NOT NULL,
    attempt          integer NOT NULL,
    max_attempts     integer NOT NULL,
    robot_id         text NOT NULL,
    inputs           text NOT NULL,
    requires         text NOT NULL,
    result           text NOT NULL,
    timeout_ms       bigint NOT NULL,
    idempotency_key  text,
    created_by       text NOT NULL,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    started_at       timestamptz,
    finished_at      timestamptz
);
--bun:split
CREATE INDEX jobs_status_id ON jobs (status, id);
--bun:split
CREATE INDEX jobs_workflow_id ON jobs (workflow_name, id);
--bun:split
CREATE INDEX jobs_robot_id ON jobs (robot_id, id);
--bun:split
CREATE UNIQUE INDEX jobs_idempotency_key ON jobs (idempotency_key) WHERE idempotency_key IS NOT NULL;
--bun:split
CREATE TABLE job_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id      text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    time        timestamptz NOT NULL,
    from_status text NOT NULL,
    to_status   text NOT NULL,
    attempt     integer NOT NULL,
    robot_id    text NOT NULL,
    reason      text NOT NULL,
    actor       text NOT NULL
);
--bun:split
CREATE INDEX job_events_job_id ON job_events (job_id, id);
--bun:split
CREATE TABLE workflows (
    name        text NOT NULL,
    version     integer NOT NULL,
    digest      text NOT NULL,
    definition  text NOT NULL,
    description text NOT NULL,
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (name, version)
);
--bun:split
CREATE TABLE api_tokens (
    id           text PRIMARY KEY,
    name         text NOT NULL,
    role         text NOT NULL,
    hash         text NOT NULL UNIQUE,
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz
);
--bun:split
CREATE UNIQUE INDEX api_tokens_active_name ON api_tokens (name) WHERE revoked_at IS NULL;
--bun:split
CREATE TABLE audit_events (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    time           timestamptz NOT NULL,
    actor          text NOT NULL,
    actor_token_id text NOT NULL,
    action         text NOT NULL,
    target         text NOT NULL,
    outcome        text NOT NULL,
    details        text NOT NULL,
    peer           text NOT NULL
);
--bun:split
CREATE INDEX audit_events_actor ON audit_events (actor, id);
--bun:split
CREATE INDEX audit_events_target ON audit_events (target, id);
--bun:split
CREATE TABLE robots (
    id              text PRIMARY KEY,
    name            text NOT NULL UNIQUE,
    labels          text NOT NULL,
    capabilities    text NOT NULL,
    version         text NOT NULL,
    os              text NOT NULL,
    hostname        text NOT NULL,
    status          text NOT NULL,
    max_jobs        integer NOT NULL,
    connected_since timestamptz,
    last_seen       timestamptz,
    cert_serial     text NOT NULL,
    cert_expires_at timestamptz,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
