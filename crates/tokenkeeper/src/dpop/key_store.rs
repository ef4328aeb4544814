//! Where per-session DPoP keys live (PK-07): a [`DpopKeyStore`], keyed by the key's RFC 7638
//! thumbprint. Sessions hold the thumbprint only (a login in progress keeps its key sealed in its
//! cookie until it completes); the private key stays in
//! the store — in this process's memory by default, sealed in Redis for a fleet
//! (`tokenkeeper_redis::RedisDpopKeyStore`) — and is removed at logout.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;

use super::DpopKey;
use crate::clock::{Clock as _, Timestamp, TokioClock};
use crate::error::CacheError;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Keeps DPoP private keys by thumbprint. Implementations must never write a private key in
/// plaintext anywhere shared (encrypt it, as the Redis form does) and must check that a key read
/// back has the thumbprint it was asked for.
pub trait DpopKeyStore: Send + Sync + fmt::Debug + 'static {
    /// The key with thumbprint `jkt`, if it is kept.
    fn get<'a>(&'a self, jkt: &'a str) -> BoxFuture<'a, Result<Option<Arc<DpopKey>>, CacheError>>;

    /// Keeps `key` (under its thumbprint): for `ttl` when given (the key of a login not yet
    /// completed), else until removed (a session's key). Putting a key again replaces its
    /// expiry.
    fn put(
        &self,
        key: Arc<DpopKey>,
        ttl: Option<std::time::Duration>,
    ) -> BoxFuture<'_, Result<(), CacheError>>;

    /// Forgets the key with thumbprint `jkt`.
    fn remove<'a>(&'a self, jkt: &'a str) -> BoxFuture<'a, Result<(), CacheError>>;
}

/// DPoP keys in this process's memory, bounded: sessions' keys (default 100,000; when full, the
/// key kept longest goes first — a session whose key is gone must log in again) apart from the
/// keys of logins not yet completed (at most 10,000, expiring), so that a flood of abandoned
/// logins never pushes out a session's key.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use tokenkeeper::dpop::{DpopAlgorithm, DpopKey, DpopKeyStore, InMemoryDpopKeyStore};
/// let store = InMemoryDpopKeyStore::new();
/// let key = Arc::new(DpopKey::generate(DpopAlgorithm::ES256)?);
/// store.put(key.clone(), None).await?;
/// assert!(store.get(key.thumbprint()).await?.is_some());
/// store.remove(key.thumbprint()).await?;
/// assert!(store.get(key.thumbprint()).await?.is_none());
/// # Ok(()) }
/// ```
pub struct InMemoryDpopKeyStore {
    keys: Mutex<Keys>,
    pending: Mutex<HashMap<String, (Arc<DpopKey>, Timestamp)>>,
    capacity: usize,
    clock: TokioClock,
}

/// How many keys of logins not yet completed are kept.
const PENDING_KEYS: usize = 10_000;

#[derive(Default)]
struct Keys {
    by_jkt: HashMap<String, (Arc<DpopKey>, u64)>,
    /// Insertion order, for eviction in O(log n).
    order: std::collections::BTreeMap<u64, String>,
    next: u64,
}

impl fmt::Debug for InMemoryDpopKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryDpopKeyStore")
            .field("len", &self.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl Default for InMemoryDpopKeyStore {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryDpopKeyStore {
    /// An empty store of at most 100,000 keys.
    pub fn new() -> Self {
        Self {
            keys: Mutex::new(Keys::default()),
            pending: Mutex::new(HashMap::new()),
            capacity: 100_000,
            clock: TokioClock::new(),
        }
    }

    /// At most `capacity` keys (at least 1).
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// How many sessions' keys are kept (not counting those of logins not yet completed).
    pub fn len(&self) -> usize {
        self.lock().by_jkt.len()
    }

    /// How many keys of logins not yet completed are kept.
    pub fn pending_len(&self) -> usize {
        let now = self.clock.now();
        lock(&self.pending)
            .values()
            .filter(|(_, until)| *until > now)
            .count()
    }

    /// Whether no key is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Keys> {
        lock(&self.keys)
    }

    /// The key with thumbprint `jkt`, without waiting.
    pub fn get_now(&self, jkt: &str) -> Option<Arc<DpopKey>> {
        if let Some((key, _)) = self.lock().by_jkt.get(jkt) {
            return Some(key.clone());
        }
        let now = self.clock.now();
        lock(&self.pending)
            .get(jkt)
            .filter(|(_, until)| *until > now)
            .map(|(key, _)| key.clone())
    }

    fn put_pending(&self, key: Arc<DpopKey>, ttl: std::time::Duration) {
        let now = self.clock.now();
        let mut pending = lock(&self.pending);
        pending.retain(|_, (_, until)| *until > now);
        if pending.len() >= PENDING_KEYS {
            // Full of live logins: the one closest to expiry goes.
            if let Some(first) = pending
                .iter()
                .min_by_key(|(_, (_, until))| *until)
                .map(|(k, _)| k.clone())
            {
                pending.remove(&first);
            }
        }
        pending.insert(key.thumbprint().to_owned(), (key, now.saturating_add(ttl)));
    }
}

impl DpopKeyStore for InMemoryDpopKeyStore {
    fn get<'a>(&'a self, jkt: &'a str) -> BoxFuture<'a, Result<Option<Arc<DpopKey>>, CacheError>> {
        Box::pin(std::future::ready(Ok(self.get_now(jkt))))
    }

    fn put(
        &self,
        key: Arc<DpopKey>,
        ttl: Option<std::time::Duration>,
    ) -> BoxFuture<'_, Result<(), CacheError>> {
        if let Some(ttl) = ttl {
            self.put_pending(key, ttl);
            return Box::pin(std::future::ready(Ok(())));
        }
        lock(&self.pending).remove(key.thumbprint());
        let mut keys = self.lock();
        if let Some((_, n)) = keys.by_jkt.remove(key.thumbprint()) {
            keys.order.remove(&n);
        }
        while keys.by_jkt.len() >= self.capacity {
            let Some((_, oldest)) = keys.order.pop_first() else {
                break;
            };
            keys.by_jkt.remove(&oldest);
        }
        keys.next += 1;
        let n = keys.next;
        keys.order.insert(n, key.thumbprint().to_owned());
        keys.by_jkt.insert(key.thumbprint().to_owned(), (key, n));
        Box::pin(std::future::ready(Ok(())))
    }

    fn remove<'a>(&'a self, jkt: &'a str) -> BoxFuture<'a, Result<(), CacheError>> {
        lock(&self.pending).remove(jkt);
        let mut keys = self.lock();
        if let Some((_, n)) = keys.by_jkt.remove(jkt) {
            keys.order.remove(&n);
        }
        drop(keys);
        Box::pin(std::future::ready(Ok(())))
    }
}

impl DpopKey {
    /// The key as a shared store keeps it: its algorithm and PKCS#8 PEM, sealed with
    /// `encryption` and bound to `aad` (the store's key for it). A private key is never stored
    /// in the clear (PK-07).
    pub fn seal_stored(
        &self,
        aad: &[u8],
        encryption: &crate::Encryption,
    ) -> Result<Vec<u8>, CacheError> {
        let pem = self
            .to_pkcs8_pem()
            .map_err(|e| CacheError::new(format!("the DPoP key cannot be encoded: {e}")))?;
        let plain = serde_json::to_vec(&serde_json::json!({
            "alg": self.algorithm().as_str(),
            "pem": pem,
        }))
        .map_err(|e| CacheError::new(e.to_string()))?;
        encryption.seal(aad, &plain)
    }

    /// A key from [`DpopKey::seal_stored`]'s bytes, if they open and it has the thumbprint
    /// `jkt`.
    pub fn open_stored(
        sealed: &[u8],
        aad: &[u8],
        jkt: &str,
        encryption: &crate::Encryption,
    ) -> Option<Arc<Self>> {
        let plain = encryption.open(aad, sealed)?;
        let stored: serde_json::Value = serde_json::from_slice(&plain).ok()?;
        let alg = super::DpopAlgorithm::parse(stored.get("alg")?.as_str()?).ok()?;
        let key = Self::from_pem(stored.get("pem")?.as_str()?, alg).ok()?;
        (key.thumbprint() == jkt).then(|| Arc::new(key))
    }
}
