//! The upstream pools: HTTP/1.1 connections ([`crate::client`]) with a pool per worker and
//! route — a list of idle connections, the most recent first, that only that worker touches
//! (no shared lock, no hashing, no task; a connection lives on the worker that uses it) — over
//! TLS from rustls with the platform's roots (plus any configured CA, and a client certificate
//! for mTLS upstreams).

use std::sync::Arc;
use std::time::Duration;

use std::sync::Mutex;
use tokio::time::Instant;

use http::{HeaderValue, Request, Response};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use tokenkeeper::tower::ReturnedRequest;

use crate::client::{Connection, ResponseBody, SendError, Stream};
use crate::request_body::RequestBody;
use crate::route::Route;
use crate::BoxError;

/// How the engine connects to upstreams.
#[derive(Clone, Default)]
pub struct UpstreamOptions {
    /// Time to connect (TCP and TLS) to an upstream (default 5 s).
    pub connect_timeout: Option<Duration>,
    /// How long an idle pooled connection is kept (default 50 s: under the 60–75 s most
    /// servers keep one).
    pub idle_timeout: Option<Duration>,
    /// At most this many idle connections per upstream and worker (default 256).
    pub max_idle_per_upstream: Option<usize>,
    /// CA certificates (PEM) trusted besides the platform's, for upstreams with a private CA.
    pub extra_roots_pem: Option<Vec<u8>>,
    /// A client certificate chain and its key (PEM), presented to every https upstream (mTLS,
    /// and the binding of certificate-bound tokens, RFC 8705).
    pub client_identity_pem: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for UpstreamOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamOptions")
            .field("connect_timeout", &self.connect_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_idle_per_upstream", &self.max_idle_per_upstream)
            .field("extra_roots", &self.extra_roots_pem.is_some())
            .field("client_identity", &self.client_identity_pem.is_some())
            .finish()
    }
}

/// Why the upstream client cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// A PEM file does not hold what it should.
    #[error("{what}: {reason}")]
    Pem {
        /// Which input.
        what: &'static str,
        /// Why (no secret in it).
        reason: String,
    },
    /// rustls refused the settings.
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// What every worker's pools share: the upstream origins (one per route), TLS, settings.
struct Common {
    origins: Box<[Origin]>,
    tls: tokio_rustls::TlsConnector,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
}

/// Where a route's requests go.
struct Origin {
    https: bool,
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    /// `Host` for its requests.
    host_header: HeaderValue,
}

/// One worker's idle connections, per route: only that worker takes from and returns to
/// them (the lock is never contended on the per-core server; it makes the pools usable from
/// any runtime too).
pub(crate) struct Shard {
    common: Arc<Common>,
    idle: Box<[Mutex<Vec<Idle>>]>,
}

struct Idle {
    connection: Connection,
    since: Instant,
}

/// The upstream pools: one [`Shard`] per worker.
pub(crate) struct Upstreams {
    shards: Box<[Arc<Shard>]>,
}

impl Upstreams {
    pub(crate) fn new(
        options: &UpstreamOptions,
        routes: &[Route],
        shards: usize,
    ) -> Result<Self, UpstreamError> {
        let tls = tokio_rustls::TlsConnector::from(Arc::new(tls_config(options)?));
        let mut origins = Vec::with_capacity(routes.len());
        for route in routes {
            let upstream = route.upstream();
            let host = upstream.host_str().unwrap_or_default().to_owned();
            let port = upstream.port_or_known_default().unwrap_or(80);
            let https = upstream.scheme() == "https";
            // `Host` as the URL has it (default ports left out).
            let authority = match upstream.port() {
                Some(port) => format!("{host}:{port}"),
                None => host.clone(),
            };
            let name = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let server_name = ServerName::try_from(name).map_err(|_| UpstreamError::Pem {
                what: "upstream",
                reason: format!("{host} is not a TLS server name"),
            })?;
            let host_header =
                HeaderValue::from_str(&authority).map_err(|_| UpstreamError::Pem {
                    what: "upstream",
                    reason: format!("{authority} is not a Host value"),
                })?;
            origins.push(Origin {
                https,
                host,
                port,
                server_name,
                host_header,
            });
        }
        let common = Arc::new(Common {
            origins: origins.into(),
            tls,
            connect_timeout: options.connect_timeout.unwrap_or(Duration::from_secs(5)),
            idle_timeout: options.idle_timeout.unwrap_or(Duration::from_secs(50)),
            max_idle: options.max_idle_per_upstream.unwrap_or(256),
        });
        let shards = (0..shards.max(1))
            .map(|_| {
                Arc::new(Shard {
                    common: common.clone(),
                    idle: routes.iter().map(|_| Mutex::new(Vec::new())).collect(),
                })
            })
            .collect();
        Ok(Self { shards })
    }

    /// The service sending requests of route `route` through the calling worker's pool.
    pub(crate) fn service(&self, route: usize) -> UpstreamService {
        UpstreamService {
            shard: self.shards[crate::worker::worker_index() % self.shards.len()].clone(),
            route,
        }
    }
}

impl Shard {
    fn lock(&self, route: usize) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle[route].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently used idle connection of `route` (none idle for too long, or past
    /// the upstream's own keep-alive timeout).
    fn checkout(&self, route: usize) -> Option<Connection> {
        let mut idle = self.lock(route);
        let now = crate::timeouts::now();
        // The oldest first: those idle for too long are closed.
        let stale = idle
            .iter()
            .take_while(|i| now.duration_since(i.since) > self.common.idle_timeout)
            .count();
        idle.drain(..stale);
        while let Some(Idle { connection, .. }) = idle.pop() {
            if connection.expires.is_none_or(|at| at > now) {
                return Some(connection);
            }
        }
        None
    }

    /// Gives a connection back after its response's body ended.
    fn checkin(&self, route: usize, connection: Connection) {
        let mut idle = self.lock(route);
        if idle.len() < self.common.max_idle {
            idle.push(Idle {
                connection,
                since: crate::timeouts::now(),
            });
        }
    }

    /// A new connection to the origin of `route`.
    async fn connect(&self, route: usize) -> Result<Connection, BoxError> {
        let origin = &self.common.origins[route];
        let connect = async {
            let tcp = tokio::net::TcpStream::connect((origin.host.as_str(), origin.port)).await?;
            tcp.set_nodelay(true)?;
            let io = if origin.https {
                let tls = self
                    .common
                    .tls
                    .connect(origin.server_name.clone(), tcp)
                    .await?;
                Stream::Tls(Box::new(tls))
            } else {
                Stream::Plain(tcp)
            };
            Ok::<_, std::io::Error>(io)
        };
        let io = tokio::time::timeout(self.common.connect_timeout, connect)
            .await
            .map_err(|_| ConnectTimedOut)??;
        Ok(Connection::new(io))
    }
}

/// Connecting took longer than the connect timeout.
#[derive(Debug, thiserror::Error)]
#[error("connecting to the upstream timed out")]
pub(crate) struct ConnectTimedOut;

/// Sends one route's requests through one worker's pool (the inner service of the token
/// layer, which needs the absolute URI: it is made origin-form here, and `Host` set).
#[derive(Clone)]
pub(crate) struct UpstreamService {
    shard: Arc<Shard>,
    route: usize,
}

impl tower_service::Service<Request<RequestBody>> for UpstreamService {
    type Response = Response<UpstreamBody>;
    type Error = BoxError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Response<UpstreamBody>, BoxError>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<RequestBody>) -> Self::Future {
        // The exchange's own future, boxed: no wrapper holding the service and the request a
        // second time.
        Box::pin(self.clone().send(request))
    }
}

impl UpstreamService {
    /// The request handed back with a 401 (for the token layer's retry) gets its absolute URI
    /// back: the layer saw that one (its destination check, DPoP's `htu`).
    fn absolute_again(&self, head: &mut Response<()>) {
        let Some(returned) = head
            .extensions()
            .get::<ReturnedRequest<RequestBody>>()
            .and_then(ReturnedRequest::take)
        else {
            return;
        };
        let origin = &self.shard.common.origins[self.route];
        let (mut parts, body) = returned.into_parts();
        let scheme = if origin.https { "https" } else { "http" };
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", http::uri::PathAndQuery::as_str);
        if let Ok(host) = origin.host_header.to_str() {
            if let Ok(uri) = format!("{scheme}://{host}{path}").parse() {
                parts.uri = uri;
                head.extensions_mut()
                    .insert(ReturnedRequest::new(Request::from_parts(parts, body)));
            }
        }
    }

    /// Sends `request` on an idle connection of the pool (one that turns out closed before
    /// the request was written is skipped: nothing was sent) or on a new one.
    pub(crate) async fn send(
        self,
        request: Request<RequestBody>,
    ) -> Result<Response<UpstreamBody>, BoxError> {
        let origin = &self.shard.common.origins[self.route];
        let (mut parts, body) = request.into_parts();
        if parts.uri.scheme().is_some() {
            parts.uri = match parts.uri.path_and_query() {
                Some(path) => http::Uri::from(path.clone()),
                None => http::Uri::from_static("/"),
            };
        }
        // Every value of the caller's `Host` (left in place by the request hygiene) goes.
        parts
            .headers
            .insert(http::header::HOST, origin.host_header.clone());
        let mut request = Request::from_parts(parts, body);
        loop {
            let (connection, reused) = match self.shard.checkout(self.route) {
                Some(connection) => (connection, true),
                // Boxed: a new connection is rare, and its (TLS) state would bloat every
                // request's future.
                None => (Box::pin(self.shard.connect(self.route)).await?, false),
            };
            match connection.send(request, reused).await {
                Ok((mut head, body)) => {
                    if head.status() == http::StatusCode::UNAUTHORIZED {
                        self.absolute_again(&mut head);
                    }
                    let body = UpstreamBody::new(body, self.shard.clone(), self.route);
                    return Ok(head.map(|()| body));
                }
                // The upstream had closed that idle connection: the next one, or a new one.
                Err(SendError::Stale(again)) => request = *again,
                Err(SendError::Failed(error)) => return Err(error),
            }
        }
    }
}

/// An upstream response body: its connection goes back to the pool once it has ended (and is
/// closed if the body is dropped before: it cannot carry another request).
pub struct UpstreamBody {
    body: ResponseBody,
    pool: Option<(Arc<Shard>, usize)>,
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody").finish_non_exhaustive()
    }
}

impl UpstreamBody {
    fn new(body: ResponseBody, shard: Arc<Shard>, route: usize) -> Self {
        let mut this = Self {
            body,
            pool: Some((shard, route)),
        };
        this.release();
        this
    }

    /// Once the body has ended: the connection back to its pool.
    fn release(&mut self) {
        if !self.body.is_end() {
            return;
        }
        if let Some((shard, route)) = self.pool.take() {
            if let Some(connection) = self.body.take_reusable() {
                shard.checkin(route, connection);
            }
        }
    }
}

impl http_body::Body for UpstreamBody {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, BoxError>>> {
        let polled = self.body.poll_frame(cx);
        if polled.is_ready() {
            self.release();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

fn pem_error(what: &'static str, reason: impl std::fmt::Display) -> UpstreamError {
    UpstreamError::Pem {
        what,
        reason: reason.to_string(),
    }
}

fn tls_config(options: &UpstreamOptions) -> Result<rustls::ClientConfig, UpstreamError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = Vec::new();
    if let Some(pem) = &options.extra_roots_pem {
        for cert in CertificateDer::pem_slice_iter(pem) {
            roots.push(cert.map_err(|e| pem_error("extra roots", e))?);
        }
        if roots.is_empty() {
            return Err(pem_error("extra roots", "no CERTIFICATE block"));
        }
    }
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(roots, provider.clone())?;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let config = match &options.client_identity_pem {
        Some((chain, key)) => {
            let chain = CertificateDer::pem_slice_iter(chain)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| pem_error("client certificate", e))?;
            if chain.is_empty() {
                return Err(pem_error("client certificate", "no CERTIFICATE block"));
            }
            // The key's own error text never holds key material; still, only its kind goes out.
            let key = PrivateKeyDer::from_pem_slice(key)
                .map_err(|_| pem_error("client key", "no usable PRIVATE KEY block"))?;
            builder.with_client_auth_cert(chain, key)?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(config)
}
