//! [`TokenLayer`] and the [`Token`] service.

use std::task::{Context, Poll};

use http::{header::AUTHORIZATION, Request, Response, StatusCode};
use tower_layer::Layer;
use tower_service::Service;

use super::body::ReplayBody;
use super::future::ResponseFuture;
use super::BoxError;
use crate::cache::CachedToken;
use crate::client_credentials::{BoundClient, ClientCredentialsTokenManager, TokenRequestParams};
use crate::error::Error;
use crate::user::{SessionKey, UserTokenManager, UserTokenParams};
use crate::MissingToken;
use std::sync::Arc;

/// A layer that wraps services in [`Token`].
#[derive(Debug, Clone)]
pub struct TokenLayer {
    source: Source,
    missing: MissingToken,
}

impl TokenLayer {
    /// What to do when no token can be had (default: fail the request).
    pub fn on_missing_token(mut self, missing: MissingToken) -> Self {
        self.missing = missing;
        self
    }
}

impl<S> Layer<S> for TokenLayer {
    type Service = Token<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Token {
            inner,
            source: self.source.clone(),
            missing: self.missing,
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
        Ok(TokenLayer {
            source: Source::Client(BoundClient::new(self, client, params)?),
            missing: MissingToken::Fail,
        })
    }
}

/// A service that attaches a token to each request, and retries once on a 401 when the body can
/// be replayed (see [`ReplayBody`]). Errors are boxed: either the inner service's error or a
/// [`crate::Error`] when no token could be had.
#[derive(Debug, Clone)]
pub struct Token<S> {
    inner: S,
    source: Source,
    missing: MissingToken,
}

impl<S, B, RB> Service<Request<B>> for Token<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: ReplayBody + Send + 'static,
    RB: Send + 'static,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = ResponseFuture<Response<RB>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // Take the service that was driven to readiness; leave a clone in its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let source = self.source.clone();
        let missing = self.missing;
        ResponseFuture {
            inner: Box::pin(async move {
                let token = match source.token().await {
                    Ok(token) => token,
                    Err(error) if missing == MissingToken::SendWithout => {
                        tracing::warn!(%error, "no token; sending the request without one");
                        return inner.call(request).await.map_err(Into::into);
                    }
                    Err(error) => return Err(Box::new(error) as BoxError),
                };
                let retry = replay(&request);
                request
                    .headers_mut()
                    .insert(AUTHORIZATION, token.authorization_header().clone());
                let response = inner.call(request).await.map_err(Into::into)?;
                if response.status() != StatusCode::UNAUTHORIZED {
                    return Ok(response);
                }
                let Some(mut retry) = retry else {
                    source.rejected(&token).await;
                    return Ok(response);
                };
                drop(response);
                let token = source
                    .replacement(&token)
                    .await
                    .map_err(|e| Box::new(e) as BoxError)?;
                retry
                    .headers_mut()
                    .insert(AUTHORIZATION, token.authorization_header().clone());
                std::future::poll_fn(|cx| inner.poll_ready(cx))
                    .await
                    .map_err(Into::into)?;
                inner.call(retry).await.map_err(Into::into)
            }),
        }
    }
}

/// Where the layer's tokens come from.
#[derive(Debug, Clone)]
enum Source {
    /// A client-credentials client.
    Client(BoundClient),
    /// A user's session.
    User {
        manager: UserTokenManager,
        session: SessionKey,
        params: UserTokenParams,
    },
}

impl Source {
    async fn token(&self) -> Result<Arc<CachedToken>, Error> {
        match self {
            Self::Client(bound) => bound.token().await,
            Self::User {
                manager,
                session,
                params,
            } => manager.get_access_token(session, params).await,
        }
    }

    /// The API refused `token` and the request will not be retried.
    async fn rejected(&self, token: &CachedToken) {
        if let Self::Client(bound) = self {
            bound.invalidate(token).await;
        }
    }

    /// The API refused `token`: a new one for the retry.
    async fn replacement(&self, token: &CachedToken) -> Result<Arc<CachedToken>, Error> {
        match self {
            Self::Client(bound) => {
                bound.invalidate(token).await;
                bound.token().await
            }
            Self::User {
                manager,
                session,
                params,
            } => {
                manager
                    .get_access_token(session, &params.clone().force_renewal(true))
                    .await
            }
        }
    }
}

impl UserTokenManager {
    /// A tower layer attaching the access token of `session` (for background jobs and
    /// websocket handlers: no HTTP request needed). On a 401 it refreshes once and retries.
    pub fn layer(&self, session: SessionKey, params: UserTokenParams) -> TokenLayer {
        TokenLayer {
            source: Source::User {
                manager: self.clone(),
                session,
                params,
            },
            missing: MissingToken::Fail,
        }
    }
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
