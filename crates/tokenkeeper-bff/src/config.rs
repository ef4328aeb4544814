//! The BFF's configuration file (TOML), validated at start: every error names the offending
//! key and its line. Every secret can come from the environment instead (`*_env` keys).
//!
//! ```toml
//! [bff]
//! listen = "0.0.0.0:8080"
//! public_url = "https://app.example.com"  # the callback is {public_url}{base_path}/callback
//! base_path = "/bff"                      # optional
//! static_dir = "dist"                     # optional: the SPA, with a fallback to index.html
//! session_sliding_secs = 1800             # optional
//! session_max_secs = 43200                # optional
//!
//! [oidc]
//! issuer = "https://idp.example.com"
//! client_id = "spa"
//! client_secret_env = "BFF_CLIENT_SECRET" # or client_secret = "..."
//! scope = "openid offline_access api"     # optional
//! dpop = "per-session"                    # optional: "none" (default) or "per-session"
//!
//! [client]                                # optional: for `client` and `user_or_client` routes
//! client_id = "bff-worker"
//! client_secret_env = "BFF_WORKER_SECRET"
//! scope = "api"
//!
//! [redis]                                 # optional: sessions and tokens shared by a fleet
//! url = "redis://127.0.0.1:6379"
//! prefix = "bff"
//! encryption_key_env = "BFF_REDIS_KEY"    # 32 bytes, base64; required unless plaintext = true
//!
//! [[routes]]
//! path = "/api"
//! upstream = "https://api.internal/v1"
//! token = "user"                          # none | user | client | user_or_client | user_or_none
//! timeout_secs = 30                       # optional
//! ```

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

/// A configuration error: the key (`routes[1].upstream`), its line when known, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFileError {
    /// The offending key, as a path.
    pub key: String,
    /// Its line (1-based), when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "`{}` (line {line}): {}", self.key, self.message),
            None => write!(f, "`{}`: {}", self.key, self.message),
        }
    }
}

impl std::error::Error for ConfigFileError {}

/// The parsed file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BffConfig {
    /// `[bff]`.
    pub bff: HostSection,
    /// `[oidc]`.
    pub oidc: OidcSection,
    /// `[client]`.
    #[serde(default)]
    pub client: Option<ClientSection>,
    /// `[redis]`.
    #[serde(default)]
    pub redis: Option<RedisSection>,
    /// `[[routes]]`.
    #[serde(default)]
    pub routes: Vec<RouteSection>,
}

/// `[bff]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSection {
    /// The address to listen on.
    pub listen: Spanned<String>,
    /// The public URL (origin) of the BFF.
    pub public_url: Spanned<String>,
    /// The management endpoints' base path.
    #[serde(default)]
    pub base_path: Option<String>,
    /// The SPA's files.
    #[serde(default)]
    pub static_dir: Option<Spanned<String>>,
    /// Sliding session lifetime, seconds.
    #[serde(default)]
    pub session_sliding_secs: Option<Spanned<u64>>,
    /// Absolute session lifetime, seconds.
    #[serde(default)]
    pub session_max_secs: Option<Spanned<u64>>,
    /// Cookies without `Secure` (plain-http loopback development only).
    #[serde(default)]
    pub insecure_cookies: bool,
}

/// `[oidc]`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcSection {
    /// The issuer.
    pub issuer: Spanned<String>,
    /// The client id.
    pub client_id: String,
    /// The client secret (prefer `client_secret_env`).
    #[serde(default)]
    pub client_secret: Option<String>,
    /// The environment variable holding the client secret.
    #[serde(default)]
    pub client_secret_env: Option<Spanned<String>>,
    /// Scopes.
    #[serde(default)]
    pub scope: Option<String>,
    /// `none` or `per-session`.
    #[serde(default)]
    pub dpop: Option<Spanned<String>>,
}

/// `[client]`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSection {
    /// The client id.
    pub client_id: String,
    /// The client secret (prefer `client_secret_env`).
    #[serde(default)]
    pub client_secret: Option<String>,
    /// The environment variable holding the client secret.
    #[serde(default)]
    pub client_secret_env: Option<Spanned<String>>,
    /// Scopes.
    #[serde(default)]
    pub scope: Option<String>,
}

/// `[redis]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSection {
    /// The Redis URL.
    pub url: Spanned<String>,
    /// The key prefix.
    #[serde(default)]
    pub prefix: Option<String>,
    /// The environment variable holding the 32-byte encryption key (base64).
    #[serde(default)]
    pub encryption_key_env: Option<Spanned<String>>,
    /// Stores sessions, tokens and refresh tokens in Redis in the clear: only when said so
    /// (SEC-15), and then with a warning at start and the gauge `tokenkeeper_redis_plaintext`.
    #[serde(default)]
    pub plaintext: Option<Spanned<bool>>,
}

/// `[[routes]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    /// The local path prefix.
    pub path: Spanned<String>,
    /// The upstream URL.
    pub upstream: Spanned<String>,
    /// The token type.
    #[serde(default)]
    pub token: Option<Spanned<String>>,
    /// The user token's scope.
    #[serde(default)]
    pub scope: Option<String>,
    /// The user token's resource.
    #[serde(default)]
    pub resource: Option<Spanned<String>>,
    /// Seconds until the upstream's response headers.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

impl fmt::Debug for OidcSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcSection")
            .field("issuer", self.issuer.get_ref())
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "[redacted]"),
            )
            .field(
                "client_secret_env",
                &self.client_secret_env.as_ref().map(Spanned::get_ref),
            )
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for ClientSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSection")
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "[redacted]"),
            )
            .field(
                "client_secret_env",
                &self.client_secret_env.as_ref().map(Spanned::get_ref),
            )
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// Reads the line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The key at a byte offset: the table of the nearest header above it, and the name before
/// `=` on its line (`routes[1].upstream`, `oidc`).
fn key_at(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[line_start..]
        .find('\n')
        .map_or(text.len(), |i| line_start + i);
    let line = &text[line_start..line_end];
    let name = line
        .split_once('=')
        .map(|(name, _)| name.trim().to_owned())
        .filter(|name| !name.starts_with('['));
    let mut table = String::new();
    let mut arrays: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for header in text[..line_start].lines().map(str::trim) {
        if let Some(array) = header.strip_prefix("[[").and_then(|h| h.strip_suffix("]]")) {
            let n = arrays.entry(array.trim().to_owned()).or_insert(0);
            table = format!("{}[{}]", array.trim(), *n);
            *n += 1;
        } else if let Some(plain) = header.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            table = plain.trim().to_owned();
        }
    }
    if line.trim_start().starts_with('[') {
        let header = line.trim().trim_matches(|c| c == '[' || c == ']');
        return header.trim().to_owned();
    }
    match (table.is_empty(), name) {
        (_, None) => table,
        (true, Some(name)) => name,
        (false, Some(name)) => format!("{table}.{name}"),
    }
}

/// What [`BffConfig::validate`] resolves: the parts to build the BFF from. `Debug` leaves the
/// secrets and the key out.
#[derive(Clone)]
pub struct Validated {
    /// The listen address.
    pub listen: std::net::SocketAddr,
    /// The public origin (`https://app.example.com`).
    pub public_origin: String,
    /// The callback URL.
    pub redirect_uri: String,
    /// The client secret.
    pub client_secret: String,
    /// The worker client's secret, when there is a `[client]`.
    pub worker_secret: Option<String>,
    /// The Redis encryption key.
    pub redis_key: Option<[u8; 32]>,
    /// Per-session DPoP.
    pub dpop_per_session: bool,
    /// The routes.
    pub routes: Vec<crate::ApiRoute>,
    /// The BFF's options (without the routes' token managers).
    pub options: crate::BffOptions,
}

impl fmt::Debug for Validated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Validated")
            .field("listen", &self.listen)
            .field("public_origin", &self.public_origin)
            .field("redirect_uri", &self.redirect_uri)
            .field("redis_encrypted", &self.redis_key.is_some())
            .field("dpop_per_session", &self.dpop_per_session)
            .field("routes", &self.routes)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl BffConfig {
    /// Parses `text`; syntax errors name the key and line.
    pub fn parse(text: &str) -> Result<Self, ConfigFileError> {
        toml::from_str(text).map_err(|e| ConfigFileError {
            key: e
                .span()
                .map(|span| key_at(text, span.start))
                .unwrap_or_default(),
            line: e.span().map(|span| line_of(text, span.start)),
            message: e.message().to_owned(),
        })
    }

    /// Checks every value and resolves the secrets from the environment (`env` looks a
    /// variable up: `std::env::var` in production). `text` is the file, for line numbers.
    pub fn validate(
        &self,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Validated, ConfigFileError> {
        let err =
            |key: &str, span: Option<std::ops::Range<usize>>, message: String| ConfigFileError {
                key: key.to_owned(),
                line: span.map(|s| line_of(text, s.start)),
                message,
            };
        let listen = self.bff.listen.get_ref().parse().map_err(|_| {
            err(
                "bff.listen",
                Some(self.bff.listen.span()),
                "is not an address like 127.0.0.1:8080".into(),
            )
        })?;
        let public = url::Url::parse(self.bff.public_url.get_ref())
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| {
                err(
                    "bff.public_url",
                    Some(self.bff.public_url.span()),
                    "is not an absolute http(s) URL".into(),
                )
            })?;
        let insecure = self.bff.insecure_cookies;
        if public.scheme() == "http" && !insecure {
            return Err(err(
                "bff.public_url",
                Some(self.bff.public_url.span()),
                "is plain http: session cookies are Secure (set insecure_cookies = true for loopback development)".into(),
            ));
        }
        let public_origin = public.origin().ascii_serialization();
        let base_path = format!(
            "/{}",
            self.bff
                .base_path
                .as_deref()
                .unwrap_or("/bff")
                .trim_matches('/')
        );
        let issuer = self.oidc.issuer.get_ref();
        if url::Url::parse(issuer).is_err() {
            return Err(err(
                "oidc.issuer",
                Some(self.oidc.issuer.span()),
                "is not an absolute URL".into(),
            ));
        }
        let secret = |section: &str,
                      inline: &Option<String>,
                      from_env: &Option<Spanned<String>>|
         -> Result<String, ConfigFileError> {
            match (inline, from_env) {
                (_, Some(var)) => env(var.get_ref()).filter(|s| !s.is_empty()).ok_or_else(|| {
                    err(
                        &format!("{section}.client_secret_env"),
                        Some(var.span()),
                        format!("the environment variable {} is not set", var.get_ref()),
                    )
                }),
                (Some(secret), None) => Ok(secret.clone()),
                (None, None) => Err(err(
                    &format!("{section}.client_secret"),
                    None,
                    "is missing (or give client_secret_env)".into(),
                )),
            }
        };
        let client_secret = secret(
            "oidc",
            &self.oidc.client_secret,
            &self.oidc.client_secret_env,
        )?;
        let worker_secret = match &self.client {
            Some(client) => Some(secret(
                "client",
                &client.client_secret,
                &client.client_secret_env,
            )?),
            None => None,
        };
        let dpop_per_session = match self.oidc.dpop.as_ref() {
            None => false,
            Some(value) => match value.get_ref().as_str() {
                "none" => false,
                "per-session" => true,
                other => {
                    return Err(err(
                        "oidc.dpop",
                        Some(value.span()),
                        format!("{other:?} is not \"none\" or \"per-session\""),
                    ))
                }
            },
        };
        let redis_key = match &self.redis {
            Some(redis) => {
                if url::Url::parse(redis.url.get_ref()).is_err() {
                    return Err(err(
                        "redis.url",
                        Some(redis.url.span()),
                        "is not a URL".into(),
                    ));
                }
                let plaintext = redis.plaintext.as_ref().is_some_and(|p| *p.get_ref());
                match &redis.encryption_key_env {
                    None if plaintext => None,
                    None => {
                        return Err(err(
                            "redis.encryption_key_env",
                            None,
                            "is missing: Redis would hold refresh tokens, ID tokens and sessions in the clear; name the environment variable holding a 32-byte key (base64), or set plaintext = true to store them in plaintext knowingly".into(),
                        ))
                    }
                    Some(var) if plaintext => {
                        return Err(err(
                            "redis.plaintext",
                            redis.plaintext.as_ref().map(Spanned::span),
                            format!(
                                "is true, but encryption_key_env names {}: choose one",
                                var.get_ref()
                            ),
                        ))
                    }
                    Some(var) => {
                        use base64::Engine as _;
                        let key = env(var.get_ref())
                            .and_then(|v| {
                                base64::engine::general_purpose::STANDARD
                                    .decode(v.trim())
                                    .ok()
                            })
                            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                            .ok_or_else(|| {
                                err(
                                    "redis.encryption_key_env",
                                    Some(var.span()),
                                    format!(
                                        "the environment variable {} must hold 32 bytes in base64",
                                        var.get_ref()
                                    ),
                                )
                            })?;
                        Some(key)
                    }
                }
            }
            None => None,
        };
        let mut routes = Vec::new();
        for (i, route) in self.routes.iter().enumerate() {
            let key = |name: &str| format!("routes[{i}].{name}");
            let path = route.path.get_ref();
            if !path.starts_with('/') || path.contains("..") || path.contains(['{', '}', '*']) {
                return Err(err(
                    &key("path"),
                    Some(route.path.span()),
                    "must be a plain path starting with /".into(),
                ));
            }
            let upstream = url::Url::parse(route.upstream.get_ref())
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https"))
                .ok_or_else(|| {
                    err(
                        &key("upstream"),
                        Some(route.upstream.span()),
                        "is not an absolute http(s) URL".into(),
                    )
                })?;
            let token = match route.token.as_ref().map(|t| t.get_ref().as_str()) {
                None | Some("user") => crate::RouteToken::User,
                Some("none") => crate::RouteToken::None,
                Some("client") => crate::RouteToken::Client,
                Some("user_or_client") => crate::RouteToken::UserOrClient,
                Some("user_or_none") => crate::RouteToken::UserOrNone,
                Some(other) => {
                    return Err(err(
                        &key("token"),
                        route.token.as_ref().map(Spanned::span),
                        format!(
                        "{other:?} is not one of none, user, client, user_or_client, user_or_none"
                    ),
                    ))
                }
            };
            if matches!(
                token,
                crate::RouteToken::Client | crate::RouteToken::UserOrClient
            ) && self.client.is_none()
            {
                return Err(err(
                    &key("token"),
                    route.token.as_ref().map(Spanned::span),
                    "needs a [client] section".into(),
                ));
            }
            let mut params = tokenkeeper::user::UserTokenParams::default();
            if let Some(scope) = &route.scope {
                params = params.scope(tokenkeeper::Scope::parse(scope));
            }
            if let Some(resource) = &route.resource {
                let parsed = tokenkeeper::Resource::parse(resource.get_ref().clone())
                    .map_err(|e| err(&key("resource"), Some(resource.span()), e.to_string()))?;
                params = params.resource(parsed);
            }
            let mut api = crate::ApiRoute::new(path.clone(), upstream)
                .token(token)
                .user_params(params);
            if let Some(secs) = route.timeout_secs {
                api = api.timeout(Duration::from_secs(secs.max(1)));
            }
            routes.push(api);
        }
        let mut options = crate::BffOptions {
            base_path: base_path.clone(),
            insecure_cookies: insecure,
            ..crate::BffOptions::default()
        };
        if let Some(secs) = &self.bff.session_sliding_secs {
            options.session_sliding = Duration::from_secs(*secs.get_ref());
        }
        if let Some(secs) = &self.bff.session_max_secs {
            options.session_max = Duration::from_secs(*secs.get_ref());
        }
        if options.session_sliding.is_zero() || options.session_max < options.session_sliding {
            return Err(err(
                "bff.session_sliding_secs",
                self.bff.session_sliding_secs.as_ref().map(Spanned::span),
                "must be greater than zero and at most session_max_secs".into(),
            ));
        }
        if let Some(dir) = &self.bff.static_dir {
            if !std::path::Path::new(dir.get_ref()).is_dir() {
                return Err(err(
                    "bff.static_dir",
                    Some(dir.span()),
                    "is not a directory".into(),
                ));
            }
        }
        Ok(Validated {
            listen,
            redirect_uri: format!("{public_origin}{base_path}/callback"),
            public_origin,
            client_secret,
            worker_secret,
            redis_key,
            dpop_per_session,
            routes,
            options,
        })
    }
}
