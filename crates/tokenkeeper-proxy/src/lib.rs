//! The proxy engine of tokenkeeper's hosts: `tokenkeeper bff` (a backend-for-frontend) and
//! `tokenkeeper sidecar` (an egress token proxy) forward requests through this one engine.
//!
//! A request goes **in → method check → [`Policy::admit`] (the host's decision and the
//! token) → path mapping → header hygiene → upstream (with the token attached, DPoP proofs and
//! nonce retries included, a deadline to the response headers) → response hygiene → out**, the
//! bodies streamed both ways ([`Engine::forward`]). What differs between hosts — sessions and
//! anti-forgery in the BFF, caller authentication in the sidecar, how refusals are worded —
//! is the host's [`Policy`].
//!
//! [`server`] runs a host at the speed of nginx: a current-thread runtime, a `SO_REUSEPORT`
//! listener and an upstream pool per core, HTTP/1.1 read and written inline by each
//! connection's task.
//!
//! # Layout
//!
//! Each module may use only those below it (no module imports one above it; no circles —
//! `tests/en_01_layout.rs` reads the `use` lines and fails on one):
//!
//! ```text
//! ops            ── /healthz, /readyz, /metrics (a Handler of its own)
//! server         ── per-core runtimes and listeners, graceful drain
//!   └── connection ── HTTP/1.1 from clients, inline; the rest handed to hyper
//!         ├── handler ── Handler (what a server does with a request), Peer
//!         └── date    ── the Date header, once a second
//! engine         ── Engine::forward: the pipeline
//!   ├── policy     ── Policy, Attach, Refusal: the host's decisions
//!   ├── headers    ── header hygiene both ways, Location rewriting
//!   │     └── forwarded ── X-Forwarded-* and trusted proxies
//!   ├── deadlines  ── time-to-headers deadlines off the workers (a shared runtime)
//!   ├── trace_context ── W3C traceparent in and out (feature `otel`)
//!   └── body       ── the bodies a handler gets and returns
//!         └── upstream ── a pool per worker and route, rustls
//!               ├── route  ── prefixes, upstream URLs, traversal checks
//!               └── client ── HTTP/1.1 to upstreams, inline (no connection task)
//!                     └── request_body ── the body sent upstream (replayable when small)
//! timeouts       ── on a worker: waits for heads and upstreams, a coarse clock, swept
//! maps           ── header maps recycled per thread
//! names          ── header names remembered per thread
//! worker         ── which worker thread this is
//! write          ── a head and a body in one system call
//! ```
//!
//! `timeouts`, `maps`, `names`, `worker` and `write` use nothing of the crate: any module may use
//! them.
//!
//! ```no_run
//! use std::sync::Arc;
//! use tokenkeeper_proxy::{Attach, Engine, Policy, Route};
//! use tokenkeeper_proxy::server::{Bound, Handler, Peer, ServerOptions};
//!
//! /// Forwards everything under `/orders` with no credentials.
//! struct Open;
//! impl Policy for Open {
//!     type Context = ();
//!     async fn admit(&self, _route: usize, _parts: &http::request::Parts)
//!         -> Result<(Attach, ()), http::Response<tokenkeeper_proxy::ProxyBody>> {
//!         Ok((Attach::None, ()))
//!     }
//! }
//!
//! struct Host { engine: Engine }
//! impl Handler for Host {
//!     async fn handle(&self, request: http::Request<tokenkeeper_proxy::IncomingBody>, peer: Peer)
//!         -> http::Response<tokenkeeper_proxy::ProxyBody> {
//!         match self.engine.route_for(request.uri().path()) {
//!             Some(route) => self.engine.forward(&Open, route, request, peer.socket_addr()).await,
//!             None => tokenkeeper_proxy::plain_text(http::StatusCode::NOT_FOUND, "Not found."),
//!         }
//!     }
//! }
//!
//! # fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = Engine::builder("example")
//!     .route(Route::new("/orders", "http://127.0.0.1:8081/".parse()?)?)
//!     .build()?;
//! let options = ServerOptions::default();
//! let bound = Bound::bind("127.0.0.1:0".parse()?, options.workers)?;
//! let server = bound.serve(Arc::new(Host { engine }), &options)?;
//! println!("listening on {}", server.local_addr());
//! # Ok(()) }
//! ```

mod body;
mod client;
mod connection;
mod date;
mod deadlines;
mod engine;
mod forwarded;
mod handler;
mod headers;
mod maps;
mod names;
pub mod ops;
mod policy;
mod request_body;
mod route;
pub mod server;
mod timeouts;
#[cfg(feature = "otel")]
mod trace_context;
mod upstream;
mod worker;
mod write;

pub use body::{IncomingBody, ProxyBody};
pub use request_body::RequestBody;

/// The error type of boxed bodies and of the upstream service.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub use engine::{Engine, EngineBuilder};
pub use forwarded::{is_forwarding_header, Cidr, Claimed, Forwarding};
pub use headers::{is_websocket_upgrade, RequestHygiene};
pub use policy::{plain_text, Attach, Policy, Refusal};
pub use route::{Route, RouteError};
pub use upstream::{UpstreamBody, UpstreamError, UpstreamOptions};
