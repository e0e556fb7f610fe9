-- Plan previews and drift checks are runs too; a run keeps its result (resource changes,
-- drift). Plans are kept (encrypted: they hold planned values) so that the next deploy can
-- apply exactly what was previewed.

-- SQLite cannot change a CHECK constraint: rebuild runs. Foreign keys from run_events are
-- deferred to the end of this migration's transaction, when every run is back.
PRAGMA defer_foreign_keys = ON;

CREATE TABLE runs_before_004 AS SELECT * FROM runs;
DROP TABLE runs;

CREATE TABLE runs (
    id          TEXT PRIMARY KEY,
    twin_id     TEXT NOT NULL REFERENCES twins (id),
    kind        TEXT NOT NULL CHECK (kind IN ('deploy', 'destroy', 'plan', 'drift')),
    status      TEXT NOT NULL CHECK (status IN ('pending', 'processing', 'completed', 'failed', 'cancelled')),
    stage       TEXT,
    progress    INTEGER NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    actor       TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    start_time  TEXT,
    end_time    TEXT,
    exit_code   INTEGER,
    error       TEXT,
    message     TEXT,
    outputs     TEXT,                         -- JSON, sensitive values masked
    process_group INTEGER,
    workdir     TEXT,
    result      TEXT                          -- JSON: a plan's changes, a drift check's findings
);

INSERT INTO runs (id, twin_id, kind, status, stage, progress, actor, created_at, start_time,
                  end_time, exit_code, error, message, outputs, process_group, workdir)
    SELECT id, twin_id, kind, status, stage, progress, actor, created_at, start_time,
           end_time, exit_code, error, message, outputs, process_group, workdir
    FROM runs_before_004;
DROP TABLE runs_before_004;

CREATE INDEX runs_by_twin ON runs (twin_id, created_at);
CREATE INDEX runs_active ON runs (status) WHERE status IN ('pending', 'processing');

CREATE TABLE plans (
    run_id       TEXT PRIMARY KEY REFERENCES runs (id),
    twin_id      TEXT NOT NULL REFERENCES twins (id),
    config_hash  TEXT NOT NULL,               -- of the files and variables planned
    state_serial INTEGER NOT NULL,            -- of the state planned against
    created_at   TEXT NOT NULL,
    applied_by   TEXT,                        -- the deploy run that applied it
    ciphertext   BLOB NOT NULL                -- the plan file, AES-256-GCM
);

CREATE INDEX plans_by_twin ON plans (twin_id, created_at);
