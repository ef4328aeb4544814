//! Per-session DPoP keys in Redis, sealed, shared by a fleet (PK-07).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokenkeeper::dpop::{DpopKey, DpopKeyStore};
use tokenkeeper::{CacheError, CacheKey};

use crate::cache::RedisTokenCache;

/// Per-session DPoP keys in Redis, so that every instance of a fleet presents a session's
/// tokens with the session's key.
///
/// - Keys are **always sealed** with the cache's [`crate::Encryption`] (bound to their Redis
///   key): a store without encryption is refused, because a private key must never rest in
///   plaintext (PK-07).
/// - Entries live at `<prefix>:{<h>}:dpop` under the key's thumbprint; a value that does not
///   open, or whose key does not have the thumbprint asked for, is treated as missing.
/// - A session's key (written when its login completes: a login in progress keeps its key
///   sealed in its cookie) expires after
///   [`RedisDpopKeyStore::with_session_ttl`] (default 30 days) unless logout removes it first.
///
/// ```no_run
/// # fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use tokenkeeper::user::UserTokenManager;
/// use tokenkeeper::ClientConfig;
/// use tokenkeeper_redis::{Encryption, RedisDpopKeyStore, RedisOptions, RedisTokenCache};
/// let options = RedisOptions {
///     encryption: Some(Encryption::new("k1", &[7u8; 32])?),
///     ..RedisOptions::default()
/// };
/// let redis = RedisTokenCache::new("redis://127.0.0.1:6379", options)?;
/// let users = UserTokenManager::builder(ClientConfig::from_issuer("https://idp.example.com", "web", "secret"))
///     .dpop_key_store(Arc::new(RedisDpopKeyStore::new(&redis)?))
///     .build()?;
/// # let _ = users; Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisDpopKeyStore {
    cache: RedisTokenCache,
    session_ttl: Duration,
}

impl fmt::Debug for RedisDpopKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisDpopKeyStore")
            .field("cache", &self.cache)
            .field("session_ttl", &self.session_ttl)
            .finish()
    }
}

impl RedisDpopKeyStore {
    /// A store on the same Redis, prefix, connection and encryption as `cache`. Fails when
    /// `cache` has no [`crate::Encryption`].
    pub fn new(cache: &RedisTokenCache) -> Result<Self, CacheError> {
        if cache.inner.encryption().is_none() {
            return Err(CacheError::new(
                "a DPoP key store needs encryption (RedisOptions::encryption): private keys are never stored in plaintext",
            ));
        }
        Ok(Self {
            cache: cache.clone(),
            session_ttl: Duration::from_secs(30 * 24 * 3600),
        })
    }

    /// How long a session's key is kept (default 30 days; logout removes it sooner).
    pub fn with_session_ttl(mut self, ttl: Duration) -> Self {
        self.session_ttl = ttl;
        self
    }

    fn key(&self, jkt: &str) -> String {
        self.cache
            .inner
            .redis_key(&CacheKey::from_canonical(format!("dpop&jkt={jkt}")), "dpop")
    }

    fn seal(&self, redis_key: &str, key: &DpopKey) -> Result<Vec<u8>, CacheError> {
        match self.cache.inner.encryption() {
            Some(encryption) => key.seal_stored(redis_key.as_bytes(), encryption),
            None => Err(CacheError::new("no encryption")),
        }
    }

    fn open(&self, redis_key: &str, jkt: &str, sealed: &[u8]) -> Option<Arc<DpopKey>> {
        DpopKey::open_stored(
            sealed,
            redis_key.as_bytes(),
            jkt,
            self.cache.inner.encryption()?,
        )
    }
}

impl DpopKeyStore for RedisDpopKeyStore {
    fn get<'a>(&'a self, jkt: &'a str) -> BoxFuture<'a, Result<Option<Arc<DpopKey>>, CacheError>> {
        Box::pin(async move {
            let redis_key = self.key(jkt);
            let sealed: Option<Vec<u8>> = self
                .cache
                .inner
                .call(|mut c| {
                    let k = redis_key.clone();
                    async move { redis::cmd("GET").arg(&k).query_async(&mut c).await }
                })
                .await?;
            let Some(sealed) = sealed else {
                return Ok(None);
            };
            let key = self.open(&redis_key, jkt, &sealed);
            if key.is_none() {
                tracing::warn!("an unreadable DPoP key entry was found and is ignored");
            }
            Ok(key)
        })
    }

    fn put(
        &self,
        key: Arc<DpopKey>,
        ttl: Option<Duration>,
    ) -> BoxFuture<'_, Result<(), CacheError>> {
        Box::pin(async move {
            let redis_key = self.key(key.thumbprint());
            let value = self.seal(&redis_key, &key)?;
            self.cache
                .inner
                .set_px(&redis_key, value, ttl.unwrap_or(self.session_ttl))
                .await
        })
    }

    fn remove<'a>(&'a self, jkt: &'a str) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(async move {
            let redis_key = self.key(jkt);
            self.cache
                .inner
                .call(|mut c| async move {
                    redis::cmd("DEL")
                        .arg(&redis_key)
                        .query_async::<()>(&mut c)
                        .await
                })
                .await
        })
    }
}
