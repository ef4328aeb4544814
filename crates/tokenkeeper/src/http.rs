//! The HTTP transport used to talk to authorization servers.
//!
//! tokenkeeper sends its own requests (token, discovery) through an [`HttpTransport`]. The default
//! is [`ReqwestTransport`]: rustls, a connect timeout, a whole-request timeout, no redirects
//! (a token request must never be re-sent elsewhere) and a cap on how much of a body is read.
//! Tests can plug in an in-process transport (see `tokenkeeper-testing`) so that no socket is
//! opened and `tokio::time::pause()` governs every timeout.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use http::{HeaderMap, Method, StatusCode};
use url::Url;

use crate::error::{ConfigError, TransportError, TransportErrorKind};

/// A request to an authorization server.
#[derive(Clone)]
pub struct HttpRequest {
    /// The method.
    pub method: Method,
    /// The URL.
    pub url: Url,
    /// The headers (may carry credentials: never log them).
    pub headers: HeaderMap,
    /// The body (may carry credentials: never log it).
    pub body: Bytes,
}

impl fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpRequest")
            .field("method", &self.method)
            .field("url", &format_args!("{}", redact_url(&self.url)))
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// A response from an authorization server, with its body read in full (up to the limit).
#[derive(Clone)]
pub struct HttpResponse {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl fmt::Debug for HttpResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpResponse")
            .field("status", &self.status)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// Sends requests to authorization servers.
///
/// Implementations must apply their own timeouts and must refuse to read more than
/// [`HttpOptions::max_response_bytes`]-like limits of body, answering
/// [`TransportErrorKind::BodyTooLarge`].
pub trait HttpTransport: Send + Sync + fmt::Debug + 'static {
    /// Sends `request` and reads the whole response.
    fn send(&self, request: HttpRequest) -> BoxFuture<'_, Result<HttpResponse, TransportError>>;
}

/// Limits for requests to authorization servers.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Time allowed to open the connection. Default 5 s.
    pub connect_timeout: Duration,
    /// Time allowed for the whole request, body included. Default 30 s.
    pub request_timeout: Duration,
    /// The largest response body read. Default 256 KiB.
    pub max_response_bytes: usize,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            max_response_bytes: 256 * 1024,
        }
    }
}

impl HttpOptions {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.connect_timeout.is_zero() {
            return Err(ConfigError::new(
                "connect_timeout",
                "must be greater than zero",
            ));
        }
        if self.request_timeout.is_zero() {
            return Err(ConfigError::new(
                "request_timeout",
                "must be greater than zero",
            ));
        }
        if self.max_response_bytes == 0 {
            return Err(ConfigError::new(
                "max_response_bytes",
                "must be greater than zero",
            ));
        }
        Ok(())
    }
}

/// The default transport: a `reqwest::Client` with rustls, timeouts, no redirects and a bounded
/// body read.
#[derive(Clone)]
pub struct ReqwestTransport {
    client: reqwest::Client,
    max_response_bytes: usize,
}

impl fmt::Debug for ReqwestTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReqwestTransport")
            .field("max_response_bytes", &self.max_response_bytes)
            .finish_non_exhaustive()
    }
}

impl ReqwestTransport {
    /// Builds a transport with the given limits.
    pub fn new(options: &HttpOptions) -> Result<Self, ConfigError> {
        options.validate()?;
        let client = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .timeout(options.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("tokenkeeper/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConfigError::new("http", format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            client,
            max_response_bytes: options.max_response_bytes,
        })
    }

    /// Uses your own `reqwest::Client` (its timeouts and redirect policy are yours to set).
    pub fn from_client(client: reqwest::Client, max_response_bytes: usize) -> Self {
        Self {
            client,
            max_response_bytes,
        }
    }

    async fn send_inner(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        let url = request.url.clone();
        self.exchange(request).await.map_err(|e| e.with_url(&url))
    }

    async fn exchange(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        let mut builder = self
            .client
            .request(request.method, request.url)
            .headers(request.headers);
        if !request.body.is_empty() {
            builder = builder.body(request.body);
        }
        let mut response = builder.send().await.map_err(map_reqwest_error)?;
        let status = response.status();
        let headers = std::mem::take(response.headers_mut());
        let limit = self.max_response_bytes;
        if response
            .content_length()
            .is_some_and(|len| len > limit as u64)
        {
            return Err(body_too_large(limit, status));
        }
        let mut body = BytesMut::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > limit {
                        return Err(body_too_large(limit, status));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => return Err(map_reqwest_error(e).with_status(status.as_u16())),
            }
        }
        Ok(HttpResponse {
            status,
            headers,
            body: body.freeze(),
        })
    }
}

fn body_too_large(limit: usize, status: StatusCode) -> TransportError {
    TransportError::new(
        TransportErrorKind::BodyTooLarge,
        format!("response body exceeds the limit of {limit} bytes"),
    )
    .with_status(status.as_u16())
}

impl HttpTransport for ReqwestTransport {
    fn send(&self, request: HttpRequest) -> BoxFuture<'_, Result<HttpResponse, TransportError>> {
        Box::pin(self.send_inner(request))
    }
}

/// Maps a reqwest error to a transport error, without the URL.
pub(crate) fn map_reqwest_error(error: reqwest::Error) -> TransportError {
    let kind = if error.is_timeout() {
        TransportErrorKind::Timeout
    } else if error.is_connect() {
        TransportErrorKind::Connect
    } else if error.is_body() || error.is_request() || error.is_decode() {
        TransportErrorKind::Connection
    } else {
        TransportErrorKind::Other
    };
    let error = error.without_url();
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(inner) = source {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        source = inner.source();
    }
    TransportError::new(kind, message)
}

/// The URL without userinfo, query or fragment, for messages.
pub(crate) fn redact_url(url: &Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.set_fragment(None);
    url.to_string()
}

/// A shared transport.
pub type SharedTransport = Arc<dyn HttpTransport>;
