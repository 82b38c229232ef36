-- The robot protocol version each robot spoke when it last connected, and
-- why the control plane refused it when it could not serve that version.
ALTER TABLE robots ADD COLUMN protocol_version integer NOT NULL DEFAULT 0;
--bun:split
ALTER TABLE robots ADD COLUMN protocol_problem text NOT NULL DEFAULT '';
