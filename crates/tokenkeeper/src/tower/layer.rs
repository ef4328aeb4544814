//! [`TokenLayer`] and the [`Token`] service.

use std::task::{Context, Poll};

use http::{header::AUTHORIZATION, Request, Response, StatusCode};
use tower_layer::Layer;
use tower_service::Service;

use super::body::ReplayBody;
use super::future::ResponseFuture;
use super::BoxError;
use crate::client_credentials::{BoundClient, ClientCredentialsTokenManager, TokenRequestParams};
use crate::error::Error;
use crate::MissingToken;

/// A layer that wraps services in [`Token`].
#[derive(Debug, Clone)]
pub struct TokenLayer {
    bound: BoundClient,
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
            bound: self.bound.clone(),
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
            bound: BoundClient::new(self, client, params)?,
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
    bound: BoundClient,
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
        let bound = self.bound.clone();
        let missing = self.missing;
        ResponseFuture {
            inner: Box::pin(async move {
                let token = match bound.token().await {
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
                bound.invalidate(&token).await;
                let Some(mut retry) = retry else {
                    return Ok(response);
                };
                drop(response);
                let token = bound.token().await.map_err(|e| Box::new(e) as BoxError)?;
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

fn replay<B: ReplayBody>(request: &Request<B>) -> Option<Request<B>> {
    let body = request.body().try_replay()?;
    let mut copy = Request::new(body);
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    Some(copy)
}
