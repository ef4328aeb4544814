//! Cached tokens.

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
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
/// # Hits from many threads
///
/// Every hit hands out an `Arc`, and a reference count that several threads increment is a
/// cache line they fight over. So [`CachedToken::local_handle`] gives each thread (four of
/// them in turn) its own copy, made on first use, whose count no other thread touches (a copy
/// shares the token's buffer). Copies compare equal by their access token, not by pointer.
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
    /// Set when a chain of 401s led to this token (shared with the per-thread copies).
    renewal: Option<Arc<Renewal>>,
    /// Per-thread copies (see the type's docs), allocated on the first hit from a second
    /// thread; empty in the copies themselves.
    replicas: OnceLock<Box<[OnceLock<Arc<CachedToken>>; REPLICAS]>>,
}

/// How a token that a 401 led to may itself be renewed.
struct Renewal {
    /// How many renewals in a row, each driven by a 401, led to the token.
    renewals: u8,
    /// Before this instant a 401 for the token does not renew it (the renewal backoff).
    renew_after: Timestamp,
    /// An API accepted the token: the chain of rejections is over.
    accepted: std::sync::atomic::AtomicBool,
}

impl Renewal {
    fn pending(this: &Option<Arc<Self>>) -> Option<&Self> {
        this.as_deref()
            .filter(|r| !r.accepted.load(Ordering::Relaxed))
    }
}

/// An `Arc<str>` as the owner of a `Bytes`.
struct SharedStr(Arc<str>);

impl AsRef<[u8]> for SharedStr {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// How many per-thread copies of a hot token may be made (besides the token itself).
const REPLICAS: usize = 3;

fn thread_slot() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    SLOT.with(|slot| {
        let mut value = slot.get();
        if value == usize::MAX {
            value = NEXT.fetch_add(1, Ordering::Relaxed) % (REPLICAS + 1);
            slot.set(value);
        }
        value
    })
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
        // One buffer holds "<scheme> <token>": the header value and the token are views of it.
        let (full, access_token) = access_token.with_scheme(token_type.scheme());
        let mut authorization = HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(
            SharedStr(full),
        ))
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
            renewal: None,
            replicas: Default::default(),
        })
    }

    /// Marks the token as the result of the `renewals`-th renewal in a row driven by a 401, which
    /// must not itself be renewed before `renew_after`.
    pub(crate) fn renewed_after_rejection(mut self, renewals: u8, renew_after: Timestamp) -> Self {
        self.renewal = Some(Arc::new(Renewal {
            renewals,
            renew_after,
            accepted: std::sync::atomic::AtomicBool::new(false),
        }));
        self
    }

    /// How many renewals in a row, each driven by an API's `401`, led to this token and have not
    /// been followed by an API accepting it: 0 for a token fetched on a miss, at expiry or ahead
    /// of it, or accepted since.
    pub fn renewals(&self) -> u8 {
        Renewal::pending(&self.renewal).map_or(0, |r| r.renewals)
    }

    /// Whether a `401` for this token may renew it at `now`: always, unless a 401 led to this
    /// token, no API has accepted it since, and the renewal backoff has not run out — so that an
    /// API that rejects every token cannot drive a token request per call (CC-14).
    pub fn may_renew_at(&self, now: Timestamp) -> bool {
        Renewal::pending(&self.renewal).is_none_or(|r| now >= r.renew_after)
    }

    /// An API accepted the token: a chain of 401-driven renewals that led to it is over.
    #[inline]
    #[cfg_attr(
        not(any(feature = "tower", feature = "reqwest-middleware")),
        allow(dead_code)
    )]
    pub(crate) fn accepted(&self) {
        if let Some(renewal) = &self.renewal {
            // Read first: a store on every call would bounce the line between threads.
            if !renewal.accepted.load(Ordering::Relaxed) {
                renewal.accepted.store(true, Ordering::Relaxed);
            }
        }
    }

    /// A handle to this token for the calling thread: the token itself, or this thread's copy of
    /// it (made on first use), so that threads hitting one token do not share a reference count.
    #[inline]
    pub fn local_handle(self: &Arc<Self>) -> Arc<Self> {
        match thread_slot() {
            0 => self.clone(),
            slot => self.replicas.get_or_init(Default::default)[slot - 1]
                .get_or_init(|| Arc::new(self.replica()))
                .clone(),
        }
    }

    fn replica(&self) -> Self {
        Self {
            access_token: self.access_token.clone(),
            token_type: self.token_type.clone(),
            scope: self.scope.clone(),
            issued_at: self.issued_at,
            refresh_at: self.refresh_at,
            expires_at: self.expires_at,
            authorization: self.authorization.clone(),
            refresh_gate: AtomicU64::new(self.refresh_gate.load(Ordering::Relaxed)),
            renewal: self.renewal.clone(),
            replicas: Default::default(),
        }
    }

    /// Whether both hold the same access token (copies made by [`CachedToken::local_handle`]
    /// included).
    pub fn same_token(&self, other: &CachedToken) -> bool {
        self.access_token.ct_eq(&other.access_token)
    }

    /// The access token.
    pub fn access_token(&self) -> &AccessToken {
        &self.access_token
    }

    /// The token type.
    pub fn token_type(&self) -> &TokenType {
        &self.token_type
    }

    /// Whether the token is DPoP-bound (`token_type` `DPoP`): it is presented with a proof.
    #[inline]
    pub fn is_dpop(&self) -> bool {
        matches!(self.token_type, TokenType::DPoP)
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

    /// The `Authorization` header value (`Bearer <token>`, `DPoP <token>`), marked sensitive.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::types::TokenType;

    #[test]
    fn threads_get_their_own_handle_to_the_same_token() {
        let token = Arc::new(
            CachedToken::new(
                AccessToken::new("t"),
                TokenType::Bearer,
                None,
                Timestamp::from_millis(0),
                Timestamp::from_millis(1),
                Timestamp::from_millis(2),
            )
            .unwrap_or_else(|e| panic!("{e}")),
        );
        // Slots are handed out by a process-wide counter that other tests' threads advance
        // too, so each thread reports its slot along with its handle.
        let handles: Vec<(usize, Arc<CachedToken>)> = (0..2 * (REPLICAS + 1))
            .map(|_| {
                let token = token.clone();
                std::thread::spawn(move || (thread_slot(), token.local_handle()))
                    .join()
                    .unwrap_or_else(|_| panic!("thread panicked"))
            })
            .collect();
        let slots: std::collections::BTreeSet<usize> = handles.iter().map(|(s, _)| *s).collect();
        assert!(slots.len() > 1, "threads were spread over slots: {slots:?}");
        for (i, (slot_a, a)) in handles.iter().enumerate() {
            assert!(a.same_token(&token));
            assert_eq!(a.authorization_header(), token.authorization_header());
            for (slot_b, b) in &handles[i + 1..] {
                assert_eq!(
                    slot_a == slot_b,
                    Arc::ptr_eq(a, b),
                    "threads share a handle exactly when they share a slot"
                );
            }
        }
        // The same thread always gets the same handle.
        assert!(Arc::ptr_eq(&token.local_handle(), &token.local_handle()));
    }
}
