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

    /// RFC 9470 (PR-04): an upstream that answers `401 insufficient_user_authentication`
    /// makes a structured 401 for the SPA — what the API asks (`acr_values`, `max_age`) and
    /// the `login_url` of the step-up login (the SPA adds its `returnUrl`). Any other 401
    /// passes as it is.
    fn upstream_unauthorized(
        &self,
        _route: usize,
        headers: &http::HeaderMap,
    ) -> Option<http::Response<ProxyBody>> {
        let needs = tokenkeeper::protocol::step_up::step_up_challenge(headers)?;
        Some(step_up_answer(&self.inner.options.base_path, &needs))
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

/// The SPA's answer to an API's step-up challenge: `401`, JSON
/// `{"error": "insufficient_user_authentication", "acr_values": …, "max_age": …,
/// "login_url": "{base}/login?acr_values=…&max_age=…"}`.
pub(crate) fn step_up_answer(
    base_path: &str,
    needs: &tokenkeeper::protocol::step_up::AuthenticationRequirements,
) -> http::Response<ProxyBody> {
    let mut login_url = format!("{base_path}/login?");
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    let mut body = serde_json::json!({
        "error": tokenkeeper::protocol::step_up::INSUFFICIENT_USER_AUTHENTICATION,
    });
    if !needs.acr_values().is_empty() {
        let values = needs.acr_values().join(" ");
        query.append_pair("acr_values", &values);
        body["acr_values"] = values.into();
    }
    if let Some(max_age) = needs.max_age() {
        query.append_pair("max_age", &max_age.as_secs().to_string());
        body["max_age"] = max_age.as_secs().into();
    }
    login_url.push_str(&query.finish());
    body["login_url"] = login_url.into();
    let mut response = http::Response::new(ProxyBody::full(body.to_string()));
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    response
}
