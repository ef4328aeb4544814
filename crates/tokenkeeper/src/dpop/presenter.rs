//! Presenting DPoP-bound tokens to APIs: a proof per request, the API's nonces, and the one
//! nonce retry (PK-03, PK-09, PK-10).

use std::fmt;
use std::sync::Arc;

use http::{HeaderMap, HeaderValue, StatusCode};
use url::Url;

use super::{DpopKey, NonceStore, ProofRequest};
use crate::cache::CachedToken;
use crate::clock::Clock;
use crate::error::Error;

/// What the HTTP integrations need to present DPoP-bound tokens: the key, the APIs' nonces
/// (one bounded store keyed by origin) and the clock that dates proofs.
#[derive(Clone)]
pub struct Presenter {
    key: Arc<DpopKey>,
    nonces: Arc<NonceStore>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for Presenter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Presenter")
            .field("key", &self.key)
            .field("nonces", &self.nonces.len())
            .finish_non_exhaustive()
    }
}

/// How many API origins a manager keeps nonces for.
pub(crate) const API_NONCE_ORIGINS: usize = 1024;

impl Presenter {
    /// A presenter signing with `key`, keeping nonces in `nonces`, dating proofs with `clock`.
    pub fn new(key: Arc<DpopKey>, nonces: Arc<NonceStore>, clock: Arc<dyn Clock>) -> Self {
        Self { key, nonces, clock }
    }

    /// The key.
    pub fn key(&self) -> &Arc<DpopKey> {
        &self.key
    }

    /// The APIs' nonces.
    pub fn nonces(&self) -> &Arc<NonceStore> {
        &self.nonces
    }

    /// Puts `token` on a request for `method url`: `Authorization: DPoP <token>` and a fresh
    /// proof with `ath` and the origin's latest nonce (for requests the integrations do not
    /// send themselves, such as a WebSocket handshake). Returns the nonce sent.
    pub fn present(
        &self,
        token: &CachedToken,
        method: &str,
        url: &Url,
        headers: &mut HeaderMap,
    ) -> Result<Option<String>, Error> {
        let nonce = self.nonces.get(url);
        let proof = self.key.proof(
            &ProofRequest {
                method,
                url,
                access_token: Some(token.access_token().secret()),
                nonce: nonce.as_deref(),
            },
            self.clock.now(),
        )?;
        let proof = HeaderValue::try_from(proof)
            .map_err(|_| Error::Internal("a DPoP proof is not a header value".into()))?;
        headers.insert(
            http::header::AUTHORIZATION,
            token.authorization_header().clone(),
        );
        headers.insert(crate::protocol::token_endpoint::DPOP, proof);
        Ok(nonce)
    }

    /// Reads an API's response to a DPoP request that carried `sent` (the nonce): stores its
    /// `DPoP-Nonce`, and says what a `use_dpop_nonce` challenge asks for.
    pub(crate) fn after_response(
        &self,
        url: &Url,
        status: StatusCode,
        headers: &HeaderMap,
        sent: Option<&str>,
    ) -> NonceChallenge {
        self.nonces.update(url, headers);
        if status != StatusCode::UNAUTHORIZED
            || !super::challenge::parse_headers(headers)
                .iter()
                .any(super::challenge::Challenge::is_use_dpop_nonce)
        {
            return NonceChallenge::None;
        }
        match super::challenge::dpop_nonce(headers) {
            Some(nonce) if Some(nonce) != sent => NonceChallenge::Retry,
            _ => NonceChallenge::Unchanged,
        }
    }
}

/// What an API's answer says about the DPoP nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NonceChallenge {
    /// No `use_dpop_nonce` challenge.
    None,
    /// `use_dpop_nonce` with a new nonce: send once more with a new proof (PK-03).
    Retry,
    /// `use_dpop_nonce` without a new nonce: the caller gets the 401; nothing is retried or
    /// renewed (the token is not what was refused; PK-10).
    Unchanged,
}
