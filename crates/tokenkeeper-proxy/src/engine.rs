//! The engine: request in → method check → policy → path → header hygiene → token → upstream
//! (with a deadline to its headers) → response hygiene → response, bodies streamed both ways.

use std::future::Future as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{header, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::Body;
use http_body_util::BodyExt as _;

use crate::body::ProxyBody;
use crate::deadlines::Deadlines;
use crate::forwarded::Forwarding;
use crate::headers::{clean_response, is_websocket_upgrade, RequestHygiene};
use crate::policy::{Attach, Policy, Refusal};
use crate::request_body::RequestBody;
use crate::route::Route;
use crate::upstream::{UpstreamBody, UpstreamError, UpstreamOptions, Upstreams};
use crate::BoxError;

/// Request bodies up to this many bytes (with a `Content-Length`) are read whole, so that the
/// request can be sent again (a DPoP nonce challenge, a 401); larger ones stream.
const REPLAYABLE_BODY: usize = 64 * 1024;

/// The proxy engine: routes, header hygiene and the upstream pools. Build it once per host
/// and call [`Engine::forward`] for each request of one of its routes.
pub struct Engine {
    name: &'static str,
    /// The part of the host this engine serves (a BFF's frontend), or empty.
    frontend: Arc<str>,
    /// W3C trace context: continue trusted callers' traces, send ours upstream (BF-23).
    #[cfg_attr(not(feature = "otel"), allow(dead_code))]
    trace_context: bool,
    routes: Vec<Route>,
    /// Per route, its counters (made once: no label allocation per request).
    #[cfg(feature = "metrics")]
    metrics: Vec<RouteMetrics>,
    hygiene: RequestHygiene,
    forwarding: Option<Forwarding>,
    upstreams: Upstreams,
    deadlines: Arc<Deadlines>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("name", &self.name)
            .field("routes", &self.routes.len())
            .finish_non_exhaustive()
    }
}

/// How an [`Engine`] is built.
#[derive(Debug)]
pub struct EngineBuilder {
    name: &'static str,
    frontend: Arc<str>,
    trace_context: bool,
    routes: Vec<Route>,
    hygiene: RequestHygiene,
    forwarding: Option<Forwarding>,
    upstream: UpstreamOptions,
    workers: usize,
}

impl Engine {
    /// An engine named `name` (in spans: `bff`, `sidecar`).
    pub fn builder(name: &'static str) -> EngineBuilder {
        EngineBuilder {
            name,
            frontend: Arc::from(""),
            trace_context: false,
            routes: Vec::new(),
            hygiene: RequestHygiene::default(),
            forwarding: None,
            upstream: UpstreamOptions::default(),
            workers: crate::worker::default_workers(),
        }
    }

    /// The routes, in the order they were added.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The route of `path`: the longest prefix that matches at a segment boundary.
    pub fn route_for(&self, path: &str) -> Option<usize> {
        let mut best: Option<(usize, usize)> = None;
        for (index, route) in self.routes.iter().enumerate() {
            if route.matches(path) && best.is_none_or(|(_, len)| route.prefix().len() > len) {
                best = Some((index, route.prefix().len()));
            }
        }
        best.map(|(index, _)| index)
    }

    /// Forwards `request` (for route `index`, from `peer`) as `policy` decides, and returns
    /// the upstream's answer or the engine's own. Never panics on input.
    pub async fn forward<P, B>(
        &self,
        policy: &P,
        index: usize,
        request: Request<B>,
        peer: Option<SocketAddr>,
    ) -> Response<ProxyBody>
    where
        P: Policy,
        B: Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        use tracing::Instrument as _;
        let Some(route) = self.routes.get(index) else {
            return policy.refuse(Refusal::InvalidPath);
        };
        let span = tracing::info_span!(
            "tokenkeeper.proxy",
            host = self.name,
            route = %route.prefix(),
            method = %request.method(),
            frontend = tracing::field::Empty,
            upstream = tracing::field::Empty,
            status = tracing::field::Empty,
            otel.kind = "server",
        );
        let started = Instant::now();
        // Not boxed: with the exchange in a future of its own the pipeline's state is ~3 KiB,
        // and copying it into the caller's future costs less than an allocation per request
        // (callgrind: −600 instructions and fewer cache misses per request on the engine;
        // BENCHMARKS.md).
        let (parts, body) = request.into_parts();
        #[cfg(feature = "otel")]
        if self.trace_context && !span.is_disabled() {
            let trusted = self
                .forwarding
                .as_ref()
                .is_some_and(|forwarding| forwarding.trusts(peer));
            crate::trace_context::continue_trace(&span, &parts.headers, trusted);
        }
        let inner = self.forward_inner(policy, index, route, parts, body, peer);
        // A span nobody listens to is not entered on every poll.
        let response = if span.is_disabled() {
            inner.await
        } else {
            if !self.frontend.is_empty() {
                span.record("frontend", &*self.frontend);
            }
            span.record("upstream", route.upstream().host_str().unwrap_or_default());
            inner.instrument(span.clone()).await
        };
        let status = response.status();
        span.record("status", i64::from(status.as_u16()));
        let elapsed = started.elapsed();
        #[cfg(feature = "metrics")]
        if let Some(metrics) = self.metrics.get(index) {
            metrics.record(status, elapsed);
        }
        policy.finished(index, status, elapsed);
        response
    }

    async fn forward_inner<P, B>(
        &self,
        policy: &P,
        index: usize,
        route: &Route,
        mut parts: http::request::Parts,
        body: B,
        peer: Option<SocketAddr>,
    ) -> Response<ProxyBody>
    where
        P: Policy,
        B: Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        // TRACE would echo the request (cookies included) back; CONNECT would open a tunnel.
        // Neither is ever forwarded, whatever the route says (SEC-17).
        if matches!(parts.method, Method::TRACE | Method::CONNECT)
            || route
                .methods
                .as_ref()
                .is_some_and(|methods| !methods.contains(&parts.method))
        {
            return method_not_allowed(policy, route);
        }
        if is_websocket_upgrade(&parts.headers) {
            // Boxed, as are the other rare paths: their state would bloat every request's future.
            return Box::pin(policy.upgrade(index, parts, peer)).await;
        }
        let (attach, context) = match policy.admit(index, &parts).await {
            Ok(admitted) => admitted,
            Err(response) => return response,
        };
        let Some(target) = route.target(&parts.uri) else {
            return policy.refuse(Refusal::InvalidPath);
        };
        let body = match request_body(&parts.headers, body).await {
            Ok(body) => body,
            Err(refusal) => return policy.refuse(refusal),
        };
        // The caller's headers go upstream in place: what must not pass is removed, and the
        // `X-Forwarded-*` are set (from the caller's, which only a trusted proxy may pass on).
        let mut headers = std::mem::take(&mut parts.headers);
        match &self.forwarding {
            Some(forwarding) => {
                let claimed = forwarding.claimed(&headers, peer);
                self.hygiene.clean(&mut headers);
                forwarding.apply(claimed, peer, &mut headers);
            }
            None => self.hygiene.clean(&mut headers),
        }
        #[cfg(feature = "otel")]
        if self.trace_context {
            crate::trace_context::propagate(&mut headers);
        }
        let mut upstream = Request::new(body);
        *upstream.method_mut() = parts.method;
        *upstream.uri_mut() = target.clone();
        *upstream.version_mut() = Version::HTTP_11;
        *upstream.headers_mut() = headers;
        // Until the response headers (a streamed body may then take as long as it takes). On a
        // per-core worker, the worker's swept waits (no timer per request: `timeouts`); on a
        // shared multi-thread runtime, the engine's coarse deadline list (see `deadlines`).
        // One send future, polled beside the deadline by `Exchange` (two paths with a send
        // future each would make every request's future larger).
        let deadline = if crate::worker::on_worker() {
            Deadline::Worker(crate::timeouts::Waiter::request(route.timeout))
        } else {
            Deadline::Shared(self.deadlines.after(route.timeout))
        };
        let sent = Exchange {
            send: self.send(index, attach, upstream),
            deadline,
        }
        .await;
        let Some(sent) = sent else {
            return policy.refuse(Refusal::UpstreamTimeout);
        };
        let response = match sent {
            Ok(response) => response,
            Err(error) => return Box::pin(failed(policy, index, context, error)).await,
        };
        let (mut head, body) = response.into_parts();
        if head.status == StatusCode::UNAUTHORIZED {
            // Rare: the policy may answer an upstream's 401 its own way (a step-up, RFC 9470).
            if let Some(answer) = policy.upstream_unauthorized(index, &head.headers) {
                return answer;
            }
        }
        clean_response(route, &target, &mut head.headers);
        let mut out = Response::new(ProxyBody::Upstream(body));
        *out.status_mut() = head.status;
        *out.headers_mut() = head.headers;
        out
    }

    /// Sends `request` with `attach`'s credentials through the calling worker's pool. Not an
    /// `async fn`: the future is the upstream exchange itself (or the token layer's), with no
    /// wrapper holding the arguments a second time.
    fn send(
        &self,
        index: usize,
        attach: Attach,
        mut request: Request<RequestBody>,
    ) -> impl std::future::Future<Output = Result<Response<UpstreamBody>, BoxError>> + Send + 'static
    {
        use futures_util::future::Either;
        let service = self.upstreams.service(index);
        match attach {
            Attach::None => Either::Left(service.send(request)),
            Attach::Authorization(value) => {
                request.headers_mut().insert(header::AUTHORIZATION, value);
                Either::Left(service.send(request))
            }
            // The upstream client hands a request back with its 401 for the layer's retry: no
            // copy of each request up front.
            Attach::Client(layer) => {
                let layer = layer.requests_returned_on_401();
                Either::Right(Either::Left(layer.send(service, request)))
            }
            Attach::User(layer) => {
                let layer = layer.requests_returned_on_401();
                Either::Right(Either::Right(layer.send(service, request)))
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The upstream exchange beside its deadline: the exchange's answer, or `None` when the
    /// deadline came first. A future of its own (not an `async` block around the two): the
    /// pipeline's future then holds the exchange once, not also a pinned copy of it.
    struct Exchange<F> {
        #[pin]
        send: F,
        deadline: Deadline,
    }
}

impl<F: std::future::Future> std::future::Future for Exchange<F> {
    type Output = Option<F::Output>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        if let std::task::Poll::Ready(sent) = this.send.poll(cx) {
            return std::task::Poll::Ready(Some(sent));
        }
        this.deadline.poll(cx).map(|()| None)
    }
}

/// The deadline of a request's upstream answer.
enum Deadline {
    /// On a per-core worker: the worker's swept waits (no timer per request: `timeouts`).
    Worker(crate::timeouts::Waiter),
    /// On a shared multi-thread runtime: the engine's coarse deadline list (`deadlines`).
    Shared(tokio::sync::oneshot::Receiver<()>),
}

impl Deadline {
    /// Ready once the deadline has passed.
    fn poll(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        match self {
            Self::Worker(waiter) => waiter.poll(cx).map(|_| ()),
            // A dropped sender (the list went away with its engine) is no deadline.
            Self::Shared(expired) => match std::pin::Pin::new(expired).poll(cx) {
                std::task::Poll::Ready(Ok(())) => std::task::Poll::Ready(()),
                _ => std::task::Poll::Pending,
            },
        }
    }
}

/// The body as it goes upstream: none, a small one read whole (replayable), or a stream.
async fn request_body<B>(headers: &http::HeaderMap, body: B) -> Result<RequestBody, Refusal>
where
    B: Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let chunked = headers.contains_key(header::TRANSFER_ENCODING);
    match (length, chunked) {
        (None | Some(0), false) => Ok(RequestBody::Empty),
        (Some(length), false) if length <= REPLAYABLE_BODY => {
            let limited = http_body_util::Limited::new(body, REPLAYABLE_BODY);
            match Box::pin(limited.collect()).await {
                Ok(collected) => Ok(RequestBody::Full(Some(collected.to_bytes()))),
                Err(_) => Err(Refusal::BadRequestBody),
            }
        }
        _ => Ok(RequestBody::Stream(body.map_err(Into::into).boxed_unsync())),
    }
}

/// 405, with the route's methods in `Allow`.
fn method_not_allowed<P: Policy>(policy: &P, route: &Route) -> Response<ProxyBody> {
    let mut response = policy.refuse(Refusal::MethodNotAllowed);
    let allowed = match &route.methods {
        Some(methods) => methods
            .iter()
            .filter(|m| !matches!(**m, Method::TRACE | Method::CONNECT))
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", "),
        None => "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS".to_owned(),
    };
    if let Ok(allow) = HeaderValue::from_str(&allowed) {
        response.headers_mut().insert(header::ALLOW, allow);
    }
    response
}

/// A request that failed before an upstream answer: a token error goes to the policy; an
/// upstream error is a 502.
async fn failed<P: Policy>(
    policy: &P,
    index: usize,
    context: P::Context,
    error: BoxError,
) -> Response<ProxyBody> {
    if let Some(error) = tokenkeeper::Error::from_boxed(error.as_ref()) {
        if !matches!(error, tokenkeeper::Error::ReauthenticationRequired(_)) {
            tracing::warn!(%error, "no token for the upstream");
        }
        return policy.token_failed(index, context, error).await;
    }
    tracing::warn!(error = %error_chain(error.as_ref()), "upstream request failed");
    policy.refuse(Refusal::UpstreamUnavailable)
}

/// An error and its sources, `: `-separated (hyper's errors say little on their own).
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl EngineBuilder {
    /// Adds a route.
    pub fn route(mut self, route: Route) -> Self {
        self.routes.push(route);
        self
    }

    /// What the caller's request keeps on its way upstream.
    pub fn hygiene(mut self, hygiene: RequestHygiene) -> Self {
        self.hygiene = hygiene;
        self
    }

    /// Sets `X-Forwarded-For/-Proto/-Host` as `forwarding` says (a host in front of browsers).
    pub fn forwarding(mut self, forwarding: Forwarding) -> Self {
        self.forwarding = Some(forwarding);
        self
    }

    /// How upstreams are connected to.
    pub fn upstream(mut self, options: UpstreamOptions) -> Self {
        self.upstream = options;
        self
    }

    /// W3C trace context (feature `otel`, BF-23): each request's span continues the trace of a
    /// caller among the forwarding's trusted proxies, and the upstream gets the span's own
    /// `traceparent` instead of the caller's. Off by default (headers pass as they came).
    pub fn trace_context(mut self, on: bool) -> Self {
        self.trace_context = on;
        self
    }

    /// Names the part of the host this engine serves (a BFF's frontend): its spans get a
    /// `frontend` field and its metrics a `frontend` label. Unnamed by default.
    pub fn frontend(mut self, name: &str) -> Self {
        self.frontend = Arc::from(name);
        self
    }

    /// How many worker pools (default: one per core, as [`crate::server::Server`] runs).
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// The engine. Fails when the TLS settings cannot be used.
    pub fn build(self) -> Result<Engine, UpstreamError> {
        Ok(Engine {
            name: self.name,
            #[cfg(feature = "metrics")]
            metrics: self
                .routes
                .iter()
                .map(|route| RouteMetrics::new(self.name, &self.frontend, route.prefix()))
                .collect(),
            frontend: self.frontend,
            trace_context: self.trace_context,
            upstreams: Upstreams::new(&self.upstream, &self.routes, self.workers)?,
            routes: self.routes,
            hygiene: self.hygiene,
            forwarding: self.forwarding,
            deadlines: Arc::default(),
        })
    }
}

/// A route's request counter (by status class) and duration histogram:
/// `tokenkeeper_proxy_requests_total{host, route, status_class}` and
/// `tokenkeeper_proxy_request_duration_seconds{host, route}`, each with `frontend` when the
/// engine serves a named one.
#[cfg(feature = "metrics")]
struct RouteMetrics {
    by_class: [metrics::Counter; 5],
    duration: metrics::Histogram,
}

#[cfg(feature = "metrics")]
impl RouteMetrics {
    fn new(host: &'static str, frontend: &str, route: &str) -> Self {
        let route = if route.is_empty() { "/" } else { route }.to_owned();
        let mut labels = vec![
            metrics::Label::new("host", host),
            metrics::Label::new("route", route),
        ];
        if !frontend.is_empty() {
            labels.push(metrics::Label::new("frontend", frontend.to_owned()));
        }
        let counter = |class: &'static str| {
            let mut labels = labels.clone();
            labels.push(metrics::Label::new("status_class", class));
            metrics::counter!("tokenkeeper_proxy_requests_total", labels)
        };
        Self {
            by_class: [
                counter("1xx"),
                counter("2xx"),
                counter("3xx"),
                counter("4xx"),
                counter("5xx"),
            ],
            duration: metrics::histogram!("tokenkeeper_proxy_request_duration_seconds", labels),
        }
    }

    fn record(&self, status: http::StatusCode, elapsed: std::time::Duration) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.by_class[class].increment(1);
        self.duration.record(elapsed.as_secs_f64());
    }
}
