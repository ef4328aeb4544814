//! Taken login callbacks in PostgreSQL: each login completed once across a fleet.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use futures_util::future::BoxFuture;
use sha2::Digest as _;
use tokenkeeper::user::LoginReplayStore;
use tokenkeeper::CacheError;

use crate::database::{PostgresDatabase, Sql};

/// Remembers taken login callbacks (and other one-use markers) in `tokenkeeper_once`: of two
/// callbacks of one login sent at once to two instances, one makes the code exchange (SEC-02
/// for a fleet). A row holds a hash of the key and its expiry, nothing else.
#[derive(Clone)]
pub struct PostgresLoginReplayStore {
    db: PostgresDatabase,
}

impl fmt::Debug for PostgresLoginReplayStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresLoginReplayStore")
            .field("db", &self.db)
            .finish()
    }
}

impl PostgresLoginReplayStore {
    /// A store on `db`.
    pub fn new(db: &PostgresDatabase) -> Self {
        Self { db: db.clone() }
    }
}

impl PostgresDatabase {
    /// Records `key` for `ttl` unless it is recorded already (atomic across instances): `true`
    /// the first time. For one-use markers (login callbacks, back-channel logout tokens'
    /// `jti`s).
    pub async fn set_once(&self, key: &str, ttl: Duration) -> Result<bool, CacheError> {
        let name = format!(
            "once:{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(sha2::Sha256::digest(key.as_bytes()))
        );
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
        let rows = self
            .call(|c| async move {
                c.client()
                    .execute(c.statement(Sql::ClaimOnce), &[&name, &ttl_ms])
                    .await
            })
            .await?;
        Ok(rows == 1)
    }
}

impl LoginReplayStore for PostgresLoginReplayStore {
    fn claim<'a>(&'a self, key: &'a str, ttl: Duration) -> BoxFuture<'a, Result<bool, CacheError>> {
        Box::pin(async move { self.db.set_once(&format!("login&k={key}"), ttl).await })
    }
}
