//! What a host decides per request, around the engine's forwarding: whether the request may
//! go (anti-forgery, a session, the caller's authentication), which token goes with it, what
//! happens when no token can be had, how the engine's own refusals are worded, and what an
//! upgrade becomes. The BFF and the sidecar each implement [`Policy`] once.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use http::{header, HeaderValue, Response, StatusCode};
use tokenkeeper::source::UserTokenSource;
use tokenkeeper::TokenLayer;

use crate::body::ProxyBody;

/// The credentials a request carries upstream.
#[derive(Debug, Clone)]
pub enum Attach {
    /// None.
    None,
    /// A client-credentials token (Bearer, DPoP with the API's nonces, mTLS-bound): renewed
    /// and retried once on a 401 when the body is replayable.
    Client(TokenLayer),
    /// A user's token (refreshed as needed, DPoP where bound), retried the same way.
    User(TokenLayer<UserTokenSource>),
    /// This `Authorization` value, as it is (a caller's token forwarded, an exchanged token
    /// already in hand).
    Authorization(HeaderValue),
}

/// An answer of the engine itself, worded by the host ([`Policy::refuse`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The method is not forwarded on this route (405, with `Allow`).
    MethodNotAllowed,
    /// The path would leave the upstream's base path, or has an encoded traversal (400).
    InvalidPath,
    /// The request body could not be read (400).
    BadRequestBody,
    /// The request could not be built for the upstream (400).
    InvalidRequest,
    /// No token could be had for the upstream (502).
    TokenUnavailable,
    /// The caller must log in (again) (401).
    NotLoggedIn,
    /// The upstream could not be reached, or failed before its response headers (502).
    UpstreamUnavailable,
    /// The upstream's response headers did not come within the route's timeout (504).
    UpstreamTimeout,
    /// This host does not relay upgrades on this route (501).
    UpgradeNotSupported,
    /// The host's own state (a session store) is unavailable (503).
    Unavailable,
}

impl Refusal {
    /// The status of the answer.
    pub fn status(self) -> StatusCode {
        match self {
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::InvalidPath | Self::BadRequestBody | Self::InvalidRequest => {
                StatusCode::BAD_REQUEST
            }
            Self::TokenUnavailable | Self::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            Self::NotLoggedIn => StatusCode::UNAUTHORIZED,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::UpgradeNotSupported => StatusCode::NOT_IMPLEMENTED,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A stable, machine-readable code (`upstream_timeout`).
    pub fn code(self) -> &'static str {
        match self {
            Self::MethodNotAllowed => "method_not_allowed",
            Self::InvalidPath => "invalid_path",
            Self::BadRequestBody => "bad_request_body",
            Self::InvalidRequest => "invalid_request",
            Self::TokenUnavailable => "token_unavailable",
            Self::NotLoggedIn => "not_logged_in",
            Self::UpstreamUnavailable => "upstream_unavailable",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::UpgradeNotSupported => "upgrade_not_supported",
            Self::Unavailable => "unavailable",
        }
    }

    /// A short message for people (no detail an attacker could use).
    pub fn message(self) -> &'static str {
        match self {
            Self::MethodNotAllowed => "Method not allowed.",
            Self::InvalidPath => "Invalid path.",
            Self::BadRequestBody => "Bad request body.",
            Self::InvalidRequest => "Invalid request.",
            Self::TokenUnavailable => "Upstream token unavailable.",
            Self::NotLoggedIn => "Not logged in.",
            Self::UpstreamUnavailable => "Upstream unavailable.",
            Self::UpstreamTimeout => "Upstream timed out.",
            Self::UpgradeNotSupported => "Upgrade not supported.",
            Self::Unavailable => "Unavailable right now.",
        }
    }
}

/// A short plain-text answer, never cached.
pub fn plain_text(status: StatusCode, message: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::full(message));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A host's decisions around the engine. Every method but [`Policy::admit`] has a default.
pub trait Policy: Send + Sync + 'static {
    /// What [`Policy::admit`] hands on to [`Policy::token_failed`] (the BFF: the session).
    type Context: Send;

    /// Whether the request to route `route` may go, and with which credentials; or the answer
    /// that ends it (401, 403, …), with nothing forwarded.
    fn admit(
        &self,
        route: usize,
        parts: &http::request::Parts,
    ) -> impl Future<Output = Result<(Attach, Self::Context), Response<ProxyBody>>> + Send;

    /// No token could be had (`error`): the answer. By default 401 when the user must log in
    /// again, 502 otherwise.
    fn token_failed(
        &self,
        route: usize,
        context: Self::Context,
        error: &tokenkeeper::Error,
    ) -> impl Future<Output = Response<ProxyBody>> + Send {
        let _ = (route, context);
        let refusal = match error {
            tokenkeeper::Error::ReauthenticationRequired(_) => Refusal::NotLoggedIn,
            _ => Refusal::TokenUnavailable,
        };
        std::future::ready(self.refuse(refusal))
    }

    /// A WebSocket upgrade to route `route` (its request's parts, with hyper's upgrade handle
    /// in the extensions). By default refused (501).
    fn upgrade(
        &self,
        route: usize,
        parts: http::request::Parts,
        peer: Option<SocketAddr>,
    ) -> impl Future<Output = Response<ProxyBody>> + Send {
        let _ = (route, parts, peer);
        std::future::ready(self.refuse(Refusal::UpgradeNotSupported))
    }

    /// The upstream of route `route` answered 401 with `headers` (after the token layer's
    /// retry, if any): the answer to send instead, or `None` (the default) to pass the 401 on.
    /// The BFF turns an RFC 9470 `insufficient_user_authentication` into a step-up answer.
    fn upstream_unauthorized(
        &self,
        route: usize,
        headers: &http::HeaderMap,
    ) -> Option<Response<ProxyBody>> {
        let _ = (route, headers);
        None
    }

    /// The engine's own answer for `refusal`. By default short plain text.
    fn refuse(&self, refusal: Refusal) -> Response<ProxyBody> {
        plain_text(refusal.status(), refusal.message())
    }

    /// A request ended with `status` after `elapsed` (metrics).
    fn finished(&self, route: usize, status: StatusCode, elapsed: Duration) {
        let _ = (route, status, elapsed);
    }
}
