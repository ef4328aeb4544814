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
        || matches!(name, "cookie" | "host" | "authorization" | "dpop")
}

/// Whether a request header is kept: not hop-by-hop, not the BFF's own, and not one that
/// claims something about the original request (SEC-16: the BFF says that itself).
fn forwarded_upstream(name: &HeaderName, connection: &[String], anti_forgery: &HeaderName) -> bool {
    !dropped(name, connection)
        && name != anti_forgery
        && !crate::forwarded::is_forwarding_header(name.as_str())
}

/// Whether an upstream response header reaches the browser: not hop-by-hop, not a cookie (the
/// upstream's cookies are not the BFF's to set on its origin), and no `Access-Control-*`
/// unless the route passes them (SEC-23).
fn returned(name: &HeaderName, connection: &[String], pass_cors: bool) -> bool {
    !dropped(name, connection)
        && name != header::SET_COOKIE
        && (pass_cors || !name.as_str().starts_with("access-control-"))
}

/// An upstream's `Location` as the browser must see it (SEC-23): one that points into the
/// upstream's base path becomes the same place under the route; one elsewhere on the upstream's
/// origin is dropped (the browser cannot reach it, and it names an internal host); one on
/// another origin is left alone.
fn location(
    route: &crate::routes::ApiRoute,
    target: &url::Url,
    value: &http::HeaderValue,
) -> Option<http::HeaderValue> {
    let text = value.to_str().ok()?;
    let resolved = target.join(text).ok()?;
    let upstream = &route.upstream;
    let same_origin = resolved.scheme() == upstream.scheme()
        && resolved.host_str() == upstream.host_str()
        && resolved.port_or_known_default() == upstream.port_or_known_default();
    if !same_origin {
        return Some(value.clone());
    }
    let base = upstream.path().trim_end_matches('/');
    let rest = resolved.path().strip_prefix(base)?;
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    let mut local = format!("{}{rest}", route.path.trim_end_matches('/'));
    if local.is_empty() {
        local.push('/');
    }
    if let Some(query) = resolved.query() {
        local.push('?');
        local.push_str(query);
    }
    http::HeaderValue::from_str(&local).ok()
}

/// Whether a raw (still percent-encoded) path has a segment that decodes differently on
/// different servers (SEC-21): `%2F`, `%5C`, `%2E`, `;`, `%00` in any case, or a raw
/// backslash. With `allow_encoded_slashes`, `%2F` alone is let through.
fn encoded_traversal(path: &str, allow_encoded_slashes: bool) -> bool {
    let bytes = path.as_bytes();
    bytes.iter().enumerate().any(|(i, b)| match b {
        b';' | b'\\' => true,
        b'%' => match (bytes.get(i + 1), bytes.get(i + 2)) {
            (Some(b'2'), Some(b'f' | b'F')) => !allow_encoded_slashes,
            (Some(b'5'), Some(b'c' | b'C'))
            | (Some(b'2'), Some(b'e' | b'E'))
            | (Some(b'0'), Some(b'0')) => true,
            _ => false,
        },
        _ => false,
    })
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
    /// The client token of the route with this index.
    Client(usize),
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
    // TRACE would echo the request (cookies included) back; CONNECT would open a tunnel.
    // Neither is ever forwarded, whatever the route says (SEC-17).
    if matches!(parts.method, http::Method::TRACE | http::Method::CONNECT)
        || route
            .methods
            .as_ref()
            .is_some_and(|methods| !methods.contains(&parts.method))
    {
        return Box::pin(method_not_allowed(route)).await;
    }
    if is_websocket_upgrade(&parts.headers) {
        // Boxed, as are the other rare paths below: their state would bloat every request's future.
        return Box::pin(crate::websocket::forward(bff.clone(), index, parts)).await;
    }
    if !anti_forgery_ok(bff, route, &parts) {
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
    // Room for the three `X-Forwarded-*` from the start: no growth (and rehash) on the way.
    let mut headers = HeaderMap::with_capacity(parts.headers.len() + 3);
    for (name, value) in &parts.headers {
        if forwarded_upstream(name, &connection, &bff.inner.anti_forgery_name) {
            headers.append(name.clone(), value.clone());
        }
    }
    bff.inner.forwarding.apply(
        &parts.headers,
        parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>(),
        &mut headers,
    );
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
            if !returned(name, &connection, route.pass_cors_headers) {
                continue;
            }
            if name == header::LOCATION {
                if let Some(local) = location(route, response.url(), value) {
                    headers.append(header::LOCATION, local);
                }
                continue;
            }
            headers.append(name.clone(), value.clone());
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
        Source::Client(index) => match &bff.inner.route_clients[*index] {
            Some((_, middleware)) => middleware.execute(http, request).await,
            None => Err(reqwest_middleware::Error::middleware(Error::UnknownClient(
                String::new(),
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
    let users = bff.oidc().users();
    let source = match (route.token, &session) {
        (RouteToken::None, _) => Source::None,
        (RouteToken::Client, _) => Source::Client(index),
        (RouteToken::User, None) => {
            return Err(api_error(StatusCode::UNAUTHORIZED, "Not logged in."));
        }
        (RouteToken::User, Some(session)) => Source::User(session.key(), route.user_params.clone()),
        (RouteToken::UserOrClient | RouteToken::UserOrNone, None) => {
            if route.token == RouteToken::UserOrClient {
                Source::Client(index)
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
                        Source::Client(index)
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
    if encoded_traversal(rest, route.allow_encoded_slashes) {
        return None;
    }
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

/// 405, with the route's methods in `Allow`.
async fn method_not_allowed(route: &crate::routes::ApiRoute) -> Response {
    let mut response = api_error(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed.");
    let allowed = match &route.methods {
        Some(methods) => methods
            .iter()
            .filter(|m| !matches!(**m, http::Method::TRACE | http::Method::CONNECT))
            .map(http::Method::as_str)
            .collect::<Vec<_>>()
            .join(", "),
        None => "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS".to_owned(),
    };
    if let Ok(allow) = http::HeaderValue::from_str(&allowed) {
        response.headers_mut().insert(header::ALLOW, allow);
    }
    response
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
