//! The PostgreSQL database a fleet shares: settings, the connection (made on first use and
//! made again after a failure), timeouts, outages, migrations and the expiry cleanup.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokenkeeper::{CacheError, Clock, Encryption, TokioClock};
use tokio_postgres::{Client, NoTls, Statement};

use crate::migrations;

/// Settings of the PostgreSQL backends.
///
/// Encryption at rest is not optional by accident (as for Redis, SEC-15): a database without
/// [`PostgresOptions::encryption`] is refused unless [`PostgresOptions::plaintext`] says so.
#[derive(Debug)]
pub struct PostgresOptions {
    /// Time allowed for each call. Default 2 s.
    pub timeout: Duration,
    /// After a failed call, how long the database is left alone before the next attempt.
    /// Default 200 ms.
    pub retry_pause: Duration,
    /// Encryption at rest (AES-256-GCM). Without it, `plaintext` must be `true`.
    pub encryption: Option<Encryption>,
    /// Stores tokens and refresh tokens in the clear, said out loud. Default `false`.
    pub plaintext: bool,
    /// Applies the crate's migrations ([`crate::MIGRATIONS`]) on first use (in one
    /// transaction, under an advisory lock, each once). Default `true`; with `false`, a
    /// database administrator applies them.
    pub migrate: bool,
}

impl PostgresOptions {
    /// Options that seal every entry with `encryption`.
    pub fn encrypted(encryption: Encryption) -> Self {
        Self {
            encryption: Some(encryption),
            ..Self::default()
        }
    }

    /// Options that store everything in the clear, knowingly.
    pub fn plaintext() -> Self {
        Self {
            plaintext: true,
            ..Self::default()
        }
    }
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(2),
            retry_pause: Duration::from_millis(200),
            encryption: None,
            plaintext: false,
            migrate: true,
        }
    }
}

/// The statements every connection prepares once.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Sql {
    GetTokens,
    UpdateTokens,
    InsertTokens,
    DeleteTokens,
    AcquireLease,
    RenewLease,
    ReleaseLease,
    ClaimOnce,
}

const STATEMENTS: [(Sql, &str); 8] = [
    (
        Sql::GetTokens,
        "SELECT version, value FROM tokenkeeper_user_tokens WHERE key = $1 AND expires_at > tokenkeeper_now_ms()",
    ),
    (
        Sql::UpdateTokens,
        "UPDATE tokenkeeper_user_tokens SET version = $3, value = $4, expires_at = tokenkeeper_now_ms() + $5 WHERE key = $1 AND version = $2 AND expires_at > tokenkeeper_now_ms()",
    ),
    (
        Sql::InsertTokens,
        "INSERT INTO tokenkeeper_user_tokens (key, version, value, expires_at) VALUES ($1, $2, $3, tokenkeeper_now_ms() + $4) \
         ON CONFLICT (key) DO UPDATE SET version = EXCLUDED.version, value = EXCLUDED.value, expires_at = EXCLUDED.expires_at \
         WHERE tokenkeeper_user_tokens.expires_at <= tokenkeeper_now_ms()",
    ),
    (
        Sql::DeleteTokens,
        "DELETE FROM tokenkeeper_user_tokens WHERE key = $1",
    ),
    (
        Sql::AcquireLease,
        "INSERT INTO tokenkeeper_leases (name, owner, expires_at) VALUES ($1, $2, tokenkeeper_now_ms() + $3) \
         ON CONFLICT (name) DO UPDATE SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at \
         WHERE tokenkeeper_leases.expires_at <= tokenkeeper_now_ms()",
    ),
    (
        Sql::RenewLease,
        "UPDATE tokenkeeper_leases SET expires_at = tokenkeeper_now_ms() + $3 WHERE name = $1 AND owner = $2",
    ),
    (
        Sql::ReleaseLease,
        "DELETE FROM tokenkeeper_leases WHERE name = $1 AND owner = $2",
    ),
    (
        Sql::ClaimOnce,
        "INSERT INTO tokenkeeper_once (key, expires_at) VALUES ($1, tokenkeeper_now_ms() + $2) \
         ON CONFLICT (key) DO UPDATE SET expires_at = EXCLUDED.expires_at WHERE tokenkeeper_once.expires_at <= tokenkeeper_now_ms()",
    ),
];

/// The database's connection, lent to a [`PostgresDatabase::call`].
#[derive(Clone)]
pub struct PostgresConnection(Arc<Connection>);

impl fmt::Debug for PostgresConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PostgresConnection")
    }
}

impl PostgresConnection {
    /// The client (queries are pipelined on the one connection).
    pub fn client(&self) -> &Client {
        &self.0.client
    }

    pub(crate) fn statement(&self, sql: Sql) -> &Statement {
        self.0.statement(sql)
    }
}

/// One connection and its prepared statements.
pub(crate) struct Connection {
    pub(crate) client: Client,
    statements: Vec<Statement>,
}

impl Connection {
    pub(crate) fn statement(&self, sql: Sql) -> &Statement {
        &self.statements[sql as usize]
    }
}

/// A PostgreSQL database shared by a fleet: what every store of this crate runs on.
///
/// - **Connection**: one, made on first use (so an application starts while the database is
///   down) and made again after it breaks; queries are pipelined on it. Its statements are
///   prepared once per connection.
/// - **Timeouts and outages**: every call gives up after [`PostgresOptions::timeout`]; after a
///   failure, calls fail fast for [`PostgresOptions::retry_pause`]; each outage logs one
///   warning.
/// - **Migrations**: applied on first use unless [`PostgresOptions::migrate`] is `false`.
/// - **TLS**: not built yet; a URL that asks for it (`sslmode=require`) is refused rather than
///   silently connected in the clear. Use a local socket, a private network or a TLS-terminating
///   proxy (pgbouncer, a sidecar) until then.
///
/// ```no_run
/// # fn run() -> Result<(), tokenkeeper::CacheError> {
/// use tokenkeeper_postgres::{Encryption, PostgresDatabase, PostgresOptions};
/// # let key = [7u8; 32];
/// let db = PostgresDatabase::new(
///     "postgres://tokenkeeper@db.internal/app",
///     PostgresOptions::encrypted(Encryption::new("k1", &key)?),
/// )?;
/// # let _ = db; Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresDatabase {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: tokio_postgres::Config,
    timeout: Duration,
    retry_pause: Duration,
    encryption: Option<Encryption>,
    migrate: bool,
    connection: std::sync::Mutex<Option<Arc<Connection>>>,
    connecting: tokio::sync::Mutex<()>,
    migrated: AtomicBool,
    down: AtomicBool,
    retry_at: AtomicU64,
    outages: AtomicU64,
    clock: TokioClock,
}

impl fmt::Debug for PostgresDatabase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may hold a password: only where it points.
        f.debug_struct("PostgresDatabase")
            .field("dbname", &self.inner.config.get_dbname())
            .field("encrypted", &self.inner.encryption.is_some())
            .field("down", &self.is_down())
            .finish_non_exhaustive()
    }
}

impl PostgresDatabase {
    /// A database at `url` (`postgres://user[:password]@host[:port]/dbname`, or key=value
    /// pairs). Nothing is connected until first use.
    pub fn new(url: &str, options: PostgresOptions) -> Result<Self, CacheError> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|_| CacheError::new("invalid PostgreSQL URL"))?;
        if matches!(
            config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        ) {
            return Err(CacheError::new(
                "the PostgreSQL URL asks for TLS (sslmode=require), which this build does not do yet; connect over a private network or a local socket, or through a TLS-terminating proxy",
            ));
        }
        match (&options.encryption, options.plaintext) {
            (None, false) => {
                return Err(CacheError::new(
                    "no encryption key: PostgreSQL would hold tokens in the clear; set PostgresOptions::encryption, or PostgresOptions::plaintext = true to store them in plaintext knowingly",
                ))
            }
            (Some(_), true) => {
                return Err(CacheError::new(
                    "PostgresOptions sets both an encryption key and plaintext = true: choose one",
                ))
            }
            (None, true) => {
                tracing::warn!("PostgreSQL stores tokens in plaintext (PostgresOptions::plaintext): the database is as sensitive as the tokens");
            }
            (Some(_), false) => {}
        }
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                timeout: options.timeout,
                retry_pause: options.retry_pause,
                encryption: options.encryption,
                migrate: options.migrate,
                connection: std::sync::Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
                migrated: AtomicBool::new(false),
                down: AtomicBool::new(false),
                retry_at: AtomicU64::new(0),
                outages: AtomicU64::new(0),
                clock: TokioClock::new(),
            }),
        })
    }

    /// The encryption at rest, when configured.
    pub fn encryption(&self) -> Option<&Encryption> {
        self.inner.encryption.as_ref()
    }

    /// Whether the database is currently considered down.
    pub fn is_down(&self) -> bool {
        self.inner.down.load(Ordering::Relaxed)
    }

    /// How many outages have been seen (each counted once, however long).
    pub fn outages(&self) -> u64 {
        self.inner.outages.load(Ordering::Relaxed)
    }

    /// Applies the migrations not applied yet (see [`crate::MIGRATIONS`]): in one
    /// transaction, under an advisory lock, so that instances starting together apply each
    /// once.
    pub async fn migrate(&self) -> Result<(), CacheError> {
        let (mut client, connection) =
            tokio::time::timeout(self.inner.timeout, self.inner.config.connect(NoTls))
                .await
                .map_err(|_| CacheError::new("PostgreSQL did not answer in time (migrations)"))?
                .map_err(|e| CacheError::new(format!("PostgreSQL: {}", describe(&e))))?;
        let driver = tokio::spawn(connection);
        let applied = migrations::apply(&mut client).await;
        drop(client);
        let _ = driver.await;
        applied?;
        self.inner.migrated.store(true, Ordering::Release);
        Ok(())
    }

    /// Deletes expired rows (users' tokens, leases, one-use markers, DPoP keys; a BFF's sessions
    /// are claimed by its own cleanup, which revokes them), `batch` rows per statement,
    /// until none is left: how many. Run it periodically from one place or from every instance
    /// (batches do not block each other: `FOR UPDATE SKIP LOCKED`).
    pub async fn cleanup_expired(&self, batch: u32) -> Result<u64, CacheError> {
        let mut deleted = 0;
        for table in [
            "tokenkeeper_user_tokens",
            "tokenkeeper_leases",
            "tokenkeeper_once",
        ] {
            let key = if table == "tokenkeeper_leases" {
                "name"
            } else {
                "key"
            };
            let sql = format!(
                "DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} WHERE expires_at <= tokenkeeper_now_ms() LIMIT $1 FOR UPDATE SKIP LOCKED)"
            );
            loop {
                let sql = sql.clone();
                let n = self
                    .call(|c| async move { c.client().execute(&sql, &[&i64::from(batch)]).await })
                    .await?;
                deleted += n;
                if n < u64::from(batch) {
                    break;
                }
            }
        }
        Ok(deleted)
    }

    /// Runs `f` on the connection, with the timeout and outage tracking: for stores of
    /// sibling crates that share it (the BFF's sessions). Queries go through
    /// [`PostgresConnection::client`]; their parameters never reach an error message.
    pub async fn call<T, F, Fut>(&self, f: F) -> Result<T, CacheError>
    where
        F: FnOnce(PostgresConnection) -> Fut,
        Fut: std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let inner = &self.inner;
        if inner.down.load(Ordering::Relaxed)
            && inner.clock.now().as_millis() < inner.retry_at.load(Ordering::Relaxed)
        {
            return Err(CacheError::new(
                "PostgreSQL is down (pausing before the next attempt)",
            ));
        }
        let result = tokio::time::timeout(inner.timeout, async {
            let connection = self.connection().await?;
            f(PostgresConnection(connection))
                .await
                .map_err(|e| describe(&e))
        })
        .await;
        match result {
            Ok(Ok(value)) => {
                if inner.down.swap(false, Ordering::AcqRel) {
                    tracing::info!("PostgreSQL is reachable again");
                }
                Ok(value)
            }
            Ok(Err(message)) => Err(self.failed(format!("PostgreSQL: {message}"))),
            Err(_) => Err(self.failed(format!(
                "PostgreSQL did not answer within {:?} (timeout)",
                inner.timeout
            ))),
        }
    }

    fn failed(&self, message: String) -> CacheError {
        let inner = &self.inner;
        // A broken connection is made again on the next call.
        let broken = inner
            .connection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .is_none_or(|c| c.client.is_closed());
        if broken || message.contains("timeout") {
            *inner
                .connection
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        }
        inner.retry_at.store(
            inner
                .clock
                .now()
                .saturating_add(inner.retry_pause)
                .as_millis(),
            Ordering::Relaxed,
        );
        if !inner.down.swap(true, Ordering::AcqRel) {
            inner.outages.fetch_add(1, Ordering::Relaxed);
            #[cfg(feature = "metrics")]
            metrics::counter!("tokenkeeper_postgres_outages_total").increment(1);
            tracing::warn!(error = %message, "PostgreSQL is unreachable; going on with the in-process tier until it is back");
        }
        CacheError::new(message)
    }

    async fn connection(&self) -> Result<Arc<Connection>, String> {
        let inner = &self.inner;
        let current = || {
            inner
                .connection
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
                .filter(|c| !c.client.is_closed())
        };
        if let Some(connection) = current() {
            return Ok(connection);
        }
        let _one = inner.connecting.lock().await;
        if let Some(connection) = current() {
            return Ok(connection);
        }
        if inner.migrate && !inner.migrated.load(Ordering::Acquire) {
            self.migrate().await.map_err(|e| e.to_string())?;
        }
        let (client, connection) = inner
            .config
            .connect(NoTls)
            .await
            .map_err(|e| describe(&e))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(error = %describe(&error), "a PostgreSQL connection ended");
            }
        });
        let mut statements = Vec::with_capacity(STATEMENTS.len());
        for (i, (sql, text)) in STATEMENTS.iter().enumerate() {
            debug_assert_eq!(*sql as usize, i);
            statements.push(client.prepare(text).await.map_err(|e| describe(&e))?);
        }
        let connection = Arc::new(Connection { client, statements });
        *inner
            .connection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(connection.clone());
        Ok(connection)
    }
}

/// What went wrong, without the query's parameters (they may be secrets).
pub(crate) fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None if error.is_closed() => "the connection is closed".to_owned(),
        None => {
            let text = error.to_string();
            text.chars().take(200).collect()
        }
    }
}
