//! Server-side sessions (BF-08): the browser holds only a random session id in its cookie; the
//! session (user, claims, ID token, expiry) lives in a [`BffSessionStore`], looked up by id, and
//! by `sub` and `sid` for back-channel logout and "log out everywhere".

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, RwLock};

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokenkeeper::user::SessionKey;
use tokenkeeper::{CacheError, Timestamp};

/// One browser session.
#[derive(Clone, Serialize, Deserialize)]
pub struct BffSession {
    /// The session id (the cookie's value): 32 random bytes, base64url. Never stored by a
    /// shared store (SEC-15: whoever reads the store could replay it as a cookie): such a store
    /// keeps [`BffSession::id_hash`] only, and a session it returns by `sub`/`sid` or from the
    /// cleanup has an empty `id`.
    #[serde(skip)]
    pub id: String,
    /// SHA-256 of the id (base64url): what a shared store keys and indexes the session by.
    pub id_hash: String,
    /// The key of this login's tokens in the user token manager: one record per login
    /// (SEC-14), even for two logins in one provider session. Empty in sessions stored before
    /// it existed, whose tokens are keyed by `sub` and `sid`.
    #[serde(default)]
    pub tokens: String,
    /// `sub`.
    pub sub: String,
    /// The provider's `sid` (or ours, when it sends none).
    pub sid: String,
    /// The ID token's claims.
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// The ID token, for RP-initiated logout's `id_token_hint`.
    pub id_token: String,
    /// The provider's `session_state`, when it sent one.
    pub session_state: Option<String>,
    /// When the session began (ms).
    pub created_at: u64,
    /// When the session ends unless it is used again (ms; sliding).
    pub expires_at: u64,
    /// The token key, made once per session (not per API call).
    #[serde(skip)]
    key: std::sync::OnceLock<SessionKey>,
}

impl fmt::Debug for BffSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BffSession")
            .field("session", &self.key().log_id())
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// SHA-256 of a session id, base64url: how shared stores name a session (SEC-15).
pub fn session_id_hash(id: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(id.as_bytes()))
}

impl BffSession {
    /// A session `id` of user `sub` in the provider's session `sid`, with no claims and no
    /// expiry yet (set the public fields; [`BffSession::tokens`] names the login's token record).
    pub fn new(id: impl Into<String>, sub: impl Into<String>, sid: impl Into<String>) -> Self {
        let id = id.into();
        Self {
            id_hash: session_id_hash(&id),
            id,
            tokens: String::new(),
            sub: sub.into(),
            sid: sid.into(),
            claims: serde_json::Map::new(),
            id_token: String::new(),
            session_state: None,
            created_at: 0,
            expires_at: 0,
            key: std::sync::OnceLock::new(),
        }
    }

    /// The key of the session's tokens in the user token manager.
    pub fn key(&self) -> SessionKey {
        self.key
            .get_or_init(|| {
                if self.tokens.is_empty() {
                    SessionKey::from_sub_sid(&self.sub, &self.sid)
                } else {
                    SessionKey::new(&self.tokens)
                }
            })
            .clone()
    }
}

/// Where sessions live. Implementations index them by id (a shared store: by
/// [`BffSession::id_hash`] only), `sub` and `sid`, and forget a session at its `expires_at`.
pub trait BffSessionStore: Send + Sync + fmt::Debug + 'static {
    /// The session with this id, if it exists and has not expired at `now` (shared: the hot
    /// path of every API call reads it without copying it). The session returned has its `id`.
    fn get<'a>(
        &'a self,
        id: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Option<Arc<BffSession>>, CacheError>>;

    /// [`BffSessionStore::get`] answered at once, by a store that needs no I/O for it (the
    /// in-process store): `Some(answer)`, or `None` to be asked through `get`. Every proxied
    /// request asks here first, so the in-process store's answer costs no allocation. The
    /// default is `None`.
    #[inline]
    fn get_now(
        &self,
        id: &str,
        now: Timestamp,
    ) -> Option<Result<Option<Arc<BffSession>>, CacheError>> {
        let _ = (id, now);
        None
    }

    /// Stores (or replaces) `session`.
    fn put(&self, session: BffSession) -> BoxFuture<'_, Result<(), CacheError>>;

    /// Whether the store answers now (the operations listener's `/readyz`: Redis reachable).
    /// The default, for a store in this process, is yes.
    fn check(&self) -> BoxFuture<'_, Result<(), CacheError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    /// Moves the expiry of `session` to `expires_at` (a slide), **only if the session is still
    /// stored**, atomically: a slide racing a logout never brings the session back (SEC-26).
    /// `false` when it was gone.
    fn touch<'a>(
        &'a self,
        session: &'a BffSession,
        expires_at: u64,
    ) -> BoxFuture<'a, Result<bool, CacheError>>;

    /// Removes `session` (found by its id, or by its id hash when the id is not known); returns
    /// it if it was there.
    fn remove<'a>(
        &'a self,
        session: &'a BffSession,
    ) -> BoxFuture<'a, Result<Option<BffSession>, CacheError>>;

    /// Every session of `sub` (and, when given, of `sid` only), however many.
    fn find<'a>(
        &'a self,
        sub: Option<&'a str>,
        sid: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<BffSession>, CacheError>>;

    /// Removes and returns every session expired at `now` (for the periodic cleanup, which
    /// revokes their refresh tokens); across a fleet sharing the store, each is returned to one
    /// caller only.
    fn take_expired(&self, now: Timestamp) -> BoxFuture<'_, Result<Vec<BffSession>, CacheError>>;

    /// Records `key` until `until` (ms); `true` the first time, `false` while it is recorded
    /// (back-channel logout tokens' `jti`, BF-13). Atomic across the instances sharing the store.
    fn first_use<'a>(
        &'a self,
        key: &'a str,
        until: Timestamp,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<bool, CacheError>>;
}

/// Sessions in this process's memory (the default), bounded: when full, the session closest
/// to expiry goes first.
pub struct InMemoryBffSessionStore {
    /// The sessions by id: read without a lock on every API call (a read lock's counter would
    /// bounce between the threads serving one session). Hashed with foldhash, seeded per map,
    /// not SipHash: the ids are the BFF's own random values, so a browser's chosen id can only
    /// look up, never place keys that collide; SipHash was ~450 instructions of every proxied
    /// request (with the user-token store's, BENCHMARKS.md).
    by_id: papaya::HashMap<String, Arc<BffSession>, foldhash::fast::RandomState>,
    /// The indexes and the seen keys; write-locked by logins, slides and logouts, which also
    /// change `by_id` under this lock, so that the two agree.
    inner: RwLock<Sessions>,
    capacity: usize,
}

#[derive(Default)]
struct Sessions {
    by_sub: HashMap<String, HashSet<String>>,
    by_sid: HashMap<String, HashSet<String>>,
    /// Keys seen once (`first_use`), with their expiry (ms).
    used: HashMap<String, u64>,
}

/// How many `first_use` keys are kept at most.
const USED_KEYS: usize = 100_000;

impl Sessions {
    fn insert(
        &mut self,
        by_id: &papaya::HashMapRef<
            '_,
            String,
            Arc<BffSession>,
            impl std::hash::BuildHasher,
            impl papaya::Guard,
        >,
        session: Arc<BffSession>,
    ) {
        self.by_sub
            .entry(session.sub.clone())
            .or_default()
            .insert(session.id.clone());
        self.by_sid
            .entry(session.sid.clone())
            .or_default()
            .insert(session.id.clone());
        by_id.insert(session.id.clone(), session);
    }

    fn remove(
        &mut self,
        by_id: &papaya::HashMapRef<
            '_,
            String,
            Arc<BffSession>,
            impl std::hash::BuildHasher,
            impl papaya::Guard,
        >,
        id: &str,
    ) -> Option<Arc<BffSession>> {
        let session = by_id.remove(id)?.clone();
        for (index, key) in [
            (&mut self.by_sub, &session.sub),
            (&mut self.by_sid, &session.sid),
        ] {
            if let Some(ids) = index.get_mut(key) {
                ids.remove(id);
                if ids.is_empty() {
                    index.remove(key);
                }
            }
        }
        Some(session)
    }
}

impl fmt::Debug for InMemoryBffSessionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryBffSessionStore")
            .field("len", &self.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl Default for InMemoryBffSessionStore {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryBffSessionStore {
    /// An empty store of at most 100,000 sessions.
    pub fn new() -> Self {
        Self {
            by_id: papaya::HashMap::with_hasher(foldhash::fast::RandomState::default()),
            inner: RwLock::new(Sessions::default()),
            capacity: 100_000,
        }
    }

    /// At most `capacity` sessions (at least 1).
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// How many sessions are held (expired ones not yet cleaned up included).
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The session with this id, if it has not expired at `now`.
    #[inline]
    fn live(&self, id: &str, now: Timestamp) -> Option<Arc<BffSession>> {
        self.by_id
            .pin()
            .get(id)
            .filter(|s| s.expires_at > now.as_millis())
            .cloned()
    }

    fn lock(&self) -> std::sync::RwLockWriteGuard<'_, Sessions> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Sessions> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }
}

fn ready<T: Send + 'static>(value: T) -> BoxFuture<'static, T> {
    Box::pin(std::future::ready(value))
}

impl BffSessionStore for InMemoryBffSessionStore {
    fn get<'a>(
        &'a self,
        id: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Option<Arc<BffSession>>, CacheError>> {
        ready(Ok(self.live(id, now)))
    }

    #[inline]
    fn get_now(
        &self,
        id: &str,
        now: Timestamp,
    ) -> Option<Result<Option<Arc<BffSession>>, CacheError>> {
        Some(Ok(self.live(id, now)))
    }

    fn put(&self, session: BffSession) -> BoxFuture<'_, Result<(), CacheError>> {
        let mut sessions = self.lock();
        let by_id = self.by_id.pin();
        sessions.remove(&by_id, &session.id);
        if by_id.len() >= self.capacity {
            if let Some(first) = by_id
                .values()
                .min_by_key(|s| s.expires_at)
                .map(|s| s.id.clone())
            {
                sessions.remove(&by_id, &first);
            }
        }
        sessions.insert(&by_id, Arc::new(session));
        ready(Ok(()))
    }

    fn touch<'a>(
        &'a self,
        session: &'a BffSession,
        expires_at: u64,
    ) -> BoxFuture<'a, Result<bool, CacheError>> {
        let mut sessions = self.lock();
        let by_id = self.by_id.pin();
        let Some(current) = by_id.get(&session.id).cloned() else {
            return ready(Ok(false));
        };
        let mut moved = BffSession::clone(&current);
        moved.expires_at = expires_at;
        sessions.remove(&by_id, &session.id);
        sessions.insert(&by_id, Arc::new(moved));
        ready(Ok(true))
    }

    fn remove<'a>(
        &'a self,
        session: &'a BffSession,
    ) -> BoxFuture<'a, Result<Option<BffSession>, CacheError>> {
        let removed = self.lock().remove(&self.by_id.pin(), &session.id);
        ready(Ok(removed.map(Arc::unwrap_or_clone)))
    }

    fn find<'a>(
        &'a self,
        sub: Option<&'a str>,
        sid: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<BffSession>, CacheError>> {
        let sessions = self.read();
        let by_id = self.by_id.pin();
        let found: Vec<BffSession> = match sub {
            Some(sub) => sessions
                .by_sub
                .get(sub)
                .into_iter()
                .flatten()
                .filter_map(|id| by_id.get(id))
                .filter(|s| sid.is_none_or(|sid| s.sid == sid))
                .map(|s| BffSession::clone(s))
                .collect(),
            None => match sid {
                Some(sid) => sessions
                    .by_sid
                    .get(sid)
                    .into_iter()
                    .flatten()
                    .filter_map(|id| by_id.get(id))
                    .map(|s| BffSession::clone(s))
                    .collect(),
                None => Vec::new(),
            },
        };
        ready(Ok(found))
    }

    fn take_expired(&self, now: Timestamp) -> BoxFuture<'_, Result<Vec<BffSession>, CacheError>> {
        let mut sessions = self.lock();
        let by_id = self.by_id.pin();
        let expired: Vec<String> = by_id
            .values()
            .filter(|s| s.expires_at <= now.as_millis())
            .map(|s| s.id.clone())
            .collect();
        let taken = expired
            .iter()
            .filter_map(|id| sessions.remove(&by_id, id))
            .map(Arc::unwrap_or_clone)
            .collect();
        let now = now.as_millis();
        sessions.used.retain(|_, until| *until > now);
        ready(Ok(taken))
    }

    fn first_use<'a>(
        &'a self,
        key: &'a str,
        until: Timestamp,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<bool, CacheError>> {
        let mut sessions = self.lock();
        let now = now.as_millis();
        if sessions.used.len() >= USED_KEYS {
            sessions.used.retain(|_, until| *until > now);
        }
        let first = match sessions.used.get(key) {
            Some(until) if *until > now => false,
            _ => {
                if sessions.used.len() < USED_KEYS {
                    sessions.used.insert(key.to_owned(), until.as_millis());
                    true
                } else {
                    // Full of live keys: refuse rather than forget one (a replay would pass).
                    false
                }
            }
        };
        ready(Ok(first))
    }
}
