//! The in-memory token cache.

use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
/// Each thread also remembers its last few hits (four slots, by key hash), each with the cache's
/// *generation* — a counter every change to the map increments after the change. A remembered
/// hit is used only while the generation is unchanged, so it is never older than what the map
/// held when the lookup began; a hit then costs a thread-local read and one atomic load instead
/// of a table lookup.
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
    /// Incremented after every change to `map` (see the type's docs).
    generation: AtomicU64,
    /// Tells this cache's remembered hits from other caches' (never reused).
    id: usize,
}

/// A remembered hit: valid while `cache`'s generation is still `generation`.
struct Memo {
    cache: usize,
    generation: u64,
    key: CacheKey,
    token: Arc<CachedToken>,
}

const MEMO_SLOTS: usize = 4;

thread_local! {
    static MEMO: RefCell<[Option<Memo>; MEMO_SLOTS]> =
        const { RefCell::new([const { None }; MEMO_SLOTS]) };
}

#[inline]
fn memo_slot(key: &CacheKey) -> usize {
    // The top bits: the table uses the low ones.
    (key.hash_value() >> 62) as usize % MEMO_SLOTS
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
            generation: AtomicU64::new(0),
            id: {
                static NEXT: AtomicUsize = AtomicUsize::new(0);
                NEXT.fetch_add(1, Ordering::Relaxed)
            },
        }
    }

    /// Marks a change to the map: remembered hits from before it are no longer used.
    #[inline]
    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::Release);
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
        // Read before the lookup: a change that lands after it makes the memo stale.
        let generation = self.generation.load(Ordering::Acquire);
        let slot = memo_slot(key);
        let remembered = MEMO
            .try_with(|memo| match memo.try_borrow().ok()?.get(slot) {
                Some(Some(m))
                    if m.cache == self.id && m.generation == generation && m.key == *key =>
                {
                    Some(m.token.clone())
                }
                _ => None,
            })
            .ok()
            .flatten();
        if remembered.is_some() {
            return remembered;
        }
        let token = self.map.pin().get(key).map(CachedToken::local_handle)?;
        let _ = MEMO.try_with(|memo| {
            if let Ok(mut memo) = memo.try_borrow_mut() {
                memo[slot] = Some(Memo {
                    cache: self.id,
                    generation,
                    key: key.clone(),
                    token: token.clone(),
                });
            }
        });
        Some(token)
    }

    /// Stores a token synchronously.
    pub fn put_sync(&self, key: &CacheKey, token: Arc<CachedToken>) {
        self.map.pin().insert(key.clone(), token);
        self.changed();
        if self.writes.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep();
        }
    }

    /// Removes the entry under `key` if it holds `access_token`.
    pub fn remove_if_sync(&self, key: &CacheKey, access_token: &AccessToken) -> bool {
        let removed = matches!(
            self.map
                .pin()
                .remove_if(key, |_, v| v.access_token().ct_eq(access_token)),
            Ok(Some(_))
        );
        if removed {
            self.changed();
        }
        removed
    }

    /// Removes every entry.
    pub fn clear(&self) {
        self.map.pin().clear();
        self.changed();
    }

    /// Removes every expired entry.
    pub fn sweep(&self) {
        let now = self.clock.now();
        self.map.pin().retain(|_, v| v.is_valid_at(now));
        self.changed();
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::clock::Timestamp;
    use crate::protocol::types::TokenType;

    fn token(value: &str) -> Arc<CachedToken> {
        Arc::new(
            CachedToken::new(
                AccessToken::new(value),
                TokenType::Bearer,
                None,
                Timestamp::from_millis(0),
                Timestamp::from_millis(u64::MAX / 2),
                Timestamp::from_millis(u64::MAX / 2),
            )
            .unwrap(),
        )
    }

    fn get(cache: &InMemoryTokenCache, key: &CacheKey) -> Option<String> {
        cache
            .get_sync(key)
            .map(|t| t.access_token().secret().to_owned())
    }

    #[test]
    fn remembered_hits_never_outlive_a_change() {
        let cache = InMemoryTokenCache::new();
        let key = CacheKey::from_canonical("cc&client=a");
        // The same text in a new allocation, and a key in the same memo slot.
        let same = CacheKey::from_canonical(String::from("cc&client=a"));
        let other = CacheKey::from_canonical("cc&client=b");
        assert_eq!(get(&cache, &key), None);
        cache.put_sync(&key, token("t1"));
        assert_eq!(get(&cache, &key).as_deref(), Some("t1"));
        assert_eq!(get(&cache, &key).as_deref(), Some("t1"), "from the memo");
        assert_eq!(get(&cache, &same).as_deref(), Some("t1"));
        assert_eq!(get(&cache, &other), None);
        cache.put_sync(&key, token("t2"));
        assert_eq!(
            get(&cache, &key).as_deref(),
            Some("t2"),
            "a put replaces it"
        );
        assert!(!cache.remove_if_sync(&key, &AccessToken::new("t1")));
        assert_eq!(get(&cache, &key).as_deref(), Some("t2"));
        assert!(cache.remove_if_sync(&key, &AccessToken::new("t2")));
        assert_eq!(get(&cache, &key), None, "a removal ends it");
        cache.put_sync(&key, token("t3"));
        assert_eq!(get(&cache, &key).as_deref(), Some("t3"));
        cache.clear();
        assert_eq!(get(&cache, &key), None, "clear ends it");

        // Another cache with the same key never answers from this one's memo.
        cache.put_sync(&key, token("t4"));
        assert_eq!(get(&cache, &key).as_deref(), Some("t4"));
        let second = InMemoryTokenCache::new();
        assert_eq!(get(&second, &key), None);
        second.put_sync(&key, token("t5"));
        assert_eq!(get(&second, &key).as_deref(), Some("t5"));
        assert_eq!(get(&cache, &key).as_deref(), Some("t4"));
    }

    #[test]
    fn other_threads_see_changes_made_here() {
        let cache = Arc::new(InMemoryTokenCache::new());
        let key = CacheKey::from_canonical("cc&client=a");
        cache.put_sync(&key, token("t1"));
        let reader = |cache: Arc<InMemoryTokenCache>, key: CacheKey| {
            std::thread::spawn(move || {
                // Twice: the second answer comes from that thread's memo.
                let first = get(&cache, &key);
                let second = get(&cache, &key);
                assert_eq!(first, second);
                second
            })
        };
        assert_eq!(
            reader(cache.clone(), key.clone())
                .join()
                .unwrap()
                .as_deref(),
            Some("t1")
        );
        cache.put_sync(&key, token("t2"));
        assert_eq!(
            reader(cache.clone(), key.clone())
                .join()
                .unwrap()
                .as_deref(),
            Some("t2")
        );
        // A long-lived thread that remembered t2 sees the removal.
        let (ready, filled) = std::sync::mpsc::channel();
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let thread = {
            let (cache, key) = (cache.clone(), key.clone());
            std::thread::spawn(move || {
                assert_eq!(get(&cache, &key).as_deref(), Some("t2"));
                ready.send(()).unwrap();
                wait.recv().unwrap();
                get(&cache, &key)
            })
        };
        filled.recv().unwrap();
        assert!(cache.remove_if_sync(&key, &AccessToken::new("t2")));
        go.send(()).unwrap();
        assert_eq!(thread.join().unwrap(), None);
    }
}
