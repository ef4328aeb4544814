//! User session tokens in Redis.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokenkeeper::user::{SessionKey, StoreOutcome, UserTokenStore, UserTokens, Versioned};
use tokenkeeper::{CacheError, CacheKey};

use crate::cache::RedisTokenCache;
use crate::codec::{self, Unreadable};

const STORE_SCRIPT: &str = r#"
local current = redis.call('HGET', KEYS[1], 'ver')
if (current == false and ARGV[1] == '') or current == ARGV[1] then
  local next = (current and tonumber(current) or 0) + 1
  redis.call('HSET', KEYS[1], 'ver', next, 'v', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return next
end
return 0
"#;

/// Users' session tokens in Redis, shared by every instance.
///
/// Each session is a hash at `<prefix>:{<h>}:ut` holding `ver` and `v` (the tokens, versioned
/// format, sealed with the cache's [`crate::Encryption`] if any). `store` is a Lua
/// compare-and-set on `ver`, so two instances never overwrite each other's rotated refresh
/// token. Sessions expire `session_ttl` after their last write (default 14 days). Use with a
/// [`crate::RedisLease`] on the user token manager so that refreshes are serialised across
/// instances.
#[derive(Clone)]
pub struct RedisUserTokenStore {
    cache: RedisTokenCache,
    session_ttl: Duration,
}

impl fmt::Debug for RedisUserTokenStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisUserTokenStore")
            .field("cache", &self.cache)
            .field("session_ttl", &self.session_ttl)
            .finish()
    }
}

impl RedisUserTokenStore {
    /// A store on the same Redis, prefix, encryption and connection as `cache`.
    pub fn new(cache: &RedisTokenCache) -> Self {
        Self {
            cache: cache.clone(),
            session_ttl: Duration::from_secs(14 * 24 * 3600),
        }
    }

    /// How long a session lives after its last write.
    pub fn with_session_ttl(mut self, ttl: Duration) -> Self {
        self.session_ttl = ttl;
        self
    }

    fn key(&self, session: &SessionKey) -> String {
        self.cache.inner.redis_key(
            &CacheKey::from_canonical(format!("ut&session={}", session.as_str())),
            "ut",
        )
    }
}

impl UserTokenStore for RedisUserTokenStore {
    fn get<'a>(
        &'a self,
        session: &'a SessionKey,
    ) -> BoxFuture<'a, Result<Option<Versioned<Arc<UserTokens>>>, CacheError>> {
        Box::pin(async move {
            let key = self.key(session);
            let (version, value): (Option<u64>, Option<Vec<u8>>) = self
                .cache
                .inner
                .call(|mut c| {
                    let key = key.clone();
                    async move {
                        redis::cmd("HMGET")
                            .arg(&key)
                            .arg("ver")
                            .arg("v")
                            .query_async(&mut c)
                            .await
                    }
                })
                .await?;
            let (Some(version), Some(value)) = (version, value) else {
                return Ok(None);
            };
            match codec::decode_session(&value, key.as_bytes(), self.cache.inner.encryption()) {
                Ok(tokens) => Ok(Some(Versioned {
                    value: Arc::new(tokens),
                    version,
                })),
                Err(Unreadable::OtherVersion) => Ok(None),
                Err(Unreadable::Damaged) => {
                    tracing::warn!(key = %key, "a stored session does not decrypt or parse; treating it as logged out");
                    Ok(None)
                }
            }
        })
    }

    fn store<'a>(
        &'a self,
        session: &'a SessionKey,
        tokens: Arc<UserTokens>,
        expected: Option<u64>,
    ) -> BoxFuture<'a, Result<StoreOutcome, CacheError>> {
        Box::pin(async move {
            let key = self.key(session);
            let value =
                codec::encode_session(&tokens, key.as_bytes(), self.cache.inner.encryption())?;
            let expected = expected.map(|v| v.to_string()).unwrap_or_default();
            let ttl_ms = u64::try_from(self.session_ttl.as_millis())
                .unwrap_or(u64::MAX)
                .max(1);
            let version: u64 = self
                .cache
                .inner
                .call(|mut c| {
                    let (key, value, expected) = (key.clone(), value.clone(), expected.clone());
                    async move {
                        redis::Script::new(STORE_SCRIPT)
                            .key(&key)
                            .arg(expected)
                            .arg(value)
                            .arg(ttl_ms)
                            .invoke_async(&mut c)
                            .await
                    }
                })
                .await?;
            Ok(if version == 0 {
                StoreOutcome::Conflict
            } else {
                StoreOutcome::Stored(version)
            })
        })
    }

    fn clear<'a>(&'a self, session: &'a SessionKey) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(async move {
            let key = self.key(session);
            self.cache
                .inner
                .call(|mut c| async move {
                    redis::cmd("DEL").arg(&key).query_async::<i64>(&mut c).await
                })
                .await
                .map(|_| ())
        })
    }
}
