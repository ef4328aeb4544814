//! The stored form of a session's tokens (JSON), shared by the Redis and session-store backends.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::store::UserTokens;
use crate::cache::CachedToken;
use crate::clock::Timestamp;
use crate::protocol::types::{Scope, TokenType};
use crate::secret::{AccessToken, IdToken, RefreshToken};

#[derive(Serialize, Deserialize)]
struct StoredToken {
    at: String,
    tt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sc: Option<String>,
    ia: u64,
    ra: u64,
    ea: u64,
}

#[derive(Serialize, Deserialize)]
struct StoredSession {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    at: Vec<(String, StoredToken)>,
    /// When the refresh token expires (ms), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rx: Option<u64>,
    /// The DPoP key's thumbprint (never the key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    jk: Option<String>,
}

impl UserTokens {
    /// The tokens as JSON, for a backend to store (they are secrets: encrypt at rest where the
    /// backend is shared).
    pub fn to_json(&self) -> serde_json::Value {
        let stored = StoredSession {
            rt: self.refresh_token.as_ref().map(|t| t.secret().to_owned()),
            id: self.id_token.as_ref().map(|t| t.secret().to_owned()),
            at: self
                .access_tokens
                .iter()
                .map(|(resource, t)| {
                    (
                        resource.to_owned(),
                        StoredToken {
                            at: t.access_token().secret().to_owned(),
                            tt: t.token_type().to_string(),
                            sc: t.scope().map(ToString::to_string),
                            ia: t.issued_at().as_millis(),
                            ra: t.refresh_at().as_millis(),
                            ea: t.expires_at().as_millis(),
                        },
                    )
                })
                .collect(),
            rx: self.refresh_expires_at.map(Timestamp::as_millis),
            jk: self.dpop_jkt.clone(),
        };
        serde_json::to_value(stored).unwrap_or(serde_json::Value::Null)
    }

    /// Tokens from [`UserTokens::to_json`]; `None` when the value is not of that form.
    pub fn from_json(value: &serde_json::Value) -> Option<Self> {
        let stored: StoredSession = serde_json::from_value(value.clone()).ok()?;
        let mut tokens = UserTokens {
            refresh_token: stored.rt.map(RefreshToken::new),
            id_token: stored.id.map(IdToken::new),
            refresh_expires_at: stored.rx.map(Timestamp::from_millis),
            dpop_jkt: stored.jk,
            ..UserTokens::default()
        };
        for (resource, t) in stored.at {
            let token = CachedToken::new(
                AccessToken::new(t.at),
                TokenType::parse(&t.tt),
                t.sc.as_deref().map(Scope::parse),
                Timestamp::from_millis(t.ia),
                Timestamp::from_millis(t.ra),
                Timestamp::from_millis(t.ea),
            )
            .ok()?;
            tokens.access_tokens.insert(resource, Arc::new(token));
        }
        Some(tokens)
    }
}

/// Plain stored sessions start with this; a change of format changes the tag, and entries of
/// another tag are read as "another format", never as errors.
const PLAIN_SESSION: &[u8] = b"ut1:";
/// Sealed stored sessions start with this.
const SEALED_SESSION: &[u8] = b"ut1e:";

/// Why a stored session was not used ([`UserTokens::open_stored`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredSessionError {
    /// Another format version (or not a session): left alone.
    OtherFormat,
    /// Does not decrypt or does not parse: its store should delete it.
    Damaged,
}

impl UserTokens {
    /// The tokens as a store keeps them: tagged, versioned JSON, sealed with `encryption`
    /// (AES-256-GCM, bound to `aad`: the store's key and the entry's version) when given.
    pub fn seal_stored(
        &self,
        aad: &[u8],
        encryption: Option<&crate::Encryption>,
    ) -> Result<Vec<u8>, crate::CacheError> {
        let json = serde_json::to_vec(&self.to_json())
            .map_err(|e| crate::CacheError::new(format!("encode: {e}")))?;
        Ok(match encryption {
            Some(encryption) => [SEALED_SESSION, &encryption.seal(aad, &json)?].concat(),
            None => [PLAIN_SESSION, &json].concat(),
        })
    }

    /// Tokens from [`UserTokens::seal_stored`]'s bytes. With `encryption`, a plain entry is
    /// [`StoredSessionError::Damaged`] (someone wrote it who should not have).
    pub fn open_stored(
        bytes: &[u8],
        aad: &[u8],
        encryption: Option<&crate::Encryption>,
    ) -> Result<Self, StoredSessionError> {
        let json = if let Some(sealed) = bytes.strip_prefix(SEALED_SESSION) {
            encryption
                .ok_or(StoredSessionError::Damaged)?
                .open(aad, sealed)
                .ok_or(StoredSessionError::Damaged)?
        } else if let Some(plain) = bytes.strip_prefix(PLAIN_SESSION) {
            if encryption.is_some() {
                return Err(StoredSessionError::Damaged);
            }
            plain.to_vec()
        } else {
            return Err(StoredSessionError::OtherFormat);
        };
        let value: serde_json::Value =
            serde_json::from_slice(&json).map_err(|_| StoredSessionError::Damaged)?;
        Self::from_json(&value).ok_or(StoredSessionError::Damaged)
    }
}
