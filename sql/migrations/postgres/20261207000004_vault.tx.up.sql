-- Data keys, each sealed under a key-encryption key that only the servers'
-- key file (or key service) holds; values are sealed under data keys.
CREATE TABLE vault_keys (
    id         text PRIMARY KEY,
    kek_id     text NOT NULL,
    sealed     text NOT NULL,
    created_at timestamptz NOT NULL
);
--bun:split
-- Assets: named values for workflows. A row with an empty selector is the
-- value every robot gets; the others override it for robots whose labels
-- match. Secret text and credential passwords live only in sealed (under
-- the data key key_id); value holds the others in plain text.
CREATE TABLE assets (
    name       text NOT NULL,
    selector   text NOT NULL,
    type       text NOT NULL,
    value      text NOT NULL,
    username   text NOT NULL,
    sealed     text NOT NULL,
    key_id     text NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    updated_by text NOT NULL,
    PRIMARY KEY (name, selector)
);
--bun:split
-- A job's secret inputs, sealed as one JSON object; inputs keeps the rest.
ALTER TABLE jobs ADD COLUMN secret_inputs text NOT NULL DEFAULT '';
