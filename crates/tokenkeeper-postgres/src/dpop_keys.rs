//! Per-session DPoP keys in PostgreSQL, sealed, shared by a fleet (PK-07).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use futures_util::future::BoxFuture;
use sha2::Digest as _;
use tokenkeeper::dpop::{DpopKey, DpopKeyStore};
use tokenkeeper::CacheError;

use crate::database::PostgresDatabase;

/// Per-session DPoP keys in `tokenkeeper_dpop_keys`, so that every instance of a fleet presents
/// a session's tokens with the session's key. Always sealed (bound to their row): a store
/// without encryption is refused. Rows expire after
/// [`PostgresDpopKeyStore::with_session_ttl`] (default 30 days) unless logout removes them.
#[derive(Clone)]
pub struct PostgresDpopKeyStore {
    db: PostgresDatabase,
    session_ttl: Duration,
}

impl fmt::Debug for PostgresDpopKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresDpopKeyStore")
            .field("db", &self.db)
            .field("session_ttl", &self.session_ttl)
            .finish()
    }
}

impl PostgresDpopKeyStore {
    /// A store on `db`. Fails when `db` has no [`crate::Encryption`].
    pub fn new(db: &PostgresDatabase) -> Result<Self, CacheError> {
        if db.encryption().is_none() {
            return Err(CacheError::new(
                "a DPoP key store needs encryption (PostgresOptions::encryption): private keys are never stored in plaintext",
            ));
        }
        Ok(Self {
            db: db.clone(),
            session_ttl: Duration::from_secs(30 * 24 * 3600),
        })
    }

    /// How long a session's key is kept (default 30 days; logout removes it sooner).
    pub fn with_session_ttl(mut self, ttl: Duration) -> Self {
        self.session_ttl = ttl;
        self
    }

    fn key(jkt: &str) -> String {
        format!(
            "dpop:{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(sha2::Sha256::digest(jkt.as_bytes()))
        )
    }
}

impl DpopKeyStore for PostgresDpopKeyStore {
    fn get<'a>(&'a self, jkt: &'a str) -> BoxFuture<'a, Result<Option<Arc<DpopKey>>, CacheError>> {
        Box::pin(async move {
            let key = Self::key(jkt);
            let k = key.clone();
            let sealed: Option<Vec<u8>> = self
                .db
                .call(|c| async move {
                    let row = c
                        .client()
                        .query_opt(
                            "SELECT value FROM tokenkeeper_dpop_keys WHERE key = $1 AND expires_at > tokenkeeper_now_ms()",
                            &[&k],
                        )
                        .await?;
                    Ok(row.map(|r| r.get(0)))
                })
                .await?;
            let Some(sealed) = sealed else {
                return Ok(None);
            };
            let Some(encryption) = self.db.encryption() else {
                return Ok(None);
            };
            let found = DpopKey::open_stored(&sealed, key.as_bytes(), jkt, encryption);
            if found.is_none() {
                tracing::warn!("an unreadable DPoP key entry was found and is ignored");
            }
            Ok(found)
        })
    }

    fn put(
        &self,
        key: Arc<DpopKey>,
        ttl: Option<Duration>,
    ) -> BoxFuture<'_, Result<(), CacheError>> {
        Box::pin(async move {
            let name = Self::key(key.thumbprint());
            let encryption = self
                .db
                .encryption()
                .ok_or_else(|| CacheError::new("no encryption"))?;
            let value = key.seal_stored(name.as_bytes(), encryption)?;
            let ttl_ms = i64::try_from(ttl.unwrap_or(self.session_ttl).as_millis())
                .unwrap_or(i64::MAX)
                .max(1);
            self.db
                .call(|c| async move {
                    c.client()
                        .execute(
                            "INSERT INTO tokenkeeper_dpop_keys (key, value, expires_at) VALUES ($1, $2, tokenkeeper_now_ms() + $3) \
                             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at",
                            &[&name, &value, &ttl_ms],
                        )
                        .await
                })
                .await
                .map(|_| ())
        })
    }

    fn remove<'a>(&'a self, jkt: &'a str) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(async move {
            let name = Self::key(jkt);
            self.db
                .call(|c| async move {
                    c.client()
                        .execute("DELETE FROM tokenkeeper_dpop_keys WHERE key = $1", &[&name])
                        .await
                })
                .await
                .map(|_| ())
        })
    }
}
