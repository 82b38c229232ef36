-- Inbound webhook triggers. secret is the Standard Webhooks key itself
-- (verifying an HMAC needs it) or, for bearer triggers, the hex SHA-256 of
-- the token; no read API returns it.
CREATE TABLE triggers (
    id                         text PRIMARY KEY,
    name                       text NOT NULL UNIQUE,
    workflow_name              text NOT NULL,
    workflow_version           integer NOT NULL,
    inputs                     text NOT NULL,
    priority                   smallint NOT NULL,
    requires                   text NOT NULL,
    max_attempts               integer NOT NULL,
    auth                       text NOT NULL,
    rate_per_second            real NOT NULL,
    burst                      integer NOT NULL,
    secret                     text NOT NULL,
    previous_secret            text NOT NULL,
    previous_secret_expires_at timestamp,
    created_by                 text NOT NULL,
    created_at                 timestamp NOT NULL,
    updated_at                 timestamp NOT NULL
);
--bun:split
CREATE INDEX triggers_workflow ON triggers (workflow_name, name);
