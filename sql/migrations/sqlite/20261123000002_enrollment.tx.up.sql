CREATE TABLE enrollment_tokens (
    id         text PRIMARY KEY,
    hash       text NOT NULL UNIQUE,
    name       text NOT NULL,
    labels     text NOT NULL,
    created_by text NOT NULL,
    created_at timestamp NOT NULL,
    expires_at timestamp NOT NULL,
    used_at    timestamp,
    robot_id   text NOT NULL
);
--bun:split
CREATE TABLE revoked_certificates (
    serial     text PRIMARY KEY,
    robot_id   text NOT NULL,
    revoked_at timestamp NOT NULL
);
