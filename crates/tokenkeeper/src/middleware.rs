//! The [`reqwest_middleware::Middleware`] that attaches tokens: one middleware for every
//! [`TokenSource`] (a client-credentials client, a user's session).

use std::sync::Arc;

use http::{Extensions, StatusCode};
use reqwest_middleware::{Middleware, Next};

use crate::cache::CachedToken;
use crate::client_credentials::{ClientCredentialsTokenManager, TokenRequestParams};
use crate::dpop::NonceChallenge;
use crate::error::Error;
use crate::source::{
    present, ClientTokenSource, Integration, Presented, TokenSource, UserTokenSource,
};
use crate::user::{SessionKey, UserTokenManager, UserTokenParams};
use crate::MissingToken;

/// Attaches `Authorization: <type> <token>` to every request and retries once on a 401.
///
/// - A DPoP-bound token (the client has a [DPoP key](crate::ClientConfig::dpop)) goes with the
///   `DPoP` scheme and a fresh proof for each request (`htm`, `htu`, `ath`, and the API's latest
///   nonce). A `401` with a `DPoP error="use_dpop_nonce"` challenge and a new nonce is sent
///   once more, with the same token and a new proof; nonces are kept per API origin, from
///   every response (PK-03, PK-09, PK-10).
/// - The token comes from the source's cache (a hit costs no I/O).
/// - When the client names its [destinations](crate::ClientConfig::destination), a request
///   for any other origin fails with [`Error::DestinationNotAllowed`] and is not sent.
/// - On a `401 Unauthorized` from the URL the request was sent to, the token is renewed (at
///   most once per token, and through the renewal backoff: a 401 for a token that a 401 renewed
///   moments ago is handed to the caller as it is) and the request is sent once more — if its
///   body can be replayed (`reqwest::Request::try_clone`). A second 401 is returned to the
///   caller. A 401 from where a redirect led (another URL) renews nothing and is not retried:
///   tokens are only re-sent to the URL the caller asked for.
/// - When no token can be had, the request fails with the token error
///   ([`reqwest_middleware::Error::Middleware`] holding a [`crate::Error`]; get it back with
///   [`Error::from_middleware`]), unless [`TokenMiddleware::on_missing_token`] says to send it
///   without.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use tokenkeeper::{ClientConfig, ClientCredentialsTokenManager};
/// let tokens = ClientCredentialsTokenManager::builder()
///     .client("catalog", ClientConfig::new("https://idp.example.com/token", "worker", "secret"))
///     .build()?;
/// let http = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     .with(tokens.middleware("catalog")?)
///     .build();
/// let response = http.get("https://catalog.example.com/items").send().await?;
/// # let _ = response; Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct TokenMiddleware<S = ClientTokenSource> {
    integration: Integration<S>,
}

impl<S: TokenSource> TokenMiddleware<S> {
    /// A middleware attaching the tokens of `source`.
    pub fn new(source: S) -> Self {
        Self {
            integration: Integration::new(source),
        }
    }

    /// What to do when no token can be had (default: fail the request).
    pub fn on_missing_token(mut self, missing: MissingToken) -> Self {
        self.integration.missing = missing;
        self
    }

    /// The token source.
    pub fn source(&self) -> &S {
        &self.integration.source
    }
}

/// The middleware attaching the tokens of a user's session.
pub type UserTokenMiddleware = TokenMiddleware<UserTokenSource>;

impl ClientCredentialsTokenManager {
    /// A middleware attaching `client`'s token. Fails now if no such client is registered.
    pub fn middleware(&self, client: &str) -> Result<TokenMiddleware, Error> {
        self.middleware_with(client, TokenRequestParams::default())
    }

    /// A middleware attaching `client`'s token for `params` (scope, resource, extras).
    pub fn middleware_with(
        &self,
        client: &str,
        params: TokenRequestParams,
    ) -> Result<TokenMiddleware, Error> {
        Ok(TokenMiddleware::new(ClientTokenSource::new(
            self, client, params,
        )?))
    }
}

impl UserTokenManager {
    /// A middleware attaching the access token of `session` (for background jobs and websocket
    /// handlers: no HTTP request needed). Fails the request with the token error (for instance
    /// [`crate::Error::ReauthenticationRequired`]) when no token can be had.
    ///
    /// ```no_run
    /// # fn run(users: tokenkeeper::user::UserTokenManager) {
    /// use tokenkeeper::user::{SessionKey, UserTokenParams};
    /// let session = SessionKey::from_sub_sid("alice", "s-1");
    /// let http = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
    ///     .with(users.middleware(session, UserTokenParams::default()))
    ///     .build();
    /// # let _ = http; }
    /// ```
    pub fn middleware(&self, session: SessionKey, params: UserTokenParams) -> UserTokenMiddleware {
        TokenMiddleware::new(UserTokenSource::new(self, session, params))
    }
}

type HandleFuture<'a> = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = reqwest_middleware::Result<reqwest::Response>> + Send + 'a,
    >,
>;

/// Where a request goes once its token is on it: the rest of a reqwest-middleware chain, or
/// straight to a `reqwest::Client` ([`TokenMiddleware::execute`]). One implementation of the
/// token handling (proofs, nonce retries, 401 renewals) serves both.
trait Dispatch: Send {
    fn dispatch(
        &mut self,
        req: reqwest::Request,
    ) -> impl std::future::Future<Output = reqwest_middleware::Result<reqwest::Response>> + Send + '_;
}

/// The rest of the chain.
struct ViaNext<'n, 'e> {
    next: Next<'n>,
    extensions: &'e mut Extensions,
}

impl Dispatch for ViaNext<'_, '_> {
    #[inline]
    fn dispatch(
        &mut self,
        req: reqwest::Request,
    ) -> impl std::future::Future<Output = reqwest_middleware::Result<reqwest::Response>> + Send + '_
    {
        self.next.clone().run(req, self.extensions)
    }
}

/// A plain client.
struct ViaClient<'c>(&'c reqwest::Client);

impl Dispatch for ViaClient<'_> {
    #[inline]
    fn dispatch(
        &mut self,
        req: reqwest::Request,
    ) -> impl std::future::Future<Output = reqwest_middleware::Result<reqwest::Response>> + Send + '_
    {
        let sent = self.0.execute(req);
        async move { sent.await.map_err(reqwest_middleware::Error::Reqwest) }
    }
}

// Written by hand rather than with `async_trait`: on a cache hit the header is attached before
// any future is built, and the one boxed future holds only what the 401 retry needs. This keeps
// the middleware's cost within about 1 % of a static-header middleware (see BENCHMARKS.md).
impl<S: TokenSource> Middleware for TokenMiddleware<S> {
    fn handle<'a, 'b, 'c, 'd>(
        &'a self,
        mut req: reqwest::Request,
        extensions: &'b mut Extensions,
        next: Next<'c>,
    ) -> HandleFuture<'d>
    where
        'a: 'd,
        'b: 'd,
        'c: 'd,
        Self: 'd,
    {
        let via = ViaNext { next, extensions };
        if let Err(error) = self.integration.check_url(req.url()) {
            return Box::pin(std::future::ready(Err(
                reqwest_middleware::Error::middleware(error),
            )));
        }
        let Some(token) = self.integration.source.cached() else {
            return Box::pin(self.handle_slow(req, via));
        };
        if token.is_dpop() {
            // A proof per request: signing costs far more than the boxing saved below.
            return Box::pin(self.send(req, token, via));
        }
        let retry = Replay::of(&req);
        present(&token, req.headers_mut());
        Box::pin(self.send_bearer(req, token, retry, via))
    }
}

fn token_error(error: Error) -> reqwest_middleware::Error {
    reqwest_middleware::Error::middleware(error)
}

impl<S: TokenSource> TokenMiddleware<S> {
    /// Sends `req` through `client` with this middleware's token handling — the same as a
    /// `ClientWithMiddleware` holding only this middleware, without building one. For code
    /// that picks the token source per request (a proxy: one middleware per call) and wants
    /// no chain to build or run each time; the client's own settings (pool, TLS, timeouts)
    /// apply as usual.
    ///
    /// ```no_run
    /// # async fn run(users: tokenkeeper::user::UserTokenManager) -> Result<(), Box<dyn std::error::Error>> {
    /// use tokenkeeper::user::{SessionKey, UserTokenParams};
    /// let http = reqwest::Client::new();
    /// let session = SessionKey::from_sub_sid("alice", "s-1");
    /// let request = http.get("https://api.example.com/items").build()?;
    /// let response = users
    ///     .middleware(session, UserTokenParams::default())
    ///     .execute(&http, request)
    ///     .await?;
    /// # let _ = response; Ok(()) }
    /// ```
    pub async fn execute(
        &self,
        client: &reqwest::Client,
        mut req: reqwest::Request,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let via = ViaClient(client);
        self.integration.check_url(req.url()).map_err(token_error)?;
        let Some(token) = self.integration.source.cached() else {
            return Box::pin(self.handle_slow(req, via)).await;
        };
        if token.is_dpop() {
            return Box::pin(self.send(req, token, via)).await;
        }
        let retry = Replay::of(&req);
        present(&token, req.headers_mut());
        self.send_bearer(req, token, retry, via).await
    }

    /// Sends `req`, which carries the Bearer `token` already; a 401 goes to
    /// [`Self::after_response`].
    async fn send_bearer<D: Dispatch>(
        &self,
        req: reqwest::Request,
        token: Arc<CachedToken>,
        retry: Replay,
        mut via: D,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let response = via.dispatch(req).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            token.accepted();
            return Ok(response);
        }
        // Rare: boxed, so that its state does not bloat every request's future.
        Box::pin(self.after_response(response, token, retry, via)).await
    }

    /// No cached token: acquire one (or not), then send.
    async fn handle_slow<D: Dispatch>(
        &self,
        req: reqwest::Request,
        mut via: D,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let Some(token) = self.integration.token().await.map_err(token_error)? else {
            return via.dispatch(req).await;
        };
        self.send(req, token, via).await
    }

    /// Puts `token` on `req` (with a proof when it is DPoP-bound).
    async fn attach(
        &self,
        token: &CachedToken,
        req: &mut reqwest::Request,
    ) -> reqwest_middleware::Result<Presented> {
        if !token.is_dpop() {
            present(token, req.headers_mut());
            return Ok(Presented::Bearer);
        }
        let method = req.method().clone();
        let url = req.url().clone();
        self.integration
            .attach(token, &method, &url, req.headers_mut())
            .await
            .map_err(token_error)
    }

    /// Sends `req` with `token` (and a DPoP proof when the token is bound), then handles a
    /// `use_dpop_nonce` challenge (one retry with a new proof) or a 401 (one renewal).
    async fn send<D: Dispatch>(
        &self,
        mut req: reqwest::Request,
        token: Arc<CachedToken>,
        mut via: D,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let retry = Replay::of(&req);
        let presented = self.attach(&token, &mut req).await?;
        let response = via.dispatch(req).await?;
        let challenge = self.integration.nonce_challenge(
            &presented,
            response.url(),
            response.status(),
            response.headers(),
        );
        if challenge == NonceChallenge::Unchanged {
            return Ok(response);
        }
        if challenge == NonceChallenge::Retry && retry.sent_to.is(response.url()) {
            let Some(mut again) = retry.into_request(response.url()) else {
                // The body cannot be replayed: the caller gets the 401; the nonce is kept.
                return Ok(response);
            };
            drop(response);
            let presented = self.attach(&token, &mut again).await?;
            let response = via.dispatch(again).await?;
            self.integration
                .observe(&presented, response.url(), response.headers());
            if response.status() != StatusCode::UNAUTHORIZED {
                token.accepted();
            }
            return Ok(response);
        }
        self.after_response(response, token, retry, via).await
    }

    /// On a 401 from the URL the request was sent to: renew the token and, when the request
    /// can be replayed, retry once with the new one.
    async fn after_response<D: Dispatch>(
        &self,
        response: reqwest::Response,
        token: Arc<CachedToken>,
        retry: Replay,
        mut via: D,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        if response.status() != StatusCode::UNAUTHORIZED {
            token.accepted();
            return Ok(response);
        }
        if !retry.sent_to.is(response.url()) {
            // A 401 from where a redirect led says nothing about our token there.
            return Ok(response);
        }
        if crate::protocol::step_up::is_step_up_challenge(response.headers()) {
            // RFC 9470: the token is fine, the authentication is not; a new token would not
            // help. The caller reads the requirements with `step_up_challenge`.
            return Ok(response);
        }
        let Some(mut again) = retry.into_request(response.url()) else {
            // The body cannot be replayed: the caller gets the 401, and the next request will
            // carry a new token.
            let _ = self.integration.after_unauthorized(&token, false).await;
            return Ok(response);
        };
        let Some(token) = self
            .integration
            .after_unauthorized(&token, true)
            .await
            .map_err(token_error)?
        else {
            // Backing off: this token was itself a renewal moments ago.
            return Ok(response);
        };
        drop(response);
        let presented = self.attach(&token, &mut again).await?;
        let response = via.dispatch(again).await?;
        self.integration
            .observe(&presented, response.url(), response.headers());
        if response.status() != StatusCode::UNAUTHORIZED {
            token.accepted();
        }
        Ok(response)
    }
}

/// What a 401 retry needs, kept as cheaply as possible: the URL the request was sent to (so
/// that a 401 from where a redirect led renews nothing and a token is never re-sent there),
/// and the request itself — rebuilt from its method, headers, version and timeout when it has
/// no body (no allocation when it has no headers), copied whole when its body can be.
struct Replay {
    sent_to: SentTo,
    request: Option<Again>,
}

enum Again {
    Parts {
        method: http::Method,
        headers: Option<Box<http::HeaderMap>>,
        version: http::Version,
        timeout: Option<std::time::Duration>,
    },
    Whole(Box<reqwest::Request>),
}

impl Replay {
    #[inline]
    fn of(req: &reqwest::Request) -> Self {
        let request = if req.body().is_some() {
            req.try_clone().map(|req| Again::Whole(Box::new(req)))
        } else {
            Some(Again::Parts {
                method: req.method().clone(),
                headers: (!req.headers().is_empty()).then(|| Box::new(req.headers().clone())),
                version: req.version(),
                timeout: req.timeout().copied(),
            })
        };
        Self {
            sent_to: SentTo::of(req.url()),
            request,
        }
    }

    /// The request to send again (to `answered`, which is the URL it was sent to), if it can be.
    fn into_request(self, answered: &url::Url) -> Option<reqwest::Request> {
        match self.request? {
            Again::Whole(req) => Some(*req),
            Again::Parts {
                method,
                headers,
                version,
                timeout,
            } => {
                let mut req = reqwest::Request::new(method, answered.clone());
                if let Some(headers) = headers {
                    *req.headers_mut() = *headers;
                }
                *req.version_mut() = version;
                *req.timeout_mut() = timeout;
                Some(req)
            }
        }
    }
}

/// URLs up to this many bytes are kept verbatim (no allocation, exact comparison).
const SHORT_URL: usize = 128;

/// The URL a request was sent to, to tell whether a response came from there: the bytes
/// themselves when short (most URLs), else a hash keyed per process (so that nobody can choose a
/// URL that collides with another).
enum SentTo {
    Short { len: u8, bytes: [u8; SHORT_URL] },
    Long(u64),
}

impl SentTo {
    #[inline]
    fn of(url: &url::Url) -> Self {
        let url = url.as_str().as_bytes();
        match u8::try_from(url.len()) {
            Ok(len) if url.len() <= SHORT_URL => {
                let mut bytes = [0; SHORT_URL];
                bytes[..url.len()].copy_from_slice(url);
                Self::Short { len, bytes }
            }
            _ => Self::Long(url_hash(url)),
        }
    }

    /// Whether `answered` is the URL the request was sent to.
    fn is(&self, answered: &url::Url) -> bool {
        let answered = answered.as_str().as_bytes();
        match self {
            Self::Short { len, bytes } => &bytes[..usize::from(*len)] == answered,
            Self::Long(hash) => *hash == url_hash(answered),
        }
    }
}

fn url_hash(url: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    static KEYS: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    KEYS.get_or_init(Default::default).hash_one(url)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::SentTo;

    fn url(s: &str) -> url::Url {
        url::Url::parse(s).unwrap()
    }

    #[test]
    fn sent_to_tells_the_url_apart_from_any_other() {
        let long_path = "a".repeat(300);
        for sent in [
            "https://api.example.com/items?x=1".to_owned(),
            format!("https://api.example.com/{long_path}"),
        ] {
            let check = SentTo::of(&url(&sent));
            assert!(check.is(&url(&sent)));
            for other in [
                "https://evil.example.net/items?x=1".to_owned(),
                "https://api.example.com/items?x=2".to_owned(),
                format!("https://api.example.com/{long_path}b"),
                format!("https://evil.example.net/{long_path}"),
            ] {
                assert!(!check.is(&url(&other)), "{sent} vs {other}");
            }
        }
    }
}
