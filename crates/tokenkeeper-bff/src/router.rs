//! How requests reach the BFF: [`Bff::router`] (an axum router, to mount in an app of one's
//! own) and [`BffHandler`] (for [`tokenkeeper_proxy::server`], the per-core server
//! `tokenkeeper bff` runs): API routes go to the proxy engine, everything else to the
//! management endpoints (and the static files or app routes given as the fallback).

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::routing::{any, get};
use axum::Router;
use tokenkeeper_proxy::ProxyBody;
use tower_service::Service as _;

use crate::bff::Bff;

impl Bff {
    /// The routes: `{base}/login`, `{base}/callback`, `{base}/logout`, `{base}/user`
    /// (and `{base}/diagnostics` in development mode), and every remote API route.
    pub fn router<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        let mut router = self.management_router();
        for (index, route) in self.inner.options.routes.iter().enumerate() {
            let handler = move |axum::extract::State(bff): axum::extract::State<Bff>,
                                request: axum::extract::Request| async move {
                let peer = request
                    .extensions()
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|ConnectInfo(peer)| *peer);
                let engine = &bff.inner.engine;
                engine
                    .forward(&bff, index, request, peer)
                    .await
                    .map(axum::body::Body::new)
            };
            router = router
                .route(&route.path, any(handler))
                .route(&format!("{}/{{*rest}}", route.path), any(handler));
        }
        router.with_state(self.clone())
    }

    /// The management endpoints only.
    fn management_router(&self) -> Router<Bff> {
        let base = &self.inner.options.base_path;
        let mut router = Router::new()
            .route(&format!("{base}/login"), get(crate::management::login))
            .route(
                &format!("{base}/callback"),
                get(crate::management::callback),
            )
            .route(&format!("{base}/logout"), get(crate::management::logout))
            .route(&format!("{base}/user"), get(crate::management::user))
            .route(
                &format!("{base}/backchannel"),
                axum::routing::post(crate::management::backchannel),
            );
        if self.inner.options.forward_auth.is_some() {
            router = router.route(&format!("{base}/auth"), get(crate::management::auth));
        }
        if self.inner.options.dev {
            router = router.route(
                &format!("{base}/diagnostics"),
                get(crate::management::diagnostics),
            );
        }
        router
    }

    /// The BFF as a [`tokenkeeper_proxy::server::Handler`]: API routes through the engine,
    /// the rest through the management endpoints, then `fallback` (static files, app routes).
    pub fn handler(&self, fallback: Router) -> BffHandler {
        BffHandler {
            bff: self.clone(),
            router: self
                .management_router()
                .with_state(self.clone())
                .merge(fallback),
        }
    }
}

/// [`Bff::handler`]: serve it with [`tokenkeeper_proxy::server::Bound::serve`].
///
/// ```no_run
/// # fn run(bff: tokenkeeper_bff::Bff) -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use tokenkeeper_proxy::server::{Bound, ServerOptions};
/// let options = ServerOptions::default();
/// let server = Bound::bind("127.0.0.1:8080".parse()?, options.workers)?
///     .serve(Arc::new(bff.handler(axum::Router::new())), &options)?;
/// # let _ = server; Ok(()) }
/// ```
#[derive(Clone)]
pub struct BffHandler {
    bff: Bff,
    router: Router,
}

impl std::fmt::Debug for BffHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BffHandler")
            .field("bff", &self.bff)
            .finish_non_exhaustive()
    }
}

impl BffHandler {
    /// Its BFF.
    pub(crate) fn bff(&self) -> &Bff {
        &self.bff
    }

    /// What is not an API route: the management endpoints, then the fallback (static files,
    /// app routes). Boxed: these are the rarer requests, and the router's state would make
    /// every API request's future larger. Their logs carry the frontend's name (the proxied
    /// requests' span has it too).
    pub(crate) fn rest(
        &self,
        mut request: http::Request<tokenkeeper_proxy::IncomingBody>,
        peer: Option<SocketAddr>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = http::Response<ProxyBody>> + Send>>
    {
        use tracing::Instrument as _;
        if let Some(peer) = peer {
            request.extensions_mut().insert(ConnectInfo(peer));
        }
        let span = tracing::info_span!("tokenkeeper.bff", frontend = self.bff.name());
        let call = self.router.clone().call(request);
        Box::pin(
            async move {
                match call.await {
                    Ok(response) => response.map(ProxyBody::boxed),
                    Err(never) => match never {},
                }
            }
            .instrument(span),
        )
    }
}

impl tokenkeeper_proxy::server::Handler for BffHandler {
    async fn handle(
        &self,
        request: http::Request<tokenkeeper_proxy::IncomingBody>,
        peer: tokenkeeper_proxy::server::Peer,
    ) -> http::Response<ProxyBody> {
        // The same steps as `FrontendsHandler::handle`, which does not call this (a future
        // inside a future costs a copy of the pipeline's state per request).
        let engine = &self.bff.inner.engine;
        let peer = peer.socket_addr();
        if let Some(index) = engine.route_for(request.uri().path()) {
            return engine.forward(&self.bff, index, request, peer).await;
        }
        self.rest(request, peer).await
    }
}
