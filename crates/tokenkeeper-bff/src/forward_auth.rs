//! Forward auth (BF-21): `GET {base}/auth`, for a reverse proxy that asks the BFF whether a
//! request may pass — nginx's `auth_request`, Traefik's `forwardAuth`, Envoy's `ext_authz` in
//! HTTP mode. The proxy forwards the browser's headers (its session cookie among them); the BFF
//! answers **200** with identity headers (the configured claims, and optionally the access
//! token, for upstreams you trust) when the session is live, **401** when it is not.
//!
//! The identity header names are the BFF's: a browser that sends one of them never gets it
//! through the BFF's own proxy (the engine drops them), and the reverse proxy must set them from
//! this answer only (`auth_request_set` + `proxy_set_header` in nginx, which replace what the
//! client sent; see the README's recipe).
//!
//! ```
//! use tokenkeeper_bff::ForwardAuth;
//! let forward_auth = ForwardAuth::default()
//!     .header("email", "x-auth-request-email")?
//!     .header("groups", "x-auth-request-groups")?;
//! # Ok::<(), tokenkeeper::Error>(())
//! ```

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use crate::session::BffSession;

/// The longest identity header value sent (bytes); a longer claim is left out, with a warning.
const MAX_VALUE: usize = 8 * 1024;

/// The header in which the reverse proxy shows [`ForwardAuth::proxy_secret`].
pub const PROXY_SECRET_HEADER: &str = "x-forward-auth-secret";

/// Which identity headers `{base}/auth` answers with. The default sends the user's `sub` as
/// `X-Auth-Request-User` (the name oauth2-proxy uses, so recipes carry over).
#[derive(Clone)]
pub struct ForwardAuth {
    /// `(claim, header)`: each claim the session has goes out in its header (an array as its
    /// elements joined with `,`; other JSON values as JSON text).
    pub headers: Vec<(String, HeaderName)>,
    /// The header that carries the user's access token (Bearer only), when the upstreams behind
    /// the reverse proxy are trusted with it. `None` (default): never sent. It needs
    /// [`ForwardAuth::proxy_secret`]: the token goes only to a caller that shows it.
    pub access_token: Option<HeaderName>,
    /// A secret the reverse proxy sends in [`PROXY_SECRET_HEADER`] on its `auth_request`
    /// subrequests (at least 32 bytes). A browser can reach `{base}/auth` too, wherever the
    /// BFF's paths are proxied: without the secret it gets the identity headers (its own
    /// claims) and never the access token, which must not reach a browser.
    pub proxy_secret: Option<String>,
}

impl std::fmt::Debug for ForwardAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardAuth")
            .field("headers", &self.headers)
            .field("access_token", &self.access_token)
            .field(
                "proxy_secret",
                &self.proxy_secret.as_ref().map(|_| "[redacted]"),
            )
            .finish()
    }
}

impl Default for ForwardAuth {
    fn default() -> Self {
        Self {
            headers: vec![(
                "sub".to_owned(),
                HeaderName::from_static("x-auth-request-user"),
            )],
            access_token: None,
            proxy_secret: None,
        }
    }
}

/// Header names that can never carry identity: they mean something to HTTP or to the BFF.
const RESERVED: &[&str] = &[
    "host",
    "cookie",
    "set-cookie",
    "authorization",
    "proxy-authorization",
    "proxy-authenticate",
    "www-authenticate",
    "connection",
    "keep-alive",
    "content-length",
    "content-type",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "location",
    "dpop",
];

/// Whether `name` can be an identity header (not one of HTTP's or the BFF's own).
pub(crate) fn usable_header(name: &str) -> Result<HeaderName, String> {
    let parsed = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("{name:?} is not a header name"))?;
    if RESERVED.contains(&parsed.as_str()) || parsed.as_str().starts_with("x-forwarded-") {
        return Err(format!("{name:?} is a header HTTP or the BFF already uses"));
    }
    Ok(parsed)
}

impl ForwardAuth {
    /// Also sends `claim` in the header `name`. Fails for a name that is not a header name or
    /// is one HTTP or the BFF uses (`Cookie`, `Authorization`, `X-Forwarded-*`, …), or one
    /// already in use.
    pub fn header(mut self, claim: &str, name: &str) -> Result<Self, tokenkeeper::Error> {
        let invalid = |reason: String| {
            tokenkeeper::Error::Config(tokenkeeper::ConfigError::new(
                "forward_auth.headers",
                reason,
            ))
        };
        let name = usable_header(name).map_err(invalid)?;
        if self.names().any(|n| *n == name) {
            return Err(invalid(format!("{name} is used twice")));
        }
        self.headers.push((claim.to_owned(), name));
        Ok(self)
    }

    /// Whether the request comes from the reverse proxy: it shows the proxy secret.
    pub(crate) fn shows_proxy_secret(&self, headers: &HeaderMap) -> bool {
        match (&self.proxy_secret, headers.get(PROXY_SECRET_HEADER)) {
            (Some(secret), Some(given)) => {
                tokenkeeper_proxy::ops::same_secret(given.as_bytes(), secret.as_bytes())
            }
            _ => false,
        }
    }

    /// Every identity header name (the access token's included).
    pub fn names(&self) -> impl Iterator<Item = &HeaderName> {
        self.headers
            .iter()
            .map(|(_, name)| name)
            .chain(self.access_token.as_ref())
    }
}

/// A claim's value as header text.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(values) => values
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    }
}

/// The identity headers of `session` (its claims as configured): a claim the session lacks
/// is left out, as is one whose value cannot be a header (control characters, over 8 KiB:
/// logged).
pub(crate) fn identity_headers(config: &ForwardAuth, session: &BffSession) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (claim, name) in &config.headers {
        let value = match claim.as_str() {
            "sub" => Some(session.sub.clone()),
            _ => session.claims.get(claim).map(text),
        };
        let Some(value) = value else { continue };
        match HeaderValue::from_str(&value) {
            Ok(value) if value.len() <= MAX_VALUE => {
                headers.insert(name.clone(), value);
            }
            _ => tracing::warn!(
                claim = claim.as_str(),
                "forward auth: a claim's value cannot be a header (control characters, or over 8 KiB); left out"
            ),
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_headers_are_header_names_nobody_else_uses() {
        assert!(usable_header("X-Auth-Request-Email").is_ok());
        for bad in [
            "cookie",
            "Authorization",
            "x-forwarded-user",
            "bad header",
            "",
            "host",
        ] {
            assert!(usable_header(bad).is_err(), "{bad}");
        }
        assert!(ForwardAuth::default()
            .header("name", "x-auth-request-user")
            .is_err());
        assert_eq!(text(&serde_json::json!(["a", 1, "b"])), "a,1,b");
    }

    #[test]
    fn hostile_claim_values_never_become_headers() {
        let config = ForwardAuth::default()
            .header("name", "x-name")
            .and_then(|f| f.header("bio", "x-bio"))
            .and_then(|f| f.header("groups", "x-groups"))
            .expect("usable names");
        let mut session = BffSession::new("id", "alice", "s1");
        session.claims = serde_json::json!({
            "name": "Alice\r\nX-Admin: yes",
            "bio": "x".repeat(2 * 1024 * 1024),
            "groups": ["dev", "ops"],
        })
        .as_object()
        .cloned()
        .unwrap_or_default();
        let headers = identity_headers(&config, &session);
        assert_eq!(headers.len(), 2, "{headers:?}");
        assert_eq!(headers["x-auth-request-user"], "alice");
        assert_eq!(headers["x-groups"], "dev,ops");
    }
}
