//! A [`UserTokenStore`] kept in the application's tower-sessions backend.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use sha2::{Digest, Sha256};
use tokenkeeper::user::{SessionKey, StoreOutcome, UserTokenStore, UserTokens, Versioned};
use tokenkeeper::CacheError;
use tower_sessions::cookie::time::OffsetDateTime;
use tower_sessions::session::{Id, Record};
use tower_sessions::SessionStore;

/// Users' tokens in the same backend as the sessions (any [`SessionStore`]: memory, Redis,
/// SQL…), so an application that already runs tower-sessions needs nothing else.
///
/// - Each session's tokens are a record of their own; the session's own record is left alone,
///   so the session middleware never overwrites them.
/// - **Not a web session** (SEC-05): a record's id is an HMAC of the [`SessionKey`] under a
///   secret, so nobody — not even someone who knows `sub` and `sid` — can name it in a session
///   cookie. The secret is random per process by default; instances that share the backend
///   must share it ([`SessionStoreUserTokenStore::with_secret`]).
/// - **Encryption at rest**, chosen at construction ([`SessionStoreUserTokenStore::encrypted`],
///   or [`SessionStoreUserTokenStore::plaintext`] said out loud: SEC-15): the tokens are sealed
///   with AES-256-GCM, bound to the record id and version, so a record cannot be moved or
///   rolled back to an older version without the key.
/// - `store` is a compare-and-set on a version kept in the record; it is atomic within this
///   process (a lock) — across instances, give the user token manager a lease (as with the
///   Redis store). Records expire `ttl` after their last write (default 14 days).
pub struct SessionStoreUserTokenStore<S> {
    store: S,
    ttl: Duration,
    lock: tokio::sync::Mutex<()>,
    secret: [u8; 32],
    encryption: Option<tokenkeeper::Encryption>,
}

impl<S> fmt::Debug for SessionStoreUserTokenStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionStoreUserTokenStore")
            .field("ttl", &self.ttl)
            .field("encryption", &self.encryption)
            .finish_non_exhaustive()
    }
}

const DATA: &str = "tokenkeeper.user_tokens";

impl<S: SessionStore> SessionStoreUserTokenStore<S> {
    /// Tokens in `store`, sealed at rest with `encryption` (refresh tokens included), with a
    /// random record-id secret (one process; see [`SessionStoreUserTokenStore::with_secret`]
    /// for several).
    pub fn encrypted(store: S, encryption: tokenkeeper::Encryption) -> Self {
        Self {
            encryption: Some(encryption),
            ..Self::plaintext(store)
        }
    }

    /// Tokens in `store` **in the clear**, said out loud (SEC-15): for a backend that is
    /// trusted like the tokens themselves (this process's memory); a shared backend (Redis,
    /// SQL) should be [`SessionStoreUserTokenStore::encrypted`].
    pub fn plaintext(store: S) -> Self {
        let mut secret = [0u8; 32];
        if let Ok(random) = tokenkeeper::random_token(32) {
            let digest = Sha256::digest(random.as_bytes());
            secret.copy_from_slice(&digest);
        }
        Self {
            store,
            ttl: Duration::from_secs(14 * 24 * 3600),
            lock: tokio::sync::Mutex::new(()),
            secret,
            encryption: None,
        }
    }

    /// The secret from which record ids are derived. Every instance sharing the backend must
    /// use the same one (at least 32 random bytes, kept like a key).
    pub fn with_secret(mut self, secret: &[u8; 32]) -> Self {
        self.secret = *secret;
        self
    }

    /// How long a session's tokens live after their last write.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The record id holding `key`'s tokens: an HMAC-SHA-256 of the key under the secret.
    pub fn record_id(&self, key: &SessionKey) -> Id {
        let tag = hmac_sha256(&self.secret, key.as_str().as_bytes());
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&tag[..16]);
        Id(i128::from_le_bytes(bytes))
    }

    /// What the encryption authenticates along with a record: its id and version.
    fn aad(id: &Id, version: u64) -> Vec<u8> {
        format!("tokenkeeper:ut:{}:{version}", id.0).into_bytes()
    }

    async fn load(
        &self,
        key: &SessionKey,
    ) -> Result<Option<Versioned<Arc<UserTokens>>>, CacheError> {
        let id = self.record_id(key);
        let record = self
            .store
            .load(&id)
            .await
            .map_err(|e| CacheError::new(format!("session store: {e}")))?;
        let Some(value) = record.and_then(|r| r.data.get(DATA).cloned()) else {
            return Ok(None);
        };
        let Some(version) = value.get("ver").and_then(serde_json::Value::as_u64) else {
            return Ok(None);
        };
        let tokens = match (&self.encryption, value.get("sealed"), value.get("tokens")) {
            (Some(encryption), Some(sealed), _) => sealed
                .as_str()
                .and_then(base64_decode)
                .and_then(|sealed| encryption.open(&Self::aad(&id, version), &sealed))
                .and_then(|json| serde_json::from_slice::<serde_json::Value>(&json).ok())
                .and_then(|json| UserTokens::from_json(&json)),
            // Encryption is on: a plaintext record is not trusted.
            (Some(_), None, _) => None,
            (None, _, Some(tokens)) => UserTokens::from_json(tokens),
            (None, _, None) => None,
        };
        match tokens {
            Some(tokens) => Ok(Some(Versioned {
                value: Arc::new(tokens),
                version,
            })),
            None => {
                // Unreadable (tampered, rolled back, other key): gone, so that the next login
                // for this session works.
                tracing::warn!("a stored token record does not open or parse; deleting it");
                self.store
                    .delete(&id)
                    .await
                    .map_err(|e| CacheError::new(format!("session store: {e}")))?;
                Ok(None)
            }
        }
    }
}

fn hmac_sha256(key: &[u8; 32], message: &[u8]) -> [u8; 32] {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
    let mut out = [0u8; 32];
    out.copy_from_slice(aws_lc_rs::hmac::sign(&key, message).as_ref());
    out
}

fn base64_encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .ok()
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
            let id = self.record_id(key);
            let value = match &self.encryption {
                Some(encryption) => {
                    let json = serde_json::to_vec(&tokens.to_json())
                        .map_err(|e| CacheError::new(format!("encode: {e}")))?;
                    let sealed = encryption.seal(&Self::aad(&id, version), &json)?;
                    serde_json::json!({"ver": version, "sealed": base64_encode(&sealed)})
                }
                None => serde_json::json!({"ver": version, "tokens": tokens.to_json()}),
            };
            let mut data = std::collections::HashMap::new();
            data.insert(DATA.to_owned(), value);
            let ttl = tower_sessions::cookie::time::Duration::try_from(self.ttl)
                .unwrap_or(tower_sessions::cookie::time::Duration::days(14));
            let record = Record {
                id,
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
                .delete(&self.record_id(key))
                .await
                .map_err(|e| CacheError::new(format!("session store: {e}")))
        })
    }
}
