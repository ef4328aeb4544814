//! PostgreSQL backends for [`tokenkeeper`]: what a fleet shares when it keeps its sessions in the
//! SQL database it already operates (FL-05).
//!
//! - [`PostgresDatabase`]: the connection, timeouts, outages, migrations, expiry cleanup.
//! - [`PostgresUserTokenStore`]: users' session tokens, compare-and-set on a version, with an
//!   in-process tier invalidated by `LISTEN`/`NOTIFY`.
//! - [`PostgresLease`]: one refresh per session across instances.
//! - [`PostgresLoginReplayStore`]: taken login callbacks, each login completed once.
//! - [`PostgresDpopKeyStore`]: per-session DPoP keys, always sealed.
//!
//! Every store seals what it writes (AES-256-GCM) unless [`PostgresOptions::plaintext`] asks
//! for plaintext explicitly. The schema ships with the crate ([`MIGRATIONS`]) and is applied on
//! first use.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use tokenkeeper::user::UserTokenManager;
//! use tokenkeeper::ClientConfig;
//! use tokenkeeper_postgres::{Encryption, PostgresDatabase, PostgresLease, PostgresOptions, PostgresUserTokenStore};
//!
//! # let key = [7u8; 32];
//! let db = PostgresDatabase::new(
//!     "postgres://tokenkeeper@db.internal/app",
//!     PostgresOptions::encrypted(Encryption::new("2026-12", &key)?),
//! )?;
//! let users = UserTokenManager::builder(ClientConfig::from_issuer("https://idp.example.com", "web", "secret"))
//!     .store(Arc::new(PostgresUserTokenStore::new(&db)))
//!     .lease(Arc::new(PostgresLease::new(&db)))
//!     .build()?;
//! // Now and then, from any instance:
//! db.cleanup_expired(1000).await?;
//! # let _ = users; Ok(()) }
//! ```

mod database;
mod dpop_keys;
mod lease;
mod login_replay;
mod migrations;
mod user_store;

pub use database::{PostgresConnection, PostgresDatabase, PostgresOptions};
pub use dpop_keys::PostgresDpopKeyStore;
pub use lease::PostgresLease;
pub use login_replay::PostgresLoginReplayStore;
pub use migrations::MIGRATIONS;
pub use tokenkeeper::Encryption;
/// The driver, for stores of sibling crates that run their own queries.
pub use tokio_postgres;
pub use user_store::PostgresUserTokenStore;
