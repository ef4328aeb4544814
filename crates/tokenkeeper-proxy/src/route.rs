//! A route: a local path prefix mapped to an upstream, and how requests to it are forwarded
//! (deadline, methods, encoded slashes, CORS and cookie headers, `Location` rewriting); and the
//! mapping of a request's path to the upstream's URL, which never leaves the upstream's base
//! path (SEC-19, SEC-21).

use std::time::Duration;

use url::Url;

/// A local path prefix (`/api`) and the upstream it forwards to (`https://api.internal/v1`).
#[derive(Debug, Clone)]
pub struct Route {
    prefix: String,
    upstream: Url,
    /// The upstream's path without its trailing `/` (`/v1`, or empty).
    base: String,
    /// The upstream's scheme and authority, parsed once.
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    pub(crate) timeout: Duration,
    pub(crate) methods: Option<Vec<http::Method>>,
    pub(crate) allow_encoded_slashes: bool,
    pub(crate) pass_cors_headers: bool,
    pub(crate) drop_response_cookies: bool,
    pub(crate) rewrite_location: bool,
}

/// Why a route cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The prefix is not `/` followed by path characters.
    #[error("the route prefix {0:?} must start with / and hold no ?, # or control characters")]
    Prefix(String),
    /// The upstream is not an `http(s)` URL with a host, or has a query or fragment.
    #[error(
        "the upstream of {prefix} ({upstream}) must be an http(s) URL with a host and no query"
    )]
    Upstream {
        /// The route's prefix.
        prefix: String,
        /// The upstream, as given.
        upstream: String,
    },
}

impl Route {
    /// A route forwarding `prefix` (and everything under it) to `upstream`, with the defaults:
    /// 30 s to the upstream's response headers, every method but TRACE and CONNECT, no `%2F`,
    /// upstream cookies and `Access-Control-*` headers dropped, `Location` rewritten.
    pub fn new(prefix: &str, upstream: Url) -> Result<Self, RouteError> {
        let trimmed = prefix.trim_end_matches('/');
        if !prefix.starts_with('/')
            || prefix
                .chars()
                .any(|c| c.is_control() || matches!(c, '?' | '#' | ' '))
        {
            return Err(RouteError::Prefix(prefix.to_owned()));
        }
        if !matches!(upstream.scheme(), "http" | "https")
            || upstream.host_str().is_none()
            || upstream.query().is_some()
            || upstream.fragment().is_some()
            || !upstream.username().is_empty()
        {
            return Err(RouteError::Upstream {
                prefix: prefix.to_owned(),
                upstream: upstream.to_string(),
            });
        }
        let bad = || RouteError::Upstream {
            prefix: prefix.to_owned(),
            upstream: upstream.to_string(),
        };
        let origin: http::Uri = upstream
            .origin()
            .ascii_serialization()
            .parse()
            .map_err(|_| bad())?;
        let parts = origin.into_parts();
        let (Some(scheme), Some(authority)) = (parts.scheme, parts.authority) else {
            return Err(bad());
        };
        Ok(Self {
            prefix: trimmed.to_owned(),
            base: upstream.path().trim_end_matches('/').to_owned(),
            scheme,
            authority,
            upstream,
            timeout: Duration::from_secs(30),
            methods: None,
            allow_encoded_slashes: false,
            pass_cors_headers: false,
            drop_response_cookies: true,
            rewrite_location: true,
        })
    }

    /// The time to the upstream's response headers (default 30 s): then 504. A streamed body
    /// may take as long as it takes.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Only these methods are forwarded (others: 405 with `Allow`). TRACE and CONNECT never are.
    pub fn methods(mut self, methods: Option<Vec<http::Method>>) -> Self {
        self.methods = methods;
        self
    }

    /// Let `%2F` through in paths (for upstreams whose ids hold slashes). Default off.
    pub fn allow_encoded_slashes(mut self, allow: bool) -> Self {
        self.allow_encoded_slashes = allow;
        self
    }

    /// Pass the upstream's `Access-Control-*` headers to the caller. Default off.
    pub fn pass_cors_headers(mut self, pass: bool) -> Self {
        self.pass_cors_headers = pass;
        self
    }

    /// Drop the upstream's `Set-Cookie` (default on: the BFF's origin is not the upstream's to
    /// set cookies on; an egress sidecar passes them).
    pub fn drop_response_cookies(mut self, drop: bool) -> Self {
        self.drop_response_cookies = drop;
        self
    }

    /// The local prefix, without a trailing `/` (empty for `/`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The upstream URL.
    pub fn upstream(&self) -> &Url {
        &self.upstream
    }

    /// Whether `path` is this route's: the prefix itself, or under it at a `/`.
    pub fn matches(&self, path: &str) -> bool {
        path.strip_prefix(self.prefix.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    /// The upstream URI of a request for `uri` (which this route [`matches`](Self::matches)):
    /// the upstream, with the local prefix replaced by its path, and the query kept. `None`
    /// when the path has an encoded traversal (SEC-21) or would climb out of the upstream's
    /// base path (SEC-19).
    pub fn target(&self, uri: &http::Uri) -> Option<http::Uri> {
        let rest = uri.path().strip_prefix(self.prefix.as_str())?;
        if !(rest.is_empty() || rest.starts_with('/'))
            || encoded_traversal(rest, self.allow_encoded_slashes)
        {
            return None;
        }
        if has_dot_segment(rest) {
            // Rare: resolved by the WHATWG rules, then checked to stay inside.
            let url = self.upstream_url(uri)?;
            return url.as_str().parse().ok();
        }
        let query = uri.query();
        let mut text =
            String::with_capacity(self.base.len() + rest.len() + 2 + query.map_or(0, str::len));
        text.push_str(&self.base);
        text.push_str(rest);
        if text.is_empty() {
            text.push('/');
        }
        if let Some(query) = query {
            text.push('?');
            text.push_str(query);
        }
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(text.parse().ok()?);
        http::Uri::from_parts(parts).ok()
    }

    /// [`Self::target`] as a [`Url`], resolved by the WHATWG rules (dot segments included).
    pub fn upstream_url(&self, uri: &http::Uri) -> Option<Url> {
        let rest = uri.path().strip_prefix(self.prefix.as_str())?;
        if !(rest.is_empty() || rest.starts_with('/'))
            || encoded_traversal(rest, self.allow_encoded_slashes)
        {
            return None;
        }
        let mut target = self.upstream.clone();
        if rest.is_empty() {
            target.set_path(&self.base);
        } else {
            let mut path = String::with_capacity(self.base.len() + rest.len());
            path.push_str(&self.base);
            path.push_str(rest);
            target.set_path(&path);
        }
        target.set_query(uri.query());
        // Dot segments are resolved by `set_path`: a path that climbs out of the upstream's
        // base path (`/api/../../admin`) is refused, not sent elsewhere on that host.
        let inside = self.base.is_empty()
            || target
                .path()
                .strip_prefix(self.base.as_str())
                .is_some_and(|after| after.is_empty() || after.starts_with('/'));
        let same_origin = target.scheme() == self.upstream.scheme()
            && target.host_str() == self.upstream.host_str()
            && target.port_or_known_default() == self.upstream.port_or_known_default();
        (same_origin && inside).then_some(target)
    }
}

/// Whether a path has a `.` or `..` segment.
fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|s| s == "." || s == "..")
}

/// Whether a raw (still percent-encoded) path has a segment that decodes differently on
/// different servers (SEC-21): `%2F`, `%5C`, `%2E`, `;`, `%00` in any case, or a raw
/// backslash. With `allow_encoded_slashes`, `%2F` alone is let through.
pub(crate) fn encoded_traversal(path: &str, allow_encoded_slashes: bool) -> bool {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn target(route: &Route, path: &str) -> Option<String> {
        route.target(&path.parse().unwrap()).map(|u| u.to_string())
    }

    #[test]
    fn upstream_urls_stay_under_the_upstream() {
        let route = Route::new("/api", "https://api.internal/v1".parse().unwrap()).unwrap();
        assert_eq!(
            target(&route, "/api/items?x=1").as_deref(),
            Some("https://api.internal/v1/items?x=1")
        );
        assert_eq!(
            target(&route, "/api").as_deref(),
            Some("https://api.internal/v1")
        );
        for escape in [
            "/api/../admin",
            "/api/../../admin",
            "/api/x/../../../admin",
            "/api/..",
            "/api/%2e%2e/admin",
        ] {
            let t = target(&route, escape);
            assert!(
                t.as_deref()
                    .is_none_or(|t| t.starts_with("https://api.internal/v1/")),
                "{escape} -> {t:?}"
            );
        }
        let root = Route::new("/api", "https://api.internal".parse().unwrap()).unwrap();
        assert_eq!(
            target(&root, "/api/a/../b").as_deref(),
            Some("https://api.internal/b")
        );
        assert_eq!(
            target(&root, "/api").as_deref(),
            Some("https://api.internal/")
        );
        assert_eq!(target(&root, "/apix"), None);
        // The fast path and the WHATWG path agree.
        for path in ["/api/a/b?q=a%20b", "/api/x", "/api/a/./b", "/api/"] {
            let fast = target(&route, path);
            let slow = route
                .upstream_url(&path.parse().unwrap())
                .map(|u| u.to_string());
            assert_eq!(fast, slow, "{path}");
        }
    }

    #[test]
    fn routes_match_at_segment_boundaries() {
        let route = Route::new("/api/", "http://x/".parse().unwrap()).unwrap();
        assert!(route.matches("/api"));
        assert!(route.matches("/api/"));
        assert!(route.matches("/api/a"));
        assert!(!route.matches("/apis"));
        assert!(Route::new("api", "http://x/".parse().unwrap()).is_err());
        assert!(Route::new("/a", "ftp://x/".parse().unwrap()).is_err());
        assert!(Route::new("/a", "http://u:p@x/".parse().unwrap()).is_err());
    }
}
