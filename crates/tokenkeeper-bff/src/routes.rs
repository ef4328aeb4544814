//! Remote API routes: a local path prefix mapped to an upstream, with the token to attach.

use std::time::Duration;

use tokenkeeper::user::UserTokenParams;
use url::Url;

/// Which token a route attaches (BF-05).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[non_exhaustive]
pub enum RouteToken {
    /// No token.
    None,
    /// The user's token; an anonymous caller gets 401.
    #[default]
    User,
    /// The BFF's own client-credentials token.
    Client,
    /// The user's token when there is a session with one, else the client's.
    UserOrClient,
    /// The user's token when there is a session with one, else none.
    UserOrNone,
    /// A token exchanged (RFC 8693) by the BFF's client for the user's token, for the route's
    /// audience, scope or resource: the upstream gets a token made for it, not the user's
    /// (BF-20). Cached per user token; an anonymous caller gets 401.
    Exchange,
}

/// How a route tells the BFF's own pages from other sites' (BF-04, UX-06).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum AntiForgery {
    /// The anti-forgery header (`X-CSRF: 1`) is required: only same-origin script can send a
    /// custom header on a credentialed request.
    #[default]
    Header,
    /// As [`AntiForgery::Header`], but a `GET` or `HEAD` request may instead show
    /// `Sec-Fetch-Site: same-origin`, which browsers set and no other site's page can forge:
    /// for `EventSource` (server-sent events), which cannot send a header. Other methods still
    /// need the header.
    SameOriginReads,
    /// No check: for routes that need no session and send no token.
    None,
}

/// A remote API route: requests under `path` go to `upstream`, with `path` replaced by the
/// upstream's path.
///
/// ```
/// use tokenkeeper_bff::{ApiRoute, RouteToken};
/// let route = ApiRoute::new("/api/orders", "https://orders.internal/v1".parse().unwrap())
///     .token(RouteToken::UserOrClient);
/// assert_eq!(route.path(), "/api/orders");
/// ```
#[derive(Debug, Clone)]
pub struct ApiRoute {
    pub(crate) path: String,
    pub(crate) upstream: Url,
    pub(crate) token: RouteToken,
    pub(crate) user_params: UserTokenParams,
    pub(crate) client_params: tokenkeeper::TokenRequestParams,
    pub(crate) client: Option<String>,
    pub(crate) timeout: Duration,
    pub(crate) anti_forgery: AntiForgery,
    /// The methods the route takes (`None`: any but TRACE and CONNECT, which no route takes).
    pub(crate) methods: Option<Vec<http::Method>>,
    /// Whether `%2F` may appear in a forwarded path segment.
    pub(crate) allow_encoded_slashes: bool,
    /// Whether the upstream's `Access-Control-*` headers reach the browser.
    pub(crate) pass_cors_headers: bool,
    /// The largest WebSocket message (and frame) relayed, either way.
    pub(crate) websocket_max_message: usize,
    /// How long a WebSocket relay may carry nothing before it is closed.
    pub(crate) websocket_idle: Duration,
    /// Who may use the route (claims, scopes; BF-20).
    pub(crate) policy: crate::route_policy::RoutePolicy,
    /// The `audience` of [`RouteToken::Exchange`]'s token exchange.
    pub(crate) exchange_audience: Option<String>,
}

impl ApiRoute {
    /// A route from the local `path` prefix (`/api/orders`) to `upstream`, attaching the
    /// user's token, with a 30 s timeout (see [`ApiRoute::timeout`]).
    pub fn new(path: impl Into<String>, upstream: Url) -> Self {
        let path = path.into();
        Self {
            path: format!("/{}", path.trim_matches('/')),
            upstream,
            token: RouteToken::User,
            user_params: UserTokenParams::default(),
            client_params: tokenkeeper::TokenRequestParams::default(),
            client: None,
            timeout: Duration::from_secs(30),
            anti_forgery: AntiForgery::Header,
            methods: None,
            allow_encoded_slashes: false,
            pass_cors_headers: false,
            websocket_max_message: 1024 * 1024,
            websocket_idle: Duration::from_secs(300),
            policy: crate::route_policy::RoutePolicy::default(),
            exchange_audience: None,
        }
    }

    /// The `audience` a [`RouteToken::Exchange`] route asks its exchanged token for.
    pub fn exchange_audience(mut self, audience: impl Into<String>) -> Self {
        self.exchange_audience = Some(audience.into());
        self
    }

    /// Only sessions whose claim `claim` is `value` (or, an array, has `value` in it) may use
    /// the route: others get 403, and nothing is forwarded (BF-20). Several requirements must
    /// all hold.
    pub fn require_claim(mut self, claim: impl Into<String>, value: impl Into<String>) -> Self {
        self.policy.claims.push((claim.into(), value.into()));
        self
    }

    /// Only users whose access token was granted `scope` may use the route (403 otherwise). For
    /// routes with a user token.
    pub fn require_scope(mut self, scope: impl Into<String>) -> Self {
        self.policy.scopes.push(scope.into());
        self
    }

    /// Which token to attach.
    pub fn token(mut self, token: RouteToken) -> Self {
        self.token = token;
        self
    }

    /// The user-token parameters (resource, scope) of this route.
    pub fn user_params(mut self, params: UserTokenParams) -> Self {
        self.user_params = params;
        self
    }

    /// The client-token parameters (scope, resource) of this route, for
    /// [`RouteToken::Client`] and [`RouteToken::UserOrClient`] (UX-01).
    pub fn client_params(mut self, params: tokenkeeper::TokenRequestParams) -> Self {
        self.client_params = params;
        self
    }

    /// The client-credentials client whose token [`RouteToken::Client`] and
    /// [`RouteToken::UserOrClient`] attach (default: the BFF's first client).
    pub fn client(mut self, name: impl Into<String>) -> Self {
        self.client = Some(name.into());
        self
    }

    /// How long the upstream may take to answer, until its response headers (checked four
    /// times a second); a streamed body may then take as long as it takes.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Whether the anti-forgery header is required (default `true`; turn it off only for routes
    /// that need no session and no user token).
    pub fn anti_forgery(mut self, required: bool) -> Self {
        self.anti_forgery = if required {
            AntiForgery::Header
        } else {
            AntiForgery::None
        };
        self
    }

    /// How the route checks that a request comes from the BFF's own pages (default
    /// [`AntiForgery::Header`]).
    pub fn anti_forgery_mode(mut self, mode: AntiForgery) -> Self {
        self.anti_forgery = mode;
        self
    }

    /// The only methods this route forwards (others get 405 with `Allow`). TRACE and CONNECT are
    /// never forwarded, listed or not (SEC-17).
    pub fn methods(mut self, methods: impl IntoIterator<Item = http::Method>) -> Self {
        self.methods = Some(methods.into_iter().collect());
        self
    }

    /// Lets `%2F` through in forwarded path segments (for an upstream that names resources
    /// with encoded slashes). Off by default: a segment with `%2F`, `%5C`, `%2E`, `;` or `%00`
    /// is refused with 400, because upstreams and their frameworks decode them differently and
    /// `/api/..%2fadmin` would reach `/admin` with the user's token (SEC-21). The other four
    /// stay refused even with this on.
    pub fn allow_encoded_slashes(mut self, allow: bool) -> Self {
        self.allow_encoded_slashes = allow;
        self
    }

    /// Passes the upstream's `Access-Control-*` headers to the browser. Off by default: the
    /// BFF's API is same-origin, and an upstream's CORS grants (`Access-Control-Allow-Origin:
    /// *` with credentials) would apply to the BFF's origin (SEC-23).
    pub fn pass_cors_headers(mut self, pass: bool) -> Self {
        self.pass_cors_headers = pass;
        self
    }

    /// The largest WebSocket message relayed either way (default 1 MiB; SEC-18): a bigger one
    /// closes the relay with code 1009, before it is buffered whole.
    pub fn websocket_max_message(mut self, bytes: usize) -> Self {
        self.websocket_max_message = bytes.max(1);
        self
    }

    /// How long a WebSocket relay may carry no message either way before it is closed with
    /// code 1001 (default 5 minutes; SEC-18). Pings count: a client that keeps the socket
    /// alive sends them.
    pub fn websocket_idle_timeout(mut self, idle: Duration) -> Self {
        self.websocket_idle = idle.max(Duration::from_millis(1));
        self
    }

    /// The engine's route: the same prefix, upstream and forwarding rules.
    pub(crate) fn engine_route(
        &self,
    ) -> Result<tokenkeeper_proxy::Route, tokenkeeper_proxy::RouteError> {
        Ok(
            tokenkeeper_proxy::Route::new(&self.path, self.upstream.clone())?
                .timeout(self.timeout)
                .methods(self.methods.clone())
                .allow_encoded_slashes(self.allow_encoded_slashes)
                .pass_cors_headers(self.pass_cors_headers),
        )
    }
    /// The local path prefix.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The upstream.
    pub fn upstream(&self) -> &Url {
        &self.upstream
    }
}
