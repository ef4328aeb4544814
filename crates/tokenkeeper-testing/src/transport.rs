//! A transport that calls the server's router in-process.

use std::time::Duration;

use axum::body::Body;
use axum::Router;
use futures_util::future::BoxFuture;
use http_body_util::{BodyExt as _, Limited};
use tokenkeeper::{HttpRequest, HttpResponse, HttpTransport, TransportError, TransportErrorKind};
use tower::ServiceExt as _;

/// Sends tokenkeeper's requests straight into a [`crate::TestServer`]'s router: no socket, and
/// every timeout runs on tokio's clock, so `tokio::time::pause()` tests are exact.
///
/// It applies the same limits as the default transport: a whole-request timeout (30 s unless
/// set) and a body limit (256 KiB unless set).
#[derive(Clone)]
pub struct InProcessTransport {
    router: Router,
    timeout: Duration,
    max_body: usize,
}

impl std::fmt::Debug for InProcessTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessTransport")
            .field("timeout", &self.timeout)
            .field("max_body", &self.max_body)
            .finish()
    }
}

impl InProcessTransport {
    /// A transport into `router`.
    pub fn new(router: Router) -> Self {
        Self {
            router,
            timeout: Duration::from_secs(30),
            max_body: 256 * 1024,
        }
    }

    /// Sets the whole-request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the body limit.
    pub fn with_max_body(mut self, max_body: usize) -> Self {
        self.max_body = max_body;
        self
    }

    async fn call(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        let path = match request.url.query() {
            Some(q) => format!("{}?{q}", request.url.path()),
            None => request.url.path().to_owned(),
        };
        let mut builder = http::Request::builder().method(request.method).uri(path);
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        let http_request = builder
            .body(Body::from(request.body))
            .map_err(|e| TransportError::new(TransportErrorKind::Other, e.to_string()))?;
        let response = self
            .router
            .clone()
            .oneshot(http_request)
            .await
            .map_err(|e| TransportError::new(TransportErrorKind::Other, e.to_string()))?;
        let (parts, body) = response.into_parts();
        let status = parts.status.as_u16();
        let body = Limited::new(body, self.max_body)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    TransportError::new(
                        TransportErrorKind::BodyTooLarge,
                        format!("response body exceeds the limit of {} bytes", self.max_body),
                    )
                    .with_status(status)
                } else {
                    TransportError::new(TransportErrorKind::Connection, format!("body: {e}"))
                        .with_status(status)
                }
            })?
            .to_bytes();
        Ok(HttpResponse {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

impl HttpTransport for InProcessTransport {
    fn send(&self, request: HttpRequest) -> BoxFuture<'_, Result<HttpResponse, TransportError>> {
        Box::pin(async move {
            match tokio::time::timeout(self.timeout, self.call(request)).await {
                Ok(result) => result,
                Err(_) => Err(TransportError::new(
                    TransportErrorKind::Timeout,
                    format!("no response within {:?}", self.timeout),
                )),
            }
        })
    }
}
