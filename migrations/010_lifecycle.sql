-- Issue 14: debug runs, and the audit log.

-- A debug run's terraform log level (its TF_LOG); NULL for an ordinary run.
ALTER TABLE runs ADD COLUMN log_level TEXT CHECK (log_level IN ('TRACE', 'DEBUG', 'INFO'));

-- Who changed what through the API or the CLI, in the order it happened. No foreign keys: a
-- purged twin's rows stay.
CREATE TABLE audit_log (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      TEXT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    reason  TEXT
);
