-- Runs (deploy/destroy jobs) and every event they emitted, in order.

CREATE TABLE runs (
    id          TEXT PRIMARY KEY,
    twin_id     TEXT NOT NULL REFERENCES twins (id),
    kind        TEXT NOT NULL CHECK (kind IN ('deploy', 'destroy')),
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
    process_group INTEGER,                    -- terraform's process group while it runs
    workdir     TEXT
);

CREATE INDEX runs_by_twin ON runs (twin_id, created_at);
CREATE INDEX runs_active ON runs (status) WHERE status IN ('pending', 'processing');

CREATE TABLE run_events (
    run_id  TEXT NOT NULL REFERENCES runs (id),
    seq     INTEGER NOT NULL,
    event   TEXT NOT NULL,
    data    TEXT NOT NULL,                    -- one-line JSON
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
