//! An in-process L1 over the Redis L2, with invalidations broadcast to every instance.

use std::fmt;
use std::sync::{Arc, Weak};

use futures_util::future::BoxFuture;
use tokenkeeper::{
    AccessToken, CacheError, CacheKey, CachedToken, Clock, InMemoryTokenCache, TokenCache,
    TokioClock,
};

use crate::cache::{fingerprint, RedisTokenCache};

/// The cache for fleets: an in-memory L1 in front of a shared Redis L2.
///
/// - **Hits** come from L1 with no I/O (the same cost as [`InMemoryTokenCache`]).
/// - **Fills** write L2 first, then L1; an L1 miss reads L2 and copies the token into L1. An L1
///   entry carries the token's own expiry, which is also the L2 entry's TTL, so it never outlives
///   the L2 entry by expiry.
/// - **Invalidations** remove the token from both tiers (compare-and-remove) and are published on
///   the Redis channel `<prefix>:invalidate`; every instance subscribed drops its L1 copy of that
///   token.
/// - **Redis down**: L1 keeps serving; misses go to the token endpoint; the outage is logged once
///   and the cache recovers by itself.
///
/// # Trade-off of the broadcast
///
/// Redis pub/sub is fire-and-forget: an instance that is disconnected when a message is sent
/// never receives it. So whenever the subscriber (re)connects it clears its whole L1 (anything
/// may have been missed), and refills from L2 on demand. Between a disconnect and the
/// reconnect, an instance may keep serving a token that another instance invalidated; the API's
/// 401 for that token then invalidates it locally as well (the middleware retries with a new one),
/// so the cost of a missed message is one extra round trip, not a failure. Keyspace
/// notifications or streams would close this window, at the price of Redis configuration
/// (`notify-keyspace-events`) or per-instance consumer state; pub/sub needs neither.
#[derive(Clone)]
pub struct TwoTierTokenCache {
    l1: Arc<InMemoryTokenCache>,
    l2: RedisTokenCache,
    clock: TokioClock,
    /// The invalidation subscriber, started on first use (so `new` needs no runtime).
    subscriber: Arc<std::sync::OnceLock<SubscriberHandle>>,
    /// How many times the subscriber has (re)connected (each time, L1 was cleared).
    subscriptions: Arc<std::sync::atomic::AtomicU64>,
}

struct SubscriberHandle(tokio::task::JoinHandle<()>);

impl Drop for SubscriberHandle {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl fmt::Debug for TwoTierTokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TwoTierTokenCache")
            .field("l1", &self.l1)
            .field("l2", &self.l2)
            .finish_non_exhaustive()
    }
}

impl TwoTierTokenCache {
    /// Puts an in-memory tier in front of `l2`. Needs no runtime: the subscription to
    /// invalidations starts on first use (the first lookup or write, always inside the runtime
    /// that uses the cache), before anything is put in the in-memory tier.
    pub fn new(l2: RedisTokenCache) -> Self {
        Self {
            l1: Arc::new(InMemoryTokenCache::new()),
            l2,
            clock: TokioClock::new(),
            subscriber: Arc::new(std::sync::OnceLock::new()),
            subscriptions: Arc::default(),
        }
    }

    /// Starts following invalidations now, if the first lookup or write has not (it needs a
    /// runtime). Each (re)connect clears the in-memory tier: see
    /// [`TwoTierTokenCache::subscriptions`].
    pub fn start(&self) {
        self.subscribe();
    }

    /// How many times the invalidation subscriber has connected or reconnected. Each time, the
    /// in-memory tier was cleared first (messages may have been missed while disconnected): a
    /// health check can watch it, and a test can wait for the first one before it fills the
    /// tier.
    pub fn subscriptions(&self) -> u64 {
        self.subscriptions
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Starts the invalidation subscriber, once.
    fn subscribe(&self) {
        self.subscriber.get_or_init(|| {
            SubscriberHandle(tokio::spawn(subscribe(
                Arc::downgrade(&self.l1),
                self.l2.clone(),
                self.subscriptions.clone(),
            )))
        });
    }

    /// The Redis tier.
    pub fn l2(&self) -> &RedisTokenCache {
        &self.l2
    }

    /// The in-process tier.
    pub fn l1(&self) -> &InMemoryTokenCache {
        &self.l1
    }

    async fn get_inner(&self, key: &CacheKey) -> Result<Option<Arc<CachedToken>>, CacheError> {
        self.subscribe();
        let local = self.l1.get_sync(key);
        let now = self.clock.now();
        if let Some(token) = &local {
            if token.is_valid_at(now) && !token.needs_refresh_at(now) {
                return Ok(local);
            }
        }
        // Missing, expired or due for refresh here: another instance may have a newer one.
        match self.l2.read(key).await {
            Ok(Some(shared)) if shared.is_valid_at(now) => {
                let newer = local
                    .as_ref()
                    .is_none_or(|l| shared.expires_at() > l.expires_at() || !l.is_valid_at(now));
                if newer {
                    self.l1.put_sync(key, shared.clone());
                    return Ok(Some(shared));
                }
                Ok(local)
            }
            // Redis down: carry on with L1 (the outage is tracked and logged by the L2).
            Ok(_) | Err(_) => Ok(local),
        }
    }

    async fn put_inner(&self, key: &CacheKey, token: Arc<CachedToken>) -> Result<(), CacheError> {
        self.subscribe();
        let _ = self.l2.write(key, &token).await;
        self.l1.put_sync(key, token);
        Ok(())
    }

    async fn remove_inner(
        &self,
        key: &CacheKey,
        access_token: &AccessToken,
    ) -> Result<bool, CacheError> {
        self.subscribe();
        let local = self.l1.remove_if_sync(key, access_token);
        let shared = self.l2.delete_if(key, access_token).await.unwrap_or(false);
        let message = format!("{} {}", fingerprint(access_token), key.as_str());
        let channel = self.l2.inner.channel();
        let _ = self
            .l2
            .inner
            .call(|mut c| async move {
                redis::cmd("PUBLISH")
                    .arg(&channel)
                    .arg(&message)
                    .query_async::<i64>(&mut c)
                    .await
            })
            .await;
        Ok(local || shared)
    }
}

/// Listens for invalidations until the cache is dropped; clears L1 on every (re)connect.
async fn subscribe(
    l1: Weak<InMemoryTokenCache>,
    l2: RedisTokenCache,
    subscriptions: Arc<std::sync::atomic::AtomicU64>,
) {
    let channel = l2.inner.channel();
    let (alive, reset_l1) = (l1.clone(), l1.clone());
    crate::subscription::follow(
        l2,
        channel,
        move || alive.strong_count() > 0,
        move || {
            let alive = reset_l1.upgrade().map(|l1| l1.clear()).is_some();
            subscriptions.fetch_add(1, std::sync::atomic::Ordering::Release);
            alive
        },
        move |payload| {
            let Some(l1) = l1.upgrade() else {
                return false;
            };
            if let Some((fp, key)) = payload.split_once(' ') {
                let key = CacheKey::from_canonical(key);
                if let Some(token) = l1.get_sync(&key) {
                    if fingerprint(token.access_token()) == fp {
                        l1.remove_if_sync(&key, token.access_token());
                    }
                }
            }
            true
        },
    )
    .await;
}

impl TokenCache for TwoTierTokenCache {
    #[inline]
    fn get_local(&self, key: &CacheKey) -> Option<Arc<CachedToken>> {
        self.l1.get_sync(key)
    }

    fn get<'a>(
        &'a self,
        key: &'a CacheKey,
    ) -> BoxFuture<'a, Result<Option<Arc<CachedToken>>, CacheError>> {
        Box::pin(self.get_inner(key))
    }

    fn put<'a>(
        &'a self,
        key: &'a CacheKey,
        token: Arc<CachedToken>,
    ) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(self.put_inner(key, token))
    }

    fn remove_if<'a>(
        &'a self,
        key: &'a CacheKey,
        access_token: &'a AccessToken,
    ) -> BoxFuture<'a, Result<bool, CacheError>> {
        Box::pin(self.remove_inner(key, access_token))
    }
}
