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
    pub(crate) client: Option<String>,
    pub(crate) timeout: Duration,
    pub(crate) anti_forgery: bool,
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
            client: None,
            timeout: Duration::from_secs(30),
            anti_forgery: true,
        }
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
        self.anti_forgery = required;
        self
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
