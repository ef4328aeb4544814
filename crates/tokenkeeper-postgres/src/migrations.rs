//! The crate's schema, as numbered SQL files applied once each.

use tokio_postgres::Client;

use crate::database::describe;
use tokenkeeper::CacheError;

/// The migrations, in order: `(version, SQL)`. [`crate::PostgresDatabase`] applies them on
/// first use; an administrator who applies them by hand records each version in
/// `tokenkeeper_migrations (version integer PRIMARY KEY, applied_at bigint)`.
pub const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../migrations/0001_tokenkeeper.sql")),
    (2, include_str!("../migrations/0002_bff_and_dpop.sql")),
];

/// The advisory lock that serialises migrations across instances.
const LOCK: i64 = 0x746b_6d69_6772_6174; // "tkmigrat"

/// Applies the migrations not applied yet, in one transaction.
pub(crate) async fn apply(client: &mut Client) -> Result<(), CacheError> {
    let error = |e: tokio_postgres::Error| {
        CacheError::new(format!("PostgreSQL migrations: {}", describe(&e)))
    };
    let transaction = client.transaction().await.map_err(error)?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK])
        .await
        .map_err(error)?;
    transaction
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS tokenkeeper_migrations (version integer PRIMARY KEY, applied_at bigint NOT NULL)",
        )
        .await
        .map_err(error)?;
    let applied: Vec<i32> = transaction
        .query("SELECT version FROM tokenkeeper_migrations", &[])
        .await
        .map_err(error)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    for (version, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        transaction.batch_execute(sql).await.map_err(error)?;
        transaction
            .execute(
                "INSERT INTO tokenkeeper_migrations (version, applied_at) VALUES ($1, (extract(epoch FROM now()) * 1000)::bigint)",
                &[version],
            )
            .await
            .map_err(error)?;
        tracing::info!(version, "applied a tokenkeeper migration");
    }
    transaction.commit().await.map_err(error)
}
