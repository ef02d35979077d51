-- Token lifecycle. Identities are never deleted (commands reference them):
-- a user is disabled and a node revoked instead, and authentication refuses
-- both. A user's last_seen_at is kept at most once a minute per user.
ALTER TABLE users
    ADD COLUMN disabled_at  timestamptz,
    ADD COLUMN last_seen_at timestamptz;
ALTER TABLE nodes
    ADD COLUMN revoked_at timestamptz;

-- Every replica caches verified tokens. Any change that may end or alter
-- what a token grants (rotated, disabled, revoked, demoted, renamed or the
-- row deleted), whoever makes it (the CLI or SQL by hand), notifies
-- execq_auth with "user:ID" or "node:ID" in the same transaction, and each
-- replica drops that identity from its cache when it commits.
CREATE FUNCTION execq_auth_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('execq_auth', TG_ARGV[0] || ':' || OLD.id::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER users_auth_changed AFTER UPDATE ON users FOR EACH ROW
    WHEN (OLD.token_hash IS DISTINCT FROM NEW.token_hash OR OLD.disabled_at IS DISTINCT FROM NEW.disabled_at
          OR OLD.is_admin IS DISTINCT FROM NEW.is_admin OR OLD.name IS DISTINCT FROM NEW.name)
    EXECUTE FUNCTION execq_auth_changed('user');
CREATE TRIGGER users_auth_deleted AFTER DELETE ON users FOR EACH ROW
    EXECUTE FUNCTION execq_auth_changed('user');

CREATE TRIGGER nodes_auth_changed AFTER UPDATE ON nodes FOR EACH ROW
    WHEN (OLD.token_hash IS DISTINCT FROM NEW.token_hash OR OLD.revoked_at IS DISTINCT FROM NEW.revoked_at
          OR OLD.name IS DISTINCT FROM NEW.name)
    EXECUTE FUNCTION execq_auth_changed('node');
CREATE TRIGGER nodes_auth_deleted AFTER DELETE ON nodes FOR EACH ROW
    EXECUTE FUNCTION execq_auth_changed('node');
