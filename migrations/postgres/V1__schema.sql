-- terrastream's store on PostgreSQL: the same tables and columns as the SQLite store reaches
-- with its migrations 001-008, in PostgreSQL's types. Timestamps are RFC 3339 text, as in
-- SQLite, so both stores order and compare them alike; only heartbeats use the database's
-- clock, so that gateways on machines whose clocks differ agree on who is silent.

CREATE TABLE twins (
    id                TEXT PRIMARY KEY,
    owner             TEXT NOT NULL,
    name              TEXT NOT NULL,
    provider          TEXT NOT NULL,
    files             TEXT NOT NULL,
    variables         TEXT NOT NULL DEFAULT '{}',
    deployment_status TEXT NOT NULL DEFAULT 'draft'
        CHECK (deployment_status IN ('draft', 'deploying', 'deployed', 'destroying', 'error', 'destroy_failed')),
    is_locked         BOOLEAN NOT NULL DEFAULT FALSE,
    locked_by_run     TEXT,
    last_deployed_at  TEXT,
    terraform_outputs TEXT,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    deleted_at        TEXT,
    version           BIGINT NOT NULL DEFAULT 0,
    CHECK (is_locked = (locked_by_run IS NOT NULL))
);

CREATE INDEX twins_by_owner ON twins (owner, created_at);
CREATE UNIQUE INDEX twins_owner_name ON twins (owner, name) WHERE deleted_at IS NULL;

CREATE TABLE twin_history (
    id          BIGSERIAL PRIMARY KEY,
    twin_id     TEXT NOT NULL REFERENCES twins (id),
    action      TEXT NOT NULL,
    from_status TEXT,
    to_status   TEXT,
    actor       TEXT NOT NULL,
    reason      TEXT,
    run_id      TEXT,
    at          TEXT NOT NULL
);

CREATE INDEX twin_history_by_twin ON twin_history (twin_id, id);

CREATE TABLE api_tokens (
    token_hash  TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    is_admin    BOOLEAN NOT NULL DEFAULT FALSE,
    label       TEXT,
    created_at  TEXT NOT NULL
);

CREATE TABLE sessions (
    session_hash TEXT PRIMARY KEY,
    owner        TEXT NOT NULL,
    is_admin     BOOLEAN NOT NULL DEFAULT FALSE,
    created_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL
);

CREATE TABLE runs (
    id              TEXT PRIMARY KEY,
    twin_id         TEXT NOT NULL REFERENCES twins (id),
    kind            TEXT NOT NULL CHECK (kind IN ('deploy', 'destroy', 'plan', 'drift')),
    status          TEXT NOT NULL CHECK (status IN ('pending', 'processing', 'completed', 'failed', 'cancelled')),
    stage           TEXT,
    progress        INTEGER NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    actor           TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    start_time      TEXT,
    end_time        TEXT,
    exit_code       INTEGER,
    error           TEXT,
    message         TEXT,
    outputs         TEXT,
    result          TEXT,
    step_index      INTEGER,
    step_name       TEXT,
    step_dir        TEXT,
    step_started_at TEXT,
    monitor_pid     INTEGER,
    monitor_start   BIGINT,
    spool_offset    BIGINT NOT NULL DEFAULT 0,
    applies_plan    TEXT,
    last_seq        BIGINT NOT NULL DEFAULT 0,
    owner_replica   TEXT,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE INDEX runs_by_twin ON runs (twin_id, created_at);
CREATE INDEX runs_unfinished ON runs (status) WHERE status IN ('pending', 'processing');
CREATE INDEX runs_queue ON runs (created_at, id) WHERE status = 'pending' AND owner_replica IS NULL;

CREATE TABLE replicas (
    id           TEXT PRIMARY KEY,
    address      TEXT NOT NULL,
    started_at   TEXT NOT NULL,
    heartbeat_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE run_events (
    run_id  TEXT NOT NULL REFERENCES runs (id),
    seq     BIGINT NOT NULL,
    event   TEXT NOT NULL,
    data    TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE state_versions (
    twin_id        TEXT NOT NULL REFERENCES twins (id),
    version        BIGINT NOT NULL,
    serial         BIGINT NOT NULL,
    lineage        TEXT NOT NULL,
    md5            TEXT NOT NULL,
    size           BIGINT NOT NULL,
    resource_count BIGINT NOT NULL,
    run_id         TEXT,
    actor          TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    ciphertext     BYTEA NOT NULL,
    PRIMARY KEY (twin_id, version)
);

CREATE TABLE state_locks (
    twin_id    TEXT PRIMARY KEY REFERENCES twins (id),
    lock_id    TEXT NOT NULL,
    info       TEXT NOT NULL,
    run_id     TEXT,
    created_at TEXT NOT NULL
);

CREATE TABLE gateway_meta (
    key   TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);

CREATE TABLE plans (
    run_id       TEXT PRIMARY KEY REFERENCES runs (id),
    twin_id      TEXT NOT NULL REFERENCES twins (id),
    config_hash  TEXT NOT NULL,
    state_serial BIGINT NOT NULL,
    created_at   TEXT NOT NULL,
    applied_by   TEXT,
    ciphertext   BYTEA NOT NULL
);

CREATE INDEX plans_by_twin ON plans (twin_id, created_at);

CREATE TABLE run_grants (
    secret_hash TEXT PRIMARY KEY,
    run_id      TEXT NOT NULL REFERENCES runs (id),
    twin_id     TEXT NOT NULL REFERENCES twins (id),
    owner       TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

CREATE INDEX run_grants_by_run ON run_grants (run_id);
