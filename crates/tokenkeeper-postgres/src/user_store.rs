//! Users' session tokens in PostgreSQL, with an in-process tier invalidated by LISTEN/NOTIFY.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use base64::Engine as _;
use futures_util::future::BoxFuture;
use futures_util::StreamExt as _;
use sha2::Digest as _;
use tokenkeeper::user::{
    SessionKey, SessionTier, StoreOutcome, StoredSessionError, UserTokenStore, UserTokens,
    Versioned,
};
use tokenkeeper::CacheError;

use crate::database::{describe, PostgresDatabase, Sql};

/// The channel the table's trigger notifies (`<key> <version>`, version 0: deleted).
const CHANNEL: &str = "tokenkeeper_user_tokens";

/// How long a write whose outcome is unknown is tried again before it is given up.
const PENDING_FOR: Duration = Duration::from_secs(600);

/// Users' session tokens in PostgreSQL, shared by every instance, read from memory on a hit
/// (FL-05).
///
/// - **Layout**: one row per session in `tokenkeeper_user_tokens` (`key`, `version`, `value`,
///   `expires_at`), named by a hash of the [`SessionKey`] (neither `sub` nor `sid` is stored);
///   `value` is sealed with the database's [`crate::Encryption`] (bound to the key and the
///   version, so an older sealed value cannot be moved under a newer version, nor to another
///   session).
/// - **Compare-and-set**: `store` updates the row only if it still holds the version the
///   writer read (`UPDATE … WHERE version = $expected`; a new session inserts only where no
///   live row is): two instances never overwrite each other's rotated refresh token. With a
///   [`crate::PostgresLease`] on the user token manager, refreshes are serialised across
///   instances: one refresh per session per cycle.
/// - **In-process tier** ([`SessionTier`]): every session read or written is kept in memory;
///   the table's trigger announces every change (`pg_notify`, in the writing transaction) and
///   every instance listening (`LISTEN`, on a connection of its own) drops its older copy. A
///   listener that (re)connects drops them all (it may have missed announcements). The user
///   token manager takes a token from the tier only well before its refresh window, as with
///   Redis.
/// - **A write whose outcome is unknown** (the database restarted, the call timed out) is kept
///   in memory and written again (compare-and-set on the version it expected) until the
///   database says where the session stands: the tokens may hold the only copy of a rotated
///   refresh token, and the session survives a restart of the database mid-refresh.
/// - Rows expire `session_ttl` after their last write (default 14 days), or with their refresh
///   token when the server said when; [`PostgresDatabase::cleanup_expired`] deletes them in
///   batches.
///
/// ```no_run
/// # fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use tokenkeeper::user::UserTokenManager;
/// use tokenkeeper::ClientConfig;
/// use tokenkeeper_postgres::{Encryption, PostgresDatabase, PostgresLease, PostgresOptions, PostgresUserTokenStore};
/// # let key = [7u8; 32];
/// let db = PostgresDatabase::new(
///     "postgres://tokenkeeper@db.internal/app",
///     PostgresOptions::encrypted(Encryption::new("k1", &key)?),
/// )?;
/// let users = UserTokenManager::builder(ClientConfig::from_issuer("https://idp.example.com", "web", "secret"))
///     .store(Arc::new(PostgresUserTokenStore::new(&db)))
///     .lease(Arc::new(PostgresLease::new(&db)))
///     .build()?;
/// # let _ = users; Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresUserTokenStore {
    db: PostgresDatabase,
    session_ttl: Duration,
    local: Arc<Local>,
}

struct Local {
    tier: SessionTier,
    listener: OnceLock<ListenerHandle>,
    listening: std::sync::atomic::AtomicBool,
    pending: std::sync::Mutex<HashMap<String, Pending>>,
}

struct ListenerHandle(tokio::task::JoinHandle<()>);

impl Drop for ListenerHandle {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A write to make again.
#[derive(Clone)]
struct Pending {
    session: SessionKey,
    tokens: Arc<UserTokens>,
    expected: Option<i64>,
    next: i64,
    value: Vec<u8>,
    ttl_ms: i64,
}

impl Local {
    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl fmt::Debug for PostgresUserTokenStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresUserTokenStore")
            .field("db", &self.db)
            .field("session_ttl", &self.session_ttl)
            .field("local_sessions", &self.local.tier.len())
            .finish()
    }
}

/// What the compare-and-set did.
enum Written {
    Stored(i64),
    Conflict,
}

impl PostgresUserTokenStore {
    /// A store on `db`, with an in-memory tier of up to 100,000 sessions. Needs no runtime to
    /// be built: the listener starts on first use.
    pub fn new(db: &PostgresDatabase) -> Self {
        Self::with_capacity(db, 100_000)
    }

    fn with_capacity(db: &PostgresDatabase, capacity: usize) -> Self {
        Self {
            db: db.clone(),
            session_ttl: Duration::from_secs(14 * 24 * 3600),
            local: Arc::new(Local {
                tier: SessionTier::new(capacity),
                listener: OnceLock::new(),
                listening: std::sync::atomic::AtomicBool::new(false),
                pending: std::sync::Mutex::new(HashMap::new()),
            }),
        }
    }

    /// How long a session lives after its last write.
    pub fn with_session_ttl(mut self, ttl: Duration) -> Self {
        self.session_ttl = ttl;
        self
    }

    /// At most `capacity` sessions in the in-memory tier (0 turns the tier off).
    pub fn with_local_capacity(self, capacity: usize) -> Self {
        Self {
            session_ttl: self.session_ttl,
            ..Self::with_capacity(&self.db, capacity)
        }
    }

    /// Whether the listener has connected (at least once).
    pub fn listening(&self) -> bool {
        self.local
            .listening
            .load(std::sync::atomic::Ordering::Acquire)
    }

    fn key(session: &SessionKey) -> String {
        let digest = sha2::Sha256::digest(format!("ut&session={}", session.as_str()).as_bytes());
        format!(
            "ut:{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
        )
    }

    /// What the encryption binds to a sealed session: its key and version.
    fn aad(key: &str, version: i64) -> Vec<u8> {
        format!("{key}#{version}").into_bytes()
    }

    /// Starts the listener (once, inside a runtime).
    fn listen(&self) {
        if self.local.tier.capacity() == 0 {
            return;
        }
        self.local.listener.get_or_init(|| {
            ListenerHandle(tokio::spawn(listen(
                Arc::downgrade(&self.local),
                self.db.clone(),
            )))
        });
    }

    async fn read(
        &self,
        session: &SessionKey,
    ) -> Result<Option<Versioned<Arc<UserTokens>>>, CacheError> {
        self.listen();
        let key = Self::key(session);
        if self.local.pending().contains_key(&key) && !self.repair(&key).await.unwrap_or(false) {
            if let Some(pending) = self.local.pending().get(&key) {
                // Not settled, and the database cannot say yet: the newest state known here.
                return Ok(Some(Versioned {
                    value: pending.tokens.clone(),
                    version: u64::try_from(pending.next).unwrap_or(0),
                }));
            }
        }
        let mut row = self.read_row(&key).await?;
        if let (Some((version, _)), Some(seen)) = (&row, self.local.tier.seen(&key)) {
            if (*version as u64) < seen {
                // Crossed a newer write whose announcement came first: read once more.
                row = self.read_row(&key).await?;
            }
        }
        let store_key: Arc<str> = Arc::from(key.as_str());
        let Some((version, value)) = row else {
            self.local.tier.forget(session, &key);
            return Ok(None);
        };
        let unsigned = u64::try_from(version).unwrap_or(0);
        let decoded = match self.local.tier.seen(&key) {
            Some(seen) if unsigned < seen => Err(StoredSessionError::Damaged),
            _ => UserTokens::open_stored(&value, &Self::aad(&key, version), self.db.encryption()),
        };
        match decoded {
            Ok(tokens) => {
                let versioned = Versioned {
                    value: Arc::new(tokens),
                    version: unsigned,
                };
                self.local.tier.put(session, &store_key, versioned.clone());
                Ok(Some(versioned))
            }
            Err(StoredSessionError::OtherFormat) => Ok(Some(Versioned {
                value: Arc::new(UserTokens::default()),
                version: unsigned,
            })),
            Err(StoredSessionError::Damaged) => {
                tracing::warn!(
                    "a stored session does not open, or is older than one seen here; deleting it"
                );
                self.local.tier.forget(session, &key);
                let _ = self
                    .db
                    .call(|c| async move {
                        c.client()
                            .execute(
                                "DELETE FROM tokenkeeper_user_tokens WHERE key = $1 AND version = $2",
                                &[&key, &version],
                            )
                            .await
                    })
                    .await;
                Ok(None)
            }
        }
    }

    async fn read_row(&self, key: &str) -> Result<Option<(i64, Vec<u8>)>, CacheError> {
        let key = key.to_owned();
        self.db
            .call(|c| async move {
                let row = c
                    .client()
                    .query_opt(c.statement(Sql::GetTokens), &[&key])
                    .await?;
                Ok(row.map(|row| (row.get(0), row.get(1))))
            })
            .await
    }

    /// The compare-and-set of `write` at `key`.
    async fn write(&self, key: &str, write: &Pending) -> Result<Written, CacheError> {
        let (key, write) = (key.to_owned(), write.clone());
        self.db
            .call(|c| async move {
                let rows = match write.expected {
                    Some(expected) => {
                        c.client()
                            .execute(
                                c.statement(Sql::UpdateTokens),
                                &[&key, &expected, &write.next, &write.value, &write.ttl_ms],
                            )
                            .await?
                    }
                    None => {
                        c.client()
                            .execute(
                                c.statement(Sql::InsertTokens),
                                &[&key, &write.next, &write.value, &write.ttl_ms],
                            )
                            .await?
                    }
                };
                Ok(if rows == 1 {
                    Written::Stored(write.next)
                } else {
                    Written::Conflict
                })
            })
            .await
    }

    /// Remembers `write` and writes it again in the background until it is settled.
    fn settle_later(&self, key: String, write: Pending) {
        {
            let mut pending = self.local.pending();
            if pending.get(&key).is_some_and(|p| p.next >= write.next) {
                return;
            }
            pending.insert(key.clone(), write);
        }
        let store = self.clone();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let mut delay = Duration::from_millis(50);
            loop {
                tokio::time::sleep(delay).await;
                if !store.local.pending().contains_key(&key)
                    || store.repair(&key).await.unwrap_or(false)
                {
                    return;
                }
                if started.elapsed() > PENDING_FOR {
                    if let Some(lost) = store.local.pending().remove(&key) {
                        tracing::error!(session = %lost.session.log_id(), "a session write could not be settled in PostgreSQL for 10 minutes; given up (the session's newest tokens may be lost)");
                    }
                    return;
                }
                delay = (delay * 2).min(Duration::from_secs(1));
            }
        });
    }

    /// Settles the pending write at `key`: `true` once the database holds it, a newer write,
    /// or no session (cleared meanwhile: nothing is written).
    async fn repair(&self, key: &str) -> Result<bool, CacheError> {
        let Some(write) = self.local.pending().get(key).cloned() else {
            return Ok(true);
        };
        let current = self.read_row(key).await?.map(|(version, _)| version);
        let settled = match current {
            Some(version) if version >= write.next => true,
            current if current == write.expected => {
                let written = matches!(self.write(key, &write).await?, Written::Stored(_));
                if written {
                    tracing::info!(session = %write.session.log_id(), "a session write whose outcome was unknown was written again");
                }
                written
            }
            _ => {
                tracing::warn!(session = %write.session.log_id(), "a session write could not be written again: the session was cleared or replaced meanwhile");
                true
            }
        };
        if settled {
            let mut pending = self.local.pending();
            if pending.get(key).is_some_and(|p| p.next == write.next) {
                pending.remove(key);
            }
        }
        Ok(settled)
    }
}

/// Listens for announcements until the store is dropped; drops the tier on every (re)connect.
async fn listen(local: Weak<Local>, db: PostgresDatabase) {
    let mut delay = Duration::from_millis(100);
    loop {
        let Some(alive) = local.upgrade() else {
            return;
        };
        drop(alive);
        let connected = tokio::time::timeout(
            Duration::from_secs(2),
            db.inner.config.connect(tokio_postgres::NoTls),
        )
        .await;
        if let Ok(Ok((client, mut connection))) = connected {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
            let driver = tokio::spawn(async move {
                let mut messages =
                    futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                while let Some(message) = messages.next().await {
                    match message {
                        Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                            if tx.send(n.payload().to_owned()).is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(error) => {
                            tracing::debug!(error = %describe(&error), "the PostgreSQL listener's connection ended");
                            return;
                        }
                    }
                }
            });
            if client
                .batch_execute(&format!("LISTEN {CHANNEL}"))
                .await
                .is_ok()
            {
                delay = Duration::from_millis(100);
                let Some(held) = local.upgrade() else {
                    driver.abort();
                    return;
                };
                held.tier.clear();
                held.listening
                    .store(true, std::sync::atomic::Ordering::Release);
                drop(held);
                while let Some(payload) = rx.recv().await {
                    let Some(held) = local.upgrade() else {
                        driver.abort();
                        return;
                    };
                    if let Some((key, version)) = payload.rsplit_once(' ') {
                        held.tier.invalidate(key, version.parse().unwrap_or(0));
                    }
                }
            }
            driver.abort();
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

impl UserTokenStore for PostgresUserTokenStore {
    #[inline]
    fn get_local(&self, session: &SessionKey) -> Option<Versioned<Arc<UserTokens>>> {
        self.local.tier.get(session)
    }

    fn get<'a>(
        &'a self,
        session: &'a SessionKey,
    ) -> BoxFuture<'a, Result<Option<Versioned<Arc<UserTokens>>>, CacheError>> {
        Box::pin(self.read(session))
    }

    fn store<'a>(
        &'a self,
        session: &'a SessionKey,
        tokens: Arc<UserTokens>,
        expected: Option<u64>,
    ) -> BoxFuture<'a, Result<StoreOutcome, CacheError>> {
        Box::pin(async move {
            self.listen();
            let key = Self::key(session);
            let now_ms = tokenkeeper::Timestamp::system_now().as_millis();
            let next = i64::try_from(Versioned::next_after(expected, now_ms))
                .map_err(|_| CacheError::new("version out of range"))?;
            let ttl_ms = tokens.store_ttl_ms(self.session_ttl, now_ms);
            let write = Pending {
                session: session.clone(),
                tokens: tokens.clone(),
                expected: expected.and_then(|v| i64::try_from(v).ok()),
                next,
                value: tokens.seal_stored(&Self::aad(&key, next), self.db.encryption())?,
                ttl_ms: i64::try_from(ttl_ms).unwrap_or(i64::MAX),
            };
            let store_key: Arc<str> = Arc::from(key.as_str());
            let keep = |version: i64| {
                self.local.tier.put(
                    session,
                    &store_key,
                    Versioned {
                        value: tokens.clone(),
                        version: u64::try_from(version).unwrap_or(0),
                    },
                );
            };
            match self.write(&key, &write).await {
                Ok(Written::Stored(version)) => {
                    keep(version);
                    Ok(StoreOutcome::Stored(u64::try_from(version).unwrap_or(0)))
                }
                Ok(Written::Conflict) => Ok(StoreOutcome::Conflict),
                Err(error) => {
                    // Applied or not, nobody can say now: kept, and written again until the
                    // database says where the session stands.
                    tracing::warn!(session = %session.log_id(), %error, "a session write failed; it is kept and written again when PostgreSQL answers");
                    keep(next);
                    self.settle_later(key, write);
                    Ok(StoreOutcome::Stored(u64::try_from(next).unwrap_or(0)))
                }
            }
        })
    }

    fn clear<'a>(&'a self, session: &'a SessionKey) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(async move {
            let key = Self::key(session);
            self.local.tier.forget(session, &key);
            self.local.pending().remove(&key);
            self.db
                .call(|c| async move {
                    c.client()
                        .execute(c.statement(Sql::DeleteTokens), &[&key])
                        .await
                })
                .await
                .map(|_| ())
        })
    }
}
