//! Token sources: where the HTTP integrations get the token they attach.
//!
//! The reqwest middleware ([`crate::TokenMiddleware`]) and the tower layer
//! ([`crate::TokenLayer`]) are each written once, generic over a [`TokenSource`]:
//!
//! - [`ClientTokenSource`]: a client-credentials client and parameter set;
//! - [`UserTokenSource`]: a user's session (by [`SessionKey`]).
//!
//! Everything the integrations decide lives here, in one place for both stacks:
//!
//! - **destinations**: a client that names the origins its tokens may go to gets
//!   [`Error::DestinationNotAllowed`] for any other;
//! - **a missing token**: fail, or send without one ([`MissingToken`]);
//! - **a 401**: the rejected token is renewed at most once, through the key's backoff (a 401
//!   for a token that a 401 renewed moments ago is handed to the caller without a retry), so an
//!   API that rejects every token cannot drive a token request per call (CC-14);
//! - **presentation**: how the token goes on the request (`Authorization: <scheme> <token>`).

// Parts are used by one integration each; with one feature off, they are not all used.
#![cfg_attr(
    not(all(feature = "tower", feature = "reqwest-middleware")),
    allow(dead_code)
)]

use std::future::Future;
use std::sync::Arc;

use http::header::AUTHORIZATION;
use http::HeaderMap;

use crate::cache::{CacheKey, CachedToken};
use crate::client_credentials::{
    ClientCredentialsTokenManager, RegisteredClient, TokenRequestParams,
};
use crate::destinations::Destinations;
use crate::dpop::{NonceChallenge, Presenter};
use crate::error::Error;
use crate::user::{SessionKey, UserTokenManager, UserTokenParams};
use crate::MissingToken;

mod sealed {
    pub trait Sealed {}
}

/// Where an HTTP integration's tokens come from. Implemented by [`ClientTokenSource`] and
/// [`UserTokenSource`]; sealed, so that the integrations' guarantees hold for every source.
pub trait TokenSource: sealed::Sealed + Clone + Send + Sync + std::fmt::Debug + 'static {
    /// A valid token at hand without waiting (the hit path), if there is one.
    fn cached(&self) -> Option<Arc<CachedToken>>;

    /// A valid token: cached, or fetched (refreshed) now.
    fn token(&self) -> impl Future<Output = Result<Arc<CachedToken>, Error>> + Send + '_;

    /// The API answered 401 for `rejected`: a replacement to retry with, at most one renewal
    /// per token and through the renewal backoff. `Ok(None)`: backing off, do not retry.
    fn renew<'a>(
        &'a self,
        rejected: &'a Arc<CachedToken>,
    ) -> impl Future<Output = Result<Option<Arc<CachedToken>>, Error>> + Send + 'a;

    /// The origins the tokens may be sent to (`None`: any).
    fn destinations(&self) -> Option<&Destinations>;

    /// How DPoP-bound tokens are presented, when the source has a DPoP key (a client's key, or
    /// the session's from the key store).
    fn dpop(&self) -> impl Future<Output = Result<Option<Presenter>, Error>> + Send + '_;
}

/// The token of one client-credentials client and parameter set.
#[derive(Clone)]
pub struct ClientTokenSource {
    manager: ClientCredentialsTokenManager,
    client: Arc<RegisteredClient>,
    params: Arc<TokenRequestParams>,
    key: CacheKey,
}

impl std::fmt::Debug for ClientTokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTokenSource")
            .field("client", &self.client.name)
            .field("key", &self.key)
            .finish()
    }
}

impl ClientTokenSource {
    /// The source of `client`'s token for `params`. Fails when no such client is registered
    /// or the parameters are invalid.
    pub fn new(
        manager: &ClientCredentialsTokenManager,
        client: &str,
        params: TokenRequestParams,
    ) -> Result<Self, Error> {
        let registered = manager.registered(client)?;
        let key = registered.resolve(&params)?.key;
        Ok(Self {
            manager: manager.clone(),
            client: registered,
            params: Arc::new(params),
            key,
        })
    }
}

impl sealed::Sealed for ClientTokenSource {}

impl TokenSource for ClientTokenSource {
    #[inline]
    fn cached(&self) -> Option<Arc<CachedToken>> {
        if self.params.force_renewal {
            return None;
        }
        self.manager
            .inner
            .try_hit(&self.client, &self.key, &self.params)
    }

    fn token(&self) -> impl Future<Output = Result<Arc<CachedToken>, Error>> + Send + '_ {
        self.manager
            .inner
            .get_token_with_key(&self.client, &self.key, &self.params)
    }

    fn renew<'a>(
        &'a self,
        rejected: &'a Arc<CachedToken>,
    ) -> impl Future<Output = Result<Option<Arc<CachedToken>>, Error>> + Send + 'a {
        self.manager
            .inner
            .renew_rejected(&self.client, &self.params, rejected)
    }

    #[inline]
    fn destinations(&self) -> Option<&Destinations> {
        self.client.destinations.as_ref()
    }

    fn dpop(&self) -> impl Future<Output = Result<Option<Presenter>, Error>> + Send + '_ {
        std::future::ready(Ok(self.client.dpop.clone()))
    }
}

/// The access token of one user session.
#[derive(Clone, Debug)]
pub struct UserTokenSource {
    manager: UserTokenManager,
    session: SessionKey,
    params: UserTokenParams,
}

impl UserTokenSource {
    /// The source of `session`'s token for `params`.
    pub fn new(manager: &UserTokenManager, session: SessionKey, params: UserTokenParams) -> Self {
        Self {
            manager: manager.clone(),
            session,
            params,
        }
    }

    /// The session.
    pub fn session(&self) -> &SessionKey {
        &self.session
    }
}

impl sealed::Sealed for UserTokenSource {}

impl TokenSource for UserTokenSource {
    #[inline]
    fn cached(&self) -> Option<Arc<CachedToken>> {
        self.manager.cached(&self.session, &self.params)
    }

    fn token(&self) -> impl Future<Output = Result<Arc<CachedToken>, Error>> + Send + '_ {
        self.manager.get_access_token(&self.session, &self.params)
    }

    fn renew<'a>(
        &'a self,
        rejected: &'a Arc<CachedToken>,
    ) -> impl Future<Output = Result<Option<Arc<CachedToken>>, Error>> + Send + 'a {
        self.manager
            .renew_rejected(&self.session, &self.params, rejected)
    }

    #[inline]
    fn destinations(&self) -> Option<&Destinations> {
        self.manager.destinations()
    }

    fn dpop(&self) -> impl Future<Output = Result<Option<Presenter>, Error>> + Send + '_ {
        self.manager.presenter(&self.session)
    }
}

/// Puts `token` on a request: `Authorization: <scheme> <token>` (the header is built once per
/// token and marked sensitive).
#[inline]
pub(crate) fn present(token: &CachedToken, headers: &mut HeaderMap) {
    headers.insert(AUTHORIZATION, token.authorization_header().clone());
}

/// How a token went on a request: as Bearer, or with a DPoP proof that carried `nonce`.
#[derive(Debug)]
pub(crate) enum Presented {
    Bearer,
    Dpop {
        presenter: Presenter,
        nonce: Option<String>,
    },
}

/// What both HTTP integrations hold: a source and the missing-token policy.
#[derive(Clone, Debug)]
pub(crate) struct Integration<S> {
    pub(crate) source: S,
    pub(crate) missing: MissingToken,
}

impl<S: TokenSource> Integration<S> {
    pub(crate) fn new(source: S) -> Self {
        Self {
            source,
            missing: MissingToken::Fail,
        }
    }

    /// Refuses a request for an origin the client's tokens may not go to.
    #[inline]
    pub(crate) fn check_url(&self, url: &url::Url) -> Result<(), Error> {
        match self.source.destinations() {
            Some(destinations) => destinations.check_url(url),
            None => Ok(()),
        }
    }

    /// Refuses a request for an origin the client's tokens may not go to.
    #[inline]
    pub(crate) fn check_uri(&self, uri: &http::Uri) -> Result<(), Error> {
        match self.source.destinations() {
            Some(destinations) => destinations.check_uri(uri),
            None => Ok(()),
        }
    }

    /// Puts `token` on a request for `method url`: the `Authorization` header, and for a
    /// DPoP-bound token a fresh proof.
    pub(crate) async fn attach(
        &self,
        token: &CachedToken,
        method: &http::Method,
        url: &url::Url,
        headers: &mut HeaderMap,
    ) -> Result<Presented, Error> {
        if !token.is_dpop() {
            present(token, headers);
            return Ok(Presented::Bearer);
        }
        let Some(presenter) = self.source.dpop().await? else {
            return Err(Error::ReauthenticationRequired(
                "the token is DPoP-bound, but its key is gone".into(),
            ));
        };
        let nonce = presenter.present(token, method.as_str(), url, headers)?;
        Ok(Presented::Dpop { presenter, nonce })
    }

    /// Reads the response to a request that carried a token as `presented`: keeps the API's
    /// DPoP nonce, and says whether to send the request once more, with the same token and a
    /// new proof (a `use_dpop_nonce` challenge with a new nonce; PK-03, PK-10), or to hand
    /// the 401 over as it is (the same nonce again).
    pub(crate) fn nonce_challenge(
        &self,
        presented: &Presented,
        url: &url::Url,
        status: http::StatusCode,
        headers: &HeaderMap,
    ) -> NonceChallenge {
        match presented {
            Presented::Dpop { presenter, nonce } => {
                presenter.after_response(url, status, headers, nonce.as_deref())
            }
            Presented::Bearer => NonceChallenge::None,
        }
    }

    /// Keeps the API's DPoP nonce from a response (to a retry) of a DPoP request.
    pub(crate) fn observe(&self, presented: &Presented, url: &url::Url, headers: &HeaderMap) {
        if let Presented::Dpop { presenter, .. } = presented {
            presenter.nonces().update(url, headers);
        }
    }

    /// A token, or `Ok(None)` when none can be had and the policy is to send without one.
    pub(crate) async fn token(&self) -> Result<Option<Arc<CachedToken>>, Error> {
        match self.source.token().await {
            Ok(token) => Ok(Some(token)),
            Err(error) if self.missing == MissingToken::SendWithout => {
                tracing::warn!(%error, "no token; sending the request without one");
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    /// The API answered 401 for `rejected`. With `retry`, the replacement to send the request
    /// again with (`Ok(None)`: backing off, hand the 401 to the caller). Without (the body
    /// cannot be replayed), the renewal still starts, so the next request carries a new token.
    pub(crate) async fn after_unauthorized(
        &self,
        rejected: &Arc<CachedToken>,
        retry: bool,
    ) -> Result<Option<Arc<CachedToken>>, Error> {
        if retry {
            return self.source.renew(rejected).await;
        }
        let source = self.source.clone();
        let rejected = rejected.clone();
        // The renewal runs in its own task; nobody waits for it.
        tokio::spawn(async move {
            if let Err(error) = source.renew(&rejected).await {
                tracing::debug!(%error, "renewing a rejected token failed");
            }
        });
        Ok(None)
    }
}
