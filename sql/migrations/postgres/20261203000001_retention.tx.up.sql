-- Retention finds the jobs that finished longest ago without a scan.
CREATE INDEX jobs_finished_at ON jobs (finished_at) WHERE finished_at IS NOT NULL;
