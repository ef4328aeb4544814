//! Header hygiene both ways (SEC-16, SEC-23): hop-by-hop headers (and those `Connection`
//! names) never cross; the caller's credentials, cookies and `X-Forwarded-*` claims stay with
//! the host; upstream cookies and (unless a route passes them) `Access-Control-*` never reach
//! the caller; an upstream `Location` is rewritten to the route or dropped.

use http::{header, HeaderMap, HeaderName, HeaderValue};

use crate::forwarded::is_forwarding_header;
use crate::route::Route;

/// The header names a message's `Connection` header lists (lower case).
pub(crate) fn connection_tokens(headers: &HeaderMap) -> Vec<String> {
    let mut tokens = Vec::new();
    for value in headers.get_all(header::CONNECTION) {
        let Ok(value) = value.to_str() else { continue };
        for token in value.split(',') {
            let token = token.trim();
            // `keep-alive` and `close` are hop-by-hop already: nothing more to drop.
            if !token.is_empty()
                && !token.eq_ignore_ascii_case("keep-alive")
                && !token.eq_ignore_ascii_case("close")
            {
                tokens.push(token.to_ascii_lowercase());
            }
        }
    }
    tokens
}

/// What the caller's request keeps on its way upstream.
#[derive(Debug, Clone)]
pub struct RequestHygiene {
    /// Also dropped (lower case): the host's own headers (the BFF's anti-forgery header).
    pub drop: Vec<HeaderName>,
    /// Drop `Cookie` (the host's session cookie is not the upstream's business). Default on.
    pub drop_cookies: bool,
    /// Drop every `X-Forwarded-*`-like claim of the caller (SEC-16). Default on.
    pub drop_forwarding: bool,
}

impl Default for RequestHygiene {
    fn default() -> Self {
        Self {
            drop: Vec::new(),
            drop_cookies: true,
            drop_forwarding: true,
        }
    }
}

impl RequestHygiene {
    /// Whether the caller's header `name` stays off the upstream request. `Host`,
    /// `Authorization` and `DPoP` never pass: the upstream's host comes from its URL, and the
    /// route decides the credentials (forwarding the caller's own is an explicit choice of the
    /// policy).
    fn dropped(&self, name: &HeaderName, connection: &[String]) -> bool {
        let text = name.as_str();
        // The usual headers of a request (accept, content-type, user-agent, …) are none of
        // these: one `match` on the name, before the lists.
        let fixed = match text {
            "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "authorization"
            | "dpop" => true,
            "cookie" => self.drop_cookies,
            _ => self.drop_forwarding && is_forwarding_header(text),
        };
        fixed
            || (!connection.is_empty() && connection.iter().any(|c| c == text))
            || (!self.drop.is_empty() && self.drop.contains(name))
    }

    /// Removes from `headers`, in place, what must not go upstream. A request usually has
    /// only a few such headers: they are removed by name, and the rest is not copied.
    ///
    /// The caller's `Host` is the one exception: it is left where it is, because the upstream
    /// client always replaces it with the upstream's own (`HeaderMap::insert` drops every value
    /// of the name), which costs one map operation instead of a removal and an insertion. Only
    /// [`crate::upstream`] sends what this cleans.
    pub(crate) fn clean(&self, headers: &mut HeaderMap) {
        let connection = if headers.contains_key(header::CONNECTION) {
            connection_tokens(headers)
        } else {
            Vec::new()
        };
        // The names to remove, on the stack: a request rarely has more than a few (`Host`,
        // `Cookie`, the anti-forgery header); more go to a vector.
        let mut few: [Option<HeaderName>; 8] = Default::default();
        let mut count = 0;
        let mut more: Vec<HeaderName> = Vec::new();
        for name in headers.keys() {
            if name != header::HOST && self.dropped(name, &connection) {
                match few.get_mut(count) {
                    Some(slot) => *slot = Some(name.clone()),
                    None => more.push(name.clone()),
                }
                count += 1;
            }
        }
        for name in few.iter().flatten().chain(&more) {
            headers.remove(name);
        }
    }
}

/// Removes from the upstream's response `headers`, in place, what must not reach the caller,
/// and rewrites its `Location` (SEC-23). The hop-by-hop headers (and those the upstream's
/// `Connection` names) are already gone: the upstream client leaves them out as it parses.
pub(crate) fn clean_response(route: &Route, target: &http::Uri, headers: &mut HeaderMap) {
    if route.drop_response_cookies || !route.pass_cors_headers {
        // Collected first (a map cannot be changed while its keys are read); nothing is
        // allocated when there is nothing to remove, as on most responses.
        let mut remove: Vec<HeaderName> = Vec::new();
        for name in headers.keys() {
            if (route.drop_response_cookies && name == header::SET_COOKIE)
                || (!route.pass_cors_headers && name.as_str().starts_with("access-control-"))
            {
                remove.push(name.clone());
            }
        }
        for name in &remove {
            headers.remove(name);
        }
    }
    if route.rewrite_location {
        if let Some(value) = headers.get(header::LOCATION) {
            match location(route, target, value) {
                Some(local) => {
                    headers.insert(header::LOCATION, local);
                }
                None => {
                    headers.remove(header::LOCATION);
                }
            }
        }
    }
}

/// An upstream's `Location` as the caller must see it (SEC-23): one that points into the
/// upstream's base path becomes the same place under the route; one elsewhere on the upstream's
/// origin is dropped (the caller cannot reach it, and it names an internal host); one on
/// another origin is left alone.
fn location(route: &Route, target: &http::Uri, value: &HeaderValue) -> Option<HeaderValue> {
    let text = value.to_str().ok()?;
    let target = url::Url::parse(&target.to_string()).ok()?;
    let resolved = target.join(text).ok()?;
    let upstream = route.upstream();
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
    let mut local = format!("{}{rest}", route.prefix().trim_end_matches('/'));
    if local.is_empty() {
        local.push('/');
    }
    if let Some(query) = resolved.query() {
        local.push('?');
        local.push_str(query);
    }
    HeaderValue::from_str(&local).ok()
}

/// Whether the request asks for a WebSocket upgrade.
pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}
