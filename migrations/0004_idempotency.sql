-- Idempotent submit (the Idempotency-Key header). A key binds one command of
-- one user for 24 hours; the unique index is what makes concurrent submits
-- with the same key, on any replica, enqueue once (INSERT … ON CONFLICT DO
-- NOTHING). Once the window has passed, the next submit with that key clears
-- it from the old command in the same transaction, so the key can be used
-- again. idempotency_hash fingerprints the request (container and body) so a
-- key reused for a different request is refused rather than answered with
-- the wrong command.
ALTER TABLE commands ADD COLUMN idempotency_key text, ADD COLUMN idempotency_hash bytea;
CREATE UNIQUE INDEX commands_idempotency_idx ON commands (requested_by, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
ALTER TABLE commands ADD CONSTRAINT commands_idempotency_hash
    CHECK (idempotency_key IS NULL OR idempotency_hash IS NOT NULL);
