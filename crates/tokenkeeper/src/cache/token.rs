//! Cached tokens.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::HeaderValue;

use crate::clock::Timestamp;
use crate::error::InvalidResponse;
use crate::protocol::types::{Scope, TokenType};
use crate::secret::AccessToken;

/// An access token with the times that govern its use. Shared as `Arc<CachedToken>`.
///
/// - `expires_at`: after this instant the token is not handed out (it is the server's expiry
///   minus the configured skew);
/// - `refresh_at`: from this instant on, a cache hit still returns the token but starts one
///   background refresh.
///
/// The struct is aligned to a cache line so that, inside an `Arc`, the fields read on every hit
/// never share a line with the reference count that every hit writes (two threads hitting one
/// token would otherwise stall on each other).
#[repr(align(64))]
pub struct CachedToken {
    access_token: AccessToken,
    token_type: TokenType,
    scope: Option<Scope>,
    issued_at: Timestamp,
    refresh_at: Timestamp,
    expires_at: Timestamp,
    authorization: HeaderValue,
    /// Millisecond timestamp before which no new refresh-ahead may start (a lock-free gate).
    refresh_gate: AtomicU64,
}

impl CachedToken {
    /// A cached token. Fails when the token cannot be sent in an HTTP header.
    pub fn new(
        access_token: AccessToken,
        token_type: TokenType,
        scope: Option<Scope>,
        issued_at: Timestamp,
        refresh_at: Timestamp,
        expires_at: Timestamp,
    ) -> Result<Self, InvalidResponse> {
        let mut authorization =
            HeaderValue::try_from(format!("{} {}", token_type.scheme(), access_token.secret()))
                .map_err(|_| {
                    InvalidResponse::new(
                        None,
                        "the access token has characters that cannot be sent in an HTTP header",
                    )
                })?;
        authorization.set_sensitive(true);
        Ok(Self {
            access_token,
            token_type,
            scope,
            issued_at,
            refresh_at: refresh_at.min(expires_at),
            expires_at,
            authorization,
            refresh_gate: AtomicU64::new(0),
        })
    }

    /// The access token.
    pub fn access_token(&self) -> &AccessToken {
        &self.access_token
    }

    /// The token type.
    pub fn token_type(&self) -> &TokenType {
        &self.token_type
    }

    /// The scope the server says it granted, when it said.
    pub fn scope(&self) -> Option<&Scope> {
        self.scope.as_ref()
    }

    /// When the token was received.
    pub fn issued_at(&self) -> Timestamp {
        self.issued_at
    }

    /// From when a hit starts a background refresh.
    pub fn refresh_at(&self) -> Timestamp {
        self.refresh_at
    }

    /// After when the token is no longer handed out.
    pub fn expires_at(&self) -> Timestamp {
        self.expires_at
    }

    /// Whether the token may still be handed out at `now`.
    #[inline]
    pub fn is_valid_at(&self, now: Timestamp) -> bool {
        now < self.expires_at
    }

    /// Whether `now` is inside the refresh-ahead window.
    #[inline]
    pub fn needs_refresh_at(&self, now: Timestamp) -> bool {
        now >= self.refresh_at
    }

    /// The `Authorization` header value (`Bearer <token>`), marked sensitive.
    #[inline]
    pub fn authorization_header(&self) -> &HeaderValue {
        &self.authorization
    }

    /// Claims the right to start a background refresh at `now`; `true` for exactly one caller
    /// per `retry_after` period.
    pub(crate) fn try_claim_refresh(&self, now: Timestamp, retry_after: Duration) -> bool {
        let gate = self.refresh_gate.load(Ordering::Relaxed);
        if now.as_millis() < gate {
            return false;
        }
        self.refresh_gate
            .compare_exchange(
                gate,
                now.saturating_add(retry_after).as_millis(),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok()
    }
}

impl fmt::Debug for CachedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedToken")
            .field("access_token", &self.access_token)
            .field("token_type", &self.token_type)
            .field("scope", &self.scope)
            .field("refresh_at", &self.refresh_at)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}
