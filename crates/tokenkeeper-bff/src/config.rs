//! The BFF's configuration file (TOML), validated at start: every error names the offending
//! key and its line, and a key that is unknown or does not apply is an error, never ignored.
//! Every secret can come from the environment instead (`*_env` keys). What the file allows that
//! weakens security is listed in [`Validated::notices`] (`--check-config` prints it).
//!
//! ```toml
//! [bff]
//! listen = "0.0.0.0:8080"
//! public_url = "https://app.example.com"  # the callback is {public_url}{base_path}/callback
//! base_path = "/bff"                      # optional
//! static_dir = "dist"                     # optional: the SPA, with a fallback to index.html
//! session_sliding_secs = 1800             # optional
//! session_max_secs = 43200                # optional
//! insecure_cookies = false                # optional: true only with a loopback public_url
//! trusted_proxies = ["10.0.0.0/8"]        # optional: whose X-Forwarded-* are passed on
//! workers = 2                             # optional: server threads (default: one per core)
//! log_format = "json"                     # optional: text (default) or json, one object a line
//!
//! [oidc]
//! issuer = "https://idp.example.com"      # http only on loopback, or with:
//! allow_insecure_http_provider = false    # optional (reported by --check-config)
//! client_id = "spa"
//! client_secret_env = "BFF_CLIENT_SECRET" # or client_secret = "..."
//! scope = "openid offline_access api"     # optional
//! dpop = "per-session"                    # optional: "none" (default) or "per-session"
//! require_dpop = true                     # optional: refuse Bearer answers to DPoP logins
//!
//! [client]                                # optional: for `client` and `user_or_client` routes
//! client_id = "bff-worker"
//! client_secret_env = "BFF_WORKER_SECRET"
//! scope = "api"
//!
//! [redis]                                 # optional: sessions and tokens shared by a fleet
//! url = "redis://127.0.0.1:6379"
//! prefix = "bff"
//! encryption_key_env = "BFF_REDIS_KEY"    # 32 bytes, base64; or plaintext = true, knowingly
//!
//! [[routes]]
//! path = "/api"
//! upstream = "https://api.internal/v1"
//! token = "user"                          # none | user | client | user_or_client | user_or_none | exchange
//! audience = "https://orders.internal"    # optional, exchange routes: the exchanged token's
//! scope = "api.read"                      # optional: for the route's token(s)
//! resource = "https://api.internal"       # optional: likewise
//! timeout_secs = 30                       # optional
//! methods = ["GET", "POST"]               # optional: TRACE and CONNECT never
//! anti_forgery = "header"                 # header | same-origin (GET/HEAD) | none (token = "none")
//! allow_encoded_slashes = false           # optional: let %2F through
//! pass_cors_headers = false               # optional: let the upstream's Access-Control-* through
//! websocket_max_message_bytes = 1048576   # optional
//! websocket_idle_secs = 300               # optional
//! require_claims = { groups = "admin" }   # optional: else 403 (an array claim: a member)
//! require_scopes = ["orders.read"]        # optional: granted to the user's token, else 403
//!
//! [claims]                                # optional: what {base_path}/user shows
//! include = ["sub", "name", "groups"]     # optional: only these (default: all)
//! exclude = ["email"]                     # optional
//! rename = { preferred_username = "username" }   # optional
//! keep_protocol_claims = false            # optional: iss, aud, exp, iat, nonce… (dropped)
//! userinfo = true                         # optional: merge the provider's userinfo at login
//!
//! [forward_auth]                          # optional: {base_path}/auth for nginx auth_request
//! headers = { sub = "x-auth-request-user", email = "x-auth-request-email" }  # the default: sub
//! access_token_header = "x-auth-request-access-token"   # optional: for trusted upstreams
//! proxy_secret_env = "BFF_FORWARD_AUTH_SECRET"  # with it: the proxy's X-Forward-Auth-Secret
//!
//! [ops]                                   # optional: the operations listener
//! listen = "127.0.0.1:9090"               # /healthz, /readyz, /metrics
//! admin_token_env = "BFF_ADMIN_TOKEN"     # optional: /admin/sessions, Bearer (>= 32 bytes)
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
    /// `[ops]`.
    #[serde(default)]
    pub ops: Option<OpsSection>,
    /// `[claims]`.
    #[serde(default)]
    pub claims: Option<ClaimsSection>,
    /// `[forward_auth]`.
    #[serde(default)]
    pub forward_auth: Option<ForwardAuthSection>,
}

/// `[forward_auth]`: `{base_path}/auth` for a reverse proxy (BF-21; see [`crate::ForwardAuth`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardAuthSection {
    /// The identity headers: `claim = "header"` (default: `sub = "x-auth-request-user"`).
    pub headers: Option<Spanned<std::collections::BTreeMap<String, String>>>,
    /// The header that carries the user's access token to trusted upstreams (default: none).
    /// Needs `proxy_secret_env`.
    pub access_token_header: Option<Spanned<String>>,
    /// The environment variable holding the secret (at least 32 bytes) the reverse proxy sends
    /// in `X-Forward-Auth-Secret` on its subrequests: only then does the answer carry the access
    /// token.
    pub proxy_secret_env: Option<Spanned<String>>,
}

/// `[claims]`: what `{base}/user` shows of the user's claims (BF-19; see [`crate::UserClaims`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimsSection {
    /// Only these claims.
    pub include: Option<Spanned<Vec<String>>>,
    /// Never these claims.
    pub exclude: Option<Spanned<Vec<String>>>,
    /// Claims shown under another name (`claim = "shown as"`).
    pub rename: Option<Spanned<std::collections::BTreeMap<String, String>>>,
    /// Shows `iss`, `aud`, `exp`, `iat`, `nbf`, `nonce`, `at_hash`, `c_hash`, `s_hash`, `azp` too.
    pub keep_protocol_claims: Option<bool>,
    /// Fetches the provider's userinfo at login and merges it (its `sub` must match).
    pub userinfo: Option<bool>,
}

/// `[ops]`: the operations listener (BF-22), off unless this section is there.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpsSection {
    /// Where `/healthz`, `/readyz`, `/metrics` and the administration API are served.
    pub listen: Spanned<String>,
    /// The environment variable holding the administration API's bearer secret (at least 32
    /// bytes). Without it there is no administration API.
    pub admin_token_env: Option<Spanned<String>>,
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
    /// Cookies without `Secure`: only with a loopback `public_url` (SEC-20).
    #[serde(default)]
    pub insecure_cookies: Option<Spanned<bool>>,
    /// The load balancers in front of the BFF whose `X-Forwarded-*` are passed on (CIDRs).
    #[serde(default)]
    pub trusted_proxies: Option<Spanned<Vec<String>>>,
    /// Server threads, each with its own runtime, listener and upstream pools (default: one
    /// per core).
    #[serde(default)]
    pub workers: Option<Spanned<usize>>,
    /// `text` (default) or `json`: one JSON object per log line (BF-25).
    #[serde(default)]
    pub log_format: Option<Spanned<String>>,
}

impl HostSection {
    /// Whether the logs are JSON lines (`log_format = "json"`).
    pub fn json_logs(&self) -> bool {
        self.log_format
            .as_ref()
            .is_some_and(|f| f.get_ref() == "json")
    }
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
    /// Refuses a provider that answers a DPoP-bound login with Bearer tokens (SEC-27).
    #[serde(default)]
    pub require_dpop: Option<Spanned<bool>>,
    /// Allows an `http://` issuer that is not on loopback (SEC-20; `--check-config` reports it).
    #[serde(default)]
    pub allow_insecure_http_provider: Option<Spanned<bool>>,
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
    /// The token's scope (user and/or client token, as the route's token type says).
    #[serde(default)]
    pub scope: Option<Spanned<String>>,
    /// The token's resource (user and/or client token, as the route's token type says).
    #[serde(default)]
    pub resource: Option<Spanned<String>>,
    /// Seconds until the upstream's response headers.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// The methods the route forwards (default: any but TRACE and CONNECT).
    #[serde(default)]
    pub methods: Option<Spanned<Vec<String>>>,
    /// `header` (default: `X-CSRF: 1`), `same-origin` (GET and HEAD requests may show
    /// `Sec-Fetch-Site: same-origin` instead, for `EventSource`), or `none` (routes with
    /// `token = "none"` only).
    #[serde(default)]
    pub anti_forgery: Option<Spanned<String>>,
    /// Lets `%2F` through in forwarded path segments.
    #[serde(default)]
    pub allow_encoded_slashes: Option<bool>,
    /// Passes the upstream's `Access-Control-*` headers to the browser.
    #[serde(default)]
    pub pass_cors_headers: Option<bool>,
    /// The largest WebSocket message relayed (default 1 MiB).
    #[serde(default)]
    pub websocket_max_message_bytes: Option<Spanned<u64>>,
    /// Seconds a WebSocket relay may carry nothing before it is closed (default 300).
    #[serde(default)]
    pub websocket_idle_secs: Option<Spanned<u64>>,
    /// Claims a session must have to use the route (`claim = "value"`; an array claim must
    /// have the value in it).
    #[serde(default)]
    pub require_claims: Option<Spanned<std::collections::BTreeMap<String, String>>>,
    /// Scopes the user's access token must have been granted.
    #[serde(default)]
    pub require_scopes: Option<Spanned<Vec<String>>>,
    /// The audience of a `token = "exchange"` route's exchanged token.
    #[serde(default)]
    pub audience: Option<Spanned<String>>,
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

/// Whether `url`'s host is a loopback address or `localhost`.
fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => {
            name.eq_ignore_ascii_case("localhost")
                || name.to_ascii_lowercase().ends_with(".localhost")
        }
        None => false,
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
    /// Plain-http provider allowed (loopback, or `allow_insecure_http_provider`).
    pub insecure_http_provider: bool,
    /// Refuse Bearer answers to DPoP-bound logins.
    pub require_dpop: bool,
    /// What the configuration allows that weakens security (`--check-config` prints them).
    pub notices: Vec<String>,
    /// The operations listener's address, with `[ops]`.
    pub ops_listen: Option<std::net::SocketAddr>,
    /// The administration API's bearer secret, with `ops.admin_token_env`.
    pub admin_token: Option<String>,
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
            .field("ops_listen", &self.ops_listen)
            .field("admin_api", &self.admin_token.is_some())
            .finish_non_exhaustive()
    }
}

/// `[claims]`: every name 1 to 256 bytes without control characters; no claim both included
/// and excluded; no rename that could never apply (its claim excluded, or not included) or
/// that takes a `bff:` name or another rename's name.
fn validate_claims(
    claims: &ClaimsSection,
    err: &KeyError<'_>,
) -> Result<crate::UserClaims, ConfigFileError> {
    let bad_name =
        |name: &str| name.is_empty() || name.len() > 256 || name.chars().any(char::is_control);
    let list =
        |key: &str, list: &Option<Spanned<Vec<String>>>| -> Result<Vec<String>, ConfigFileError> {
            let Some(list) = list else {
                return Ok(Vec::new());
            };
            if let Some(name) = list.get_ref().iter().find(|n| bad_name(n)) {
                return Err(err(
                    key,
                    Some(list.span()),
                    format!(
                        "{name:?} is not a claim name (1 to 256 characters, no control characters)"
                    ),
                ));
            }
            Ok(list.get_ref().clone())
        };
    let include = list("claims.include", &claims.include)?;
    let exclude = list("claims.exclude", &claims.exclude)?;
    if let Some(name) = exclude.iter().find(|n| include.contains(n)) {
        return Err(err(
            "claims.exclude",
            claims.exclude.as_ref().map(Spanned::span),
            format!("{name:?} is also in claims.include"),
        ));
    }
    let mut rename = Vec::new();
    if let Some(map) = &claims.rename {
        let refuse = |message: String| Err(err("claims.rename", Some(map.span()), message));
        for (from, to) in map.get_ref() {
            if bad_name(from) || bad_name(to) {
                return refuse(format!(
                    "{from:?} = {to:?}: claim names are 1 to 256 characters, no control characters"
                ));
            }
            if to.starts_with("bff:") {
                return refuse(format!(
                    "{to:?}: names starting with bff: are the BFF's own"
                ));
            }
            if exclude.contains(from) || (!include.is_empty() && !include.contains(from)) {
                return refuse(format!(
                    "{from:?} is renamed but never shown (see claims.include and claims.exclude)"
                ));
            }
            if rename
                .iter()
                .any(|(_, other): &(String, String)| other == to)
            {
                return refuse(format!("two claims are renamed to {to:?}"));
            }
            rename.push((from.clone(), to.clone()));
        }
    }
    Ok(crate::UserClaims {
        keep_protocol_claims: claims.keep_protocol_claims.unwrap_or(false),
        userinfo: claims.userinfo.unwrap_or(false),
        include,
        exclude,
        rename,
        hook: None,
    })
}

/// `[forward_auth]`: header names that are header names, that HTTP and the BFF do not use
/// themselves, and that are used once; no access token header when the tokens are DPoP-bound
/// (the BFF keeps their key: an upstream could not use them).
fn validate_forward_auth(
    section: &ForwardAuthSection,
    dpop_per_session: bool,
    err: &KeyError<'_>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<crate::ForwardAuth, ConfigFileError> {
    let mut forward = crate::ForwardAuth::default();
    if let Some(var) = &section.proxy_secret_env {
        let value = env(var.get_ref()).unwrap_or_default();
        if value.len() < tokenkeeper_proxy::ops::ADMIN_SECRET_MIN {
            return Err(err(
                "forward_auth.proxy_secret_env",
                Some(var.span()),
                format!(
                    "the environment variable {} must hold a secret of at least {} bytes",
                    var.get_ref(),
                    tokenkeeper_proxy::ops::ADMIN_SECRET_MIN
                ),
            ));
        }
        forward.proxy_secret = Some(value);
    }
    if let Some(map) = &section.headers {
        forward.headers.clear();
        for (claim, name) in map.get_ref() {
            let refuse = |message: String| err("forward_auth.headers", Some(map.span()), message);
            if claim.is_empty() || claim.chars().any(char::is_control) {
                return Err(refuse(format!("{claim:?} is not a claim name")));
            }
            let header = crate::forward_auth::usable_header(name).map_err(refuse)?;
            if forward.names().any(|n| *n == header) {
                return Err(refuse(format!("{header} is used twice")));
            }
            forward.headers.push((claim.clone(), header));
        }
    }
    if let Some(name) = &section.access_token_header {
        let refuse = |message: String| {
            err(
                "forward_auth.access_token_header",
                Some(name.span()),
                message,
            )
        };
        if dpop_per_session {
            return Err(refuse(
                "the user tokens are DPoP-bound (oidc.dpop): an upstream could not use them".into(),
            ));
        }
        if forward.proxy_secret.is_none() {
            return Err(refuse(
                "needs proxy_secret_env: without it a browser could ask for its own access token"
                    .into(),
            ));
        }
        let header = crate::forward_auth::usable_header(name.get_ref()).map_err(refuse)?;
        if forward.names().any(|n| *n == header) {
            return Err(refuse(format!("{header} is used twice")));
        }
        forward.access_token = Some(header);
    }
    Ok(forward)
}

/// Makes the error of a key: its name, where it is in the file, and why.
type KeyError<'a> = dyn Fn(&str, Option<std::ops::Range<usize>>, String) -> ConfigFileError + 'a;

impl BffConfig {
    /// `[ops]`: its address, and the administration secret from the environment.
    fn validate_ops(
        &self,
        ops: &OpsSection,
        err: &KeyError<'_>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(std::net::SocketAddr, Option<String>), ConfigFileError> {
        let listen: std::net::SocketAddr = ops.listen.get_ref().parse().map_err(|_| {
            err(
                "ops.listen",
                Some(ops.listen.span()),
                "is not an address like 127.0.0.1:9090".into(),
            )
        })?;
        let token = match &ops.admin_token_env {
            Some(var) => {
                let value = env(var.get_ref()).unwrap_or_default();
                if value.len() < tokenkeeper_proxy::ops::ADMIN_SECRET_MIN {
                    return Err(err(
                        "ops.admin_token_env",
                        Some(var.span()),
                        format!(
                            "the environment variable {} must hold a secret of at least {} bytes",
                            var.get_ref(),
                            tokenkeeper_proxy::ops::ADMIN_SECRET_MIN
                        ),
                    ));
                }
                Some(value)
            }
            None => None,
        };
        Ok((listen, token))
    }

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
        let mut notices = Vec::new();
        let insecure = self
            .bff
            .insecure_cookies
            .as_ref()
            .is_some_and(|i| *i.get_ref());
        if insecure && !is_loopback(&public) {
            return Err(err(
                "bff.insecure_cookies",
                self.bff.insecure_cookies.as_ref().map(Spanned::span),
                "is allowed only with a loopback public_url (127.0.0.1, ::1, localhost): session cookies without Secure would cross the network in the clear".into(),
            ));
        }
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
        let Some(issuer_url) = url::Url::parse(issuer)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        else {
            return Err(err(
                "oidc.issuer",
                Some(self.oidc.issuer.span()),
                "is not an absolute http(s) URL".into(),
            ));
        };
        let allow_http = self
            .oidc
            .allow_insecure_http_provider
            .as_ref()
            .is_some_and(|a| *a.get_ref());
        let insecure_http_provider = issuer_url.scheme() == "http";
        if insecure_http_provider && !is_loopback(&issuer_url) {
            if !allow_http {
                return Err(err(
                    "oidc.issuer",
                    Some(self.oidc.issuer.span()),
                    "is plain http on a non-loopback host: tokens and client secrets would cross the network in the clear (use https, or set allow_insecure_http_provider = true knowingly)".into(),
                ));
            }
            notices.push(format!(
                "oidc.allow_insecure_http_provider: the provider {issuer} is plain http; tokens and the client secret cross the network in the clear"
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
        let require_dpop = self
            .oidc
            .require_dpop
            .as_ref()
            .is_some_and(|r| *r.get_ref());
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
        if require_dpop && !dpop_per_session {
            return Err(err(
                "oidc.require_dpop",
                self.oidc.require_dpop.as_ref().map(Spanned::span),
                "needs dpop = \"per-session\" (there is no DPoP key to require)".into(),
            ));
        }
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
                    None if plaintext => {
                        notices.push("redis.plaintext: sessions, tokens and refresh tokens are stored in Redis in the clear".into());
                        None
                    }
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
                        let key = env(var.get_ref())
                            .and_then(|v| tokenkeeper::Encryption::key_from_base64(&v))
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
                Some("exchange") => crate::RouteToken::Exchange,
                Some(other) => {
                    return Err(err(
                        &key("token"),
                        route.token.as_ref().map(Spanned::span),
                        format!(
                        "{other:?} is not one of none, user, client, user_or_client, user_or_none, exchange"
                    ),
                    ))
                }
            };
            if matches!(
                token,
                crate::RouteToken::Client
                    | crate::RouteToken::UserOrClient
                    | crate::RouteToken::Exchange
            ) && self.client.is_none()
            {
                return Err(err(
                    &key("token"),
                    route.token.as_ref().map(Spanned::span),
                    "needs a [client] section".into(),
                ));
            }
            // A token's scope and resource go to every token the route sends: the user's, the
            // client's, or both (UX-01); a route that sends none has no use for them.
            if token == crate::RouteToken::None {
                for (name, span) in [
                    ("scope", route.scope.as_ref().map(Spanned::span)),
                    ("resource", route.resource.as_ref().map(Spanned::span)),
                ] {
                    if let Some(span) = span {
                        return Err(err(
                            &key(name),
                            Some(span),
                            "does not apply to a route with token = \"none\" (it sends no token)"
                                .into(),
                        ));
                    }
                }
            }
            let mut params = tokenkeeper::user::UserTokenParams::default();
            let mut client_params = tokenkeeper::TokenRequestParams::default();
            if let Some(scope) = &route.scope {
                params = params.scope(tokenkeeper::Scope::parse(scope.get_ref()));
                client_params = client_params.scope(tokenkeeper::Scope::parse(scope.get_ref()));
            }
            if let Some(resource) = &route.resource {
                let parsed = tokenkeeper::Resource::parse(resource.get_ref().clone())
                    .map_err(|e| err(&key("resource"), Some(resource.span()), e.to_string()))?;
                params = params.resource(parsed.clone());
                client_params = client_params.resource(parsed);
            }
            let mut api = crate::ApiRoute::new(path.clone(), upstream)
                .token(token)
                .user_params(params)
                .client_params(client_params);
            if let Some(secs) = route.timeout_secs {
                api = api.timeout(Duration::from_secs(secs.max(1)));
            }
            if let Some(methods) = &route.methods {
                let mut parsed = Vec::new();
                for method in methods.get_ref() {
                    let upper = method.to_ascii_uppercase();
                    match upper.parse::<http::Method>() {
                        Ok(m) if !matches!(m, http::Method::TRACE | http::Method::CONNECT) => {
                            parsed.push(m)
                        }
                        Ok(_) => {
                            return Err(err(
                                &key("methods"),
                                Some(methods.span()),
                                format!("{upper} is never proxied (SEC-17)"),
                            ))
                        }
                        Err(_) => {
                            return Err(err(
                                &key("methods"),
                                Some(methods.span()),
                                format!("{method:?} is not an HTTP method"),
                            ))
                        }
                    }
                }
                if parsed.is_empty() {
                    return Err(err(
                        &key("methods"),
                        Some(methods.span()),
                        "lists no method".into(),
                    ));
                }
                api = api.methods(parsed);
            }
            match route.anti_forgery.as_ref().map(|a| (a.get_ref().as_str(), a.span())) {
                None | Some(("header", _)) => {}
                Some(("same-origin", _)) => {
                    api = api.anti_forgery_mode(crate::AntiForgery::SameOriginReads)
                }
                Some(("none", _)) if token == crate::RouteToken::None => {
                    api = api.anti_forgery(false)
                }
                Some(("none", span)) => {
                    return Err(err(
                        &key("anti_forgery"),
                        Some(span),
                        "\"none\" is allowed only on routes with token = \"none\": a route that sends the user's or the BFF's token must not be callable from other sites".into(),
                    ))
                }
                Some((other, span)) => {
                    return Err(err(
                        &key("anti_forgery"),
                        Some(span),
                        format!("{other:?} is not one of header, same-origin, none"),
                    ))
                }
            }
            if let Some(allow) = route.allow_encoded_slashes {
                api = api.allow_encoded_slashes(allow);
            }
            if let Some(pass) = route.pass_cors_headers {
                api = api.pass_cors_headers(pass);
            }
            if let Some(bytes) = &route.websocket_max_message_bytes {
                let value = *bytes.get_ref();
                if !(1..=64 * 1024 * 1024).contains(&value) {
                    return Err(err(
                        &key("websocket_max_message_bytes"),
                        Some(bytes.span()),
                        "must be between 1 and 67108864 (64 MiB)".into(),
                    ));
                }
                api = api.websocket_max_message(value as usize);
            }
            if let Some(secs) = &route.websocket_idle_secs {
                if *secs.get_ref() == 0 {
                    return Err(err(
                        &key("websocket_idle_secs"),
                        Some(secs.span()),
                        "must be greater than zero".into(),
                    ));
                }
                api = api.websocket_idle_timeout(Duration::from_secs(*secs.get_ref()));
            }
            if let Some(audience) = &route.audience {
                if token != crate::RouteToken::Exchange {
                    return Err(err(
                        &key("audience"),
                        Some(audience.span()),
                        "applies to token = \"exchange\" routes only".into(),
                    ));
                }
                if audience.get_ref().is_empty() || audience.get_ref().chars().any(char::is_control)
                {
                    return Err(err(
                        &key("audience"),
                        Some(audience.span()),
                        "is empty or has control characters".into(),
                    ));
                }
                api = api.exchange_audience(audience.get_ref().clone());
            }
            let bad = |text: &str| {
                text.is_empty() || text.len() > 256 || text.chars().any(char::is_control)
            };
            if let Some(claims) = &route.require_claims {
                for (claim, value) in claims.get_ref() {
                    if bad(claim) || bad(value) {
                        return Err(err(
                            &key("require_claims"),
                            Some(claims.span()),
                            format!("{claim:?} = {value:?}: names and values are 1 to 256 characters, no control characters"),
                        ));
                    }
                    api = api.require_claim(claim.clone(), value.clone());
                }
            }
            if let Some(scopes) = &route.require_scopes {
                if matches!(token, crate::RouteToken::None | crate::RouteToken::Client) {
                    return Err(err(
                        &key("require_scopes"),
                        Some(scopes.span()),
                        "needs a route with a user token (the scopes are the user's)".into(),
                    ));
                }
                for scope in scopes.get_ref() {
                    if bad(scope) || scope.contains(' ') {
                        return Err(err(
                            &key("require_scopes"),
                            Some(scopes.span()),
                            format!("{scope:?} is not one scope"),
                        ));
                    }
                    api = api.require_scope(scope.clone());
                }
            }
            routes.push(api);
        }
        let mut options = crate::BffOptions {
            base_path: base_path.clone(),
            insecure_cookies: insecure,
            ..crate::BffOptions::default()
        };
        if let Some(proxies) = &self.bff.trusted_proxies {
            for cidr in proxies.get_ref() {
                let parsed = cidr
                    .parse::<crate::Cidr>()
                    .map_err(|e| err("bff.trusted_proxies", Some(proxies.span()), e))?;
                options.trusted_proxies.push(parsed);
            }
        }
        if let Some(workers) = &self.bff.workers {
            let count = *workers.get_ref();
            if count == 0 || count > 1024 {
                return Err(err(
                    "bff.workers",
                    Some(workers.span()),
                    "must be between 1 and 1024".to_owned(),
                ));
            }
            options.workers = count;
        }
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
        if let Some(format) = &self.bff.log_format {
            if !matches!(format.get_ref().as_str(), "text" | "json") {
                return Err(err(
                    "bff.log_format",
                    Some(format.span()),
                    "is neither \"text\" nor \"json\"".into(),
                ));
            }
        }
        if let Some(claims) = &self.claims {
            options.claims = validate_claims(claims, &err)?;
        }
        if let Some(section) = &self.forward_auth {
            options.forward_auth =
                Some(validate_forward_auth(section, dpop_per_session, &err, env)?);
        }
        let (ops_listen, admin_token) = match &self.ops {
            Some(ops) => {
                let (listen, token) = self.validate_ops(ops, &err, env)?;
                if token.is_some() && !listen.ip().is_loopback() {
                    notices.push(format!(
                        "ops.listen: the administration API listens on {listen}, not loopback; its bearer secret crosses that network in the clear"
                    ));
                }
                (Some(listen), token)
            }
            None => (None, None),
        };
        Ok(Validated {
            listen,
            ops_listen,
            admin_token,
            redirect_uri: format!("{public_origin}{base_path}/callback"),
            public_origin,
            client_secret,
            worker_secret,
            redis_key,
            dpop_per_session,
            routes,
            options,
            insecure_http_provider,
            require_dpop,
            notices,
        })
    }
}
