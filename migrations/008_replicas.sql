-- Several gateways may share one database (PostgreSQL): each run has an owner, the gateway
-- that runs it (none while it waits in the queue for any gateway's free slot), and a cancel
-- asked for through another gateway waits here for the owner. Gateways show they are alive by
-- a heartbeat; the runs of one that stops showing it are taken over by another.
ALTER TABLE runs ADD COLUMN owner_replica TEXT;
ALTER TABLE runs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;

CREATE INDEX runs_queue ON runs (created_at, id) WHERE status = 'pending' AND owner_replica IS NULL;
CREATE INDEX runs_unfinished ON runs (status) WHERE status IN ('pending', 'processing');

CREATE TABLE replicas (
    id           TEXT PRIMARY KEY,
    address      TEXT NOT NULL,
    started_at   TEXT NOT NULL,
    heartbeat_at TEXT NOT NULL
);
