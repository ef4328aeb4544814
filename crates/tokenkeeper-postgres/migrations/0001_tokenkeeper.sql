-- tokenkeeper's tables (applied by PostgresDatabase::migrate, in one transaction, once).

-- Milliseconds since the epoch by the database's clock: every instance compares expiries with
-- the same clock.
CREATE OR REPLACE FUNCTION tokenkeeper_now_ms() RETURNS bigint
    LANGUAGE sql VOLATILE
    AS $$ SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint $$;

-- Users' session tokens: one row per session, named by a hash of its key; `value` sealed
-- (AES-256-GCM, bound to key and version) unless plaintext was chosen.
CREATE TABLE IF NOT EXISTS tokenkeeper_user_tokens (
    key text PRIMARY KEY,
    version bigint NOT NULL,
    value bytea NOT NULL,
    expires_at bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS tokenkeeper_user_tokens_expires_at
    ON tokenkeeper_user_tokens (expires_at);

-- Every change is announced to the instances' in-process tiers, in the writing transaction.
CREATE OR REPLACE FUNCTION tokenkeeper_user_tokens_notify() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('tokenkeeper_user_tokens', OLD.key || ' 0');
        RETURN OLD;
    END IF;
    PERFORM pg_notify('tokenkeeper_user_tokens', NEW.key || ' ' || NEW.version);
    RETURN NEW;
END
$$;
DROP TRIGGER IF EXISTS tokenkeeper_user_tokens_notify ON tokenkeeper_user_tokens;
CREATE TRIGGER tokenkeeper_user_tokens_notify
    AFTER INSERT OR UPDATE OR DELETE ON tokenkeeper_user_tokens
    FOR EACH ROW EXECUTE FUNCTION tokenkeeper_user_tokens_notify();

-- Leases: one refresh per session (or fill per key) across the instances.
CREATE TABLE IF NOT EXISTS tokenkeeper_leases (
    name text PRIMARY KEY,
    owner text NOT NULL,
    expires_at bigint NOT NULL
);

-- One-use markers (login callbacks, back-channel logout tokens' jti).
CREATE TABLE IF NOT EXISTS tokenkeeper_once (
    key text PRIMARY KEY,
    expires_at bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS tokenkeeper_once_expires_at ON tokenkeeper_once (expires_at);
