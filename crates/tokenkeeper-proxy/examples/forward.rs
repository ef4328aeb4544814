//! The engine alone, with no policy work: forwards `/api` to `UPSTREAM` (default
//! `http://127.0.0.1:8081/up`) on `LISTEN` (default `127.0.0.1:0`), and prints `listening <url>`.
//! The floor under the BFF and the sidecar in `benches/nginx.sh`.
//!
//! `WORKERS` (default: one per core).
//!
//! `cargo run --release -p tokenkeeper-proxy --example forward`
#![allow(clippy::print_stdout)]

use std::sync::Arc;

use tokenkeeper_proxy::server::{Bound, Handler, Peer, ServerOptions};
use tokenkeeper_proxy::{Attach, Engine, Policy, ProxyBody, Route};

struct Open;

impl Policy for Open {
    type Context = ();
    async fn admit(
        &self,
        _route: usize,
        _parts: &http::request::Parts,
    ) -> Result<(Attach, ()), http::Response<ProxyBody>> {
        Ok((Attach::None, ()))
    }
}

struct Host {
    engine: Engine,
}

impl Handler for Host {
    async fn handle(
        &self,
        request: http::Request<tokenkeeper_proxy::IncomingBody>,
        peer: Peer,
    ) -> http::Response<ProxyBody> {
        match self.engine.route_for(request.uri().path()) {
            Some(route) => {
                self.engine
                    .forward(&Open, route, request, peer.socket_addr())
                    .await
            }
            None => tokenkeeper_proxy::plain_text(http::StatusCode::NOT_FOUND, "Not found."),
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let upstream = std::env::var("UPSTREAM").unwrap_or_else(|_| "http://127.0.0.1:8081/up".into());
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:0".into());
    let mut options = ServerOptions::default();
    if let Some(workers) = std::env::var("WORKERS").ok().and_then(|w| w.parse().ok()) {
        options.workers = workers;
    }
    let engine = Engine::builder("forward")
        .route(Route::new("/api", upstream.parse()?)?)
        .forwarding(tokenkeeper_proxy::Forwarding::new(
            &"http://127.0.0.1/".parse()?,
            Vec::new(),
        ))
        .workers(options.workers)
        .build()?;
    let bound = Bound::bind(listen.parse()?, options.workers)?;
    let server = bound.serve(Arc::new(Host { engine }), &options)?;
    println!("listening http://{}", server.local_addr());
    loop {
        std::thread::park();
    }
}
