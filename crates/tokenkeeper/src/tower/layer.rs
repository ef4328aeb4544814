//! [`TokenLayer`] and the [`Token`] service: one layer for every [`TokenSource`].

use std::task::{Context, Poll};

use http::{Request, Response, StatusCode};
use tower_layer::Layer;
use tower_service::Service;

use super::body::ReplayBody;
use super::future::{Rejected, ResponseFuture};
use super::BoxError;
use std::sync::Arc;

use crate::cache::CachedToken;
use crate::client_credentials::{ClientCredentialsTokenManager, TokenRequestParams};
use crate::dpop::NonceChallenge;
use crate::error::Error;
use crate::source::{
    present, ClientTokenSource, Integration, Presented, TokenSource, UserTokenSource,
};
use crate::user::{SessionKey, UserTokenManager, UserTokenParams};
use crate::MissingToken;

/// A layer that wraps services in [`Token`].
#[derive(Debug, Clone)]
pub struct TokenLayer<Src = ClientTokenSource> {
    integration: Integration<Src>,
    origin: Option<Origin>,
    returned: bool,
}

/// The scheme and authority that complete origin-relative request URIs.
type Origin = std::sync::Arc<(http::uri::Scheme, http::uri::Authority)>;

impl<Src: TokenSource> TokenLayer<Src> {
    /// A layer attaching the tokens of `source`.
    pub fn new(source: Src) -> Self {
        Self {
            integration: Integration::new(source),
            origin: None,
            returned: false,
        }
    }

    /// The inner service hands each request back with its 401 answer, as a
    /// [`super::ReturnedRequest`] in the response's extensions (its body replayed, its URI as
    /// sent to it), whenever the request can be sent again. The layer then makes no copy of
    /// each request for a retry that rarely comes; it retries only with what it is handed back.
    /// tokenkeeper's proxy engine does this.
    pub fn requests_returned_on_401(mut self) -> Self {
        self.returned = true;
        self
    }

    /// The origin (`https://host:port`) of requests whose URI is only a path — tonic's
    /// channels send their calls that way and add the origin below this layer. It completes
    /// those URIs for the destination check and a DPoP proof's `htu`; requests are sent as
    /// they are. Fails when `origin` is not an absolute `http(s)` origin.
    ///
    /// ```
    /// # fn run(tokens: tokenkeeper::ClientCredentialsTokenManager) -> Result<(), tokenkeeper::Error> {
    /// let layer = tokens.layer("orders")?.origin("https://orders.internal:8443")?;
    /// # let _ = layer; Ok(()) }
    /// ```
    pub fn origin(mut self, origin: &str) -> Result<Self, Error> {
        let invalid = || {
            Error::Config(crate::error::ConfigError::new(
                "origin",
                format!("{origin:?} is not an http(s) origin"),
            ))
        };
        let uri: http::Uri = origin.parse().map_err(|_| invalid())?;
        let parts = uri.into_parts();
        match (parts.scheme, parts.authority, parts.path_and_query) {
            (Some(scheme), Some(authority), path)
                if matches!(scheme.as_str(), "http" | "https")
                    && path.as_ref().is_none_or(|p| p.as_str() == "/") =>
            {
                self.origin = Some(std::sync::Arc::new((scheme, authority)));
                Ok(self)
            }
            _ => Err(invalid()),
        }
    }

    /// What to do when no token can be had (default: fail the request).
    pub fn on_missing_token(mut self, missing: MissingToken) -> Self {
        self.integration.missing = missing;
        self
    }

    /// Sends one `request` through `inner` with this layer's token: what
    /// `self.layer(inner).call(request)` does, consuming the layer and the service instead of
    /// keeping copies of them for a next call (a proxy builds a layer per request). `inner` must
    /// be ready for a call, as after [`Service::poll_ready`].
    pub fn send<S, B, RB>(self, inner: S, request: Request<B>) -> ResponseFuture<S, Src, B>
    where
        S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: ReplayBody + Send + 'static,
        RB: Send + 'static,
    {
        dispatch(
            self.integration,
            self.origin.as_ref(),
            self.returned,
            inner,
            request,
        )
    }
}

impl<S, Src: TokenSource> Layer<S> for TokenLayer<Src> {
    type Service = Token<S, Src>;

    fn layer(&self, inner: S) -> Self::Service {
        Token {
            inner,
            integration: self.integration.clone(),
            origin: self.origin.clone(),
            returned: self.returned,
        }
    }
}

impl ClientCredentialsTokenManager {
    /// A tower layer attaching `client`'s token. Fails now if no such client is registered.
    pub fn layer(&self, client: &str) -> Result<TokenLayer, Error> {
        self.layer_with(client, TokenRequestParams::default())
    }

    /// A tower layer attaching `client`'s token for `params`.
    pub fn layer_with(
        &self,
        client: &str,
        params: TokenRequestParams,
    ) -> Result<TokenLayer, Error> {
        Ok(TokenLayer::new(ClientTokenSource::new(
            self, client, params,
        )?))
    }
}

impl UserTokenManager {
    /// A tower layer attaching the access token of `session` (for background jobs and
    /// websocket handlers: no HTTP request needed). On a 401 it refreshes once and retries.
    pub fn layer(
        &self,
        session: SessionKey,
        params: UserTokenParams,
    ) -> TokenLayer<UserTokenSource> {
        TokenLayer::new(UserTokenSource::new(self, session, params))
    }
}

/// A service that attaches a token to each request, and retries once on a 401 when the body can
/// be replayed (see [`ReplayBody`]); the same rules as [`crate::TokenMiddleware`] (destinations,
/// one renewal per token with backoff, missing-token policy, DPoP proofs and the one API nonce
/// retry; a DPoP-bound token needs requests with an absolute URI, or the layer's
/// [`TokenLayer::origin`]). Errors are boxed: either the
/// inner service's error or a [`crate::Error`] (get it with [`Error::from_boxed`]).
#[derive(Debug, Clone)]
pub struct Token<S, Src = ClientTokenSource> {
    inner: S,
    integration: Integration<Src>,
    origin: Option<Origin>,
    returned: bool,
}

/// `uri` completed with `origin`, when it is only a path and there is an origin (`None`: use
/// `uri` as it is; nothing is copied on that common path).
fn completed(uri: &http::Uri, origin: Option<&Origin>) -> Option<http::Uri> {
    let origin = origin.filter(|_| uri.scheme().is_none())?;
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(origin.0.clone());
    parts.authority = Some(origin.1.clone());
    parts.path_and_query = uri.path_and_query().cloned();
    http::Uri::from_parts(parts).ok()
}

impl<S, Src, B, RB> Service<Request<B>> for Token<S, Src>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    Src: TokenSource,
    B: ReplayBody + Send + 'static,
    RB: Send + 'static,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = ResponseFuture<S, Src, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // Take the service that was driven to readiness; leave a clone in its place.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        dispatch(
            self.integration.clone(),
            self.origin.as_ref(),
            self.returned,
            inner,
            request,
        )
    }
}

/// One request through the layer's rules, with `inner` ready for it: what [`Token::call`] and
/// [`TokenLayer::send`] both do.
fn dispatch<S, Src, B, RB>(
    integration: Integration<Src>,
    origin: Option<&Origin>,
    returned: bool,
    mut inner: S,
    mut request: Request<B>,
) -> ResponseFuture<S, Src, B>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    Src: TokenSource,
    B: ReplayBody + Send + 'static,
    RB: Send + 'static,
{
    let completed = completed(request.uri(), origin);
    // The common case, with no state of the layer's to box: the destination is allowed, a
    // cached Bearer token goes on the request now, and the inner service hands the request
    // back with a 401 (so no copy is kept). The answer is the inner service's own future.
    // A DPoP-bound token found here goes on to the general path (a hit is counted once).
    let mut found = None;
    if returned
        && integration
            .check_uri(completed.as_ref().unwrap_or(request.uri()))
            .is_ok()
    {
        match integration.source.cached() {
            Some(token) if !token.is_dpop() => {
                present(&token, request.headers_mut());
                let call = inner.call(request);
                return ResponseFuture::sent(
                    call,
                    Rejected {
                        integration,
                        inner,
                        token,
                    },
                );
            }
            dpop => found = dpop,
        }
    }
    ResponseFuture::boxed(Box::pin(async move {
        integration.check_uri(completed.as_ref().unwrap_or(request.uri()))?;
        let token = match found.or_else(|| integration.source.cached()) {
            Some(token) => token,
            None => match integration.token().await? {
                Some(token) => token,
                None => return inner.call(request).await.map_err(Into::into),
            },
        };
        let retry = if returned { None } else { replay(&request) };
        // The request's URL, for a DPoP-bound token (its proof and the API's nonces).
        let uri = token
            .is_dpop()
            .then(|| completed.unwrap_or_else(|| request.uri().clone()));
        let presented = attach(&integration, &token, uri.as_ref(), &mut request).await?;
        let response = inner.call(request).await.map_err(Into::into)?;
        answered(
            integration,
            inner,
            token,
            uri,
            presented,
            retry,
            returned,
            response,
        )
        .await
    }))
}

/// The rest of a request after the inner service's first answer: the token accepted, or on a
/// 401 one renewal (or a DPoP nonce) and one retry, with the copy kept in `retry` or the
/// request the inner service handed back (`returned`).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn answered<S, Src, B, RB>(
    integration: Integration<Src>,
    mut inner: S,
    token: Arc<CachedToken>,
    uri: Option<http::Uri>,
    presented: Presented,
    retry: Option<Request<B>>,
    returned: bool,
    mut response: Response<RB>,
) -> Result<Response<RB>, BoxError>
where
    S: Service<Request<B>, Response = Response<RB>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    Src: TokenSource,
    B: ReplayBody + Send + 'static,
    RB: Send + 'static,
{
    if response.status() != StatusCode::UNAUTHORIZED {
        token.accepted();
        if let Some(uri) = &uri {
            integration.observe(&presented, &url_of(uri)?, response.headers());
        }
        return Ok(response);
    }
    if crate::protocol::step_up::is_step_up_challenge(response.headers()) {
        // RFC 9470: the token is fine, the authentication is not; a new token would not help.
        return Ok(response);
    }
    let retry = match retry {
        Some(retry) => Some(retry),
        None if returned => response
            .extensions_mut()
            .remove::<super::ReturnedRequest<B>>()
            .and_then(|returned| returned.take()),
        None => None,
    };
    let Some(mut retry) = retry else {
        if let Some(uri) = &uri {
            // Keep the nonce; the body cannot be replayed, so no retry.
            integration.observe(&presented, &url_of(uri)?, response.headers());
        }
        integration.after_unauthorized(&token, false).await?;
        return Ok(response);
    };
    let mut token = token;
    let challenge = integration.nonce_challenge(
        &presented,
        &url_of(uri.as_ref().unwrap_or(retry.uri()))?,
        response.status(),
        response.headers(),
    );
    if challenge == NonceChallenge::Unchanged {
        return Ok(response);
    }
    if challenge == NonceChallenge::None {
        let Some(renewed) = integration.after_unauthorized(&token, true).await? else {
            return Ok(response);
        };
        token = renewed;
    }
    drop(response);
    let presented = attach(&integration, &token, uri.as_ref(), &mut retry).await?;
    let url = uri.unwrap_or_else(|| retry.uri().clone());
    std::future::poll_fn(|cx| inner.poll_ready(cx))
        .await
        .map_err(Into::into)?;
    let response = inner.call(retry).await.map_err(Into::into)?;
    if let Presented::Dpop { .. } = presented {
        integration.observe(&presented, &url_of(&url)?, response.headers());
    }
    if response.status() != StatusCode::UNAUTHORIZED {
        token.accepted();
    }
    Ok(response)
}

fn url_of(uri: &http::Uri) -> Result<url::Url, Error> {
    url::Url::parse(&uri.to_string()).map_err(|_| {
        Error::Internal("a DPoP-bound token needs a request with an absolute URI".into())
    })
}

/// Puts `token` on `request` (with a proof when it is DPoP-bound).
async fn attach<Src: TokenSource, B>(
    integration: &Integration<Src>,
    token: &CachedToken,
    target: Option<&http::Uri>,
    request: &mut Request<B>,
) -> Result<Presented, Error> {
    if !token.is_dpop() {
        present(token, request.headers_mut());
        return Ok(Presented::Bearer);
    }
    let url = url_of(target.unwrap_or(request.uri()))?;
    let method = request.method().clone();
    integration
        .attach(token, &method, &url, request.headers_mut())
        .await
}

fn replay<B: ReplayBody>(request: &Request<B>) -> Option<Request<B>> {
    let body = request.body().try_replay()?;
    let mut copy = Request::new(body);
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    Some(copy)
}
