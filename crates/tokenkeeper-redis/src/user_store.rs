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

/// Writes again a session write whose outcome is not known (the call failed) or that no
/// replica acknowledged (FL-03): ARGV as [`STORE_SCRIPT`]'s. Returns 1 when the entry is that
/// write already (written once more, so that `WAIT` covers it), 2 when it still held the
/// version the write expected (the write was lost: applied now), 3 when a newer write is
/// there, 0 when the session was cleared or replaced meanwhile (nothing is written).
const REPAIR_SCRIPT: &str = r#"
local held = redis.call('HMGET', KEYS[1], 'ver', 'v')
local current, value = held[1], held[2]
local next = tonumber(ARGV[4])
if current and tonumber(current) > next then
  return 3
end
if current and tonumber(current) == next then
  if value ~= ARGV[2] then
    return 3
  end
  redis.call('HSET', KEYS[1], 'ver', ARGV[4], 'v', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
if (current == false and ARGV[1] == '') or current == ARGV[1] then
  redis.call('HSET', KEYS[1], 'ver', ARGV[4], 'v', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  redis.call('PUBLISH', ARGV[5], KEYS[1] .. ' ' .. ARGV[4])
  return 2
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

/// Deletes the session and tells every instance; returns the version it held (0: none) and
/// how long it had left (ms), for its tombstone.
const CLEAR_SCRIPT: &str = r#"
local version = tonumber(redis.call('HGET', KEYS[1], 'ver') or '0')
local left = redis.call('PTTL', KEYS[1])
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[1], KEYS[1] .. ' 0')
return {version, left}
"#;

/// Raises the high-water mark at KEYS[1] to ARGV[1] (it never goes down) and keeps it for at
/// least ARGV[2] ms (FL-04).
const HIGH_WATER_SCRIPT: &str = r#"
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
elseif redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
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
/// - **High-water mark (FL-04)**: the highest version written for each session is also kept
///   under a key of its own hash tag (`<prefix>:{<h'>}:uthwm`: on a Cluster, usually another
///   shard), raised after each write and left behind as a tombstone when the session is cleared.
///   An instance that reads a session from Redis reads the mark too, so even a fresh one
///   refuses (and deletes) an entry older than the fleet wrote — an entry rolled back by a
///   stale replica promoted on a Cluster while the mark's shard kept it, by restoring some keys
///   from a backup, or by someone who put an old entry back — instead of handing out an access
///   token already replaced and presenting a spent refresh token. **Limits**: on one node or
///   with Sentinel, the mark shares the entry's failure domain, so a failover that loses a
///   write loses its mark too (there [`crate::RedisOptions::replica_ack`] keeps the write), and
///   restoring a whole backup restores the marks with the entries; and whoever can write to
///   Redis can lower a mark as easily as roll back an entry.
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
    /// The sessions held here, by Redis key.
    tier: tokenkeeper::user::SessionTier,
    subscriber: OnceLock<SubscriberHandle>,
    /// Whether the invalidation subscriber has connected (at least once).
    listening: std::sync::atomic::AtomicBool,
    /// Writes whose outcome is not known yet, by Redis key: written again until Redis says
    /// where they stand (FL-03). They may hold the only copy of a rotated refresh token.
    pending: std::sync::Mutex<std::collections::HashMap<String, Pending>>,
}

/// A session write to make again.
#[derive(Clone)]
struct Pending {
    session: SessionKey,
    tokens: Arc<UserTokens>,
    /// The version the write expected (`""`: none).
    expected: String,
    /// Its version.
    next: u64,
    /// The sealed value.
    value: Vec<u8>,
    ttl_ms: u64,
}

/// How long a pending write is tried again before it is given up (and logged).
const PENDING_FOR: Duration = Duration::from_secs(600);

struct SubscriberHandle(tokio::task::JoinHandle<()>);

impl Drop for SubscriberHandle {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Local {
    fn pending(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Pending>> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn new(capacity: usize) -> Self {
        Self {
            tier: tokenkeeper::user::SessionTier::new(capacity),
            subscriber: OnceLock::new(),
            listening: std::sync::atomic::AtomicBool::new(false),
            pending: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// The subscriber (re)connected: what is held may have missed messages.
    fn subscribed(&self) {
        self.tier.clear();
        self.listening
            .store(true, std::sync::atomic::Ordering::Release);
    }
}

impl fmt::Debug for RedisUserTokenStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisUserTokenStore")
            .field("cache", &self.cache)
            .field("session_ttl", &self.session_ttl)
            .field("local_sessions", &self.local.tier.len())
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

    /// The key of the session's high-water mark: a hash tag of its own (FL-04).
    fn high_water_key(&self, session: &SessionKey) -> String {
        self.cache.inner.redis_key(
            &CacheKey::from_canonical(format!("ut-hwm&session={}", session.as_str())),
            "uthwm",
        )
    }

    /// The session's high-water mark (`None`: none, or Redis did not say).
    async fn high_water(&self, session: &SessionKey) -> Option<u64> {
        let key = self.high_water_key(session);
        self.cache
            .inner
            .call(|mut c| async move {
                redis::cmd("GET")
                    .arg(&key)
                    .query_async::<Option<u64>>(&mut c)
                    .await
            })
            .await
            .ok()
            .flatten()
    }

    /// Raises the session's high-water mark to `version`, kept for at least `ttl_ms`. A failure
    /// only weakens the check: logged, not returned.
    async fn raise_high_water(&self, session: &SessionKey, version: u64, ttl_ms: u64) {
        let key = self.high_water_key(session);
        let raised = self
            .cache
            .inner
            .call(|mut c| async move {
                redis::Script::new(HIGH_WATER_SCRIPT)
                    .key(&key)
                    .arg(version)
                    .arg(ttl_ms.max(1))
                    .invoke_async::<i64>(&mut c)
                    .await
            })
            .await;
        if let Err(error) = raised {
            tracing::debug!(%error, "a session's high-water mark was not raised");
        }
    }

    /// What the encryption binds to a sealed session: its Redis key and version (SEC-11).
    fn aad(key: &str, version: u64) -> Vec<u8> {
        format!("{key}#{version}").into_bytes()
    }

    /// Starts the invalidation subscriber (once, inside a runtime).
    fn subscribe(&self) {
        if self.local.tier.capacity() == 0 {
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
        if self.local.pending().contains_key(&key) {
            // A write of ours is not settled: settle it first; while Redis cannot say, it is
            // the newest state this instance knows.
            if !self.repair(&key).await.unwrap_or(false) {
                if let Some(pending) = self.local.pending().get(&key) {
                    return Ok(Some(Versioned {
                        value: pending.tokens.clone(),
                        version: pending.next,
                    }));
                }
            }
        }
        let (read, high_water) =
            futures_util::future::join(self.read_raw(&key), self.high_water(session)).await;
        let mut read = read?;
        if let Some(mark) = high_water {
            // What the fleet wrote last, even if this instance never saw it (FL-04).
            self.local.tier.saw(&Arc::from(key.as_str()), mark);
        }
        if let (Some(version), Some(seen)) = (read.0, self.local.tier.seen(&key)) {
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
            self.local.tier.forget(session, &key);
            return Ok(None);
        };
        let decoded = match self.local.tier.seen(&key) {
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
                if self.local.tier.capacity() > 0 {
                    self.local.tier.put(session, &redis_key, versioned.clone());
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
                tracing::warn!(key = %key, "a stored session does not open, or is older than the newest version written (rolled back); deleting it");
                self.local.tier.forget(session, &key);
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
    /// Runs `script` (`STORE_SCRIPT` or `REPAIR_SCRIPT`) for `write` at `key`, on the
    /// connection of durable writes: its answer, and whether the replicas asked for have it.
    async fn write(
        &self,
        key: &str,
        write: &Pending,
        script: &'static str,
    ) -> Result<(i64, bool), CacheError> {
        let channel = self.channel();
        self.cache
            .inner
            .call_durable(key, |mut c| {
                let (key, write, channel) = (key.to_owned(), write.clone(), channel.clone());
                async move {
                    redis::Script::new(script)
                        .key(&key)
                        .arg(&write.expected)
                        .arg(&write.value)
                        .arg(write.ttl_ms)
                        .arg(write.next)
                        .arg(channel)
                        .invoke_async(&mut c)
                        .await
                }
            })
            .await
    }

    /// Whether writes wait for replicas (`RedisOptions::replica_ack`).
    fn waits_for_replicas(&self) -> bool {
        self.cache.inner.replica_ack.is_some()
    }

    /// Keeps `tokens` at `version` in the in-memory tier.
    fn keep(&self, session: &SessionKey, key: &str, tokens: Arc<UserTokens>, version: u64) {
        if self.local.tier.capacity() > 0 {
            let redis_key: Arc<str> = Arc::from(key);
            self.local.tier.put(
                session,
                &redis_key,
                Versioned {
                    value: tokens,
                    version,
                },
            );
        }
    }

    /// Remembers `write` and writes it again in the background until it is settled
    /// ([`RedisUserTokenStore::repair`]), for at most [`PENDING_FOR`].
    fn settle_later(&self, key: String, write: Pending) {
        {
            let mut pending = self.local.pending();
            if pending.get(&key).is_some_and(|p| p.next >= write.next) {
                return;
            }
            pending.insert(key.clone(), write);
        }
        let store = self.clone();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let mut delay = Duration::from_millis(50);
            loop {
                tokio::time::sleep(delay).await;
                if !store.local.pending().contains_key(&key) {
                    return;
                }
                if store.repair(&key).await.unwrap_or(false) {
                    return;
                }
                if started.elapsed() > PENDING_FOR {
                    if let Some(lost) = store.local.pending().remove(&key) {
                        tracing::error!(session = %lost.session.log_id(), "a session write could not be settled in Redis for 10 minutes; given up (the session's newest tokens may be lost)");
                    }
                    return;
                }
                // Soon after a failover; less often while replicas stay away.
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        });
    }

    /// Settles the pending write at `key` (see [`REPAIR_SCRIPT`]): `true` once Redis holds it
    /// (acknowledged by the replicas asked for), a newer write, or no session.
    async fn repair(&self, key: &str) -> Result<bool, CacheError> {
        let Some(write) = self.local.pending().get(key).cloned() else {
            return Ok(true);
        };
        let (outcome, acknowledged) = self.write(key, &write, REPAIR_SCRIPT).await?;
        // Written, but on no replica yet: once more later (a failover now would lose it).
        let settled = !matches!(outcome, 1 | 2) || acknowledged || !self.waits_for_replicas();
        if matches!(outcome, 1 | 2) {
            self.raise_high_water(&write.session, write.next, write.ttl_ms)
                .await;
        }
        match outcome {
            2 => {
                tracing::info!(session = %write.session.log_id(), "a session write lost by Redis (a failover) was written again")
            }
            0 => {
                tracing::warn!(session = %write.session.log_id(), "a session write could not be written again: the session was cleared or replaced meanwhile")
            }
            _ => {}
        }
        if settled {
            let mut pending = self.local.pending();
            if pending.get(key).is_some_and(|p| p.next == write.next) {
                pending.remove(key);
            }
        }
        Ok(settled)
    }

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
                local.tier.invalidate(key, version.parse().unwrap_or(0));
            }
            true
        },
    )
    .await;
}

impl UserTokenStore for RedisUserTokenStore {
    #[inline]
    fn get_local(&self, session: &SessionKey) -> Option<Versioned<Arc<UserTokens>>> {
        self.local.tier.get(session)
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
            let now_ms = tokenkeeper::Timestamp::system_now().as_millis();
            let mut next = Versioned::next_after(expected, now_ms);
            if expected.is_none() {
                // A new session goes above any mark (a tombstone) its key left behind.
                if let Some(mark) = self.high_water(session).await {
                    next = next.max(mark + 1);
                }
            }
            let value = codec::encode_session(
                &tokens,
                &Self::aad(&key, next),
                self.cache.inner.encryption(),
            )?;
            // A session outlives neither its TTL nor, when known, its refresh token (and its
            // last access token).
            let ttl_ms = tokens.store_ttl_ms(self.session_ttl, now_ms);
            let write = Pending {
                session: session.clone(),
                tokens: tokens.clone(),
                expected: expected.map(|v| v.to_string()).unwrap_or_default(),
                next,
                value,
                ttl_ms,
            };
            // On the connection of durable writes: with `RedisOptions::replica_ack`, the new
            // tokens are on a replica before anyone uses them (FL-03).
            let attempt = self.write(&key, &write, STORE_SCRIPT).await;
            match attempt {
                Ok((version, _)) => match u64::try_from(version) {
                    Ok(stored) if stored > 0 => {
                        self.keep(session, &key, tokens, stored);
                        self.raise_high_water(session, stored, ttl_ms).await;
                        Ok(StoreOutcome::Stored(stored))
                    }
                    _ => Ok(StoreOutcome::Conflict),
                },
                Err(error) => {
                    // Applied or not, nobody can say now (a failover, a timeout): the tokens
                    // may hold the only copy of a rotated refresh token. Kept here and written
                    // again until Redis says where the session stands.
                    tracing::warn!(session = %session.log_id(), %error, "a session write failed; it is kept and written again when Redis answers");
                    self.keep(session, &key, tokens, next);
                    self.settle_later(key, write);
                    Ok(StoreOutcome::Stored(next))
                }
            }
        })
    }

    fn clear<'a>(&'a self, session: &'a SessionKey) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(async move {
            let key = self.key(session);
            self.local.tier.forget(session, &key);
            // A write not settled yet must not bring the session back.
            self.local.pending().remove(&key);
            let channel = self.channel();
            let (version, left): (u64, i64) = self
                .cache
                .inner
                .call(|mut c| async move {
                    redis::Script::new(CLEAR_SCRIPT)
                        .key(&key)
                        .arg(channel)
                        .invoke_async(&mut c)
                        .await
                })
                .await?;
            if version > 0 {
                // A tombstone: the entry, put back from a stale copy, is refused (FL-04).
                let ttl = u64::try_from(left).unwrap_or(0).max(60_000);
                self.raise_high_water(session, version + 1, ttl).await;
            }
            Ok(())
        })
    }
}
