//! The distributed lease in PostgreSQL: a row per key with an owner and an expiry.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use futures_util::future::BoxFuture;
use sha2::Digest as _;
use tokenkeeper::{CacheError, CacheKey, Lease, LeaseGuard};

use crate::database::{PostgresDatabase, Sql};

/// One fill or refresh per key across every instance sharing the database (see [`Lease`]).
///
/// A lease is a row of `tokenkeeper_leases` named by a hash of the key: taken by an insert that
/// succeeds only where no live lease is (`ON CONFLICT … WHERE expires_at <= now`), with a random
/// owner; renewed every `ttl / 3` while the fetch runs (only by its owner); released by
/// deleting it (only by its owner). A lease whose holder died expires after `ttl`. If the
/// database is down the lease reports an error and the manager fetches locally.
#[derive(Clone)]
pub struct PostgresLease {
    db: PostgresDatabase,
}

impl fmt::Debug for PostgresLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresLease")
            .field("db", &self.db)
            .finish()
    }
}

impl PostgresLease {
    /// A lease on `db`.
    pub fn new(db: &PostgresDatabase) -> Self {
        Self { db: db.clone() }
    }
}

impl Lease for PostgresLease {
    fn try_acquire<'a>(
        &'a self,
        key: &'a CacheKey,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<LeaseGuard>, CacheError>> {
        Box::pin(async move {
            let name = format!(
                "lease:{}",
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(sha2::Sha256::digest(key.as_str().as_bytes()))
            );
            let owner = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
            let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
            let (n, o) = (name.clone(), owner.clone());
            let taken = self
                .db
                .call(|c| async move {
                    c.client()
                        .execute(c.statement(Sql::AcquireLease), &[&n, &o, &ttl_ms])
                        .await
                })
                .await?;
            if taken != 1 {
                return Ok(None);
            }
            let renew_every = (ttl / 3).max(Duration::from_millis(10));
            let renewer = {
                let (db, name, owner) = (self.db.clone(), name.clone(), owner.clone());
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(renew_every).await;
                        let (n, o) = (name.clone(), owner.clone());
                        let renewed = db
                            .call(|c| async move {
                                c.client()
                                    .execute(c.statement(Sql::RenewLease), &[&n, &o, &ttl_ms])
                                    .await
                            })
                            .await;
                        if matches!(renewed, Ok(0)) {
                            tracing::warn!("lost a lease while the fetch was running");
                            return;
                        }
                    }
                })
            };
            let db = self.db.clone();
            Ok(Some(LeaseGuard::new(async move {
                renewer.abort();
                let _ = db
                    .call(|c| async move {
                        c.client()
                            .execute(c.statement(Sql::ReleaseLease), &[&name, &owner])
                            .await
                    })
                    .await;
            })))
        })
    }
}
