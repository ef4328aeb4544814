//! Distributed leases: one fill or refresh per key across instances.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::CacheKey;
use crate::error::CacheError;

/// A lock on a cache key shared by several instances (a Redis `SET NX PX` in
/// `tokenkeeper-redis`), so that only one of them fetches a token while the others wait for it
/// and then read it from the shared cache.
///
/// The managers use it like this (see [`LeaseOptions`]):
///
/// 1. try to take the lease; if another instance holds it, re-read the cache every `poll` and
///    return the token as soon as the holder has stored it;
/// 2. once the lease is taken, re-read the cache (the previous holder may just have stored a
///    token) and fetch only if there is still nothing good;
/// 3. store the token, then release the lease;
/// 4. if the lease cannot be had within `wait` (a holder that died, or the backend is down),
///    fetch locally anyway: availability beats strict once-only, and a dead holder's lease
///    expires after its `ttl`.
pub trait Lease: Send + Sync + fmt::Debug + 'static {
    /// Tries once to take the lease on `key` for `ttl`. `Ok(None)`: another owner holds it.
    /// The implementation keeps the lease alive (renews it) until the guard is released.
    fn try_acquire<'a>(
        &'a self,
        key: &'a CacheKey,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<LeaseGuard>, CacheError>>;
}

/// A held lease. [`LeaseGuard::release`] gives it back; dropping the guard releases it in the
/// background.
#[must_use = "a lease is released when its guard is dropped"]
pub struct LeaseGuard {
    release: Option<BoxFuture<'static, ()>>,
}

impl fmt::Debug for LeaseGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseGuard")
            .field("held", &self.release.is_some())
            .finish()
    }
}

impl LeaseGuard {
    /// A guard whose release runs `release` (stop renewing, compare-and-delete).
    pub fn new(release: impl Future<Output = ()> + Send + 'static) -> Self {
        Self {
            release: Some(Box::pin(release)),
        }
    }

    /// Releases the lease now.
    pub async fn release(mut self) {
        if let Some(release) = self.release.take() {
            release.await;
        }
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(release);
            }
        }
    }
}

/// How the managers use a [`Lease`].
#[derive(Debug, Clone, Copy)]
pub struct LeaseOptions {
    /// How long a lease lives unless renewed (it is renewed while the fetch runs). Default 10 s.
    pub ttl: Duration,
    /// How long to wait for another holder before fetching locally. Default 5 s.
    pub wait: Duration,
    /// How often a waiter re-reads the cache and retries the lease. Default 25 ms.
    pub poll: Duration,
}

impl Default for LeaseOptions {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(10),
            wait: Duration::from_secs(5),
            poll: Duration::from_millis(25),
        }
    }
}

/// What [`lease_or_settled`] found.
pub(crate) enum LeaseOutcome<T> {
    /// The lease is held: do the work, then release it.
    Held(LeaseGuard),
    /// Another instance did the work: here is its result.
    Settled(T),
    /// No lease (the backend failed, or the wait ran out): do the work without it.
    Unavailable,
}

/// The waiting protocol shared by the managers (see [`Lease`]): take the lease, or poll
/// `settled` (a re-read of the shared store) until the holder's result shows up; re-read once
/// more after taking the lease; give up after `options.wait`.
pub(crate) async fn lease_or_settled<T, F, Fut>(
    lease: &dyn Lease,
    options: &LeaseOptions,
    key: &CacheKey,
    mut settled: F,
) -> LeaseOutcome<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + options.wait;
    loop {
        match lease.try_acquire(key, options.ttl).await {
            Ok(Some(guard)) => {
                // The previous holder may have stored its result just before releasing.
                if let Some(done) = settled().await {
                    guard.release().await;
                    return LeaseOutcome::Settled(done);
                }
                return LeaseOutcome::Held(guard);
            }
            Ok(None) => {
                if let Some(done) = settled().await {
                    return LeaseOutcome::Settled(done);
                }
                if tokio::time::Instant::now() >= deadline {
                    tracing::warn!(key = %key, "waited too long for another instance's lease; going on without it");
                    return LeaseOutcome::Unavailable;
                }
                let jitter = options.poll.mul_f64(fastrand::f64() * 0.5);
                tokio::time::sleep(options.poll + jitter).await;
            }
            Err(error) => {
                tracing::debug!(key = %key, %error, "lease unavailable; going on without it");
                return LeaseOutcome::Unavailable;
            }
        }
    }
}
