//! Sessions in Redis, for a fleet of BFF instances (BF-08, BF-16).

use std::fmt;

use futures_util::future::BoxFuture;
use tokenkeeper::{CacheError, Timestamp};
use tokenkeeper_redis::RedisTokenCache;

use crate::session::{session_id_hash, BffSession, BffSessionStore};

/// Sessions in Redis, shared by every BFF instance on the same Redis and prefix: a login on
/// one instance is a session on all; a logout or back-channel logout on any ends it everywhere.
///
/// - A session lives at `<prefix>:{<h>}:bffs`, named by the SHA-256 of its id
///   ([`BffSession::id_hash`]): neither the key nor the value holds the id, which is the
///   cookie (SEC-15). The value is sealed with the cache's encryption (it holds the ID token);
///   the cache refuses to run without it unless plaintext was asked for.
/// - Indexes of the sessions' id hashes per `sub` and per `sid` (complete: an index lives as
///   long as its longest-lived session), and the expiries in a sorted set, from which the
///   periodic cleanup claims every expired session once across the fleet, in batches (to
///   revoke its refresh token).
/// - A slide rewrites the session only if it is still there, in one script: a slide racing a
///   logout cannot bring the session back (SEC-26).
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
    /// `bff` (the one frontend of a host, and every store made with [`RedisBffSessionStore::new`])
    /// or `bff@<frontend>`: what every key name starts with.
    namespace: String,
}

impl fmt::Debug for RedisBffSessionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBffSessionStore")
            .field("redis", &self.redis)
            .field("namespace", &self.namespace)
            .finish()
    }
}

/// How long an entry outlives its session, for the cleanup.
const GRACE_MS: u64 = 24 * 3600 * 1000;

/// How many sessions one round trip reads or claims.
const BATCH: usize = 500;

/// Stores a session: the value, its place in both indexes (whose expiry only ever grows, so an
/// index outlives every session in it) and in the expiry schedule. With ARGV[5] = `1` (a
/// slide), only while the session is still stored: a slide racing a logout does not bring the
/// session back (SEC-26).
/// KEYS: session, sub index, sid index, schedule. ARGV: value, ttl, id hash, expires_at, slide.
const WRITE_SCRIPT: &str = r#"
if ARGV[5] == '1' and redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
for i = 2, 3 do
  redis.call('SADD', KEYS[i], ARGV[3])
  if redis.call('PTTL', KEYS[i]) < tonumber(ARGV[2]) then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
  end
end
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[3])
return 1
"#;

/// Claims up to ARGV[2] sessions due at ARGV[1]: removed from the schedule and returned, so
/// that each is handled by one instance. KEYS: schedule.
const CLAIM_SCRIPT: &str = r#"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
if #due > 0 then
  redis.call('ZREM', KEYS[1], unpack(due))
end
return due
"#;

impl RedisBffSessionStore {
    /// A store on the same Redis, prefix, encryption and connection as `redis`.
    pub fn new(redis: &RedisTokenCache) -> Self {
        Self {
            redis: redis.clone(),
            namespace: "bff".to_owned(),
        }
    }

    /// The same store, for the sessions of one frontend of several in a host (BF-17): its
    /// sessions, indexes and expiry schedule have names of their own, so a session of one
    /// frontend is not found by another (its cookie is worth nothing there), and each
    /// frontend's cleanup and administration see only its sessions. `frontend` is the
    /// frontend's name (letters, digits, `-` and `_`).
    pub fn for_frontend(&self, frontend: &str) -> Self {
        Self {
            redis: self.redis.clone(),
            namespace: format!("bff@{frontend}"),
        }
    }

    fn session_key(&self, id_hash: &str) -> String {
        self.redis
            .key_for(&format!("{}-session:{id_hash}", self.namespace), "bffs")
    }

    fn index_key(&self, kind: &str, value: &str) -> String {
        self.redis
            .key_for(&format!("{}-{kind}:{value}", self.namespace), "bffi")
    }

    fn expiry_key(&self) -> String {
        self.redis
            .key_for(&format!("{}-expiry", self.namespace), "bffx")
    }

    fn seal(&self, key: &str, session: &BffSession) -> Result<Vec<u8>, CacheError> {
        let json = serde_json::to_vec(session).map_err(|e| CacheError::new(e.to_string()))?;
        match self.redis.encryption() {
            Some(encryption) => encryption.seal(key.as_bytes(), &json),
            None => Ok(json),
        }
    }

    fn open(&self, key: &str, id_hash: &str, value: &[u8]) -> Option<BffSession> {
        let json = match self.redis.encryption() {
            Some(encryption) => encryption.open(key.as_bytes(), value)?,
            None => value.to_vec(),
        };
        let session: BffSession = serde_json::from_slice(&json).ok()?;
        // An entry copied under another id is not that session.
        (session.id_hash == id_hash).then_some(session)
    }

    /// The sessions with these id hashes (missing ones left out), a batch per round trip.
    async fn read_many(&self, hashes: &[String]) -> Result<Vec<BffSession>, CacheError> {
        let mut found = Vec::with_capacity(hashes.len());
        for batch in hashes.chunks(BATCH) {
            let keys: Vec<String> = batch.iter().map(|h| self.session_key(h)).collect();
            let k = keys.clone();
            let values: Vec<Option<Vec<u8>>> = self
                .redis
                .call(|mut c| async move { redis::cmd("MGET").arg(&k).query_async(&mut c).await })
                .await?;
            for ((key, hash), value) in keys.iter().zip(batch).zip(values) {
                if let Some(session) = value.and_then(|v| self.open(key, hash, &v)) {
                    found.push(session);
                }
            }
        }
        Ok(found)
    }

    /// Writes `session` (see [`WRITE_SCRIPT`]); `false` when `slide` and it was gone.
    async fn write(&self, session: &BffSession, slide: bool) -> Result<bool, CacheError> {
        let key = self.session_key(&session.id_hash);
        let value = self.seal(&key, session)?;
        let ttl = session
            .expires_at
            .saturating_sub(Timestamp::system_now().as_millis())
            .saturating_add(GRACE_MS)
            .max(1);
        let sub = self.index_key("sub", &session.sub);
        let sid = self.index_key("sid", &session.sid);
        let expiry = self.expiry_key();
        let (hash, expires_at) = (session.id_hash.clone(), session.expires_at);
        let done: i64 = self
            .redis
            .call(|mut c| async move {
                redis::Script::new(WRITE_SCRIPT)
                    .key(&key)
                    .key(&sub)
                    .key(&sid)
                    .key(&expiry)
                    .arg(value)
                    .arg(ttl)
                    .arg(&hash)
                    .arg(expires_at)
                    .arg(if slide { "1" } else { "0" })
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(done == 1)
    }

    async fn delete(&self, session: &BffSession) -> Result<(), CacheError> {
        let key = self.session_key(&session.id_hash);
        let sub = self.index_key("sub", &session.sub);
        let sid = self.index_key("sid", &session.sid);
        let expiry = self.expiry_key();
        let hash = session.id_hash.clone();
        self.redis
            .call(|mut c| async move {
                redis::pipe()
                    .atomic()
                    .cmd("DEL")
                    .arg(&key)
                    .cmd("SREM")
                    .arg(&sub)
                    .arg(&hash)
                    .cmd("SREM")
                    .arg(&sid)
                    .arg(&hash)
                    .cmd("ZREM")
                    .arg(&expiry)
                    .arg(&hash)
                    .query_async::<()>(&mut c)
                    .await
            })
            .await
    }
}

impl BffSessionStore for RedisBffSessionStore {
    fn check(&self) -> BoxFuture<'_, Result<(), CacheError>> {
        Box::pin(async move {
            let pong: String = self
                .redis
                .call(|mut c| async move { redis::cmd("PING").query_async(&mut c).await })
                .await?;
            if pong == "PONG" {
                Ok(())
            } else {
                Err(CacheError::new("Redis answered PING with something else"))
            }
        })
    }

    fn get<'a>(
        &'a self,
        id: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Option<std::sync::Arc<BffSession>>, CacheError>> {
        Box::pin(async move {
            let hash = session_id_hash(id);
            let key = self.session_key(&hash);
            let k = key.clone();
            let value: Option<Vec<u8>> = self
                .redis
                .call(|mut c| async move { redis::cmd("GET").arg(&k).query_async(&mut c).await })
                .await?;
            Ok(value
                .and_then(|v| self.open(&key, &hash, &v))
                .filter(|s| s.expires_at > now.as_millis())
                .map(|mut session| {
                    session.id = id.to_owned();
                    std::sync::Arc::new(session)
                }))
        })
    }

    fn put(&self, session: BffSession) -> BoxFuture<'_, Result<(), CacheError>> {
        Box::pin(async move { self.write(&session, false).await.map(|_| ()) })
    }

    fn touch<'a>(
        &'a self,
        session: &'a BffSession,
        expires_at: u64,
    ) -> BoxFuture<'a, Result<bool, CacheError>> {
        Box::pin(async move {
            let mut moved = session.clone();
            moved.expires_at = expires_at;
            self.write(&moved, true).await
        })
    }

    fn remove<'a>(
        &'a self,
        session: &'a BffSession,
    ) -> BoxFuture<'a, Result<Option<BffSession>, CacheError>> {
        Box::pin(async move {
            let Some(stored) = self
                .read_many(std::slice::from_ref(&session.id_hash))
                .await?
                .pop()
            else {
                return Ok(None);
            };
            self.delete(&stored).await?;
            Ok(Some(stored))
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
            let i = index.clone();
            let hashes: Vec<String> = self
                .redis
                .call(
                    |mut c| async move { redis::cmd("SMEMBERS").arg(&i).query_async(&mut c).await },
                )
                .await?;
            let found = self.read_many(&hashes).await?;
            // Entries gone from Redis (expired) leave their index.
            if found.len() < hashes.len() {
                let live: std::collections::HashSet<&str> =
                    found.iter().map(|s| s.id_hash.as_str()).collect();
                let gone: Vec<&String> = hashes
                    .iter()
                    .filter(|h| !live.contains(h.as_str()))
                    .collect();
                if !gone.is_empty() {
                    let _ = self
                        .redis
                        .call(|mut c| async move {
                            redis::cmd("SREM")
                                .arg(&index)
                                .arg(&gone)
                                .query_async::<()>(&mut c)
                                .await
                        })
                        .await;
                }
            }
            Ok(found
                .into_iter()
                .filter(|s| {
                    sid.is_none_or(|sid| s.sid == sid) && sub.is_none_or(|sub| s.sub == sub)
                })
                .collect())
        })
    }

    fn take_expired(&self, now: Timestamp) -> BoxFuture<'_, Result<Vec<BffSession>, CacheError>> {
        Box::pin(async move {
            let expiry = self.expiry_key();
            let mut taken = Vec::new();
            // Batch after batch until nothing is due: every expired session, not a fixed few.
            loop {
                let e = expiry.clone();
                let due: Vec<String> = self
                    .redis
                    .call(|mut c| async move {
                        redis::Script::new(CLAIM_SCRIPT)
                            .key(&e)
                            .arg(now.as_millis())
                            .arg(BATCH)
                            .invoke_async(&mut c)
                            .await
                    })
                    .await?;
                let claimed = due.len();
                for session in self.read_many(&due).await? {
                    if session.expires_at <= now.as_millis() {
                        self.delete(&session).await?;
                        taken.push(session);
                    } else {
                        // Extended meanwhile: back in the schedule (only if still stored).
                        self.write(&session, true).await?;
                    }
                }
                if claimed < BATCH {
                    break;
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
            let redis_key = self
                .redis
                .key_for(&format!("{}-once:{key}", self.namespace), "bffo");
            let ttl = until.as_millis().saturating_sub(now.as_millis());
            self.redis
                .set_once(&redis_key, std::time::Duration::from_millis(ttl))
                .await
        })
    }
}
