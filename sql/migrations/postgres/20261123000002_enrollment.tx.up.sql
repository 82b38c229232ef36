CREATE TABLE enrollment_tokens (
    id         text PRIMARY KEY,
    hash       text NOT NULL UNIQUE,
    name       text NOT NULL,
    labels     text NOT NULL,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,
    robot_id   text NOT NULL
);
--bun:split
CREATE TABLE revoked_certificates (
    serial     text PRIMARY KEY,
    robot_id   text NOT NULL,
    revoked_at timestamptz NOT NULL
);
