//! The distributed lease: `SET NX PX` with an owner token, renewed while held, released by
//! compare-and-delete.

use std::fmt;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokenkeeper::{CacheError, CacheKey, Lease, LeaseGuard};

use crate::cache::RedisTokenCache;

const RENEW_SCRIPT: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;

const RELEASE_SCRIPT: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// One fill or refresh per key across every instance sharing a Redis (see [`Lease`] for how the
/// managers use it).
///
/// The lease key is `<prefix>:{<h>}:lease`, in the same Cluster slot as the token. It is taken
/// with `SET NX PX ttl` and a random owner token, renewed every `ttl / 3` while the fetch runs
/// (`PEXPIRE` only if still the owner), and released by a compare-and-delete script, so an
/// instance never releases a lease that expired and was taken by another. If Redis is down the
/// lease reports an error and the manager fetches locally.
#[derive(Clone)]
pub struct RedisLease {
    cache: RedisTokenCache,
}

impl fmt::Debug for RedisLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLease")
            .field("cache", &self.cache)
            .finish()
    }
}

impl RedisLease {
    /// A lease on the same Redis, prefix and connection as `cache`.
    pub fn new(cache: &RedisTokenCache) -> Self {
        Self {
            cache: cache.clone(),
        }
    }
}

impl Lease for RedisLease {
    fn try_acquire<'a>(
        &'a self,
        key: &'a CacheKey,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<LeaseGuard>, CacheError>> {
        Box::pin(async move {
            let inner = self.cache.inner.clone();
            let lease_key = inner.redis_key(key, "lease");
            let owner = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
            let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
            let taken: Option<String> = inner
                .call(|mut c| {
                    let (lease_key, owner) = (lease_key.clone(), owner.clone());
                    async move {
                        redis::cmd("SET")
                            .arg(&lease_key)
                            .arg(&owner)
                            .arg("NX")
                            .arg("PX")
                            .arg(ttl_ms)
                            .query_async(&mut c)
                            .await
                    }
                })
                .await?;
            if taken.is_none() {
                return Ok(None);
            }
            let renew_every = (ttl / 3).max(Duration::from_millis(10));
            let renewer = {
                let (inner, lease_key, owner) = (inner.clone(), lease_key.clone(), owner.clone());
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(renew_every).await;
                        let renewed = inner
                            .call(|mut c| {
                                let (lease_key, owner) = (lease_key.clone(), owner.clone());
                                async move {
                                    redis::Script::new(RENEW_SCRIPT)
                                        .key(&lease_key)
                                        .arg(&owner)
                                        .arg(ttl_ms)
                                        .invoke_async::<i64>(&mut c)
                                        .await
                                }
                            })
                            .await;
                        if matches!(renewed, Ok(0)) {
                            tracing::warn!(key = %lease_key, "lost a lease while the fetch was running");
                            return;
                        }
                    }
                })
            };
            Ok(Some(LeaseGuard::new(async move {
                renewer.abort();
                let _ = inner
                    .call(|mut c| async move {
                        redis::Script::new(RELEASE_SCRIPT)
                            .key(&lease_key)
                            .arg(&owner)
                            .invoke_async::<i64>(&mut c)
                            .await
                    })
                    .await;
            })))
        })
    }
}
