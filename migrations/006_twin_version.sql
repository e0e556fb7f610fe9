-- Every change to a twin bumps its version; a change decided from a twin read at version N is
-- written only while the twin is still at N (the rules live above the store).
ALTER TABLE twins ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
