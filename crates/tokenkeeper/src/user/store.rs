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
}

/// A stored value with the version a compare-and-set must name.
#[derive(Clone, Debug)]
pub struct Versioned<T> {
    /// The value.
    pub value: T,
    /// Its version (increases with every store).
    pub version: u64,
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

/// Session tokens in this process's memory.
///
/// ```
/// use tokenkeeper::user::InMemoryUserTokenStore;
/// let store = InMemoryUserTokenStore::new();
/// assert_eq!(store.len(), 0);
/// ```
#[derive(Default)]
pub struct InMemoryUserTokenStore {
    map: papaya::HashMap<SessionKey, Versioned<Arc<UserTokens>>>,
}

impl fmt::Debug for InMemoryUserTokenStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryUserTokenStore")
            .field("sessions", &self.map.len())
            .finish()
    }
}

impl InMemoryUserTokenStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of sessions.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no session is stored.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The session's tokens, synchronously.
    pub fn get_sync(&self, key: &SessionKey) -> Option<Versioned<Arc<UserTokens>>> {
        self.map.pin().get(key).cloned()
    }

    /// Compare-and-set, synchronously.
    pub fn store_sync(
        &self,
        key: &SessionKey,
        tokens: Arc<UserTokens>,
        expected: Option<u64>,
    ) -> StoreOutcome {
        use papaya::{Compute, Operation};
        let map = self.map.pin();
        let result = map.compute(key.clone(), |current| {
            let current_version = current.map(|(_, v)| v.version);
            if current_version != expected {
                return Operation::Abort(());
            }
            Operation::Insert(Versioned {
                value: tokens.clone(),
                version: current_version.map_or(1, |v| v + 1),
            })
        });
        match result {
            Compute::Inserted(_, v) | Compute::Updated { new: (_, v), .. } => {
                StoreOutcome::Stored(v.version)
            }
            _ => StoreOutcome::Conflict,
        }
    }
}

impl UserTokenStore for InMemoryUserTokenStore {
    #[inline]
    fn get_local(&self, key: &SessionKey) -> Option<Versioned<Arc<UserTokens>>> {
        self.get_sync(key)
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
