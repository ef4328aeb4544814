//! Pending logins: what a login keeps between the authorization request and its callback,
//! consumed exactly once.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::clock::{Clock, Timestamp, TokioClock};
use crate::error::CacheError;

/// Keeps pending logins (PKCE verifier, nonce, return URL) until their callback, and hands each
/// out **once**: [`PendingLoginStore::take`] is an atomic get-and-delete, so two callbacks sent
/// at once for one login make one code exchange, in one process or — with a shared store such
/// as `tokenkeeper_redis::RedisPendingLoginStore` — across instances (SEC-02).
///
/// Keys are derived from the login's `state` by the caller; values are opaque bytes (they hold
/// a PKCE verifier: a shared store should seal them). Entries expire after the `ttl` given to
/// [`PendingLoginStore::put`].
pub trait PendingLoginStore: Send + Sync + fmt::Debug + 'static {
    /// Keeps `value` under `key` for `ttl`.
    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), CacheError>>;

    /// Removes and returns the value under `key`, if it is there and has not expired. Of
    /// several concurrent calls for one key, at most one gets the value.
    fn take<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, CacheError>>;
}

/// Pending logins in this process's memory: bounded (default 10,000 entries; when full, the
/// entry closest to expiry goes first), expired entries swept on every write.
///
/// ```
/// use tokenkeeper::user::InMemoryPendingLoginStore;
/// let store = InMemoryPendingLoginStore::new().with_capacity(100);
/// assert_eq!(store.len(), 0);
/// ```
pub struct InMemoryPendingLoginStore {
    entries: Mutex<HashMap<String, (Vec<u8>, Timestamp)>>,
    capacity: usize,
    clock: TokioClock,
}

impl fmt::Debug for InMemoryPendingLoginStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryPendingLoginStore")
            .field("len", &self.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl Default for InMemoryPendingLoginStore {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryPendingLoginStore {
    /// An empty store holding at most 10,000 pending logins.
    pub fn new() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity: 10_000,
            clock: TokioClock::new(),
        }
    }

    /// At most `capacity` pending logins (at least 1).
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// How many pending logins are held (expired ones included until the next write).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Vec<u8>, Timestamp)>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl PendingLoginStore for InMemoryPendingLoginStore {
    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), CacheError>> {
        let now = self.clock.now();
        let mut entries = self.lock();
        entries.retain(|_, (_, expires)| now < *expires);
        while entries.len() >= self.capacity {
            let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, (_, expires))| *expires)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            entries.remove(&oldest);
        }
        entries.insert(key.to_owned(), (value, now.saturating_add(ttl)));
        Box::pin(async { Ok(()) })
    }

    fn take<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, CacheError>> {
        let now = self.clock.now();
        let value = self
            .lock()
            .remove(key)
            .filter(|(_, expires)| now < *expires)
            .map(|(value, _)| value);
        Box::pin(async move { Ok(value) })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn entries_are_taken_once_expire_and_are_bounded() {
        let store = InMemoryPendingLoginStore::new().with_capacity(2);
        store
            .put("a", b"1".to_vec(), Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(store.take("a").await.unwrap(), Some(b"1".to_vec()));
        assert_eq!(store.take("a").await.unwrap(), None, "taken once");

        store
            .put("b", b"2".to_vec(), Duration::from_secs(10))
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(store.take("b").await.unwrap(), None, "expired");

        for key in ["c", "d", "e"] {
            store
                .put(key, b"x".to_vec(), Duration::from_secs(10))
                .await
                .unwrap();
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        assert_eq!(store.len(), 2, "bounded");
        assert_eq!(
            store.take("c").await.unwrap(),
            None,
            "the oldest went first"
        );
        assert!(store.take("e").await.unwrap().is_some());
    }
}
