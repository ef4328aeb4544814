//! Token exchange (RFC 8693): a service trades the token it received (the *subject*) for one
//! meant for a downstream API, managed like every other token (DL-01 … DL-04).
//!
//! It is a grant of [`ClientCredentialsTokenManager`]: the exchanging service is a registered
//! client (its authentication — secret, `private_key_jwt`, DPoP — applies as configured), and
//! a [`TokenExchange`] in the [`TokenRequestParams`] turns the request into an exchange:
//!
//! - **cache key**: a keyed hash (HMAC-SHA-256) of the subject token — never the token — plus
//!   its type, the actor's hash and type, every audience, the requested type, scope, resources
//!   and the client's settings; two subjects never share an exchanged token (DL-02). The hash
//!   key is random per manager unless set with
//!   [`ClientCredentialsTokenManagerBuilder::exchange_hash_key`](crate::ClientCredentialsTokenManagerBuilder::exchange_hash_key)
//!   (set it, the same on every instance, when a fleet shares a Redis cache);
//! - **lifetime**: an exchanged token is never handed out after its subject token expires
//!   (DL-03): its expiry is the earlier of the server's and the subject's;
//! - **single flight, refresh ahead, backoff**: as for client credentials (DL-04);
//! - **the answer**: `issued_token_type` must be present, and be the requested type when one
//!   was asked for; otherwise an access token or a JWT (what can go in an `Authorization`
//!   header).
//!
//! ```no_run
//! # async fn run(incoming: &str) -> Result<(), tokenkeeper::Error> {
//! use tokenkeeper::{ClientConfig, ClientCredentialsTokenManager, TokenExchange, TokenRequestParams};
//!
//! let tokens = ClientCredentialsTokenManager::builder()
//!     .client("orders", ClientConfig::new("https://idp.example.com/token", "orders-api", "secret"))
//!     .build()?;
//! // `incoming`: the bearer token this API received and validated (a JWT: its `exp` is read).
//! let params = TokenRequestParams::new()
//!     .exchange(TokenExchange::access_token(incoming).audience("https://billing.example.com"));
//! let token = tokens.get_token("orders", &params).await?;
//! # let _ = token; Ok(()) }
//! ```
//!
//! [`ClientCredentialsTokenManager`]: crate::ClientCredentialsTokenManager
//! [`TokenRequestParams`]: crate::TokenRequestParams

use std::fmt;

use base64::Engine as _;

use crate::cache::KeyWriter;
use crate::clock::Timestamp;
use crate::error::{Error, InvalidResponse};
use crate::secret::ExchangedToken;

/// Token type identifiers (RFC 8693 §3).
pub mod token_types {
    /// An OAuth 2.0 access token.
    pub const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
    /// An OAuth 2.0 refresh token.
    pub const REFRESH_TOKEN: &str = "urn:ietf:params:oauth:token-type:refresh_token";
    /// An OpenID Connect ID token.
    pub const ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
    /// A JWT.
    pub const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
}

/// What a token exchange gives up (the subject token, and an actor token when one acts for
/// the subject) and what it asks for (audiences, a token type). Scope and resources are those
/// of the [`TokenRequestParams`](crate::TokenRequestParams) it goes in.
///
/// `Debug` shows fingerprints, never the tokens.
#[derive(Clone)]
pub struct TokenExchange {
    pub(crate) subject: ExchangedToken,
    pub(crate) subject_type: String,
    pub(crate) subject_expires_at: Option<Timestamp>,
    pub(crate) actor: Option<(ExchangedToken, String)>,
    pub(crate) audiences: Vec<String>,
    pub(crate) requested_token_type: Option<String>,
}

impl fmt::Debug for TokenExchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenExchange")
            .field("subject", &self.subject)
            .field("subject_type", &self.subject_type)
            .field("subject_expires_at", &self.subject_expires_at)
            .field("actor", &self.actor.as_ref().map(|(t, ty)| (t, ty)))
            .field("audiences", &self.audiences)
            .field("requested_token_type", &self.requested_token_type)
            .finish()
    }
}

impl PartialEq for TokenExchange {
    fn eq(&self, other: &Self) -> bool {
        self.subject.ct_eq(&other.subject)
            && self.subject_type == other.subject_type
            && self.subject_expires_at == other.subject_expires_at
            && match (&self.actor, &other.actor) {
                (None, None) => true,
                (Some((a, at)), Some((b, bt))) => a.ct_eq(b) && at == bt,
                _ => false,
            }
            && self.audiences == other.audiences
            && self.requested_token_type == other.requested_token_type
    }
}

impl Eq for TokenExchange {}

impl TokenExchange {
    /// Exchanges `subject_token`, of type `subject_token_type` (see [`token_types`]).
    pub fn new(subject_token: impl Into<String>, subject_token_type: impl Into<String>) -> Self {
        Self {
            subject: ExchangedToken::new(subject_token),
            subject_type: subject_token_type.into(),
            subject_expires_at: None,
            actor: None,
            audiences: Vec::new(),
            requested_token_type: None,
        }
    }

    /// Exchanges the access token `subject_token` (the usual case: the token an API received).
    pub fn access_token(subject_token: impl Into<String>) -> Self {
        Self::new(subject_token, token_types::ACCESS_TOKEN)
    }

    /// When the subject token expires. Needed for a subject that is not a JWT with an `exp`
    /// claim (an opaque token: take it from your introspection answer); for a JWT, the `exp`
    /// read from it (without checking the signature: it can only shorten the exchanged
    /// token's life) is used when this is not set.
    pub fn subject_expires_at(mut self, expires_at: Timestamp) -> Self {
        self.subject_expires_at = Some(expires_at);
        self
    }

    /// An actor token: the caller acts for the subject (delegation, RFC 8693 §1.1).
    pub fn actor(
        mut self,
        actor_token: impl Into<String>,
        actor_token_type: impl Into<String>,
    ) -> Self {
        self.actor = Some((ExchangedToken::new(actor_token), actor_token_type.into()));
        self
    }

    /// Asks for a token for `audience` (a logical name of the target service; call again for
    /// several). For a URI of the API, [`TokenRequestParams::resource`](crate::TokenRequestParams::resource)
    /// is the standard field.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences.push(audience.into());
        self
    }

    /// Asks for this token type (see [`token_types`]); the answer's `issued_token_type` must
    /// then be this one.
    pub fn requested_token_type(mut self, token_type: impl Into<String>) -> Self {
        self.requested_token_type = Some(token_type.into());
        self
    }

    /// When the subject expires: set, or the `exp` of a JWT subject; `None` when not known.
    pub fn subject_expiry(&self) -> Option<Timestamp> {
        self.subject_expires_at
            .or_else(|| jwt_expiry(self.subject.secret()))
    }

    /// Checks what the caller gave (no empty token or type, no control characters).
    pub(crate) fn validate(&self) -> Result<(), Error> {
        let field = |name: &'static str, value: &str| {
            if value.is_empty() || value.chars().any(char::is_control) {
                Err(Error::Config(crate::error::ConfigError::new(
                    name,
                    "is empty or holds control characters",
                )))
            } else {
                Ok(())
            }
        };
        field("subject_token", self.subject.secret())?;
        field("subject_token_type", &self.subject_type)?;
        if let Some((token, ty)) = &self.actor {
            field("actor_token", token.secret())?;
            field("actor_token_type", ty)?;
        }
        for audience in &self.audiences {
            field("audience", audience)?;
        }
        if let Some(ty) = &self.requested_token_type {
            field("requested_token_type", ty)?;
        }
        Ok(())
    }

    /// The subject's expiry, refusing a subject that has expired or whose expiry is unknown.
    pub(crate) fn live_subject_expiry(&self, now: Timestamp) -> Result<Timestamp, Error> {
        let Some(expires_at) = self.subject_expiry() else {
            return Err(Error::SubjectToken(
                "its expiry is unknown: set TokenExchange::subject_expires_at for a token that is not a JWT with `exp`".into(),
            ));
        };
        if expires_at <= now {
            return Err(Error::SubjectToken("it has expired".into()));
        }
        Ok(expires_at)
    }

    /// Writes the exchange's part of the cache key: hashes of the tokens, never the tokens.
    pub(crate) fn write_key(&self, key: &mut KeyWriter, hash_key: &aws_lc_rs::hmac::Key) {
        key.field("grant", "te");
        key.field("subject", &keyed_hash(hash_key, self.subject.secret()));
        key.field("subject_type", &self.subject_type);
        if let Some((token, ty)) = &self.actor {
            key.field("actor", &keyed_hash(hash_key, token.secret()));
            key.field("actor_type", ty);
        }
        let mut audiences: Vec<&str> = self.audiences.iter().map(String::as_str).collect();
        audiences.sort_unstable();
        audiences.dedup();
        for audience in audiences {
            key.field("audience", audience);
        }
        if let Some(ty) = &self.requested_token_type {
            key.field("requested", ty);
        }
    }

    /// The grant of the token request.
    pub(crate) fn grant(&self) -> crate::protocol::token_request::Grant {
        crate::protocol::token_request::Grant::TokenExchange {
            subject_token: self.subject.secret().to_owned(),
            subject_token_type: self.subject_type.clone(),
            requested_token_type: self.requested_token_type.clone(),
            actor: self
                .actor
                .as_ref()
                .map(|(token, ty)| (token.secret().to_owned(), ty.clone())),
        }
    }

    /// Checks the answer's `issued_token_type` (DL-01).
    pub(crate) fn check_issued(&self, issued: Option<&str>) -> Result<(), Error> {
        let Some(issued) = issued else {
            return Err(InvalidResponse::new(
                Some(200),
                "a token exchange answer has no issued_token_type",
            )
            .into());
        };
        let acceptable = match &self.requested_token_type {
            Some(requested) => issued == requested,
            None => issued == token_types::ACCESS_TOKEN || issued == token_types::JWT,
        };
        if acceptable {
            Ok(())
        } else {
            // The provider's value, quoted, and only when short: errors are logged.
            let shown = if issued.len() <= 100 {
                format!("{issued:?}")
            } else {
                "(a value of more than 100 bytes)".to_owned()
            };
            Err(InvalidResponse::new(
                Some(200),
                format!("the exchange issued a token of type {shown}, not the one asked for"),
            )
            .into())
        }
    }
}

/// HMAC-SHA-256 of `value`, base64url (43 characters).
fn keyed_hash(key: &aws_lc_rs::hmac::Key, value: &str) -> String {
    let tag = aws_lc_rs::hmac::sign(key, value.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref())
}

/// A fresh random key for the subject hashes.
pub(crate) fn random_hash_key() -> aws_lc_rs::hmac::Key {
    use aws_lc_rs::rand::SecureRandom as _;
    let mut bytes = [0u8; 32];
    // The system generator does not fail on supported platforms; a zero key would still keep
    // tokens out of the key text (it would only make the hashes guessable for a known token).
    let _ = aws_lc_rs::rand::SystemRandom::new().fill(&mut bytes);
    aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &bytes)
}

/// The `exp` of a JWT, read without verifying it; `None` for anything else.
fn jwt_expiry(token: &str) -> Option<Timestamp> {
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || payload.len() > 16 * 1024 {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?.as_u64()?;
    Some(Timestamp::from_millis(exp.checked_mul(1000)?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn jwt(claims: &str) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.sig", b64(r#"{"alg":"none"}"#), b64(claims))
    }

    #[test]
    fn the_subject_expiry_comes_from_the_caller_or_the_jwt() {
        let exchange = TokenExchange::access_token(jwt(r#"{"exp":1767000000}"#));
        assert_eq!(
            exchange.subject_expiry(),
            Some(Timestamp::from_millis(1_767_000_000_000))
        );
        let set = exchange.subject_expires_at(Timestamp::from_millis(5));
        assert_eq!(set.subject_expiry(), Some(Timestamp::from_millis(5)));
        for opaque in [
            "opaque",
            "a.b.c",
            &jwt(r#"{"exp":"soon"}"#),
            &jwt("[]"),
            "a.b.c.d",
        ] {
            assert_eq!(TokenExchange::access_token(opaque).subject_expiry(), None);
        }
        let expired =
            TokenExchange::access_token("x").subject_expires_at(Timestamp::from_millis(5));
        assert!(matches!(
            expired.live_subject_expiry(Timestamp::from_millis(5)),
            Err(Error::SubjectToken(_))
        ));
        assert!(matches!(
            TokenExchange::access_token("x").live_subject_expiry(Timestamp::from_millis(5)),
            Err(Error::SubjectToken(_))
        ));
    }

    #[test]
    fn debug_shows_no_token() {
        let exchange =
            TokenExchange::access_token("subject-secret").actor("actor-secret", token_types::JWT);
        let printed = format!("{exchange:?}");
        assert!(
            !printed.contains("subject-secret") && !printed.contains("actor-secret"),
            "{printed}"
        );
    }

    #[test]
    fn issued_token_types_are_checked() {
        let plain = TokenExchange::access_token("s");
        assert!(plain.check_issued(Some(token_types::ACCESS_TOKEN)).is_ok());
        assert!(plain.check_issued(Some(token_types::JWT)).is_ok());
        assert!(plain.check_issued(Some(token_types::ID_TOKEN)).is_err());
        assert!(plain.check_issued(None).is_err());
        let long = "x".repeat(100_000);
        let error = plain.check_issued(Some(&long)).unwrap_err().to_string();
        assert!(error.len() < 200, "{}", error.len());
        let jwt_only = plain.requested_token_type(token_types::JWT);
        assert!(jwt_only
            .check_issued(Some(token_types::ACCESS_TOKEN))
            .is_err());
        assert!(jwt_only.check_issued(Some(token_types::JWT)).is_ok());
    }
}
