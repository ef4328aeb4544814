//! Sessions in PostgreSQL, for a fleet of BFF instances that keeps its state in the database it
//! already operates (FL-05).

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use futures_util::future::BoxFuture;
use sha2::Digest as _;
use tokenkeeper::{CacheError, Timestamp};
use tokenkeeper_postgres::PostgresDatabase;

use crate::session::{session_id_hash, BffSession, BffSessionStore};

/// How many sessions the cleanup claims per statement.
const BATCH: i64 = 500;

/// Sessions in PostgreSQL (`tokenkeeper_bff_sessions`), shared by every BFF instance on the
/// same database: a login on one instance is a session on all; a logout or back-channel logout
/// on any ends it everywhere.
///
/// - A session is a row named by the SHA-256 of its id ([`BffSession::id_hash`]; the id is
///   the cookie and is never stored) and found by hashes of `sub` and `sid` (indexed). The
///   value is sealed with the database's encryption (it holds the ID token), bound to the
///   row's namespace and id hash.
/// - A slide updates the row only if it is still there: a slide racing a logout cannot bring
///   the session back (SEC-26).
/// - The cleanup claims expired sessions in batches (`DELETE … FOR UPDATE SKIP LOCKED …
///   RETURNING`), each by one instance across the fleet, to revoke their refresh tokens.
///
/// ```no_run
/// # fn run() -> Result<(), tokenkeeper::CacheError> {
/// use tokenkeeper_bff::PostgresBffSessionStore;
/// use tokenkeeper_postgres::{Encryption, PostgresDatabase, PostgresOptions};
/// # let key = [7u8; 32];
/// let db = PostgresDatabase::new(
///     "postgres://bff@db.internal/app",
///     PostgresOptions::encrypted(Encryption::new("k1", &key)?),
/// )?;
/// let sessions = PostgresBffSessionStore::new(&db);
/// # let _ = sessions; Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresBffSessionStore {
    db: PostgresDatabase,
    /// `bff`, or `bff@<frontend>` (BF-17).
    namespace: Arc<str>,
}

impl fmt::Debug for PostgresBffSessionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresBffSessionStore")
            .field("db", &self.db)
            .field("namespace", &self.namespace)
            .finish()
    }
}

fn hash(value: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(value.as_bytes()))
}

impl PostgresBffSessionStore {
    /// A store on `db`.
    pub fn new(db: &PostgresDatabase) -> Self {
        Self {
            db: db.clone(),
            namespace: Arc::from("bff"),
        }
    }

    /// The same store, for the sessions of one frontend of several (BF-17): its sessions are
    /// found by it alone.
    pub fn for_frontend(&self, frontend: &str) -> Self {
        Self {
            db: self.db.clone(),
            namespace: Arc::from(format!("bff@{frontend}")),
        }
    }

    fn aad(&self, id_hash: &str) -> Vec<u8> {
        format!("{}/{id_hash}", self.namespace).into_bytes()
    }

    fn seal(&self, session: &BffSession) -> Result<Vec<u8>, CacheError> {
        let json = serde_json::to_vec(session).map_err(|e| CacheError::new(e.to_string()))?;
        match self.db.encryption() {
            Some(encryption) => encryption.seal(&self.aad(&session.id_hash), &json),
            None => Ok(json),
        }
    }

    fn open(&self, id_hash: &str, value: &[u8]) -> Option<BffSession> {
        let json = match self.db.encryption() {
            Some(encryption) => encryption.open(&self.aad(id_hash), value)?,
            None => value.to_vec(),
        };
        let session: BffSession = serde_json::from_slice(&json).ok()?;
        (session.id_hash == id_hash).then_some(session)
    }

    /// Rows (`id_hash`, `value`) of `sql`, which takes the namespace as `$1` and `params`.
    async fn rows(
        &self,
        sql: &'static str,
        param: String,
        second: Option<String>,
    ) -> Result<Vec<BffSession>, CacheError> {
        let namespace = self.namespace.to_string();
        let rows: Vec<(String, Vec<u8>)> = self
            .db
            .call(|c| async move {
                let rows = match &second {
                    Some(second) => c.client().query(sql, &[&namespace, &param, second]).await?,
                    None => c.client().query(sql, &[&namespace, &param]).await?,
                };
                Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
            })
            .await?;
        Ok(rows
            .iter()
            .filter_map(|(id_hash, value)| self.open(id_hash, value))
            .collect())
    }
}

impl BffSessionStore for PostgresBffSessionStore {
    fn check(&self) -> BoxFuture<'_, Result<(), CacheError>> {
        Box::pin(async move {
            self.db
                .call(|c| async move { c.client().simple_query("SELECT 1").await })
                .await
                .map(|_| ())
        })
    }

    fn get<'a>(
        &'a self,
        id: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Option<Arc<BffSession>>, CacheError>> {
        Box::pin(async move {
            let found = self
                .rows(
                    "SELECT id_hash, value FROM tokenkeeper_bff_sessions WHERE namespace = $1 AND id_hash = $2",
                    session_id_hash(id),
                    None,
                )
                .await?;
            Ok(found
                .into_iter()
                .find(|s| s.expires_at > now.as_millis())
                .map(|mut session| {
                    session.id = id.to_owned();
                    Arc::new(session)
                }))
        })
    }

    fn put(&self, session: BffSession) -> BoxFuture<'_, Result<(), CacheError>> {
        Box::pin(async move {
            let value = self.seal(&session)?;
            let namespace = self.namespace.to_string();
            let (sub, sid) = (hash(&session.sub), hash(&session.sid));
            let expires_at = i64::try_from(session.expires_at).unwrap_or(i64::MAX);
            let id_hash = session.id_hash.clone();
            self.db
                .call(|c| async move {
                    c.client()
                        .execute(
                            "INSERT INTO tokenkeeper_bff_sessions (namespace, id_hash, sub_hash, sid_hash, expires_at, value) \
                             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (namespace, id_hash) DO UPDATE \
                             SET sub_hash = EXCLUDED.sub_hash, sid_hash = EXCLUDED.sid_hash, expires_at = EXCLUDED.expires_at, value = EXCLUDED.value",
                            &[&namespace, &id_hash, &sub, &sid, &expires_at, &value],
                        )
                        .await
                })
                .await
                .map(|_| ())
        })
    }

    fn touch<'a>(
        &'a self,
        session: &'a BffSession,
        expires_at: u64,
    ) -> BoxFuture<'a, Result<bool, CacheError>> {
        Box::pin(async move {
            let mut moved = session.clone();
            moved.expires_at = expires_at;
            let value = self.seal(&moved)?;
            let namespace = self.namespace.to_string();
            let id_hash = session.id_hash.clone();
            let expires_at = i64::try_from(expires_at).unwrap_or(i64::MAX);
            let rows = self
                .db
                .call(|c| async move {
                    c.client()
                        .execute(
                            "UPDATE tokenkeeper_bff_sessions SET expires_at = $3, value = $4 WHERE namespace = $1 AND id_hash = $2",
                            &[&namespace, &id_hash, &expires_at, &value],
                        )
                        .await
                })
                .await?;
            Ok(rows == 1)
        })
    }

    fn remove<'a>(
        &'a self,
        session: &'a BffSession,
    ) -> BoxFuture<'a, Result<Option<BffSession>, CacheError>> {
        Box::pin(async move {
            Ok(self
                .rows(
                    "DELETE FROM tokenkeeper_bff_sessions WHERE namespace = $1 AND id_hash = $2 RETURNING id_hash, value",
                    session.id_hash.clone(),
                    None,
                )
                .await?
                .pop())
        })
    }

    fn find<'a>(
        &'a self,
        sub: Option<&'a str>,
        sid: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<BffSession>, CacheError>> {
        Box::pin(async move {
            let found = match (sub, sid) {
                (Some(sub), Some(sid)) => {
                    self.rows(
                        "SELECT id_hash, value FROM tokenkeeper_bff_sessions WHERE namespace = $1 AND sub_hash = $2 AND sid_hash = $3",
                        hash(sub),
                        Some(hash(sid)),
                    )
                    .await?
                }
                (Some(sub), None) => {
                    self.rows(
                        "SELECT id_hash, value FROM tokenkeeper_bff_sessions WHERE namespace = $1 AND sub_hash = $2",
                        hash(sub),
                        None,
                    )
                    .await?
                }
                (None, Some(sid)) => {
                    self.rows(
                        "SELECT id_hash, value FROM tokenkeeper_bff_sessions WHERE namespace = $1 AND sid_hash = $2",
                        hash(sid),
                        None,
                    )
                    .await?
                }
                (None, None) => return Ok(Vec::new()),
            };
            // Hashes matched: the values must too.
            Ok(found
                .into_iter()
                .filter(|s| {
                    sid.is_none_or(|sid| s.sid == sid) && sub.is_none_or(|sub| s.sub == sub)
                })
                .collect())
        })
    }

    fn take_expired(&self, now: Timestamp) -> BoxFuture<'_, Result<Vec<BffSession>, CacheError>> {
        Box::pin(async move {
            let mut taken = Vec::new();
            loop {
                let batch = self
                    .rows(
                        "DELETE FROM tokenkeeper_bff_sessions WHERE namespace = $1 AND id_hash IN \
                         (SELECT id_hash FROM tokenkeeper_bff_sessions WHERE namespace = $1 AND expires_at <= $2::text::bigint \
                          ORDER BY expires_at LIMIT 500 FOR UPDATE SKIP LOCKED) RETURNING id_hash, value",
                        now.as_millis().to_string(),
                        None,
                    )
                    .await?;
                let claimed = batch.len();
                taken.extend(batch);
                if claimed < BATCH as usize {
                    return Ok(taken);
                }
            }
        })
    }

    fn first_use<'a>(
        &'a self,
        key: &'a str,
        until: Timestamp,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<bool, CacheError>> {
        Box::pin(async move {
            let ttl = until.as_millis().saturating_sub(now.as_millis());
            self.db
                .set_once(
                    &format!("{}-once:{key}", self.namespace),
                    std::time::Duration::from_millis(ttl),
                )
                .await
        })
    }
}
