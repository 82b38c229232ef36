DROP TABLE job_logs;
--bun:split
DROP INDEX jobs_robot_active;
--bun:split
ALTER TABLE jobs DROP COLUMN current_step;
--bun:split
ALTER TABLE jobs DROP COLUMN progress;
