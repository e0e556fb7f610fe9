-- A run's last event number lives on its row: whoever appends the run's next events (the
-- replica that runs it, one that queues it or settles it) takes the numbers after it in the
-- same transaction, so the sequence stays gap-free and nothing follows a run's end.
ALTER TABLE runs ADD COLUMN last_seq INTEGER NOT NULL DEFAULT 0;
UPDATE runs SET last_seq = (SELECT COALESCE(MAX(seq), 0) FROM run_events WHERE run_id = runs.id);
