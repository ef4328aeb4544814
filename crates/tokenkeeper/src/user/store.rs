//! Per-session token storage.

use std::fmt;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::cache::CachedToken;
use crate::error::CacheError;
use crate::secret::{IdToken, RefreshToken};

/// Identifies a user session: `sub` + `sid` from the ID token, or the application's own key.
///
/// ```
/// use tokenkeeper::user::SessionKey;
/// let key = SessionKey::from_sub_sid("alice", "s-1");
/// assert_eq!(key.as_str(), "sub=alice&sid=s-1");
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey(Arc<str>);

impl SessionKey {
    /// The application's own key.
    pub fn new(key: impl AsRef<str>) -> Self {
        Self(Arc::from(key.as_ref()))
    }

    /// The key of the session `sid` of user `sub`.
    pub fn from_sub_sid(sub: &str, sid: &str) -> Self {
        let enc = |v: &str| url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
        Self::new(format!("sub={}&sid={}", enc(sub), enc(sid)))
    }

    /// The key of one login of user `sub` in the provider's session `sid`: `sub`, `sid` and a
    /// random login id, so that two logins in one provider session — a second tab, a login
    /// after the first one's web session expired — never share a token record (SEC-14).
    /// Providers keep one `sid` for the whole SSO session.
    ///
    /// ```
    /// use tokenkeeper::user::SessionKey;
    /// let first = SessionKey::for_login("alice", "s-1")?;
    /// let second = SessionKey::for_login("alice", "s-1")?;
    /// assert_ne!(first, second);
    /// assert!(first.as_str().starts_with("sub=alice&sid=s-1&login="));
    /// # Ok::<(), tokenkeeper::Error>(())
    /// ```
    pub fn for_login(sub: &str, sid: &str) -> Result<Self, crate::Error> {
        let login = crate::protocol::authorization::random_token(16)?;
        let enc = |v: &str| url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
        Ok(Self::new(format!(
            "sub={}&sid={}&login={login}",
            enc(sub),
            enc(sid)
        )))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A short, stable identifier of the session for logs: a hash of the key, so that `sub` and
    /// `sid` never appear in log lines (SEC-06) while one session's lines can still be matched.
    pub fn log_id(&self) -> String {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(self.0.as_bytes());
        digest[..6].iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `sub` and `sid` identify a person: only the hash (SEC-06).
        write!(f, "SessionKey({})", self.log_id())
    }
}

impl fmt::Display for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A session's access tokens by resource (`""` for the default, no-resource token).
///
/// A small sorted vector: sessions hold one or a few tokens, and millions of sessions may be
/// stored, so it is smaller than a `BTreeMap` (whose first node alone is ~360 bytes).
///
/// ```
/// use tokenkeeper::user::AccessTokens;
/// let tokens = AccessTokens::default();
/// assert!(tokens.get("https://api.example.com").is_none());
/// ```
#[derive(Clone, Debug, Default)]
pub struct AccessTokens(Vec<(Box<str>, Arc<CachedToken>)>);

impl AccessTokens {
    fn position(&self, resource: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(r, _)| (**r).cmp(resource))
    }

    /// The token for `resource`.
    pub fn get(&self, resource: &str) -> Option<&Arc<CachedToken>> {
        self.position(resource).ok().map(|i| &self.0[i].1)
    }

    /// Sets the token for `resource`; returns the one it replaced.
    pub fn insert(
        &mut self,
        resource: impl Into<Box<str>>,
        token: Arc<CachedToken>,
    ) -> Option<Arc<CachedToken>> {
        let resource = resource.into();
        match self.position(&resource) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, token)),
            Err(i) => {
                self.0.insert(i, (resource, token));
                None
            }
        }
    }

    /// Removes the token for `resource`.
    pub fn remove(&mut self, resource: &str) -> Option<Arc<CachedToken>> {
        self.position(resource).ok().map(|i| self.0.remove(i).1)
    }

    /// How many tokens.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The tokens, by resource, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Arc<CachedToken>)> {
        self.0.iter().map(|(r, t)| (&**r, t))
    }
}

impl std::ops::Index<&str> for AccessTokens {
    type Output = Arc<CachedToken>;

    fn index(&self, resource: &str) -> &Self::Output {
        match self.get(resource) {
            Some(token) => token,
            None => panic!("no access token for resource {resource:?}"),
        }
    }
}

/// The tokens of one session: one refresh token shared by access tokens per resource.
#[derive(Clone, Debug, Default)]
pub struct UserTokens {
    /// The refresh token, if the session has one.
    pub refresh_token: Option<RefreshToken>,
    /// Access tokens by resource (`""` for the default, no-resource token).
    pub access_tokens: AccessTokens,
    /// The ID token from login, if kept.
    pub id_token: Option<IdToken>,
    /// When the refresh token expires, when the server said (`refresh_expires_in`).
    pub refresh_expires_at: Option<crate::clock::Timestamp>,
    /// The RFC 7638 thumbprint of the DPoP key the tokens are bound to, when they are (the key
    /// itself lives in a [`DpopKeyStore`](crate::dpop::DpopKeyStore), never here).
    pub dpop_jkt: Option<String>,
}

impl UserTokens {
    /// Whether the session is of no more use at `now`: its refresh token has expired (when its
    /// expiry is known) and none of its access tokens is still valid.
    pub fn is_spent_at(&self, now: crate::clock::Timestamp) -> bool {
        self.refresh_expires_at.is_some_and(|at| now >= at)
            && self.access_tokens.iter().all(|(_, t)| !t.is_valid_at(now))
    }

    /// When the session is of no more use, if that is known: the later of the refresh token's
    /// expiry and the last access token's.
    pub fn spent_at(&self) -> Option<crate::clock::Timestamp> {
        let refresh = self.refresh_expires_at?;
        Some(
            self.access_tokens
                .iter()
                .map(|(_, t)| t.expires_at())
                .fold(refresh, std::cmp::max),
        )
    }
}

/// A stored value with the version a compare-and-set must name.
#[derive(Clone, Debug)]
pub struct Versioned<T> {
    /// The value.
    pub value: T,
    /// Its version (increases with every store).
    pub version: u64,
}

impl Versioned<()> {
    /// The version a shared store gives a write that expects `expected` (`None`: a new
    /// session), at `now_ms` (ms since the epoch): above `expected`, and never below the time,
    /// so that a session deleted and written again gets a version above any it had and an
    /// older entry can always be told apart.
    pub fn next_after(expected: Option<u64>, now_ms: u64) -> u64 {
        expected.map_or(now_ms, |v| v.saturating_add(1).max(now_ms))
    }
}

impl UserTokens {
    /// How long a shared store keeps these tokens when written at `now_ms`: `session_ttl`, or
    /// less when the refresh token (and the last access token) end sooner; at least 1 ms.
    pub fn store_ttl_ms(&self, session_ttl: std::time::Duration, now_ms: u64) -> u64 {
        let session_ttl_ms = u64::try_from(session_ttl.as_millis()).unwrap_or(u64::MAX);
        self.spent_at()
            .map_or(session_ttl_ms, |at| {
                at.as_millis().saturating_sub(now_ms).min(session_ttl_ms)
            })
            .max(1)
    }
}

/// The result of [`UserTokenStore::store`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreOutcome {
    /// Stored; this is the new version.
    Stored(u64),
    /// Not stored: the stored version was not the expected one.
    Conflict,
}

/// Where session tokens live: in memory, in Redis, or in the web session.
///
/// `store` is a compare-and-set on the version, so that two writers never silently overwrite
/// each other (a rotated refresh token must not be lost).
pub trait UserTokenStore: Send + Sync + fmt::Debug + 'static {
    /// A synchronous lookup in an in-process tier, for the hit path: `None` when there is no
    /// such tier or no entry there (the manager then calls [`UserTokenStore::get`]). An entry
    /// returned here must never be older than one another instance has replaced.
    #[inline]
    fn get_local(&self, key: &SessionKey) -> Option<Versioned<Arc<UserTokens>>> {
        let _ = key;
        None
    }

    /// The access token for `resource` (the slot name the manager uses) from the in-process
    /// tier, as a handle for the calling thread ([`CachedToken::local_handle`]): the hit path
    /// of every proxied or middleware call. The default goes through
    /// [`UserTokenStore::get_local`]; a store can answer without touching the session's shared
    /// reference count, which threads serving one session would otherwise bounce between them.
    #[inline]
    fn get_local_token(&self, key: &SessionKey, resource: &str) -> Option<Arc<CachedToken>> {
        self.get_local(key)?
            .value
            .access_tokens
            .get(resource)
            .map(CachedToken::local_handle)
    }

    /// The session's tokens.
    fn get<'a>(
        &'a self,
        key: &'a SessionKey,
    ) -> BoxFuture<'a, Result<Option<Versioned<Arc<UserTokens>>>, CacheError>>;

    /// Stores `tokens` if the stored version is `expected` (`None`: nothing stored yet).
    fn store<'a>(
        &'a self,
        key: &'a SessionKey,
        tokens: Arc<UserTokens>,
        expected: Option<u64>,
    ) -> BoxFuture<'a, Result<StoreOutcome, CacheError>>;

    /// Removes the session's tokens.
    fn clear<'a>(&'a self, key: &'a SessionKey) -> BoxFuture<'a, Result<(), CacheError>>;
}

/// Session tokens in this process's memory, bounded (SEC-12).
///
/// - **Capacity** (default 100,000 sessions): a write that would go past it first drops the
///   sessions nobody used for longest, down to 90 % of the capacity.
/// - **Idle expiry** (default 24 h): a session nobody read or wrote for that long is gone (it
///   reads as absent at once, and is swept on a later write).
/// - **Refresh-token expiry**, when the server said it: a session whose refresh token and
///   access tokens have all expired is gone the same way.
///
/// A dropped session's refresh token is forgotten, not revoked (the store does not talk to the
/// authorization server): its user logs in again. Size the capacity for your sessions, or use a
/// shared store (Redis) that keeps them.
///
/// ```
/// use std::time::Duration;
/// use tokenkeeper::user::InMemoryUserTokenStore;
/// let store = InMemoryUserTokenStore::new()
///     .with_capacity(10_000)
///     .with_idle_timeout(Duration::from_secs(8 * 3600));
/// assert_eq!(store.len(), 0);
/// ```
pub struct InMemoryUserTokenStore {
    /// Hashed with foldhash, seeded at random per map, not SipHash (~200 instructions of every
    /// lookup, BENCHMARKS.md): the keys are the application's session keys, normally its own
    /// random ids, and a seed nobody outside the process knows leaves no collisions to aim for.
    map: papaya::HashMap<SessionKey, Slot, foldhash::fast::RandomState>,
    capacity: usize,
    idle: std::time::Duration,
    clock: crate::clock::TokioClock,
    writes: std::sync::atomic::AtomicUsize,
}

/// A stored session and when it was last used (milliseconds).
struct Slot {
    value: Versioned<Arc<UserTokens>>,
    last_used: std::sync::atomic::AtomicU64,
}

impl fmt::Debug for InMemoryUserTokenStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryUserTokenStore")
            .field("sessions", &self.map.len())
            .field("capacity", &self.capacity)
            .field("idle", &self.idle)
            .finish()
    }
}

impl Default for InMemoryUserTokenStore {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryUserTokenStore {
    /// An empty store (100,000 sessions at most, 24 h idle expiry).
    pub fn new() -> Self {
        Self {
            map: papaya::HashMap::with_hasher(foldhash::fast::RandomState::default()),
            capacity: 100_000,
            idle: std::time::Duration::from_secs(24 * 3600),
            clock: crate::clock::TokioClock::new(),
            writes: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// At most `capacity` sessions (at least 1).
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// Sessions nobody used for `idle` are dropped.
    pub fn with_idle_timeout(mut self, idle: std::time::Duration) -> Self {
        self.idle = idle;
        self
    }

    /// The number of sessions held (idle ones included until they are swept).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no session is stored.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn now_ms(&self) -> u64 {
        crate::clock::Clock::now(&self.clock).as_millis()
    }

    fn idle_ms(&self) -> u64 {
        u64::try_from(self.idle.as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether `slot` is neither idle nor spent at `now` (ms).
    fn is_live(&self, slot: &Slot, now: u64) -> bool {
        use std::sync::atomic::Ordering;
        now.saturating_sub(slot.last_used.load(Ordering::Relaxed)) < self.idle_ms()
            && !slot
                .value
                .value
                .is_spent_at(crate::clock::Timestamp::from_millis(now))
    }

    /// The session's tokens, synchronously (a read counts as a use).
    pub fn get_sync(&self, key: &SessionKey) -> Option<Versioned<Arc<UserTokens>>> {
        self.with_live(key, |tokens| Some(tokens.clone()))
    }

    /// `read` on the session's live entry (a read counts as a use), under the map's guard.
    fn with_live<R>(
        &self,
        key: &SessionKey,
        read: impl FnOnce(&Versioned<Arc<UserTokens>>) -> Option<R>,
    ) -> Option<R> {
        use std::sync::atomic::Ordering;
        let map = self.map.pin();
        let slot = map.get(key)?;
        let now = self.now_ms();
        if !self.is_live(slot, now) {
            return None;
        }
        // The idle expiry needs the time of use to the second, not to the call: writing it on
        // every hit would bounce the entry's cache line between threads.
        if now.saturating_sub(slot.last_used.load(Ordering::Relaxed)) >= 1000 {
            slot.last_used.store(now, Ordering::Relaxed);
        }
        read(&slot.value)
    }

    /// Compare-and-set, synchronously.
    pub fn store_sync(
        &self,
        key: &SessionKey,
        tokens: Arc<UserTokens>,
        expected: Option<u64>,
    ) -> StoreOutcome {
        use papaya::{Compute, Operation};
        let now = self.now_ms();
        let map = self.map.pin();
        let result = map.compute(key.clone(), |current| {
            // An idle or spent session is gone: it counts as absent.
            let live = current.filter(|(_, slot)| self.is_live(slot, now));
            let current_version = live.map(|(_, slot)| slot.value.version);
            if current_version != expected {
                return Operation::Abort(());
            }
            let version = current
                .map(|(_, slot)| slot.value.version)
                .map_or(1, |v| v + 1);
            Operation::Insert(Slot {
                value: Versioned {
                    value: tokens.clone(),
                    version,
                },
                last_used: std::sync::atomic::AtomicU64::new(now),
            })
        });
        let outcome = match result {
            Compute::Inserted(_, slot) | Compute::Updated { new: (_, slot), .. } => {
                StoreOutcome::Stored(slot.value.version)
            }
            _ => StoreOutcome::Conflict,
        };
        drop(map);
        if matches!(outcome, StoreOutcome::Stored(_)) {
            self.bound(now);
        }
        outcome
    }

    /// Sweeps idle sessions every 1,024 writes, and drops the least recently used when over
    /// capacity.
    fn bound(&self, now: u64) {
        use std::sync::atomic::Ordering;
        let writes = self.writes.fetch_add(1, Ordering::Relaxed);
        let over = self.map.len() > self.capacity;
        if !over && !writes.is_multiple_of(1024) {
            return;
        }
        let map = self.map.pin();
        map.retain(|_, slot| self.is_live(slot, now));
        if map.len() <= self.capacity {
            return;
        }
        let target = self.capacity - self.capacity / 10;
        let mut by_use: Vec<(u64, SessionKey)> = map
            .iter()
            .map(|(k, slot)| (slot.last_used.load(Ordering::Relaxed), k.clone()))
            .collect();
        by_use.sort_unstable_by_key(|(used, _)| *used);
        let excess = by_use.len().saturating_sub(target);
        for (_, key) in by_use.into_iter().take(excess) {
            map.remove(&key);
        }
    }
}

impl UserTokenStore for InMemoryUserTokenStore {
    #[inline]
    fn get_local(&self, key: &SessionKey) -> Option<Versioned<Arc<UserTokens>>> {
        self.get_sync(key)
    }

    #[inline]
    fn get_local_token(&self, key: &SessionKey, resource: &str) -> Option<Arc<CachedToken>> {
        self.with_live(key, |tokens| {
            tokens
                .value
                .access_tokens
                .get(resource)
                .map(CachedToken::local_handle)
        })
    }

    fn get<'a>(
        &'a self,
        key: &'a SessionKey,
    ) -> BoxFuture<'a, Result<Option<Versioned<Arc<UserTokens>>>, CacheError>> {
        let value = self.get_sync(key);
        Box::pin(async move { Ok(value) })
    }

    fn store<'a>(
        &'a self,
        key: &'a SessionKey,
        tokens: Arc<UserTokens>,
        expected: Option<u64>,
    ) -> BoxFuture<'a, Result<StoreOutcome, CacheError>> {
        let outcome = self.store_sync(key, tokens, expected);
        Box::pin(async move { Ok(outcome) })
    }

    fn clear<'a>(&'a self, key: &'a SessionKey) -> BoxFuture<'a, Result<(), CacheError>> {
        self.map.pin().remove(key);
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    fn tokens(rt: &str) -> Arc<UserTokens> {
        Arc::new(UserTokens {
            refresh_token: Some(rt.into()),
            ..UserTokens::default()
        })
    }

    /// SEC-12: the in-memory store is bounded by a capacity (least recently used go first)
    /// and by an idle time.
    #[tokio::test(start_paused = true)]
    async fn sec_12_the_in_memory_store_is_bounded() {
        let store = InMemoryUserTokenStore::new()
            .with_capacity(10)
            .with_idle_timeout(Duration::from_secs(3600));
        let key = |i: usize| SessionKey::new(format!("s-{i}"));
        for i in 0..10 {
            store.store_sync(&key(i), tokens("rt"), None);
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        // Session 0 is used again: the least recently used is now 1.
        assert!(store.get_sync(&key(0)).is_some());
        for i in 10..1000 {
            store.store_sync(&key(i), tokens("rt"), None);
            assert!(store.len() <= 10, "bounded: {}", store.len());
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        assert!(
            store.get_sync(&key(1)).is_none(),
            "least recently used: dropped"
        );
        assert!(store.get_sync(&key(999)).is_some());

        // Idle for more than an hour: gone at once, swept on a later write.
        tokio::time::advance(Duration::from_secs(3601)).await;
        assert!(store.get_sync(&key(999)).is_none());
        assert_eq!(
            store.store_sync(&key(999), tokens("rt-2"), None),
            StoreOutcome::Stored(2),
            "an idle session counts as absent; its version keeps increasing"
        );
        for i in 0..1024 {
            store.store_sync(&SessionKey::new(format!("fresh-{i}")), tokens("rt"), None);
        }
        assert!(store.len() <= 10);

        // A session whose refresh token expired (when the server said when), and whose access
        // tokens did too, is gone.
        let now = crate::clock::Clock::now(&store.clock);
        let mut spent = UserTokens {
            refresh_token: Some("rt".into()),
            refresh_expires_at: Some(now.saturating_add(Duration::from_secs(60))),
            ..UserTokens::default()
        };
        spent.access_tokens.insert(
            "",
            Arc::new(
                crate::cache::CachedToken::new(
                    "at".into(),
                    crate::protocol::types::TokenType::Bearer,
                    None,
                    now,
                    now.saturating_add(Duration::from_secs(60)),
                    now.saturating_add(Duration::from_secs(90)),
                )
                .unwrap(),
            ),
        );
        store.store_sync(&key(5000), Arc::new(spent), None);
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(
            store.get_sync(&key(5000)).is_some(),
            "its access token is still valid"
        );
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(store.get_sync(&key(5000)).is_none(), "spent");
    }
}
