//! The remote API proxy (BF-04, BF-05, BF-06, BF-09, BF-12): anti-forgery, the route's token
//! (through the token middleware: DPoP proofs and API nonces included), bodies streamed both
//! ways, hop-by-hop headers and the BFF's cookies never forwarded.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderName, StatusCode};
use axum::response::Response;
use futures_util::TryStreamExt as _;
use tokenkeeper::user::UserTokenParams;
use tokenkeeper::Error;

use crate::bff::Bff;
use crate::management::plain;
use crate::routes::RouteToken;

/// Headers that belong to one connection (RFC 9110 §7.6.1), never forwarded either way.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Whether `name` must not cross the proxy: hop-by-hop (including those the `Connection` header
/// names), or the BFF's own (cookies, host, the caller's `Authorization`, DPoP proofs).
fn dropped(name: &HeaderName, connection: &[String]) -> bool {
    let name = name.as_str();
    HOP_BY_HOP.contains(&name)
        || connection.iter().any(|c| c == name)
        || matches!(
            name,
            "cookie" | "host" | "authorization" | "dpop" | "forwarded"
        )
}

fn connection_tokens(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Request bodies up to this many bytes (with a `Content-Length`) are read whole, so that the
/// request can be sent again; larger ones stream.
const REPLAYABLE_BODY: usize = 64 * 1024;

/// Which token goes upstream.
pub(crate) enum Source {
    None,
    User(tokenkeeper::user::SessionKey, UserTokenParams),
    Client(String),
}

/// An API answer of the BFF itself: never a redirect, never a cookie (BF-09).
pub(crate) fn api_error(status: StatusCode, message: &'static str) -> Response {
    plain(status, message)
}

pub(crate) async fn forward(bff: Bff, index: usize, request: Request) -> Response {
    use tracing::Instrument as _;
    let route = bff.inner.options.routes[index].path.as_str();
    let span = tracing::info_span!(
        "tokenkeeper.bff.proxy",
        route = %route,
        method = %request.method(),
        status = tracing::field::Empty,
    );
    let started = std::time::Instant::now();
    let response = forward_inner(&bff, index, request)
        .instrument(span.clone())
        .await;
    let status = response.status().as_u16();
    span.record("status", status);
    crate::metrics::proxied(route, status, Some(started.elapsed()));
    response
}

async fn forward_inner(bff: &Bff, index: usize, request: Request) -> Response {
    let route = &bff.inner.options.routes[index];
    let (parts, body) = request.into_parts();
    if is_websocket_upgrade(&parts.headers) {
        // Boxed, as are the other rare paths below: their state would bloat every request's future.
        return Box::pin(crate::websocket::forward(bff.clone(), index, parts)).await;
    }
    if route.anti_forgery && !bff.anti_forgery_ok(&parts.headers) {
        return api_error(StatusCode::UNAUTHORIZED, "Anti-forgery header missing.");
    }
    let (session, source) = match resolve(bff, index, &parts.headers).await {
        Ok(resolved) => resolved,
        Err(response) => return response,
    };
    let Some(target) = upstream_url(route, &parts.uri) else {
        return api_error(StatusCode::BAD_REQUEST, "Invalid path.");
    };
    let connection = connection_tokens(&parts.headers);
    let mut headers = HeaderMap::new();
    for (name, value) in &parts.headers {
        if !dropped(name, &connection) && *name != bff.inner.anti_forgery_name {
            headers.append(name.clone(), value.clone());
        }
    }
    // No body, or a small one of known length: sent as bytes, so that the token middleware can
    // send the request again (a DPoP nonce challenge, a 401). Larger or chunked bodies stream.
    let length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let chunked = parts.headers.contains_key(header::TRANSFER_ENCODING);
    let body = match (length, chunked) {
        (None | Some(0), false) => None,
        (Some(length), false) if length <= REPLAYABLE_BODY => {
            match Box::pin(axum::body::to_bytes(body, REPLAYABLE_BODY)).await {
                Ok(bytes) => Some(reqwest::Body::from(bytes)),
                Err(_) => return api_error(StatusCode::BAD_REQUEST, "Bad request body."),
            }
        }
        _ => Some(reqwest::Body::wrap_stream(body.into_data_stream())),
    };
    let http = &bff.inner.http;
    let mut request = http.request(parts.method.clone(), target).headers(headers);
    if let Some(body) = body {
        request = request.body(body);
    }
    let request = match request.build() {
        Ok(request) => request,
        Err(_) => return api_error(StatusCode::BAD_REQUEST, "Invalid request."),
    };
    // Until the response headers (a streamed body may then take as long as it takes).
    let expired = bff.inner.deadlines.after(route.timeout);
    let response = tokio::select! {
        biased;
        // Built in place: a future held in a local and then moved into the `select!` would
        // take its size twice in this one.
        sent = send(bff, &source, request) => match sent {
            Ok(response) => response,
            Err(error) => {
                return Box::pin(failed(bff, &route.path, &source, session.as_deref(), error)).await
            }
        },
        _ = expired => return api_error(StatusCode::GATEWAY_TIMEOUT, "Upstream timed out."),
    };
    let status = response.status();
    let connection = connection_tokens(response.headers());
    let mut out = Response::builder().status(status);
    if let Some(headers) = out.headers_mut() {
        for (name, value) in response.headers() {
            // The upstream's cookies are not the BFF's to set on its origin.
            if !dropped(name, &connection) && name != header::SET_COOKIE {
                headers.append(name.clone(), value.clone());
            }
        }
    }
    let stream = response.bytes_stream().map_err(std::io::Error::other);
    out.body(Body::from_stream(stream))
        .unwrap_or_else(|_| api_error(StatusCode::BAD_GATEWAY, "Bad upstream response."))
}

/// Sends `request` upstream with the source's token: the token middleware runs on this one
/// request, with no middleware chain built per call (a chain per request cost the proxy ~6 %
/// of its throughput).
async fn send(
    bff: &Bff,
    source: &Source,
    request: reqwest::Request,
) -> Result<reqwest::Response, reqwest_middleware::Error> {
    let http = &bff.inner.http;
    match source {
        Source::None => http
            .execute(request)
            .await
            .map_err(reqwest_middleware::Error::Reqwest),
        Source::User(key, params) => {
            bff.oidc()
                .users()
                .middleware(key.clone(), params.clone())
                .execute(http, request)
                .await
        }
        Source::Client(name) => match bff.inner.clients.as_ref().map(|c| c.middleware(name)) {
            Some(Ok(middleware)) => middleware.execute(http, request).await,
            _ => Err(reqwest_middleware::Error::middleware(Error::UnknownClient(
                name.clone(),
            ))),
        },
    }
}

/// The request's session (when the route's token type needs one) and the token source.
pub(crate) async fn resolve(
    bff: &Bff,
    index: usize,
    headers: &HeaderMap,
) -> Result<(Option<std::sync::Arc<crate::session::BffSession>>, Source), Response> {
    let route = &bff.inner.options.routes[index];
    let needs_session = !matches!(route.token, RouteToken::None | RouteToken::Client);
    let session = if needs_session {
        match bff.session(headers, true).await {
            Ok(session) => session,
            Err(error) => {
                tracing::warn!(%error, "session store unavailable");
                return Err(api_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Unavailable right now.",
                ));
            }
        }
    } else {
        None
    };
    let client = || {
        route
            .client
            .clone()
            .or_else(|| {
                bff.inner
                    .clients
                    .as_ref()
                    .and_then(|c| c.client_names().next().map(str::to_owned))
            })
            .unwrap_or_default()
    };
    let users = bff.oidc().users();
    let source = match (route.token, &session) {
        (RouteToken::None, _) => Source::None,
        (RouteToken::Client, _) => Source::Client(client()),
        (RouteToken::User, None) => {
            return Err(api_error(StatusCode::UNAUTHORIZED, "Not logged in."));
        }
        (RouteToken::User, Some(session)) => Source::User(session.key(), route.user_params.clone()),
        (RouteToken::UserOrClient | RouteToken::UserOrNone, None) => {
            if route.token == RouteToken::UserOrClient {
                Source::Client(client())
            } else {
                Source::None
            }
        }
        (RouteToken::UserOrClient | RouteToken::UserOrNone, Some(session)) => {
            // Boxed, as the session's end below: rare paths, kept out of every request's future.
            match Box::pin(users.get_access_token(&session.key(), &route.user_params)).await {
                Ok(_) => Source::User(session.key(), route.user_params.clone()),
                Err(Error::ReauthenticationRequired(_)) => {
                    Box::pin(bff.end_session(session, "token")).await;
                    if route.token == RouteToken::UserOrClient {
                        Source::Client(client())
                    } else {
                        Source::None
                    }
                }
                Err(error) => {
                    crate::metrics::token_failure(&route.path);
                    tracing::warn!(%error, "user token unavailable");
                    return Err(api_error(
                        StatusCode::BAD_GATEWAY,
                        "Upstream token unavailable.",
                    ));
                }
            }
        }
    };

    Ok((session, source))
}

/// The upstream URL of a request for `uri`: the route's upstream, with the local prefix
/// replaced by its path, and the query kept. `None` if the result would leave the upstream's
/// origin.
pub(crate) fn upstream_url(route: &crate::routes::ApiRoute, uri: &http::Uri) -> Option<url::Url> {
    let rest = uri
        .path()
        .strip_prefix(route.path.as_str())
        .unwrap_or_default();
    let upstream = &route.upstream;
    let base = upstream.path().trim_end_matches('/');
    let mut target = upstream.clone();
    if rest.is_empty() {
        target.set_path(base);
    } else {
        let mut path = String::with_capacity(base.len() + rest.len());
        path.push_str(base);
        path.push_str(rest);
        target.set_path(&path);
    }
    target.set_query(uri.query());
    // Dot segments are resolved by `set_path`: a path that climbs out of the upstream's base
    // path (`/api/../../admin`) is refused, not sent elsewhere on that host with the token.
    let inside = base.is_empty()
        || target
            .path()
            .strip_prefix(base)
            .is_some_and(|after| after.is_empty() || after.starts_with('/'));
    // `set_path` cannot change the origin; checked anyway (without building either origin).
    let same_origin = target.scheme() == upstream.scheme()
        && target.host_str() == upstream.host_str()
        && target.port_or_known_default() == upstream.port_or_known_default();
    (same_origin && inside).then_some(target)
}

/// Whether the request asks for a WebSocket upgrade.
fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// A request that failed before an upstream answer.
async fn failed(
    bff: &Bff,
    route: &str,
    source: &Source,
    session: Option<&crate::session::BffSession>,
    error: reqwest_middleware::Error,
) -> Response {
    match Error::from_middleware(&error) {
        Some(Error::ReauthenticationRequired(_)) => {
            crate::metrics::token_failure(route);
            // The user token can no longer be had: the session ends, the SPA sees 401 (BF-06).
            if let (Source::User(..), Some(session)) = (source, session) {
                bff.end_session(session, "token").await;
            }
            api_error(StatusCode::UNAUTHORIZED, "Not logged in.")
        }
        Some(error) => {
            crate::metrics::token_failure(route);
            tracing::warn!(%error, "no token for the upstream");
            api_error(StatusCode::BAD_GATEWAY, "Upstream token unavailable.")
        }
        None => {
            tracing::warn!(%error, "upstream request failed");
            if let reqwest_middleware::Error::Reqwest(e) = &error {
                if e.is_timeout() {
                    return api_error(StatusCode::GATEWAY_TIMEOUT, "Upstream timed out.");
                }
            }
            api_error(StatusCode::BAD_GATEWAY, "Upstream unavailable.")
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::upstream_url;
    use crate::ApiRoute;

    #[test]
    fn upstream_urls_stay_under_the_upstream() {
        let route = ApiRoute::new("/api", "https://api.internal/v1".parse().unwrap());
        let url = |path: &str| upstream_url(&route, &path.parse().unwrap()).map(|u| u.to_string());
        assert_eq!(
            url("/api/items?x=1").as_deref(),
            Some("https://api.internal/v1/items?x=1")
        );
        assert_eq!(url("/api").as_deref(), Some("https://api.internal/v1"));
        for escape in [
            "/api/../admin",
            "/api/../../admin",
            "/api/x/../../../admin",
            "/api/..",
            "/api/%2e%2e/admin",
        ] {
            let target = url(escape);
            assert!(
                target
                    .as_deref()
                    .is_none_or(|t| t.starts_with("https://api.internal/v1/")),
                "{escape} -> {target:?}"
            );
        }
        let root = ApiRoute::new("/api", "https://api.internal".parse().unwrap());
        assert_eq!(
            upstream_url(&root, &"/api/a/../b".parse().unwrap())
                .map(|u| u.to_string())
                .as_deref(),
            Some("https://api.internal/b")
        );
    }
}
