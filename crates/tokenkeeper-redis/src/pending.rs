//! Pending logins in Redis, shared by a fleet and consumed exactly once.

use std::fmt;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokenkeeper::user::PendingLoginStore;
use tokenkeeper::{CacheError, CacheKey};

use crate::cache::RedisTokenCache;

/// Pending logins in Redis: a login started on one instance completes on any, and its callback
/// is consumed once across all of them (`GETDEL` is atomic) — SEC-02 for a fleet.
///
/// Entries live at `<prefix>:{<h>}:login` with a `PX` expiry; they are sealed with the cache's
/// [`crate::Encryption`] when it has one (they hold a PKCE verifier), bound to their key.
///
/// ```no_run
/// # fn run() -> Result<(), tokenkeeper::CacheError> {
/// use tokenkeeper_redis::{RedisOptions, RedisPendingLoginStore, RedisTokenCache};
/// let redis = RedisTokenCache::new("redis://127.0.0.1:6379", RedisOptions::default())?;
/// let pending = RedisPendingLoginStore::new(&redis);
/// // oidc.with_pending_logins(std::sync::Arc::new(pending))
/// # let _ = pending; Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisPendingLoginStore {
    cache: RedisTokenCache,
}

impl fmt::Debug for RedisPendingLoginStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisPendingLoginStore")
            .field("cache", &self.cache)
            .finish()
    }
}

impl RedisPendingLoginStore {
    /// A store on the same Redis, prefix, encryption and connection as `cache`.
    pub fn new(cache: &RedisTokenCache) -> Self {
        Self {
            cache: cache.clone(),
        }
    }

    fn key(&self, key: &str) -> String {
        self.cache
            .inner
            .redis_key(&CacheKey::from_canonical(format!("login&k={key}")), "login")
    }
}

impl PendingLoginStore for RedisPendingLoginStore {
    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(async move {
            let key = self.key(key);
            let value = match self.cache.inner.encryption() {
                Some(encryption) => encryption.seal(key.as_bytes(), &value)?,
                None => value,
            };
            self.cache.inner.set_px(&key, value, ttl).await
        })
    }

    fn take<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, CacheError>> {
        Box::pin(async move {
            let key = self.key(key);
            let value: Option<Vec<u8>> = self
                .cache
                .inner
                .call(|mut c| {
                    let key = key.clone();
                    async move { redis::cmd("GETDEL").arg(&key).query_async(&mut c).await }
                })
                .await?;
            Ok(match (value, self.cache.inner.encryption()) {
                (Some(sealed), Some(encryption)) => encryption.open(key.as_bytes(), &sealed),
                (value, _) => value,
            })
        })
    }
}
