-- Issue 13, as SQLite's migration 009: owners' cloud credentials, sensitive variables, the
-- run's sealed secret environment, webhooks delivered from an outbox, and the leases of
-- exclusive background tasks. Sealed columns hold AES-256-GCM (nonce || ciphertext) made with
-- the state key; nothing secret is stored in clear.

CREATE TABLE credentials (
    id               TEXT PRIMARY KEY,        -- cred_<32 hex>
    owner            TEXT NOT NULL,
    name             TEXT NOT NULL,
    provider         TEXT NOT NULL,
    env_keys         TEXT NOT NULL,           -- JSON array of the variable names
    sealed_env       BYTEA NOT NULL,          -- the JSON object name -> value, sealed
    expires_at       TEXT,
    delete_after_run BOOLEAN NOT NULL DEFAULT FALSE,
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
ALTER TABLE twins ADD COLUMN secret_variables BYTEA;   -- JSON object name -> value, sealed

-- What a run needs on whichever gateway adopts or settles it that only the vault can open: its
-- secret environment as it was at its start. Cleared (NULL) when the run ends.
ALTER TABLE runs ADD COLUMN secrets BYTEA;

-- The credentials a run was started with (no foreign key: a one-time credential is removed
-- when the run ends, this record stays).
CREATE TABLE run_credentials (
    run_id           TEXT NOT NULL REFERENCES runs (id),
    credential_id    TEXT NOT NULL,
    delete_after_run BOOLEAN NOT NULL,
    PRIMARY KEY (run_id, credential_id)
);

CREATE TABLE webhooks (
    id            TEXT PRIMARY KEY,           -- wh_<32 hex>
    owner         TEXT NOT NULL,
    is_admin      BOOLEAN NOT NULL,
    url           TEXT NOT NULL,
    events        TEXT NOT NULL,              -- JSON array of event types; [] = every event
    description   TEXT,
    sealed_secret BYTEA NOT NULL,
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
    fanned_out  BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE INDEX webhook_messages_waiting ON webhook_messages (created_at) WHERE NOT fanned_out;

-- One message to one webhook. Workers on any gateway claim due ones FOR UPDATE SKIP LOCKED.
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
    duration_ms  BIGINT NOT NULL,
    PRIMARY KEY (delivery_id, number)
);

-- Exclusive background tasks (the drift scheduler): who leads each and until when, by the
-- database's clock (gateways' clocks may differ). A leader renews its lease by a
-- compare-and-set; another takes over once it has ended.
CREATE TABLE leaders (
    task        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    lease_until TIMESTAMPTZ NOT NULL
);
