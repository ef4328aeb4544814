//! Sessions in Redis, for a fleet of BFF instances (BF-08, BF-16).

use std::fmt;

use futures_util::future::BoxFuture;
use tokenkeeper::{CacheError, Timestamp};
use tokenkeeper_redis::RedisTokenCache;

use crate::session::{BffSession, BffSessionStore};

/// Sessions in Redis, shared by every BFF instance on the same Redis and prefix: a login on
/// one instance is a session on all; a logout or back-channel logout on any ends it everywhere.
///
/// - A session lives at `<prefix>:{<h>}:bffs` (sealed with the cache's encryption when it has
///   one: it holds the ID token), with an index of its ids per `sub` and per `sid`, and its
///   expiry in a sorted set, from which the periodic cleanup claims each expired session once
///   across the fleet (to revoke its refresh token).
/// - The entry outlives the session by a day (`expires_at` decides, not Redis), so the cleanup
///   still finds what to revoke.
///
/// ```no_run
/// # fn run() -> Result<(), tokenkeeper::CacheError> {
/// use tokenkeeper_bff::RedisBffSessionStore;
/// use tokenkeeper_redis::{Encryption, RedisOptions, RedisTokenCache};
/// # let key = [7u8; 32];
/// let redis = RedisTokenCache::new(
///     "redis://127.0.0.1:6379",
///     RedisOptions::encrypted(Encryption::new("k1", &key)?),
/// )?;
/// let sessions = RedisBffSessionStore::new(&redis);
/// # let _ = sessions; Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisBffSessionStore {
    redis: RedisTokenCache,
}

impl fmt::Debug for RedisBffSessionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBffSessionStore")
            .field("redis", &self.redis)
            .finish()
    }
}

/// How long an entry outlives its session, for the cleanup.
const GRACE_MS: u64 = 24 * 3600 * 1000;

impl RedisBffSessionStore {
    /// A store on the same Redis, prefix, encryption and connection as `redis`.
    pub fn new(redis: &RedisTokenCache) -> Self {
        Self {
            redis: redis.clone(),
        }
    }

    fn session_key(&self, id: &str) -> String {
        self.redis.key_for(&format!("bff-session:{id}"), "bffs")
    }

    fn index_key(&self, kind: &str, value: &str) -> String {
        self.redis.key_for(&format!("bff-{kind}:{value}"), "bffi")
    }

    fn expiry_key(&self) -> String {
        self.redis.key_for("bff-expiry", "bffx")
    }

    fn seal(&self, key: &str, session: &BffSession) -> Result<Vec<u8>, CacheError> {
        let json = serde_json::to_vec(session).map_err(|e| CacheError::new(e.to_string()))?;
        match self.redis.encryption() {
            Some(encryption) => encryption.seal(key.as_bytes(), &json),
            None => Ok(json),
        }
    }

    fn open(&self, key: &str, id: &str, value: &[u8]) -> Option<BffSession> {
        let json = match self.redis.encryption() {
            Some(encryption) => encryption.open(key.as_bytes(), value)?,
            None => value.to_vec(),
        };
        let session: BffSession = serde_json::from_slice(&json).ok()?;
        // An entry copied under another id is not that session.
        (session.id == id).then_some(session)
    }

    async fn read(&self, id: &str) -> Result<Option<BffSession>, CacheError> {
        let key = self.session_key(id);
        let k = key.clone();
        let value: Option<Vec<u8>> = self
            .redis
            .call(|mut c| async move { redis::cmd("GET").arg(&k).query_async(&mut c).await })
            .await?;
        Ok(value.and_then(|v| self.open(&key, id, &v)))
    }

    async fn delete(&self, session: &BffSession) -> Result<(), CacheError> {
        let key = self.session_key(&session.id);
        let sub = self.index_key("sub", &session.sub);
        let sid = self.index_key("sid", &session.sid);
        let expiry = self.expiry_key();
        let id = session.id.clone();
        self.redis
            .call(|mut c| async move {
                redis::pipe()
                    .cmd("DEL")
                    .arg(&key)
                    .cmd("SREM")
                    .arg(&sub)
                    .arg(&id)
                    .cmd("SREM")
                    .arg(&sid)
                    .arg(&id)
                    .cmd("ZREM")
                    .arg(&expiry)
                    .arg(&id)
                    .query_async::<()>(&mut c)
                    .await
            })
            .await
    }
}

impl BffSessionStore for RedisBffSessionStore {
    fn get<'a>(
        &'a self,
        id: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Option<std::sync::Arc<BffSession>>, CacheError>> {
        Box::pin(async move {
            Ok(self
                .read(id)
                .await?
                .filter(|s| s.expires_at > now.as_millis())
                .map(std::sync::Arc::new))
        })
    }

    fn put(&self, session: BffSession) -> BoxFuture<'_, Result<(), CacheError>> {
        Box::pin(async move {
            let key = self.session_key(&session.id);
            let value = self.seal(&key, &session)?;
            let ttl = session
                .expires_at
                .saturating_sub(Timestamp::system_now().as_millis())
                .saturating_add(GRACE_MS)
                .max(1);
            let sub = self.index_key("sub", &session.sub);
            let sid = self.index_key("sid", &session.sid);
            let expiry = self.expiry_key();
            let (id, expires_at) = (session.id.clone(), session.expires_at);
            self.redis
                .call(|mut c| async move {
                    redis::pipe()
                        .cmd("SET")
                        .arg(&key)
                        .arg(value)
                        .arg("PX")
                        .arg(ttl)
                        .cmd("SADD")
                        .arg(&sub)
                        .arg(&id)
                        .cmd("PEXPIRE")
                        .arg(&sub)
                        .arg(ttl)
                        .cmd("SADD")
                        .arg(&sid)
                        .arg(&id)
                        .cmd("PEXPIRE")
                        .arg(&sid)
                        .arg(ttl)
                        .cmd("ZADD")
                        .arg(&expiry)
                        .arg(expires_at)
                        .arg(&id)
                        .query_async::<()>(&mut c)
                        .await
                })
                .await
        })
    }

    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<BffSession>, CacheError>> {
        Box::pin(async move {
            let Some(session) = self.read(id).await? else {
                return Ok(None);
            };
            self.delete(&session).await?;
            Ok(Some(session))
        })
    }

    fn find<'a>(
        &'a self,
        sub: Option<&'a str>,
        sid: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<BffSession>, CacheError>> {
        Box::pin(async move {
            let index = match (sub, sid) {
                (Some(sub), _) => self.index_key("sub", sub),
                (None, Some(sid)) => self.index_key("sid", sid),
                (None, None) => return Ok(Vec::new()),
            };
            let ids: Vec<String> = self
                .redis
                .call(|mut c| async move {
                    redis::cmd("SMEMBERS").arg(&index).query_async(&mut c).await
                })
                .await?;
            let mut found = Vec::new();
            for id in ids.iter().take(1000) {
                if let Some(session) = self.read(id).await? {
                    if sid.is_none_or(|sid| session.sid == sid)
                        && sub.is_none_or(|sub| session.sub == sub)
                    {
                        found.push(session);
                    }
                }
            }
            Ok(found)
        })
    }

    fn take_expired(&self, now: Timestamp) -> BoxFuture<'_, Result<Vec<BffSession>, CacheError>> {
        Box::pin(async move {
            let expiry = self.expiry_key();
            let e = expiry.clone();
            let due: Vec<String> = self
                .redis
                .call(|mut c| async move {
                    redis::cmd("ZRANGEBYSCORE")
                        .arg(&e)
                        .arg("-inf")
                        .arg(now.as_millis())
                        .arg("LIMIT")
                        .arg(0)
                        .arg(500)
                        .query_async(&mut c)
                        .await
                })
                .await?;
            let mut taken = Vec::new();
            for id in due {
                // Claim it: one instance of the fleet handles each expired session.
                let (e, i) = (expiry.clone(), id.clone());
                let claimed: i64 = self
                    .redis
                    .call(|mut c| async move {
                        redis::cmd("ZREM").arg(&e).arg(&i).query_async(&mut c).await
                    })
                    .await?;
                if claimed != 1 {
                    continue;
                }
                if let Some(session) = self.read(&id).await? {
                    if session.expires_at <= now.as_millis() {
                        self.delete(&session).await?;
                        taken.push(session);
                    } else {
                        // Extended meanwhile: back in the schedule.
                        self.put(session).await?;
                    }
                }
            }
            Ok(taken)
        })
    }

    fn first_use<'a>(
        &'a self,
        key: &'a str,
        until: Timestamp,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<bool, CacheError>> {
        Box::pin(async move {
            let redis_key = self.redis.key_for(&format!("bff-once:{key}"), "bffo");
            let ttl = until.as_millis().saturating_sub(now.as_millis()).max(1);
            let set: Option<String> = self
                .redis
                .call(|mut c| async move {
                    redis::cmd("SET")
                        .arg(&redis_key)
                        .arg(1)
                        .arg("NX")
                        .arg("PX")
                        .arg(ttl)
                        .query_async(&mut c)
                        .await
                })
                .await?;
            Ok(set.is_some())
        })
    }
}
