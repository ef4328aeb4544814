//! The in-memory token cache.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::{BuildKeyHasher, CacheKey, CachedToken, TokenCache};
use crate::clock::{Clock, TokioClock};
use crate::error::CacheError;
use crate::secret::AccessToken;

/// The default cache: a concurrent hash map in this process.
///
/// Guarantees:
/// - lookups take no lock (the map is [`papaya`]'s lock-free table) and cost O(1) in the number
///   of entries;
/// - a `put` replaces the previous entry atomically; readers see either the old or the new token;
/// - [`TokenCache::remove_if`] is an atomic compare-and-remove on the access token;
/// - expired entries are swept every 1,024 writes, so distinct per-request parameters cannot make
///   the map grow without bound over time.
///
/// ```
/// use tokenkeeper::InMemoryTokenCache;
/// let cache = InMemoryTokenCache::new();
/// assert_eq!(cache.len(), 0);
/// ```
pub struct InMemoryTokenCache {
    map: papaya::HashMap<CacheKey, Arc<CachedToken>, BuildKeyHasher>,
    clock: Arc<dyn Clock>,
    writes: AtomicUsize,
}

impl fmt::Debug for InMemoryTokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryTokenCache")
            .field("len", &self.map.len())
            .finish_non_exhaustive()
    }
}

impl Default for InMemoryTokenCache {
    fn default() -> Self {
        Self::new()
    }
}

const SWEEP_EVERY: usize = 1024;

impl InMemoryTokenCache {
    /// An empty cache that sweeps expired entries by the default clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(TokioClock::new()))
    }

    /// An empty cache that sweeps expired entries by `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            map: papaya::HashMap::builder()
                .hasher(BuildKeyHasher::default())
                .build(),
            clock,
            writes: AtomicUsize::new(0),
        }
    }

    /// The number of entries (expired ones not yet swept included).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Looks up a token synchronously (the calling thread's handle to it; see
    /// [`CachedToken::local_handle`]).
    #[inline]
    pub fn get_sync(&self, key: &CacheKey) -> Option<Arc<CachedToken>> {
        self.map.pin().get(key).map(CachedToken::local_handle)
    }

    /// Stores a token synchronously.
    pub fn put_sync(&self, key: &CacheKey, token: Arc<CachedToken>) {
        self.map.pin().insert(key.clone(), token);
        if self.writes.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep();
        }
    }

    /// Removes the entry under `key` if it holds `access_token`.
    pub fn remove_if_sync(&self, key: &CacheKey, access_token: &AccessToken) -> bool {
        matches!(
            self.map
                .pin()
                .remove_if(key, |_, v| v.access_token().ct_eq(access_token)),
            Ok(Some(_))
        )
    }

    /// Removes every entry.
    pub fn clear(&self) {
        self.map.pin().clear();
    }

    /// Removes every expired entry.
    pub fn sweep(&self) {
        let now = self.clock.now();
        self.map.pin().retain(|_, v| v.is_valid_at(now));
    }
}

impl TokenCache for InMemoryTokenCache {
    #[inline]
    fn get_local(&self, key: &CacheKey) -> Option<Arc<CachedToken>> {
        self.get_sync(key)
    }

    fn get<'a>(
        &'a self,
        key: &'a CacheKey,
    ) -> BoxFuture<'a, Result<Option<Arc<CachedToken>>, CacheError>> {
        let value = self.get_sync(key);
        Box::pin(async move { Ok(value) })
    }

    fn put<'a>(
        &'a self,
        key: &'a CacheKey,
        token: Arc<CachedToken>,
    ) -> BoxFuture<'a, Result<(), CacheError>> {
        self.put_sync(key, token);
        Box::pin(async { Ok(()) })
    }

    fn remove_if<'a>(
        &'a self,
        key: &'a CacheKey,
        access_token: &'a AccessToken,
    ) -> BoxFuture<'a, Result<bool, CacheError>> {
        let removed = self.remove_if_sync(key, access_token);
        Box::pin(async move { Ok(removed) })
    }
}
