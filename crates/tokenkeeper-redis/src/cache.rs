//! The Redis token cache (the shared L2).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use futures_util::future::BoxFuture;
use sha2::{Digest, Sha256};
use tokenkeeper::{AccessToken, CacheError, CacheKey, CachedToken, Clock, TokenCache, TokioClock};

use crate::codec::{self, Unreadable};
use crate::outage::Outage;
use crate::topology::{Connector, RedisConnection, RedisTopology};
use tokenkeeper::Encryption;

/// Settings of the Redis backends.
///
/// Encryption at rest is not optional by accident (SEC-15): a cache without
/// [`RedisOptions::encryption`] is refused by [`RedisTokenCache::new`] unless
/// [`RedisOptions::plaintext`] says so. Start from [`RedisOptions::encrypted`] or, knowingly,
/// [`RedisOptions::plaintext`].
///
/// ```
/// use tokenkeeper_redis::{Encryption, RedisOptions, RedisTokenCache};
/// let sealed = RedisOptions::encrypted(Encryption::new("k1", &[7; 32])?);
/// assert!(RedisTokenCache::new("redis://127.0.0.1:6379", sealed).is_ok());
/// // Neither a key nor an explicit choice of plaintext: refused.
/// let err = RedisTokenCache::new("redis://127.0.0.1:6379", RedisOptions::default()).unwrap_err();
/// assert!(err.to_string().contains("encryption"));
/// # Ok::<(), tokenkeeper::CacheError>(())
/// ```
#[derive(Debug)]
pub struct RedisOptions {
    /// Namespace of every key and channel. Default `tokenkeeper`.
    pub prefix: String,
    /// Time allowed for each Redis call. Default 250 ms.
    pub timeout: Duration,
    /// After a failed call, how long Redis is left alone before the next attempt. Default 1 s.
    /// On a Cluster or Sentinel, where a failover takes a second or two and one dead shard is
    /// not a dead Redis, 100 ms keeps failed calls inside the failover window (what the BFF
    /// uses there; FL-06).
    pub retry_pause: Duration,
    /// Encryption at rest (AES-256-GCM). Without it, `plaintext` must be `true`.
    pub encryption: Option<Encryption>,
    /// Stores tokens, refresh tokens and DPoP session state in the clear: Redis is then as
    /// sensitive as the tokens. Only with this set does a cache without `encryption` start; it
    /// then logs a warning and sets the gauge `tokenkeeper_redis_plaintext` to 1 (feature
    /// `metrics`). Default `false`.
    pub plaintext: bool,
    /// After writing a session's rotated tokens, wait until this many replicas have them
    /// (`WAIT`) before they are used (FL-03): a failover right after a rotation then cannot
    /// bring back a spent refresh token. Default `None` (do not wait); a Cluster or Sentinel
    /// deployment with replicas should set it (see [`ReplicaAck`]).
    pub replica_ack: Option<ReplicaAck>,
}

/// How many replicas must have a rotated session before its tokens are used, and how long to
/// wait for them (FL-03).
///
/// If fewer acknowledge within `timeout`, the tokens are used all the same (they are the only
/// valid ones: the provider has spent the old refresh token), a warning is logged (at most one
/// per 10 s) and `tokenkeeper_redis_replica_ack_missed_total` counts it (feature `metrics`):
/// the session is then lost only if the master fails before it replicates. For the next 5 s,
/// writes are not waited for: with no replica connected (the new master right after a
/// failover, before the old one comes back as its replica) every write would otherwise wait
/// the whole `timeout`, one after the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaAck {
    /// Replicas that must acknowledge (`WAIT <replicas> <timeout>`). Default 1.
    pub replicas: u32,
    /// How long to wait for them. Default 100 ms.
    pub timeout: Duration,
}

impl Default for ReplicaAck {
    fn default() -> Self {
        Self {
            replicas: 1,
            timeout: Duration::from_millis(100),
        }
    }
}

impl RedisOptions {
    /// Options that seal every entry with `encryption`.
    pub fn encrypted(encryption: Encryption) -> Self {
        Self {
            encryption: Some(encryption),
            ..Self::default()
        }
    }

    /// Options that store everything in the clear, said out loud (SEC-15): for development,
    /// or a Redis that is trusted like the tokens themselves.
    pub fn plaintext() -> Self {
        Self {
            plaintext: true,
            ..Self::default()
        }
    }

    /// The same options with the key prefix `prefix`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The same options, waiting for `ack` after each rotation (FL-03).
    pub fn replica_ack(mut self, ack: ReplicaAck) -> Self {
        self.replica_ack = Some(ack);
        self
    }
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            prefix: "tokenkeeper".into(),
            timeout: Duration::from_millis(250),
            retry_pause: Duration::from_secs(1),
            encryption: None,
            plaintext: false,
            replica_ack: None,
        }
    }
}

/// Tokens in Redis, shared by every instance that uses the same Redis and prefix.
///
/// - **Keys**: `<prefix>:{<h>}:tok` where `<h>` is a hash of the [`CacheKey`]; the braces are a
///   Redis Cluster hash tag, so a token and its lease (`<prefix>:{<h>}:lease`) sit in one slot.
///   Each key is a hash: `v` (the entry) and `fp` (a SHA-256 fingerprint of the access token, for
///   compare-and-delete).
/// - **TTL**: each entry expires with the token (`PEXPIREAT` at its `expires_at`).
/// - **Format**: versioned (`tk1:`/`tk1e:`); an entry of another version is a miss, not an
///   error. With [`Encryption`], entries are sealed with AES-256-GCM, bound to their Redis key;
///   one that does not open is a miss and is deleted.
/// - **No rollback (SEC-11)**: the cache remembers the newest token (by when it was issued,
///   which is sealed with it) seen under each key; an older one found there — put back by
///   someone who can write to Redis — is a miss and is deleted.
/// - **Connection**: to one node, a Redis Cluster or a master known to Sentinel
///   ([`RedisTopology`]); made on first use and re-made automatically. Every call has a timeout. While Redis is down, calls fail fast for
///   [`RedisOptions::retry_pause`] after each failure, and each outage logs one warning.
///
/// Alone it is a shared cache with no in-process tier, so every hit is a round trip and, while
/// Redis is down, every call fetches a token; [`crate::TwoTierTokenCache`] puts an in-memory tier
/// in front and is what a fleet should use.
#[derive(Clone)]
pub struct RedisTokenCache {
    pub(crate) inner: Arc<RedisInner>,
}

pub(crate) struct RedisInner {
    pub(crate) connector: Connector,
    pub(crate) prefix: String,
    pub(crate) timeout: Duration,
    pub(crate) replica_ack: Option<ReplicaAck>,
    /// When the last warning about missing replica acknowledgements was logged (ms).
    ack_warned: std::sync::atomic::AtomicU64,
    /// Until when writes are not waited for (ms): the replicas did not acknowledge the last one.
    ack_skipped_until: std::sync::atomic::AtomicU64,
    encryption: Option<Encryption>,
    pub(crate) outage: Outage,
    clock: TokioClock,
    /// The newest `issued_at` seen per Redis key (SEC-11): an older token put back by someone
    /// who can write to Redis is refused. Bounded: cleared when it holds 100,000 keys.
    seen: papaya::HashMap<String, u64>,
}

impl fmt::Debug for RedisTokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTokenCache")
            .field("prefix", &self.inner.prefix)
            .field("topology", &self.inner.connector.kind())
            .field("encrypted", &self.inner.encryption.is_some())
            .field("down", &self.inner.outage.is_down())
            .finish_non_exhaustive()
    }
}

/// After the replicas failed to acknowledge a write, how long writes are not waited for (ms).
const ACK_PAUSE_MS: u64 = 5_000;

const PUT_SCRIPT: &str = r#"
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'fp', ARGV[2])
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
return 1
"#;

const REMOVE_IF_SCRIPT: &str = r#"
if redis.call('HGET', KEYS[1], 'fp') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// Sets `tokenkeeper_redis_plaintext{prefix}` to 1: this process stores tokens in Redis in the
/// clear (SEC-15), visible on a dashboard and not only in a start-up log line.
#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
fn plaintext_gauge(prefix: &str) {
    #[cfg(feature = "metrics")]
    metrics::gauge!("tokenkeeper_redis_plaintext", "prefix" => prefix.to_owned()).set(1.0);
}

/// The fingerprint stored next to an entry, for compare-and-delete.
pub(crate) fn fingerprint(token: &AccessToken) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(token.secret().as_bytes()))
}

impl RedisTokenCache {
    /// A cache on the Redis node at `url` (`redis://host:port/db`). Nothing is connected until
    /// first use, so an application starts even while Redis is down.
    pub fn new(url: &str, options: RedisOptions) -> Result<Self, CacheError> {
        Self::connect(RedisTopology::node(url), options)
    }

    /// A cache on a Redis node, a Redis Cluster or a master known to Sentinel
    /// ([`RedisTopology`]). Nothing is connected until first use.
    ///
    /// ```
    /// use tokenkeeper_redis::{Encryption, RedisOptions, RedisTokenCache, RedisTopology, ReplicaAck};
    /// let cluster = RedisTopology::cluster(["redis://10.0.0.1:6379", "redis://10.0.0.2:6379"]);
    /// let options = RedisOptions::encrypted(Encryption::new("k1", &[7; 32])?)
    ///     .replica_ack(ReplicaAck::default());
    /// let redis = RedisTokenCache::connect(cluster, options)?;
    /// # let _ = redis; Ok::<(), tokenkeeper::CacheError>(())
    /// ```
    pub fn connect(
        topology: impl Into<RedisTopology>,
        options: RedisOptions,
    ) -> Result<Self, CacheError> {
        let durable_timeout =
            options.timeout + options.replica_ack.map_or(Duration::ZERO, |a| a.timeout);
        let connector = Connector::new(topology.into(), options.timeout, durable_timeout)?;
        if options.prefix.is_empty() || options.prefix.contains(['{', '}']) {
            return Err(CacheError::new(
                "the prefix must be non-empty and without braces",
            ));
        }
        match (&options.encryption, options.plaintext) {
            (None, false) => {
                return Err(CacheError::new(
                    "no encryption key: Redis would hold tokens in the clear; set RedisOptions::encryption, or RedisOptions::plaintext = true to store them in plaintext knowingly",
                ))
            }
            (Some(_), true) => {
                return Err(CacheError::new(
                    "RedisOptions sets both an encryption key and plaintext = true: choose one",
                ))
            }
            (None, true) => {
                tracing::warn!(prefix = %options.prefix, "Redis stores tokens in plaintext (RedisOptions::plaintext): Redis is as sensitive as the tokens");
                plaintext_gauge(&options.prefix);
            }
            (Some(_), false) => {}
        }
        Ok(Self {
            inner: Arc::new(RedisInner {
                connector,
                prefix: options.prefix,
                timeout: options.timeout,
                replica_ack: options.replica_ack,
                ack_warned: std::sync::atomic::AtomicU64::new(0),
                ack_skipped_until: std::sync::atomic::AtomicU64::new(0),
                encryption: options.encryption,
                outage: Outage::new(options.retry_pause),
                clock: TokioClock::new(),
                seen: papaya::HashMap::new(),
            }),
        })
    }

    /// How many outages have been seen (each counted once, however long).
    pub fn outages(&self) -> u64 {
        self.inner.outage.count()
    }

    /// Whether Redis is currently considered down.
    pub fn is_down(&self) -> bool {
        self.inner.outage.is_down()
    }

    /// The Redis key holding the token for `key`.
    pub fn redis_key(&self, key: &CacheKey) -> String {
        self.inner.redis_key(key, "tok")
    }

    /// The kind of Redis this cache is on: `node`, `cluster` or `sentinel`.
    pub fn topology(&self) -> &'static str {
        self.inner.connector.kind()
    }

    /// Runs `f` on this cache's connection, with its timeout and outage tracking: for stores
    /// of sibling crates that share the connection (the BFF's sessions). On a cluster, each
    /// command goes to the node of its keys: the keys of one script or transaction must share
    /// a hash tag (see [`RedisTokenCache::key_for`]).
    pub async fn call<T, F, Fut>(&self, f: F) -> Result<T, CacheError>
    where
        F: FnOnce(RedisConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        self.inner.call(f).await
    }

    /// Records `redis_key` for `ttl` unless it is there already (`SET NX PX`, atomic across
    /// instances): `true` the first time. For one-use markers (login callbacks, back-channel
    /// logout tokens' `jti`s).
    pub async fn set_once(
        &self,
        redis_key: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, CacheError> {
        let ttl = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let set: Option<String> = self
            .inner
            .call(|mut c| async move {
                redis::cmd("SET")
                    .arg(redis_key)
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(set.is_some())
    }

    /// A key in this cache's namespace for `name` (hashed, so it holds nothing of `name`):
    /// `<prefix>:{<hash>}:<kind>`.
    pub fn key_for(&self, name: &str, kind: &str) -> String {
        self.inner
            .redis_key(&CacheKey::from_canonical(format!("ext&n={name}")), kind)
    }

    /// The encryption at rest, when configured.
    pub fn encryption(&self) -> Option<&tokenkeeper::Encryption> {
        self.inner.encryption()
    }

    /// The stored entry (`v`) at `redis_key`.
    async fn read_entry(&self, redis_key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        self.inner
            .call(|mut c| async move {
                redis::cmd("HGET")
                    .arg(redis_key)
                    .arg("v")
                    .query_async(&mut c)
                    .await
            })
            .await
    }

    /// Reads a token from Redis (the L2 read of the two-tier cache).
    pub(crate) async fn read(
        &self,
        key: &CacheKey,
    ) -> Result<Option<Arc<CachedToken>>, CacheError> {
        let redis_key = self.redis_key(key);
        let Some(value) = self.read_entry(&redis_key).await? else {
            return Ok(None);
        };
        let mut decoded =
            codec::decode(&value, redis_key.as_bytes(), self.inner.encryption.as_ref());
        if matches!(&decoded, Ok(token) if self.inner.is_older_than_seen(&redis_key, token)) {
            // This read may have crossed our own newer write: read once more before calling it
            // a rollback.
            let Some(again) = self.read_entry(&redis_key).await? else {
                return Ok(None);
            };
            decoded = codec::decode(&again, redis_key.as_bytes(), self.inner.encryption.as_ref());
        }
        match decoded {
            Ok(token) if self.inner.is_older_than_seen(&redis_key, &token) => {
                // Sealed, so genuine — but older than a token already seen under this key: put
                // back by someone who can write to Redis (SEC-11). Remove exactly that entry.
                tracing::warn!(key = %redis_key, "a cached token is older than one seen before; deleting it");
                let _ = self.delete_if(key, token.access_token()).await;
                Ok(None)
            }
            Ok(token) => {
                self.inner.saw(&redis_key, &token);
                Ok(Some(token))
            }
            Err(Unreadable::OtherVersion) => Ok(None),
            Err(Unreadable::Damaged) => {
                tracing::warn!(key = %redis_key, "a cached token does not decrypt or parse; deleting it");
                let _ = self
                    .inner
                    .call(|mut c| {
                        let redis_key = redis_key.clone();
                        async move {
                            redis::cmd("DEL")
                                .arg(&redis_key)
                                .query_async::<i64>(&mut c)
                                .await
                        }
                    })
                    .await;
                Ok(None)
            }
        }
    }

    pub(crate) async fn write(
        &self,
        key: &CacheKey,
        token: &CachedToken,
    ) -> Result<(), CacheError> {
        let now = self.inner.clock.now();
        if !token.is_valid_at(now) {
            return Ok(());
        }
        let redis_key = self.redis_key(key);
        self.inner.saw(&redis_key, token);
        let value = codec::encode(token, redis_key.as_bytes(), self.inner.encryption.as_ref())?;
        let fp = fingerprint(token.access_token());
        let expire_at = token.expires_at().as_millis();
        self.inner
            .call(|mut c| {
                let (redis_key, value, fp) = (redis_key.clone(), value.clone(), fp.clone());
                async move {
                    redis::Script::new(PUT_SCRIPT)
                        .key(&redis_key)
                        .arg(value)
                        .arg(fp)
                        .arg(expire_at)
                        .invoke_async::<i64>(&mut c)
                        .await
                }
            })
            .await
            .map(|_| ())
    }

    pub(crate) async fn delete_if(
        &self,
        key: &CacheKey,
        access_token: &AccessToken,
    ) -> Result<bool, CacheError> {
        let redis_key = self.redis_key(key);
        let fp = fingerprint(access_token);
        let removed: i64 = self
            .inner
            .call(|mut c| {
                let (redis_key, fp) = (redis_key.clone(), fp.clone());
                async move {
                    redis::Script::new(REMOVE_IF_SCRIPT)
                        .key(&redis_key)
                        .arg(fp)
                        .invoke_async(&mut c)
                        .await
                }
            })
            .await?;
        Ok(removed > 0)
    }
}

impl RedisInner {
    /// Remembers `token` as the newest seen under `redis_key`, if it is.
    fn saw(&self, redis_key: &str, token: &CachedToken) {
        if self.seen.len() >= 100_000 {
            self.seen.pin().clear();
        }
        let issued = token.issued_at().as_millis();
        self.seen
            .pin()
            .update_or_insert(redis_key.to_owned(), |seen| (*seen).max(issued), issued);
    }

    /// Whether a newer token than `token` was seen under `redis_key`.
    fn is_older_than_seen(&self, redis_key: &str, token: &CachedToken) -> bool {
        self.seen
            .pin()
            .get(redis_key)
            .is_some_and(|seen| *seen > token.issued_at().as_millis())
    }

    pub(crate) fn encryption(&self) -> Option<&Encryption> {
        self.encryption.as_ref()
    }

    pub(crate) fn redis_key(&self, key: &CacheKey, kind: &str) -> String {
        let digest = Sha256::digest(key.as_str().as_bytes());
        let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..16]);
        format!("{}:{{{tag}}}:{kind}", self.prefix)
    }

    pub(crate) fn channel(&self) -> String {
        format!("{}:invalidate", self.prefix)
    }

    /// `SET key value PX ttl` (at least 1 ms).
    pub(crate) async fn set_px(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<(), CacheError> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        self.call(|mut c| async move {
            redis::cmd("SET")
                .arg(key)
                .arg(value)
                .arg("PX")
                .arg(ttl_ms)
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    /// Runs one Redis call with the timeout and outage tracking.
    pub(crate) async fn call<T, F, Fut>(&self, f: F) -> Result<T, CacheError>
    where
        F: FnOnce(RedisConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        self.call_on(false, f).await
    }

    /// Runs `f` on the connection of durable writes, then, when [`RedisOptions::replica_ack`]
    /// asks, waits until that many replicas have what it wrote to `key` (FL-03). The value and
    /// whether the replicas acknowledged it (`true` when none were asked for); too few in time
    /// is also logged and counted.
    pub(crate) async fn call_durable<T, F, Fut>(
        &self,
        key: &str,
        f: F,
    ) -> Result<(T, bool), CacheError>
    where
        F: FnOnce(RedisConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let Some(ack) = self.replica_ack else {
            return self.call(f).await.map(|value| (value, true));
        };
        let now = self.clock.now().as_millis();
        if now
            < self
                .ack_skipped_until
                .load(std::sync::atomic::Ordering::Relaxed)
        {
            // The replicas did not answer a moment ago (none connected, after a failover, say):
            // waiting for them again would only hold every write up.
            return self.call(f).await.map(|value| (value, false));
        }
        let (value, acknowledged) = self
            .call_on(true, |mut c| async move {
                let value = f(c.clone()).await?;
                // Not bounded by the call's timeout alone: `WAIT` is given its own.
                let acknowledged = c.wait_for_replicas(key, ack.replicas, ack.timeout).await;
                Ok((value, acknowledged))
            })
            .await?;
        // One warning per 10 s at most: replicas away for long would flood the log.
        let warn = || {
            let now = self.clock.now().as_millis();
            let last = self.ack_warned.load(std::sync::atomic::Ordering::Relaxed);
            now.saturating_sub(last) >= 10_000
                && self
                    .ack_warned
                    .compare_exchange(
                        last,
                        now,
                        std::sync::atomic::Ordering::Relaxed,
                        std::sync::atomic::Ordering::Relaxed,
                    )
                    .is_ok()
        };
        let acknowledged = match acknowledged {
            Ok(n) if n >= i64::from(ack.replicas) => true,
            Ok(n) if !warn() => {
                let _ = n;
                false
            }
            Err(_) if !warn() => false,
            Ok(n) => {
                tracing::warn!(
                    acknowledged = n,
                    wanted = ack.replicas,
                    "a session write reached fewer replicas than asked within the replica_ack timeout; writes are not waited for during the next 5 s"
                );
                false
            }
            Err(e) => {
                tracing::warn!(error = %e.category(), "WAIT for replicas failed after a session write; writes are not waited for during the next 5 s");
                false
            }
        };
        if !acknowledged {
            #[cfg(feature = "metrics")]
            metrics::counter!("tokenkeeper_redis_replica_ack_missed_total").increment(1);
            self.ack_skipped_until.store(
                self.clock.now().as_millis() + ACK_PAUSE_MS,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        Ok((value, acknowledged))
    }

    async fn call_on<T, F, Fut>(&self, durable: bool, f: F) -> Result<T, CacheError>
    where
        F: FnOnce(RedisConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        if !self.outage.should_try() {
            return Err(CacheError::new(
                "Redis is down (pausing before the next attempt)",
            ));
        }
        let limit = match (durable, self.replica_ack) {
            (true, Some(ack)) => self.timeout + ack.timeout,
            _ => self.timeout,
        };
        let result = tokio::time::timeout(limit, async {
            let conn = if durable {
                self.connector.durable().await?
            } else {
                self.connector.main().await?
            };
            f(conn).await
        })
        .await;
        match result {
            Ok(Ok(value)) => {
                self.outage.succeeded();
                Ok(value)
            }
            // The connection's own timeouts fire as errors: they are timeouts all the same.
            Ok(Err(e)) if !e.is_timeout() => {
                self.connector.failed(Some(&e));
                let message = format!("Redis error: {}", e.category());
                self.outage.failed(&message);
                Err(CacheError::new(message))
            }
            Ok(Err(_)) | Err(_) => {
                self.connector.failed(None);
                let message = format!("Redis did not answer within {:?} (timeout)", self.timeout);
                self.outage.failed(&message);
                Err(CacheError::new(message))
            }
        }
    }
}

impl TokenCache for RedisTokenCache {
    fn get<'a>(
        &'a self,
        key: &'a CacheKey,
    ) -> BoxFuture<'a, Result<Option<Arc<CachedToken>>, CacheError>> {
        Box::pin(self.read(key))
    }

    fn put<'a>(
        &'a self,
        key: &'a CacheKey,
        token: Arc<CachedToken>,
    ) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(async move { self.write(key, &token).await })
    }

    fn remove_if<'a>(
        &'a self,
        key: &'a CacheKey,
        access_token: &'a AccessToken,
    ) -> BoxFuture<'a, Result<bool, CacheError>> {
        Box::pin(self.delete_if(key, access_token))
    }
}
