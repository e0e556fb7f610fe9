-- Issue 13: owners' cloud credentials, sensitive variables, the run's sealed secret environment,
-- and webhooks delivered from an outbox. Sealed columns hold AES-256-GCM (nonce || ciphertext)
-- made with the state key; nothing secret is stored in clear.

CREATE TABLE credentials (
    id               TEXT PRIMARY KEY,        -- cred_<32 hex>
    owner            TEXT NOT NULL,
    name             TEXT NOT NULL,
    provider         TEXT NOT NULL,
    env_keys         TEXT NOT NULL,           -- JSON array of the variable names
    sealed_env       BLOB NOT NULL,           -- the JSON object name -> value, sealed
    expires_at       TEXT,
    delete_after_run INTEGER NOT NULL DEFAULT 0 CHECK (delete_after_run IN (0, 1)),
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    last_used_at     TEXT
);

CREATE INDEX credentials_by_owner ON credentials (owner, created_at);

-- Which credentials a twin's runs get, in order.
CREATE TABLE twin_credentials (
    twin_id       TEXT NOT NULL REFERENCES twins (id),
    credential_id TEXT NOT NULL REFERENCES credentials (id),
    position      INTEGER NOT NULL,
    PRIMARY KEY (twin_id, credential_id)
);

CREATE INDEX twin_credentials_by_credential ON twin_credentials (credential_id);

ALTER TABLE twins ADD COLUMN secret_variable_names TEXT NOT NULL DEFAULT '[]';
ALTER TABLE twins ADD COLUMN secret_variables BLOB;   -- JSON object name -> value, sealed

-- What a run needs after a restart that only the vault can open again: its secret environment
-- as it was at its start. Cleared (NULL) when the run ends.
ALTER TABLE runs ADD COLUMN secrets BLOB;

-- The credentials a run was started with (no foreign key: a one-time credential is removed
-- when the run ends, this record stays).
CREATE TABLE run_credentials (
    run_id           TEXT NOT NULL REFERENCES runs (id),
    credential_id    TEXT NOT NULL,
    delete_after_run INTEGER NOT NULL CHECK (delete_after_run IN (0, 1)),
    PRIMARY KEY (run_id, credential_id)
);

CREATE TABLE webhooks (
    id            TEXT PRIMARY KEY,           -- wh_<32 hex>
    owner         TEXT NOT NULL,
    is_admin      INTEGER NOT NULL CHECK (is_admin IN (0, 1)),
    url           TEXT NOT NULL,
    events        TEXT NOT NULL,              -- JSON array of event types; [] = every event
    description   TEXT,
    sealed_secret BLOB NOT NULL,
    created_at    TEXT NOT NULL
);

CREATE INDEX webhooks_by_owner ON webhooks (owner, created_at);

-- The outbox: one row per event, written in the transaction of the change it reports. A
-- worker turns each into deliveries (one per webhook that gets it) and marks it fanned out.
CREATE TABLE webhook_messages (
    id          TEXT PRIMARY KEY,             -- msg_<32 hex>, sent as webhook-id
    event_type  TEXT NOT NULL,
    owner       TEXT NOT NULL,                -- the twin's owner
    twin_id     TEXT,
    body        TEXT NOT NULL,                -- exactly what every attempt sends
    created_at  TEXT NOT NULL,
    fanned_out  INTEGER NOT NULL DEFAULT 0 CHECK (fanned_out IN (0, 1))
);

CREATE INDEX webhook_messages_waiting ON webhook_messages (created_at) WHERE fanned_out = 0;

-- One message to one webhook. A worker claims a due one (pending, or sending under a lease
-- that ended) by a conditional UPDATE; PostgreSQL can take them FOR UPDATE SKIP LOCKED.
CREATE TABLE webhook_deliveries (
    id              TEXT PRIMARY KEY,         -- dlv_<32 hex>
    message_id      TEXT NOT NULL REFERENCES webhook_messages (id),
    webhook_id      TEXT NOT NULL REFERENCES webhooks (id),
    status          TEXT NOT NULL CHECK (status IN ('pending', 'sending', 'succeeded', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT,                     -- while pending
    claimed_by      TEXT,                     -- while sending: the worker
    claimed_until   TEXT,                     -- ... and when its lease ends
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    UNIQUE (message_id, webhook_id)
);

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries (webhook_id, created_at);

CREATE TABLE webhook_attempts (
    delivery_id  TEXT NOT NULL REFERENCES webhook_deliveries (id),
    number       INTEGER NOT NULL,            -- 1, 2, 3 ... per delivery
    attempted_at TEXT NOT NULL,
    status_code  INTEGER,                     -- the answer's, when there was one
    error        TEXT,                        -- why there was none (timeout, refused, ...)
    duration_ms  INTEGER NOT NULL,
    PRIMARY KEY (delivery_id, number)
);

-- Exclusive background tasks (the drift scheduler): who leads each, until when (a julian day
-- number, by the database's clock). A leader renews its lease; another takes over when it ends.
CREATE TABLE leaders (
    task        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    lease_until REAL NOT NULL
);
