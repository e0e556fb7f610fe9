-- Twins, their status history, API tokens and browser sessions.

CREATE TABLE twins (
    id                TEXT PRIMARY KEY,
    owner             TEXT NOT NULL,
    name              TEXT NOT NULL,
    provider          TEXT NOT NULL,
    files             TEXT NOT NULL,          -- JSON object: path -> content
    variables         TEXT NOT NULL DEFAULT '{}',
    deployment_status TEXT NOT NULL DEFAULT 'draft'
        CHECK (deployment_status IN ('draft', 'deploying', 'deployed', 'destroying', 'error', 'destroy_failed')),
    is_locked         INTEGER NOT NULL DEFAULT 0 CHECK (is_locked IN (0, 1)),
    locked_by_run     TEXT,                   -- the run holding the lock
    last_deployed_at  TEXT,
    terraform_outputs TEXT,                   -- JSON, sensitive values masked
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    deleted_at        TEXT,
    CHECK ((is_locked = 1) = (locked_by_run IS NOT NULL))
);

CREATE INDEX twins_by_owner ON twins (owner, created_at);
-- A name is unique among an owner's live twins.
CREATE UNIQUE INDEX twins_owner_name ON twins (owner, name) WHERE deleted_at IS NULL;

CREATE TABLE twin_history (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
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
    token_hash  TEXT PRIMARY KEY,             -- sha256 of the token; the token itself is never stored
    owner       TEXT NOT NULL,
    is_admin    INTEGER NOT NULL DEFAULT 0,
    label       TEXT,
    created_at  TEXT NOT NULL
);

CREATE TABLE sessions (
    session_hash TEXT PRIMARY KEY,            -- sha256 of the cookie value
    owner        TEXT NOT NULL,
    is_admin     INTEGER NOT NULL DEFAULT 0,
    created_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL
);
