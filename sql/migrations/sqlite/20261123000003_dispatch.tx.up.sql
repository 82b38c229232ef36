ALTER TABLE jobs ADD COLUMN progress integer NOT NULL DEFAULT 0;
--bun:split
ALTER TABLE jobs ADD COLUMN current_step text NOT NULL DEFAULT '';
--bun:split
-- Finding the jobs a robot holds, to reconcile with what it reports.
CREATE INDEX jobs_robot_active ON jobs (robot_id) WHERE status IN ('assigned', 'running');
--bun:split
CREATE TABLE job_logs (
    id       integer PRIMARY KEY AUTOINCREMENT,
    job_id   text NOT NULL,
    attempt  integer NOT NULL,
    line     bigint NOT NULL,
    time     timestamp NOT NULL,
    level    text NOT NULL,
    step_id  text NOT NULL,
    message  text NOT NULL
);
--bun:split
-- A robot resends lines after a reconnect; the duplicates are dropped.
CREATE UNIQUE INDEX job_logs_line ON job_logs (job_id, attempt, line);
--bun:split
CREATE INDEX job_logs_job_id ON job_logs (job_id, id);
