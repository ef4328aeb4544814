//! Token caches.
//!
//! A [`TokenCache`] stores [`CachedToken`]s under [`CacheKey`]s. The default is
//! [`InMemoryTokenCache`]; a Redis cache and a two-tier cache live in `tokenkeeper-redis`.
//!
//! The managers treat the cache as an optimisation, never as a dependency: when a cache call
//! fails, they log a warning, count it, and go on without the cache (CC-13).

mod key;
mod lease;
mod memory;
mod token;

use std::fmt;
use std::sync::Arc;

use futures_util::future::BoxFuture;

pub(crate) use key::KeyWriter;
pub use key::{BuildKeyHasher, CacheKey, KeyHasher};
pub(crate) use lease::{lease_or_settled, LeaseOutcome};
pub use lease::{Lease, LeaseGuard, LeaseOptions};
pub use memory::InMemoryTokenCache;
pub use token::CachedToken;

use crate::error::CacheError;
use crate::secret::AccessToken;

/// A store of cached tokens.
///
/// Implementations must be safe to call from many tasks at once. They need not check expiry: the
/// managers do, with their clock, and treat an expired entry as a miss.
pub trait TokenCache: Send + Sync + fmt::Debug + 'static {
    /// A synchronous lookup in a local (in-process) tier, for the hit path. Return `None` when
    /// there is no local tier or no local entry; the manager then calls [`TokenCache::get`].
    #[inline]
    fn get_local(&self, key: &CacheKey) -> Option<Arc<CachedToken>> {
        let _ = key;
        None
    }

    /// Looks a token up.
    fn get<'a>(
        &'a self,
        key: &'a CacheKey,
    ) -> BoxFuture<'a, Result<Option<Arc<CachedToken>>, CacheError>>;

    /// Stores a token, replacing any other under the same key.
    fn put<'a>(
        &'a self,
        key: &'a CacheKey,
        token: Arc<CachedToken>,
    ) -> BoxFuture<'a, Result<(), CacheError>>;

    /// Removes the entry under `key` only if it holds `access_token` (compare-and-remove), so
    /// that a stale rejection never removes a newer token. Returns whether it removed one.
    fn remove_if<'a>(
        &'a self,
        key: &'a CacheKey,
        access_token: &'a AccessToken,
    ) -> BoxFuture<'a, Result<bool, CacheError>>;
}

/// A shared cache.
pub type SharedCache = Arc<dyn TokenCache>;
