-- BFF sessions and per-session DPoP keys (applied by PostgresDatabase::migrate, once).

-- A BFF's sessions: named by the SHA-256 of the session id (the cookie is never stored), found
-- by hashes of `sub` and `sid`; `value` sealed unless plaintext was chosen. A row stays until
-- the cleanup claims it after `expires_at` (to revoke its refresh token).
CREATE TABLE IF NOT EXISTS tokenkeeper_bff_sessions (
    namespace text NOT NULL,
    id_hash text NOT NULL,
    sub_hash text NOT NULL,
    sid_hash text NOT NULL,
    expires_at bigint NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY (namespace, id_hash)
);
CREATE INDEX IF NOT EXISTS tokenkeeper_bff_sessions_sub ON tokenkeeper_bff_sessions (namespace, sub_hash);
CREATE INDEX IF NOT EXISTS tokenkeeper_bff_sessions_sid ON tokenkeeper_bff_sessions (namespace, sid_hash);
CREATE INDEX IF NOT EXISTS tokenkeeper_bff_sessions_expires_at ON tokenkeeper_bff_sessions (namespace, expires_at);

-- Per-session DPoP private keys, always sealed, named by a hash of their thumbprint.
CREATE TABLE IF NOT EXISTS tokenkeeper_dpop_keys (
    key text PRIMARY KEY,
    value bytea NOT NULL,
    expires_at bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS tokenkeeper_dpop_keys_expires_at ON tokenkeeper_dpop_keys (expires_at);
