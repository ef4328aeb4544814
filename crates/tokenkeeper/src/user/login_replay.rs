//! Login callbacks taken once: the `state`s whose callback was already completed.
//!
//! A login keeps nothing on the server between its authorization request and its callback:
//! what it needs (PKCE verifier, nonce, return URL, a DPoP login key) travels sealed in the
//! browser's login cookie (`tokenkeeper-axum`), so anonymous requests create no server-side
//! state (SEC-13). The only thing a server remembers is, at the callback, that this login's
//! `state` was taken — so that two callbacks sent at once make one code exchange (SEC-02).

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::clock::{Clock, Timestamp, TokioClock};
use crate::error::CacheError;

/// Remembers which logins' callbacks were taken: [`LoginReplayStore::claim`] is an atomic
/// set-if-absent, so of two callbacks sent at once for one login exactly one goes on to the
/// code exchange — in one process, or with a shared store such as
/// `tokenkeeper_redis::RedisLoginReplayStore`, across instances (SEC-02).
///
/// Keys are derived from the login's `state` by the caller (a hash: the store never sees the
/// `state` itself). Entries are written only at a callback that carries a valid sealed login
/// cookie with the matching `state` and a `code`, and live until that cookie expires.
pub trait LoginReplayStore: Send + Sync + fmt::Debug + 'static {
    /// Records `key` for `ttl`; `true` if it was not recorded yet (the caller may complete the
    /// login), `false` if it was (a second callback for the same login). Of several concurrent
    /// calls for one key, exactly one gets `true`.
    fn claim<'a>(&'a self, key: &'a str, ttl: Duration) -> BoxFuture<'a, Result<bool, CacheError>>;
}

/// Claimed logins in this process's memory: bounded (default 100,000 entries; when full, the
/// entry closest to expiry goes first, which only shortens how long an old login's callback is
/// remembered — a double submit arrives within moments), expired entries swept on every write.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tokenkeeper::CacheError> {
/// use std::time::Duration;
/// use tokenkeeper::user::{InMemoryLoginReplayStore, LoginReplayStore};
/// let store = InMemoryLoginReplayStore::new().with_capacity(100);
/// assert!(store.claim("a", Duration::from_secs(60)).await?);
/// assert!(!store.claim("a", Duration::from_secs(60)).await?);
/// # Ok(()) }
/// ```
pub struct InMemoryLoginReplayStore {
    entries: Mutex<HashMap<String, Timestamp>>,
    capacity: usize,
    clock: TokioClock,
}

impl fmt::Debug for InMemoryLoginReplayStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryLoginReplayStore")
            .field("len", &self.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl Default for InMemoryLoginReplayStore {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryLoginReplayStore {
    /// An empty store holding at most 100,000 claimed logins.
    pub fn new() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity: 100_000,
            clock: TokioClock::new(),
        }
    }

    /// At most `capacity` claimed logins (at least 1).
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// How many claims are held (expired ones included until the next write).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Timestamp>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl LoginReplayStore for InMemoryLoginReplayStore {
    fn claim<'a>(&'a self, key: &'a str, ttl: Duration) -> BoxFuture<'a, Result<bool, CacheError>> {
        let now = self.clock.now();
        let mut entries = self.lock();
        let claimed = match entries.get(key) {
            Some(expires) if now < *expires => false,
            _ => {
                if entries.len() >= self.capacity {
                    entries.retain(|_, expires| now < *expires);
                }
                while entries.len() >= self.capacity {
                    let Some(oldest) = entries
                        .iter()
                        .min_by_key(|(_, expires)| **expires)
                        .map(|(k, _)| k.clone())
                    else {
                        break;
                    };
                    entries.remove(&oldest);
                }
                entries.insert(key.to_owned(), now.saturating_add(ttl));
                true
            }
        };
        Box::pin(async move { Ok(claimed) })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn claims_are_once_expire_and_are_bounded() {
        let store = InMemoryLoginReplayStore::new().with_capacity(2);
        assert!(store.claim("a", Duration::from_secs(10)).await.unwrap());
        assert!(!store.claim("a", Duration::from_secs(10)).await.unwrap());
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(store.claim("a", Duration::from_secs(10)).await.unwrap());
        assert!(store.claim("b", Duration::from_secs(20)).await.unwrap());
        assert!(store.claim("c", Duration::from_secs(30)).await.unwrap());
        assert_eq!(store.len(), 2);
        // `a` was closest to expiry: it went first.
        assert!(!store.claim("b", Duration::from_secs(20)).await.unwrap());
        assert!(!store.claim("c", Duration::from_secs(20)).await.unwrap());
    }
}
