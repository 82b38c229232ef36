ALTER TABLE jobs DROP COLUMN secret_inputs;
--bun:split
DROP TABLE assets;
--bun:split
DROP TABLE vault_keys;
