//! Taken login callbacks in Redis: each login completed once across a fleet.

use std::fmt;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokenkeeper::user::LoginReplayStore;
use tokenkeeper::{CacheError, CacheKey};

use crate::cache::RedisTokenCache;

/// Remembers taken login callbacks in Redis (`SET NX PX`, atomic): of two callbacks of one
/// login sent at once to two instances, one makes the code exchange — SEC-02 for a fleet.
///
/// Logins in progress are not stored at all: they travel sealed in the browser's login cookie
/// (SEC-13). An entry is written at a callback that carries a valid login cookie, its `state`
/// and a `code`, at `<prefix>:{<h>}:login` (`<h>` a hash of the caller's key, itself a hash of
/// the `state`), holding nothing but `1`, and expires with the login.
///
/// ```no_run
/// # fn run() -> Result<(), tokenkeeper::CacheError> {
/// use tokenkeeper_redis::{Encryption, RedisLoginReplayStore, RedisOptions, RedisTokenCache};
/// let redis = RedisTokenCache::new(
///     "redis://127.0.0.1:6379",
///     RedisOptions::encrypted(Encryption::new("k1", &[7; 32])?),
/// )?;
/// let replays = RedisLoginReplayStore::new(&redis);
/// // oidc.with_login_replay_store(std::sync::Arc::new(replays))
/// # let _ = replays; Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisLoginReplayStore {
    cache: RedisTokenCache,
}

impl fmt::Debug for RedisLoginReplayStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLoginReplayStore")
            .field("cache", &self.cache)
            .finish()
    }
}

impl RedisLoginReplayStore {
    /// A store on the same Redis, prefix and connection as `cache`.
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

impl LoginReplayStore for RedisLoginReplayStore {
    fn claim<'a>(&'a self, key: &'a str, ttl: Duration) -> BoxFuture<'a, Result<bool, CacheError>> {
        Box::pin(async move { self.cache.set_once(&self.key(key), ttl).await })
    }
}
