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
