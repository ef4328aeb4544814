//! User session tokens in Redis, with an in-memory tier in front.

use std::fmt;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokenkeeper::user::{SessionKey, StoreOutcome, UserTokenStore, UserTokens, Versioned};
use tokenkeeper::{CacheError, CacheKey};

use crate::cache::RedisTokenCache;
use crate::codec::{self, Unreadable};

/// Compare-and-set on `ver` (the new version, proposed by the writer, must be greater), then
/// tell every instance (`PUBLISH`) that this session changed.
const STORE_SCRIPT: &str = r#"
local current = redis.call('HGET', KEYS[1], 'ver')
if (current == false and ARGV[1] == '') or current == ARGV[1] then
  local next = tonumber(ARGV[4])
  if current and next <= tonumber(current) then
    return -1
  end
  redis.call('HSET', KEYS[1], 'ver', ARGV[4], 'v', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  redis.call('PUBLISH', ARGV[5], KEYS[1] .. ' ' .. ARGV[4])
  return next
end
return 0
"#;

/// Deletes the session only if it still holds the unreadable value, and tells every instance.
const DELETE_IF_SCRIPT: &str = r#"
if redis.call('HGET', KEYS[1], 'v') == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], KEYS[1] .. ' 0')
  return 1
end
return 0
"#;

const CLEAR_SCRIPT: &str = r#"
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[1], KEYS[1] .. ' 0')
return 1
"#;

/// Users' session tokens in Redis, shared by every instance, read from memory on a hit.
///
/// - **Layout**: each session is a hash at `<prefix>:{<h>}:ut` holding `ver` and `v` (the
///   tokens, versioned format, sealed with the cache's [`crate::Encryption`] if any). `<h>` is
///   a hash of the [`SessionKey`]: neither `sub` nor `sid` appears in Redis.
/// - **Compare-and-set**: `store` is a Lua compare-and-set on `ver`, so two instances never
///   overwrite each other's rotated refresh token. Use with a [`crate::RedisLease`] on the user
///   token manager so that refreshes are serialised across instances.
/// - **In-memory tier (UT-12)**: every session read or written is kept in this process too, so
///   a hit on a valid token costs no round trip. Each write is published on
///   `<prefix>:ut-invalidate` in the same script, and every instance drops its copy when the
///   message arrives; a subscriber that (re)connects drops them all (it may have missed
///   messages). The manager takes a token from this tier only well before the token's refresh
///   window — and a refresh at expiry or ahead of it, on any instance, happens only inside
///   that window — so the tier never hands out a token another instance replaced by such a
///   refresh (instances' clocks must agree to within a second). A *forced* renewal (a 401,
///   `force_renewal`) on another instance reaches this one with the broadcast; in between,
///   the old token may be sent once more, and its 401 brings this instance the new one.
/// - **Sealed entries cannot be rolled back (SEC-11)**: with encryption, what is sealed is
///   bound to the Redis key *and* the version, so an older sealed value cannot be put under a
///   newer version, nor moved to another session. A whole older (version, value) pair put back
///   by someone who can write to Redis is refused while this instance remembers a newer
///   version. An entry that does not open is deleted, so that the next login for that session
///   works.
/// - **Failover (FL-03)**: with [`crate::RedisOptions::replica_ack`], each write waits until that
///   many replicas have it (`WAIT`) before the tokens it holds are used, so a failover right
///   after a rotation does not bring back the spent refresh token.
/// - Sessions expire `session_ttl` after their last write (default 14 days), or when their
///   refresh token and access tokens have all expired, if the server said when.
#[derive(Clone)]
pub struct RedisUserTokenStore {
    cache: RedisTokenCache,
    session_ttl: Duration,
    local: Arc<Local>,
}

/// The in-memory tier.
struct Local {
    /// Sessions by key, with their Redis key (for invalidations by Redis key).
    sessions: papaya::HashMap<SessionKey, (Versioned<Arc<UserTokens>>, Arc<str>)>,
    /// Redis key → session key, for invalidation messages.
    by_redis_key: papaya::HashMap<Arc<str>, SessionKey>,
    /// The highest version seen per Redis key (kept when the tokens are dropped), to refuse a
    /// rolled-back entry.
    seen: papaya::HashMap<Arc<str>, u64>,
    capacity: usize,
    subscriber: OnceLock<SubscriberHandle>,
    /// Whether the invalidation subscriber has connected (at least once).
    listening: std::sync::atomic::AtomicBool,
}

struct SubscriberHandle(tokio::task::JoinHandle<()>);

impl Drop for SubscriberHandle {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Local {
    fn new(capacity: usize) -> Self {
        Self {
            sessions: papaya::HashMap::new(),
            by_redis_key: papaya::HashMap::new(),
            seen: papaya::HashMap::new(),
            capacity,
            subscriber: OnceLock::new(),
            listening: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Keeps `value` unless a newer version is held or was announced.
    fn put(&self, session: &SessionKey, redis_key: &Arc<str>, value: Versioned<Arc<UserTokens>>) {
        if self
            .seen(redis_key)
            .is_some_and(|seen| seen > value.version)
        {
            // Another instance wrote a newer version meanwhile: its message got here first.
            return;
        }
        if self.sessions.len() >= self.capacity {
            // A cache: when full, start over rather than track use.
            self.sessions.pin().clear();
            self.by_redis_key.pin().clear();
        }
        if self.seen.len() >= self.capacity.saturating_mul(4) {
            self.seen.pin().clear();
        }
        let version = value.version;
        let sessions = self.sessions.pin();
        sessions.update_or_insert_with(
            session.clone(),
            |(current, key)| {
                if current.version >= version {
                    (current.clone(), key.clone())
                } else {
                    (value.clone(), key.clone())
                }
            },
            || (value.clone(), redis_key.clone()),
        );
        self.by_redis_key
            .pin()
            .insert(redis_key.clone(), session.clone());
        self.saw(redis_key, version);
    }

    fn saw(&self, redis_key: &Arc<str>, version: u64) {
        self.seen
            .pin()
            .update_or_insert(redis_key.clone(), |v| (*v).max(version), version);
    }

    fn seen(&self, redis_key: &str) -> Option<u64> {
        self.seen.pin().get(redis_key).copied()
    }

    /// An instance changed the session at `redis_key` to `version` (or deleted it: 0). The copy
    /// here goes unless it is that version already (this instance's own write).
    fn invalidate(&self, redis_key: &str, version: u64) {
        let by_key = self.by_redis_key.pin();
        if let Some(session) = by_key.get(redis_key) {
            let sessions = self.sessions.pin();
            let current = sessions.get(session).map(|(v, _)| v.version);
            if version == 0 || current.is_none_or(|held| held < version) {
                sessions.remove(session);
                by_key.remove(redis_key);
            }
        }
        if version > 0 {
            let key: Arc<str> = Arc::from(redis_key);
            self.saw(&key, version);
        }
    }

    fn forget(&self, session: &SessionKey, redis_key: &str) {
        self.sessions.pin().remove(session);
        self.by_redis_key.pin().remove(redis_key);
    }

    fn clear(&self) {
        self.sessions.pin().clear();
        self.by_redis_key.pin().clear();
    }

    /// The subscriber (re)connected: what is held may have missed messages.
    fn subscribed(&self) {
        self.clear();
        self.listening
            .store(true, std::sync::atomic::Ordering::Release);
    }
}

impl fmt::Debug for RedisUserTokenStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisUserTokenStore")
            .field("cache", &self.cache)
            .field("session_ttl", &self.session_ttl)
            .field("local_sessions", &self.local.sessions.len())
            .finish()
    }
}

impl RedisUserTokenStore {
    /// A store on the same Redis, prefix, encryption and connection as `cache`, with an
    /// in-memory tier of up to 100,000 sessions. Needs no runtime to be built: the invalidation
    /// subscriber starts on first use.
    pub fn new(cache: &RedisTokenCache) -> Self {
        Self {
            cache: cache.clone(),
            session_ttl: Duration::from_secs(14 * 24 * 3600),
            local: Arc::new(Local::new(100_000)),
        }
    }

    /// How long a session lives after its last write.
    pub fn with_session_ttl(mut self, ttl: Duration) -> Self {
        self.session_ttl = ttl;
        self
    }

    /// Whether the invalidation subscriber has connected (at least once). Until it has, the
    /// in-memory tier is dropped when it does (messages may have been missed), so hits may
    /// still go to Redis.
    pub fn listening(&self) -> bool {
        self.local
            .listening
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// At most `capacity` sessions in the in-memory tier (0 turns the tier off).
    pub fn with_local_capacity(mut self, capacity: usize) -> Self {
        self.local = Arc::new(Local::new(capacity));
        self
    }

    fn key(&self, session: &SessionKey) -> String {
        self.cache.inner.redis_key(
            &CacheKey::from_canonical(format!("ut&session={}", session.as_str())),
            "ut",
        )
    }

    fn channel(&self) -> String {
        format!("{}:ut-invalidate", self.cache.inner.prefix)
    }

    /// What the encryption binds to a sealed session: its Redis key and version (SEC-11).
    fn aad(key: &str, version: u64) -> Vec<u8> {
        format!("{key}#{version}").into_bytes()
    }

    /// Starts the invalidation subscriber (once, inside a runtime).
    fn subscribe(&self) {
        if self.local.capacity == 0 {
            return;
        }
        self.local.subscriber.get_or_init(|| {
            SubscriberHandle(tokio::spawn(subscribe(
                Arc::downgrade(&self.local),
                self.cache.clone(),
                self.channel(),
            )))
        });
    }

    async fn read(
        &self,
        session: &SessionKey,
    ) -> Result<Option<Versioned<Arc<UserTokens>>>, CacheError> {
        self.subscribe();
        let key = self.key(session);
        let mut read = self.read_raw(&key).await?;
        if let (Some(version), Some(seen)) = (read.0, self.local.seen(&key)) {
            if version < seen {
                // Older than a version announced here: either this read crossed a write whose
                // message came first, or someone put an older entry back. A read issued now
                // comes after that write; only if it is still older is it a rollback.
                read = self.read_raw(&key).await?;
            }
        }
        let (version, value) = read;
        let redis_key: Arc<str> = Arc::from(key.as_str());
        let (Some(version), Some(value)) = (version, value) else {
            self.local.forget(session, &key);
            return Ok(None);
        };
        let decoded = match self.local.seen(&key) {
            // A version older than one already seen here: put back by someone else.
            Some(seen) if version < seen => Err(Unreadable::Damaged),
            _ => codec::decode_session(
                &value,
                &Self::aad(&key, version),
                self.cache.inner.encryption(),
            ),
        };
        match decoded {
            Ok(tokens) => {
                let versioned = Versioned {
                    value: Arc::new(tokens),
                    version,
                };
                if self.local.capacity > 0 {
                    self.local.put(session, &redis_key, versioned.clone());
                }
                Ok(Some(versioned))
            }
            Err(Unreadable::OtherVersion) => {
                // Written by another format version: no tokens for us, but its version is
                // kept so that the next login can replace it.
                Ok(Some(Versioned {
                    value: Arc::new(UserTokens::default()),
                    version,
                }))
            }
            Err(Unreadable::Damaged) => {
                tracing::warn!(key = %key, "a stored session does not open, or is older than one seen here; deleting it");
                self.local.forget(session, &key);
                let channel = self.channel();
                let _ = self
                    .cache
                    .inner
                    .call(|mut c| async move {
                        redis::Script::new(DELETE_IF_SCRIPT)
                            .key(&key)
                            .arg(value)
                            .arg(channel)
                            .invoke_async::<i64>(&mut c)
                            .await
                    })
                    .await;
                Ok(None)
            }
        }
    }
}

impl RedisUserTokenStore {
    /// `ver` and `v` of the session at `key`.
    async fn read_raw(&self, key: &str) -> Result<(Option<u64>, Option<Vec<u8>>), CacheError> {
        self.cache
            .inner
            .call(|mut c| async move {
                redis::cmd("HMGET")
                    .arg(key)
                    .arg("ver")
                    .arg("v")
                    .query_async(&mut c)
                    .await
            })
            .await
    }
}

/// Listens for invalidations until the store is dropped; drops the in-memory tier on every
/// (re)connect.
async fn subscribe(local: Weak<Local>, cache: RedisTokenCache, channel: String) {
    let (alive, reset_local) = (local.clone(), local.clone());
    crate::subscription::follow(
        cache,
        channel,
        move || alive.strong_count() > 0,
        move || {
            reset_local
                .upgrade()
                .map(|local| local.subscribed())
                .is_some()
        },
        move |payload| {
            let Some(local) = local.upgrade() else {
                return false;
            };
            if let Some((key, version)) = payload.rsplit_once(' ') {
                local.invalidate(key, version.parse().unwrap_or(0));
            }
            true
        },
    )
    .await;
}

impl UserTokenStore for RedisUserTokenStore {
    #[inline]
    fn get_local(&self, session: &SessionKey) -> Option<Versioned<Arc<UserTokens>>> {
        self.local
            .sessions
            .pin()
            .get(session)
            .map(|(value, _)| value.clone())
    }

    fn get<'a>(
        &'a self,
        session: &'a SessionKey,
    ) -> BoxFuture<'a, Result<Option<Versioned<Arc<UserTokens>>>, CacheError>> {
        Box::pin(self.read(session))
    }

    fn store<'a>(
        &'a self,
        session: &'a SessionKey,
        tokens: Arc<UserTokens>,
        expected: Option<u64>,
    ) -> BoxFuture<'a, Result<StoreOutcome, CacheError>> {
        Box::pin(async move {
            self.subscribe();
            let key = self.key(session);
            // Versions grow with time, not only by one: a session deleted and written again
            // gets a version above any it had, so an older entry can always be told apart.
            let now_ms = u64::try_from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis(),
            )
            .unwrap_or(u64::MAX);
            let next = expected.map_or(now_ms, |v| (v + 1).max(now_ms));
            let value = codec::encode_session(
                &tokens,
                &Self::aad(&key, next),
                self.cache.inner.encryption(),
            )?;
            let expected_arg = expected.map(|v| v.to_string()).unwrap_or_default();
            // A session outlives neither its TTL nor, when known, its refresh token (and its
            // last access token).
            let session_ttl_ms = u64::try_from(self.session_ttl.as_millis()).unwrap_or(u64::MAX);
            let ttl_ms = tokens
                .spent_at()
                .map_or(session_ttl_ms, |at| {
                    at.as_millis().saturating_sub(now_ms).min(session_ttl_ms)
                })
                .max(1);
            let channel = self.channel();
            // On the connection of durable writes: with `RedisOptions::replica_ack`, the new
            // tokens are on a replica before anyone uses them (FL-03).
            let version: i64 = self
                .cache
                .inner
                .call_durable(&key, |mut c| {
                    let (key, value, expected_arg, channel) = (
                        key.clone(),
                        value.clone(),
                        expected_arg.clone(),
                        channel.clone(),
                    );
                    async move {
                        redis::Script::new(STORE_SCRIPT)
                            .key(&key)
                            .arg(expected_arg)
                            .arg(value)
                            .arg(ttl_ms)
                            .arg(next)
                            .arg(channel)
                            .invoke_async(&mut c)
                            .await
                    }
                })
                .await?;
            match u64::try_from(version) {
                Ok(stored) if stored > 0 => {
                    if self.local.capacity > 0 {
                        let redis_key: Arc<str> = Arc::from(key.as_str());
                        self.local.put(
                            session,
                            &redis_key,
                            Versioned {
                                value: tokens,
                                version: stored,
                            },
                        );
                    }
                    Ok(StoreOutcome::Stored(stored))
                }
                _ => Ok(StoreOutcome::Conflict),
            }
        })
    }

    fn clear<'a>(&'a self, session: &'a SessionKey) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(async move {
            let key = self.key(session);
            self.local.forget(session, &key);
            let channel = self.channel();
            self.cache
                .inner
                .call(|mut c| async move {
                    redis::Script::new(CLEAR_SCRIPT)
                        .key(&key)
                        .arg(channel)
                        .invoke_async::<i64>(&mut c)
                        .await
                })
                .await
                .map(|_| ())
        })
    }
}
