//! The BFF's policy on the proxy engine (BF-04, BF-05, BF-06, BF-09, BF-11, BF-12): the
//! anti-forgery check, the session and the route's token on the way in; the session's end
//! when its token is gone; WebSocket upgrades handed to the relay; the BFF's own short
//! answers. Forwarding itself — paths, header hygiene, bodies, deadlines, the upstream pools —
//! is [`tokenkeeper_proxy::Engine`]'s.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use tokenkeeper_proxy::{Attach, Policy, ProxyBody, Refusal};

use crate::access::{resolve, Source};
use crate::bff::Bff;
use crate::session::BffSession;

/// What the BFF's policy remembers of an admitted request, for a token failure: its session,
/// and whether the token was the session's (opaque).
pub struct Admitted {
    session: Option<Arc<BffSession>>,
    user_token: bool,
}

/// An axum answer as the engine's.
fn from_axum(response: axum::response::Response) -> http::Response<ProxyBody> {
    response.map(ProxyBody::boxed)
}

impl Policy for Bff {
    type Context = Admitted;

    async fn admit(
        &self,
        route: usize,
        parts: &http::request::Parts,
    ) -> Result<(Attach, Admitted), http::Response<ProxyBody>> {
        let api = &self.inner.options.routes[route];
        if !anti_forgery_ok(self, api, parts) {
            return Err(tokenkeeper_proxy::plain_text(
                StatusCode::UNAUTHORIZED,
                "Anti-forgery header missing.",
            ));
        }
        let (session, source) = resolve(self, route, &parts.headers)
            .await
            .map_err(from_axum)?;
        let (attach, user_token) = match source {
            Source::None => (Attach::None, false),
            Source::Client(index) => match &self.inner.route_clients[index] {
                Some((_, layer)) => (Attach::Client(layer.clone()), false),
                None => return Err(self.refuse(Refusal::TokenUnavailable)),
            },
            Source::User(key, params) => {
                (Attach::User(self.oidc().users().layer(key, params)), true)
            }
            Source::Exchange(source) => {
                (Attach::Client(tokenkeeper::TokenLayer::new(source)), false)
            }
        };
        Ok((
            attach,
            Admitted {
                session,
                user_token,
            },
        ))
    }

    async fn token_failed(
        &self,
        route: usize,
        admitted: Admitted,
        error: &tokenkeeper::Error,
    ) -> http::Response<ProxyBody> {
        crate::metrics::token_failure(self.name(), &self.inner.options.routes[route].path);
        if matches!(error, tokenkeeper::Error::ReauthenticationRequired(_)) {
            // The user token can no longer be had: the session ends, the SPA sees 401 (BF-06).
            if let (true, Some(session)) = (admitted.user_token, &admitted.session) {
                self.end_session(session, "token").await;
            }
            return self.refuse(Refusal::NotLoggedIn);
        }
        self.refuse(Refusal::TokenUnavailable)
    }

    async fn upgrade(
        &self,
        route: usize,
        parts: http::request::Parts,
        _peer: Option<SocketAddr>,
    ) -> http::Response<ProxyBody> {
        from_axum(crate::websocket::forward(self.clone(), route, parts).await)
    }

    fn finished(&self, route: usize, status: StatusCode, elapsed: Duration) {
        self.inner
            .proxied
            .record(route, status.as_u16(), Some(elapsed));
    }
}

/// Whether the request passes the route's anti-forgery check (BF-04, UX-06).
fn anti_forgery_ok(
    bff: &Bff,
    route: &crate::routes::ApiRoute,
    parts: &http::request::Parts,
) -> bool {
    match route.anti_forgery {
        crate::AntiForgery::None => true,
        crate::AntiForgery::Header => bff.anti_forgery_ok(&parts.headers),
        crate::AntiForgery::SameOriginReads => {
            bff.anti_forgery_ok(&parts.headers)
                || (matches!(parts.method, http::Method::GET | http::Method::HEAD)
                    && parts
                        .headers
                        .get("sec-fetch-site")
                        .is_some_and(|v| v.as_bytes() == b"same-origin"))
        }
    }
}
