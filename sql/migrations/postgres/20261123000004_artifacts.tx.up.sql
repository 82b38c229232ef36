-- Files jobs saved (screenshots, reports). One per job and name: a robot
-- that sends an artifact again after a reconnect, or a later attempt that
-- saves the same name, replaces it.
CREATE TABLE job_artifacts (
    job_id        text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    name          text NOT NULL,
    attempt       integer NOT NULL,
    content_type  text NOT NULL,
    size          bigint NOT NULL,
    sha256        text NOT NULL,
    data          bytea NOT NULL,
    created_at    timestamptz NOT NULL,
    PRIMARY KEY (job_id, name)
);
