-- terraform state: every write a version (encrypted), one lock per twin, and gateway metadata.

CREATE TABLE state_versions (
    twin_id        TEXT NOT NULL REFERENCES twins (id),
    version        INTEGER NOT NULL,          -- 1, 2, 3 ... per twin
    serial         INTEGER NOT NULL,          -- terraform's serial
    lineage        TEXT NOT NULL,
    md5            TEXT NOT NULL,             -- of the plain state
    size           INTEGER NOT NULL,
    resource_count INTEGER NOT NULL,          -- managed resource instances
    run_id         TEXT,
    actor          TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    ciphertext     BLOB NOT NULL,             -- AES-256-GCM: nonce || sealed state
    PRIMARY KEY (twin_id, version)
) WITHOUT ROWID;

CREATE TABLE state_locks (
    twin_id    TEXT PRIMARY KEY REFERENCES twins (id),
    lock_id    TEXT NOT NULL,
    info       TEXT NOT NULL,                 -- terraform's LockInfo JSON, as sent
    run_id     TEXT,                          -- the run whose terraform took it, if any
    created_at TEXT NOT NULL
);

CREATE TABLE gateway_meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
