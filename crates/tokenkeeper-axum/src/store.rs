//! A [`UserTokenStore`] kept in the application's tower-sessions backend.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokenkeeper::user::{SessionKey, StoreOutcome, UserTokenStore, UserTokens, Versioned};
use tokenkeeper::CacheError;
use tower_sessions::cookie::time::OffsetDateTime;
use tower_sessions::session::{Id, Record};
use tower_sessions::SessionStore;

/// Users' tokens in the same backend as the sessions (any [`SessionStore`]: memory, Redis,
/// SQL…), so an application that already runs tower-sessions needs nothing else.
///
/// Each session's tokens are a record of their own, whose id is derived from the
/// [`SessionKey`]; the session's own record is left alone, so the session middleware never
/// overwrites them. `store` is a compare-and-set on a version kept in the record; it is atomic
/// within this process (a lock) — across instances, give the user token manager a lease (as with
/// the Redis store). Records expire `ttl` after their last write (default 14 days).
pub struct SessionStoreUserTokenStore<S> {
    store: S,
    ttl: Duration,
    lock: tokio::sync::Mutex<()>,
}

impl<S> fmt::Debug for SessionStoreUserTokenStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionStoreUserTokenStore")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

const DATA: &str = "tokenkeeper.user_tokens";

impl<S: SessionStore> SessionStoreUserTokenStore<S> {
    /// Tokens in `store`.
    pub fn new(store: S) -> Self {
        Self {
            store,
            ttl: Duration::from_secs(14 * 24 * 3600),
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// How long a session's tokens live after their last write.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    fn id(key: &SessionKey) -> Id {
        let digest = Sha256::digest(format!("tokenkeeper:{}", key.as_str()).as_bytes());
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        Id(i128::from_le_bytes(bytes))
    }

    async fn load(
        &self,
        key: &SessionKey,
    ) -> Result<Option<Versioned<Arc<UserTokens>>>, CacheError> {
        let record = self
            .store
            .load(&Self::id(key))
            .await
            .map_err(|e| CacheError::new(format!("session store: {e}")))?;
        let Some(value) = record.and_then(|r| r.data.get(DATA).cloned()) else {
            return Ok(None);
        };
        let version = value.get("ver").and_then(serde_json::Value::as_u64);
        let tokens = value.get("tokens").and_then(UserTokens::from_json);
        Ok(match (version, tokens) {
            (Some(version), Some(tokens)) => Some(Versioned {
                value: Arc::new(tokens),
                version,
            }),
            _ => None,
        })
    }
}

impl<S: SessionStore> UserTokenStore for SessionStoreUserTokenStore<S> {
    fn get<'a>(
        &'a self,
        key: &'a SessionKey,
    ) -> futures_util::future::BoxFuture<'a, Result<Option<Versioned<Arc<UserTokens>>>, CacheError>>
    {
        Box::pin(self.load(key))
    }

    fn store<'a>(
        &'a self,
        key: &'a SessionKey,
        tokens: Arc<UserTokens>,
        expected: Option<u64>,
    ) -> futures_util::future::BoxFuture<'a, Result<StoreOutcome, CacheError>> {
        Box::pin(async move {
            let _guard = self.lock.lock().await;
            let current = self.load(key).await?.map(|v| v.version);
            if current != expected {
                return Ok(StoreOutcome::Conflict);
            }
            let version = current.map_or(1, |v| v + 1);
            let mut data = std::collections::HashMap::new();
            data.insert(
                DATA.to_owned(),
                serde_json::json!({"ver": version, "tokens": tokens.to_json()}),
            );
            let ttl = tower_sessions::cookie::time::Duration::try_from(self.ttl)
                .unwrap_or(tower_sessions::cookie::time::Duration::days(14));
            let record = Record {
                id: Self::id(key),
                data,
                expiry_date: OffsetDateTime::now_utc() + ttl,
            };
            self.store
                .save(&record)
                .await
                .map_err(|e| CacheError::new(format!("session store: {e}")))?;
            Ok(StoreOutcome::Stored(version))
        })
    }

    fn clear<'a>(
        &'a self,
        key: &'a SessionKey,
    ) -> futures_util::future::BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(async move {
            self.store
                .delete(&Self::id(key))
                .await
                .map_err(|e| CacheError::new(format!("session store: {e}")))
        })
    }
}
