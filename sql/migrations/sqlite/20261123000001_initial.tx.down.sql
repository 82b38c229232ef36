DROP TABLE robots;
--bun:split
DROP TABLE audit_events;
--bun:split
DROP TABLE api_tokens;
--bun:split
DROP TABLE workflows;
--bun:split
DROP TABLE job_events;
--bun:split
DROP TABLE jobs;
