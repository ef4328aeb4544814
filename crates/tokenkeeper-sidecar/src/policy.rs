//! The sidecar's policy on the proxy engine: which token each route attaches, and its own
//! answers as JSON.

use http::{header, Response, StatusCode};
use std::sync::Arc;

use tokenkeeper::exchange::TokenExchange;
use tokenkeeper::TokenSource as _;
use tokenkeeper::{
    ClientCredentialsTokenManager, ClientTokenSource, TokenLayer, TokenRequestParams,
};
use tokenkeeper_proxy::{Attach, Policy, ProxyBody, Refusal};

use crate::json_error;

/// What a route attaches.
#[derive(Debug)]
pub enum RoutePlan {
    /// Nothing.
    None,
    /// The caller's `Authorization`, as it came.
    Forward,
    /// A client's token (the layer made once; the client and parameters for `/readyz`).
    Client(TokenLayer, String, TokenRequestParams),
    /// The caller's Bearer token, exchanged with `client`.
    Exchange {
        /// Exchanges in flight (cache misses) at most: each distinct caller token is a token
        /// request, so a caller with many bogus tokens could otherwise flood the token server.
        in_flight: Arc<tokio::sync::Semaphore>,
        /// The client that exchanges.
        client: String,
        /// Scope and resource asked for.
        params: TokenRequestParams,
        /// The audience asked for.
        audience: Option<String>,
    },
}

/// The sidecar's [`Policy`].
#[derive(Debug)]
pub struct SidecarPolicy {
    routes: Vec<RoutePlan>,
    tokens: Option<ClientCredentialsTokenManager>,
}

impl SidecarPolicy {
    pub(crate) fn new(
        routes: Vec<RoutePlan>,
        tokens: Option<ClientCredentialsTokenManager>,
    ) -> Self {
        Self { routes, tokens }
    }

    /// One check per `client` route: its token can be had.
    pub(crate) async fn readiness(&self) -> Vec<(String, tokenkeeper_proxy::ops::CheckResult)> {
        let mut checks = Vec::new();
        for (i, plan) in self.routes.iter().enumerate() {
            if let (RoutePlan::Client(_, client, params), Some(tokens)) = (plan, &self.tokens) {
                let result = match tokens.get_token(client, params).await {
                    Ok(_) => Ok(()),
                    Err(error) => {
                        tracing::warn!(%error, route = i, "readiness: no token");
                        Err("no token (see the sidecar's log)".to_owned())
                    }
                };
                checks.push((format!("routes[{i}].token"), result));
            }
        }
        checks
    }
}

/// The caller's Bearer token, if its `Authorization` is one (the scheme in any case).
fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && token.len() <= 16 * 1024)
        .then_some(token)
}

/// Exchanges in flight per route, at most ([`RoutePlan::Exchange`]); more get 503 `busy`.
pub const MAX_EXCHANGES_IN_FLIGHT: usize = 64;

impl Policy for SidecarPolicy {
    /// A permit of an exchange route's in-flight exchanges, held until the request ends.
    type Context = Option<tokio::sync::OwnedSemaphorePermit>;

    async fn admit(
        &self,
        route: usize,
        parts: &http::request::Parts,
    ) -> Result<(Attach, Self::Context), Response<ProxyBody>> {
        let mut permit = None;
        let attach = match &self.routes[route] {
            RoutePlan::None => Attach::None,
            RoutePlan::Forward => match parts.headers.get(header::AUTHORIZATION) {
                Some(value) => Attach::Authorization(value.clone()),
                None => Attach::None,
            },
            RoutePlan::Client(layer, ..) => Attach::Client(layer.clone()),
            RoutePlan::Exchange {
                in_flight,
                client,
                params,
                audience,
            } => {
                let Some(subject) = bearer(&parts.headers) else {
                    return Err(json_error(
                        StatusCode::UNAUTHORIZED,
                        "missing_bearer",
                        "This route exchanges the caller's Bearer token: send one.",
                    ));
                };
                let mut exchange = TokenExchange::access_token(subject);
                if let Some(audience) = audience {
                    exchange = exchange.audience(audience.as_str());
                }
                let Some(tokens) = &self.tokens else {
                    return Err(self.refuse(Refusal::TokenUnavailable));
                };
                match ClientTokenSource::new(tokens, client, params.clone().exchange(exchange)) {
                    Ok(source) => {
                        if source.cached().is_none() {
                            let Ok(held) = in_flight.clone().try_acquire_owned() else {
                                return Err(json_error(
                                    StatusCode::SERVICE_UNAVAILABLE,
                                    "busy",
                                    "Too many token exchanges in progress: retry shortly.",
                                ));
                            };
                            permit = Some(held);
                        }
                        Attach::Client(TokenLayer::new(source))
                    }
                    Err(error) => {
                        tracing::warn!(%error, "the caller's token cannot be exchanged");
                        return Err(self.refuse(Refusal::TokenUnavailable));
                    }
                }
            }
        };
        Ok((attach, permit))
    }

    async fn token_failed(
        &self,
        route: usize,
        _context: Self::Context,
        error: &tokenkeeper::Error,
    ) -> Response<ProxyBody> {
        // An exchange the server refused because of the caller's token (`invalid_grant`): the
        // caller's fault, a 401 — not the sidecar's, which a 502 would say.
        let exchange = matches!(self.routes.get(route), Some(RoutePlan::Exchange { .. }));
        let refused = match error {
            tokenkeeper::Error::OAuth(e) => exchange && e.error == "invalid_grant",
            // Not a token that can be exchanged: opaque without a known expiry, unusable bytes.
            tokenkeeper::Error::SubjectToken(_) => exchange,
            tokenkeeper::Error::ReauthenticationRequired(_) => true,
            _ => false,
        };
        if refused {
            return json_error(
                StatusCode::UNAUTHORIZED,
                "token_refused",
                "The token server refused the caller's token.",
            );
        }
        self.refuse(Refusal::TokenUnavailable)
    }

    fn refuse(&self, refusal: Refusal) -> Response<ProxyBody> {
        json_error(refusal.status(), refusal.code(), refusal.message())
    }
}

#[cfg(test)]
mod tests {
    use super::bearer;

    #[test]
    fn bearer_tokens_are_read_strictly() {
        let headers = |v: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(
                http::header::AUTHORIZATION,
                v.parse()
                    .unwrap_or_else(|_| http::HeaderValue::from_static("x")),
            );
            h
        };
        assert_eq!(bearer(&headers("Bearer abc")), Some("abc"));
        assert_eq!(bearer(&headers("bearer abc")), Some("abc"));
        assert_eq!(bearer(&headers("DPoP abc")), None);
        assert_eq!(bearer(&headers("Bearer ")), None);
        assert_eq!(bearer(&headers("Basic YQ==")), None);
    }
}
