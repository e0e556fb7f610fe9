-- A run belongs to the store and to its monitor process, not to a gateway's memory: which
-- step it is on, where that step's monitor keeps its spool and exit status, who the monitor
-- is, how far the spool has been read into run_events, the plan a deploy applies, and the
-- backend credentials its terraform may present (hashed), so a restarted gateway can adopt it.

ALTER TABLE runs DROP COLUMN process_group;
ALTER TABLE runs DROP COLUMN workdir;
ALTER TABLE runs ADD COLUMN step_index INTEGER;
ALTER TABLE runs ADD COLUMN step_name TEXT;
ALTER TABLE runs ADD COLUMN step_dir TEXT;
ALTER TABLE runs ADD COLUMN step_started_at TEXT;
ALTER TABLE runs ADD COLUMN monitor_pid INTEGER;
ALTER TABLE runs ADD COLUMN monitor_start INTEGER;
ALTER TABLE runs ADD COLUMN spool_offset INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN applies_plan TEXT;

CREATE TABLE run_grants (
    secret_hash TEXT PRIMARY KEY,             -- sha256 of the secret terraform presents
    run_id      TEXT NOT NULL REFERENCES runs (id),
    twin_id     TEXT NOT NULL REFERENCES twins (id),
    owner       TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

CREATE INDEX run_grants_by_run ON run_grants (run_id);
