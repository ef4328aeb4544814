//! Sessions in Redis, for a fleet of BFF instances (BF-08, BF-16).

use std::fmt;

use futures_util::future::BoxFuture;
use tokenkeeper::{CacheError, Timestamp};
use tokenkeeper_redis::RedisTokenCache;

use crate::session::{session_id_hash, BffSession, BffSessionStore};

/// Sessions in Redis, shared by every BFF instance on the same Redis and prefix: a login on
/// one instance is a session on all; a logout or back-channel logout on any ends it everywhere.
/// Works on one node, a Redis Cluster and Sentinel alike (FL-01): no command touches keys of
/// two hash tags at once.
///
/// - A session lives at `<prefix>:{<h>}:bffs`, named by the SHA-256 of its id
///   ([`BffSession::id_hash`]): neither the key nor the value holds the id, which is the
///   cookie (SEC-15). The value is sealed with the cache's encryption (it holds the ID token);
///   the cache refuses to run without it unless plaintext was asked for.
/// - **Indexes** of the sessions' id hashes per `sub` and per `sid` (`…:bffz`, each a sorted
///   set under a tag of its own, so a cluster spreads them): each member is scored with the time
///   its session's entry expires, and members past it are dropped when the index is written.
///   An index is written *before* its session and cleared *after* it, so it is complete: a
///   member whose session is missing is skipped, never trusted, and never removed by a reader
///   (it may belong to a login whose session write has not landed yet).
/// - **Expiry schedule** in 16 sorted sets (`…:bffx`, by the id hash's first character), so a
///   frontend's writes do not all land on one cluster slot; the periodic cleanup claims every
///   expired session once across the fleet, in batches (to revoke its refresh token).
/// - A slide rewrites the session only if it is still there (`SET … XX`): a slide racing a
///   logout cannot bring the session back (SEC-26).
/// - The entry outlives the session by a day (`expires_at` decides, not Redis), so the cleanup
///   still finds what to revoke.
/// - Sessions written by earlier versions (one `SET` index per `sub`/`sid`, one schedule) are
///   still found, ended and cleaned up.
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

/// How many sorted sets the expiry schedule is spread over.
const SCHEDULE_BUCKETS: u8 = 16;

/// Puts ARGV[1] in the index KEYS[1] with the score ARGV[2] (when its entry expires; a score
/// only grows), drops members expired at ARGV[4], and keeps the index alive for at least
/// ARGV[3] ms.
const INDEX_SCRIPT: &str = r#"
redis.call('ZADD', KEYS[1], 'GT', ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[4])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
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
            .key_for(&format!("{}-{kind}:{value}", self.namespace), "bffz")
    }

    /// The index of earlier versions (a set), still read.
    fn legacy_index_key(&self, kind: &str, value: &str) -> String {
        self.redis
            .key_for(&format!("{}-{kind}:{value}", self.namespace), "bffi")
    }

    fn schedule_key(&self, bucket: u8) -> String {
        self.redis
            .key_for(&format!("{}-expiry:{bucket}", self.namespace), "bffx")
    }

    /// The schedule bucket of a session.
    fn bucket(id_hash: &str) -> u8 {
        id_hash
            .as_bytes()
            .first()
            .map_or(0, |b| b % SCHEDULE_BUCKETS)
    }

    /// The schedule of earlier versions (one sorted set), still claimed from.
    fn legacy_schedule_key(&self) -> String {
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

    /// The sessions with these id hashes (missing ones left out), a batch per round trip (on a
    /// cluster, one per node).
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

    /// Adds `hash` to the index at `key` (see [`INDEX_SCRIPT`]).
    async fn index(&self, key: String, hash: &str, until: u64, ttl: u64) -> Result<(), CacheError> {
        let now = Timestamp::system_now().as_millis();
        self.redis
            .call(|mut c| async move {
                redis::Script::new(INDEX_SCRIPT)
                    .key(&key)
                    .arg(hash)
                    .arg(until)
                    .arg(ttl)
                    .arg(now)
                    .invoke_async::<i64>(&mut c)
                    .await
            })
            .await
            .map(|_| ())
    }

    /// `ZADD`/`ZREM` (`add`: the score) of `hash` in the sorted set at `key`.
    async fn zset(&self, key: String, hash: &str, add: Option<u64>) -> Result<(), CacheError> {
        self.redis
            .call(|mut c| async move {
                match add {
                    Some(score) => {
                        redis::cmd("ZADD")
                            .arg(&key)
                            .arg(score)
                            .arg(hash)
                            .query_async::<i64>(&mut c)
                            .await
                    }
                    None => {
                        redis::cmd("ZREM")
                            .arg(&key)
                            .arg(hash)
                            .query_async::<i64>(&mut c)
                            .await
                    }
                }
            })
            .await
            .map(|_| ())
    }

    /// Writes `session`: first its place in both indexes and the schedule, then the entry
    /// (with `slide`, only if it is still there: `SET … XX`). `false` when `slide` and it was
    /// gone.
    async fn write(&self, session: &BffSession, slide: bool) -> Result<bool, CacheError> {
        let key = self.session_key(&session.id_hash);
        let value = self.seal(&key, session)?;
        let now = Timestamp::system_now().as_millis();
        let ttl = session
            .expires_at
            .saturating_sub(now)
            .saturating_add(GRACE_MS)
            .max(1);
        let until = now.saturating_add(ttl);
        let hash = session.id_hash.as_str();
        let (sub, sid, schedule) = tokio::join!(
            self.index(self.index_key("sub", &session.sub), hash, until, ttl),
            self.index(self.index_key("sid", &session.sid), hash, until, ttl),
            self.zset(
                self.schedule_key(Self::bucket(hash)),
                hash,
                Some(session.expires_at)
            ),
        );
        sub?;
        sid?;
        schedule?;
        let set: Option<String> = self
            .redis
            .call(|mut c| async move {
                let mut set = redis::cmd("SET");
                set.arg(&key).arg(value).arg("PX").arg(ttl);
                if slide {
                    set.arg("XX");
                }
                set.query_async(&mut c).await
            })
            .await?;
        Ok(set.is_some())
    }

    /// Removes `session`: first the entry, then its place in the indexes and the schedule.
    async fn delete(&self, session: &BffSession) -> Result<(), CacheError> {
        let key = self.session_key(&session.id_hash);
        self.redis
            .call(
                |mut c| async move { redis::cmd("DEL").arg(&key).query_async::<i64>(&mut c).await },
            )
            .await?;
        let hash = session.id_hash.as_str();
        let (sub, sid, schedule) = tokio::join!(
            self.zset(self.index_key("sub", &session.sub), hash, None),
            self.zset(self.index_key("sid", &session.sid), hash, None),
            self.zset(self.schedule_key(Self::bucket(hash)), hash, None),
        );
        sub.and(sid).and(schedule)
    }

    /// The id hashes in the index of `kind` = `value`, and in the index of earlier versions.
    async fn members(&self, kind: &str, value: &str) -> Result<Vec<String>, CacheError> {
        let index = self.index_key(kind, value);
        let now = Timestamp::system_now().as_millis();
        let mut hashes: Vec<String> = self
            .redis
            .call(|mut c| async move {
                redis::cmd("ZRANGE")
                    .arg(&index)
                    .arg(now)
                    .arg("+inf")
                    .arg("BYSCORE")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let legacy = self.legacy_index_key(kind, value);
        let older: Vec<String> = self
            .redis
            .call(|mut c| async move {
                redis::cmd("SMEMBERS")
                    .arg(&legacy)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        for hash in older {
            if !hashes.contains(&hash) {
                hashes.push(hash);
            }
        }
        Ok(hashes)
    }

    /// Claims what is due at `now` from the schedule at `key`, batch after batch.
    async fn claim(
        &self,
        key: String,
        now: Timestamp,
        taken: &mut Vec<BffSession>,
    ) -> Result<(), CacheError> {
        loop {
            let k = key.clone();
            let due: Vec<String> = self
                .redis
                .call(|mut c| async move {
                    redis::Script::new(CLAIM_SCRIPT)
                        .key(&k)
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
                return Ok(());
            }
        }
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
            let hashes = match (sub, sid) {
                (Some(sub), _) => self.members("sub", sub).await?,
                (None, Some(sid)) => self.members("sid", sid).await?,
                (None, None) => return Ok(Vec::new()),
            };
            // A member whose session is missing stays: it may be a login whose entry is being
            // written. Expired members leave when the index is next written.
            let found = self.read_many(&hashes).await?;
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
            let mut taken = Vec::new();
            // Every bucket, batch after batch until nothing is due: every expired session,
            // not a fixed few. Then the schedule of earlier versions.
            for bucket in 0..SCHEDULE_BUCKETS {
                self.claim(self.schedule_key(bucket), now, &mut taken)
                    .await?;
            }
            self.claim(self.legacy_schedule_key(), now, &mut taken)
                .await?;
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
