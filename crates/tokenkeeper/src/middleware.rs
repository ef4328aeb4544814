//! A [`reqwest_middleware::Middleware`] that attaches client-credentials tokens.

use http::{header::AUTHORIZATION, Extensions, StatusCode};
use reqwest_middleware::{Middleware, Next};

use crate::client_credentials::{BoundClient, ClientCredentialsTokenManager, TokenRequestParams};
use crate::error::Error;
use crate::MissingToken;

/// Attaches `Authorization: <type> <token>` to every request and retries once on a 401.
///
/// - The token comes from the manager's cache (a hit costs no I/O).
/// - On a `401 Unauthorized`, the token is invalidated (only if it is still the cached one),
///   a token is acquired again and the request is sent once more — if its body can be replayed
///   (`reqwest::Request::try_clone`); a streaming body is not retried. A second 401 is returned
///   to the caller. A 401 that came from where a redirect led (another URL) is not retried there:
///   tokens are only re-sent to the URL the caller asked for.
/// - When no token can be had, the request fails with the token error
///   ([`reqwest_middleware::Error::Middleware`] holding a [`crate::Error`]), unless
///   [`TokenMiddleware::on_missing_token`] says to send it without.
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
pub struct TokenMiddleware {
    bound: BoundClient,
    missing: MissingToken,
}

impl TokenMiddleware {
    /// What to do when no token can be had (default: fail the request).
    pub fn on_missing_token(mut self, missing: MissingToken) -> Self {
        self.missing = missing;
        self
    }
}

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
        Ok(TokenMiddleware {
            bound: BoundClient::new(self, client, params)?,
            missing: MissingToken::Fail,
        })
    }
}

type HandleFuture<'a> = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = reqwest_middleware::Result<reqwest::Response>> + Send + 'a,
    >,
>;

// Written by hand rather than with `async_trait`: on a cache hit the header is attached before
// any future is built, and the one boxed future holds only what the 401 retry needs. This keeps
// the middleware's cost within a few percent of a static header (see BENCHMARKS.md).
impl Middleware for TokenMiddleware {
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
        let Some(token) = self.bound.cached() else {
            return Box::pin(self.handle_slow(req, extensions, next));
        };
        let retry = Replay::of(&req);
        req.headers_mut()
            .insert(AUTHORIZATION, token.authorization_header().clone());
        Box::pin(async move {
            let response = next.clone().run(req, extensions).await?;
            if response.status() != StatusCode::UNAUTHORIZED {
                return Ok(response);
            }
            // Rare: boxed, so that its state does not bloat every request's future.
            Box::pin(self.after_response(response, token, retry, extensions, next)).await
        })
    }
}

impl TokenMiddleware {
    /// No cached token: acquire one (or not), then send.
    async fn handle_slow(
        &self,
        mut req: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let token = match self.bound.token().await {
            Ok(token) => token,
            Err(error) if self.missing == MissingToken::SendWithout => {
                tracing::warn!(%error, "no token; sending the request without one");
                return next.run(req, extensions).await;
            }
            Err(error) => return Err(reqwest_middleware::Error::middleware(error)),
        };
        let retry = Replay::of(&req);
        req.headers_mut()
            .insert(AUTHORIZATION, token.authorization_header().clone());
        let response = next.clone().run(req, extensions).await?;
        self.after_response(response, token, retry, extensions, next)
            .await
    }

    /// On a 401: invalidate the token and, when the request can be replayed, retry once with a
    /// new one.
    async fn after_response(
        &self,
        response: reqwest::Response,
        token: std::sync::Arc<crate::CachedToken>,
        retry: Option<Replay>,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        self.bound.invalidate(&token).await;
        let Some(mut retry) = retry.and_then(|r| r.into_request(response.url())) else {
            // The body cannot be replayed (or the 401 came from where a redirect led): the
            // caller gets the 401, and the next request will carry a new token.
            return Ok(response);
        };
        drop(response);
        let token = self
            .bound
            .token()
            .await
            .map_err(reqwest_middleware::Error::middleware)?;
        retry
            .headers_mut()
            .insert(AUTHORIZATION, token.authorization_header().clone());
        next.run(retry, extensions).await
    }
}

/// What a 401 retry needs, kept as cheaply as possible: a request without a body is rebuilt from
/// its method, headers, version and timeout plus the URL that answered — only if that is the URL
/// it was sent to (so a redirect elsewhere never receives a token); no allocation when it has no
/// headers. A request with a body is copied whole, if its body can be.
enum Replay {
    Parts {
        sent_to: SentTo,
        method: http::Method,
        headers: Option<Box<http::HeaderMap>>,
        version: http::Version,
        timeout: Option<std::time::Duration>,
    },
    Whole(Box<reqwest::Request>),
}

impl Replay {
    #[inline]
    fn of(req: &reqwest::Request) -> Option<Self> {
        if req.body().is_some() {
            return req.try_clone().map(|req| Self::Whole(Box::new(req)));
        }
        Some(Self::Parts {
            sent_to: SentTo::of(req.url()),
            method: req.method().clone(),
            headers: (!req.headers().is_empty()).then(|| Box::new(req.headers().clone())),
            version: req.version(),
            timeout: req.timeout().copied(),
        })
    }

    /// The request to send again, if it may be.
    fn into_request(self, answered: &url::Url) -> Option<reqwest::Request> {
        match self {
            Self::Whole(req) => Some(*req),
            Self::Parts { sent_to, .. } if !sent_to.is(answered) => None,
            Self::Parts {
                sent_to: _,
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
