ALTER TABLE robots DROP COLUMN protocol_problem;
--bun:split
ALTER TABLE robots DROP COLUMN protocol_version;
