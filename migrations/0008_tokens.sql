-- Token lifecycle. Identities are never deleted (commands reference them):
-- a user is disabled and a node revoked instead, and authentication refuses
-- both. A user's last_seen_at is kept at most once a minute per user.
ALTER TABLE users
    ADD COLUMN disabled_at  timestamptz,
    ADD COLUMN last_seen_at timestamptz;
ALTER TABLE nodes
    ADD COLUMN revoked_at timestamptz;
