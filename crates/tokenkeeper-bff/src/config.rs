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
//! # private_key_env = "BFF_CLIENT_KEY"     # private_key_jwt instead of a secret (PEM, PKCS#8),
//! # private_key_alg = "ES256"              # or private_key_file; private_key_kid optional
//! # profile = "fapi2"                      # optional: FAPI 2.0 (needs a private key and
//! #                                        # dpop = "per-session"; refuses what contradicts it)
//! # pushed_authorization = "always"        # optional: when_required (default) | always
//! # request_object = true                  # optional: signed request objects (RFC 9101)
//! # acr_values = "urn:example:mfa"         # optional: every login asks for one of these
//! # max_age_secs = 3600                    # optional: and an authentication this recent
//! # resource = "https://api.example.com"   # optional: the login's resource indicator
//! # tls_client_cert_file = "client.pem"    # optional: mutual TLS with the provider (with
//! # tls_client_key_file = "client.key"     # no secret or key: tls_client_auth), tokens bound
//! # tls_ca_file = "provider-ca.pem"         # to the certificate; a private CA for the provider
//!
//! [client]                                # optional: for `client` and `user_or_client` routes
//! client_id = "bff-worker"
//! client_secret_env = "BFF_WORKER_SECRET"
//! scope = "api"
//!
//! [redis]                                 # optional: sessions and tokens shared by a fleet
//! url = "redis://127.0.0.1:6379"          # one node; or cluster = ["redis://…", …];
//!                                         # or sentinels = ["redis://…:26379", …] and
//!                                         # sentinel_master = "mymaster"
//! replica_ack = 1                         # optional: WAIT for replicas after a rotation
//!                                         # (default 1 with cluster/sentinels, 0 with url)
//! prefix = "bff"
//! encryption_key_env = "BFF_REDIS_KEY"    # 32 bytes, base64; or plaintext = true, knowingly
//!
//! [postgres]                              # optional, instead of [redis]: the same in PostgreSQL
//! url_env = "BFF_DATABASE_URL"            # the URL, from the environment (it holds a password)
//! encryption_key_env = "BFF_DB_KEY"       # 32 bytes, base64; or plaintext = true, knowingly
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
//! [telemetry]                             # optional: OpenTelemetry (feature `otel`)
//! otlp_traces_endpoint = "http://collector:4318/v1/traces"   # OTLP/HTTP, JSON
//! service_name = "tokenkeeper-bff"        # optional
//! sample_ratio = 1.0                      # optional: 0 to 1
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
    /// `[oidc]` (the one frontend's; with `[[frontends]]`, each has its own).
    #[serde(default)]
    pub oidc: Option<OidcSection>,
    /// `[client]`.
    #[serde(default)]
    pub client: Option<ClientSection>,
    /// `[redis]`.
    #[serde(default)]
    pub redis: Option<RedisSection>,
    /// `[postgres]`.
    #[serde(default)]
    pub postgres: Option<PostgresSection>,
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
    /// `[telemetry]`: OpenTelemetry traces over OTLP (BF-23).
    #[serde(default)]
    pub telemetry: Option<TelemetrySection>,
    /// `[[frontends]]`: several frontends in one host (BF-17). With them, `[oidc]`,
    /// `[client]`, `[[routes]]`, `[claims]`, `[forward_auth]` and `bff.public_url`,
    /// `bff.base_path`, `bff.static_dir` belong in each frontend.
    #[serde(default)]
    pub frontends: Vec<FrontendSection>,
}

/// `[telemetry]`: a span per proxied request, exported over OTLP/HTTP (JSON) to a collector;
/// W3C `traceparent` sent upstream, and taken from `bff.trusted_proxies` (BF-23).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySection {
    /// The collector's OTLP/HTTP traces URL (`http://collector:4318/v1/traces`).
    pub otlp_traces_endpoint: Spanned<String>,
    /// `service.name` (default `tokenkeeper-bff`).
    #[serde(default)]
    pub service_name: Option<Spanned<String>>,
    /// The share of traces kept (0 to 1, default 1); a trusted caller's sampling decision wins.
    #[serde(default)]
    pub sample_ratio: Option<Spanned<f64>>,
}

/// `[telemetry]`, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedTelemetry {
    /// The collector's OTLP/HTTP traces URL.
    pub endpoint: String,
    /// `service.name`.
    pub service_name: String,
    /// The share of traces kept.
    pub sample_ratio: f64,
}

impl TelemetrySection {
    /// Checks the section (without the rest of the file: the `tokenkeeper` binary sets up its
    /// exporter before anything else).
    pub fn validate(&self, text: &str) -> Result<ValidatedTelemetry, ConfigFileError> {
        let err = |key: &str, span: std::ops::Range<usize>, message: &str| ConfigFileError {
            key: format!("telemetry.{key}"),
            line: Some(line_of(text, span.start)),
            message: message.to_owned(),
        };
        let endpoint = self.otlp_traces_endpoint.get_ref();
        if !url::Url::parse(endpoint)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        {
            return Err(err(
                "otlp_traces_endpoint",
                self.otlp_traces_endpoint.span(),
                "is not an absolute http(s) URL",
            ));
        }
        let service_name = match &self.service_name {
            Some(name) => {
                let value = name.get_ref();
                if value.is_empty() || value.len() > 256 || value.chars().any(char::is_control) {
                    return Err(err(
                        "service_name",
                        name.span(),
                        "must be 1 to 256 characters, no control characters",
                    ));
                }
                value.clone()
            }
            None => "tokenkeeper-bff".to_owned(),
        };
        let sample_ratio = match &self.sample_ratio {
            Some(ratio) => {
                let value = *ratio.get_ref();
                if !(0.0..=1.0).contains(&value) {
                    return Err(err("sample_ratio", ratio.span(), "must be between 0 and 1"));
                }
                value
            }
            None => 1.0,
        };
        Ok(ValidatedTelemetry {
            endpoint: endpoint.clone(),
            service_name,
            sample_ratio,
        })
    }
}

/// `[[frontends]]`: one frontend of several (BF-17): its own OpenID Connect client, session
/// cookie, routes and static files, matched by host and path prefix (from `public_url`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrontendSection {
    /// Its name (letters, digits, `-`, `_`): in metrics, logs and the session store's keys.
    pub name: Spanned<String>,
    /// Its public URL: the origin of its callback, and its path prefix (`https://a.example.com/admin`).
    pub public_url: Spanned<String>,
    /// The host names it answers (default: `public_url`'s; `["*"]`: any).
    #[serde(default)]
    pub hosts: Option<Spanned<Vec<String>>>,
    /// The management endpoints' base path, under the path prefix (default `/bff`).
    #[serde(default)]
    pub base_path: Option<String>,
    /// Its SPA's files.
    #[serde(default)]
    pub static_dir: Option<Spanned<String>>,
    /// Its session cookie's name (default `bff-<name>`; `__Host-` is put in front of it).
    #[serde(default)]
    pub cookie_name: Option<Spanned<String>>,
    /// `[frontends.oidc]`.
    pub oidc: OidcSection,
    /// `[frontends.client]`.
    #[serde(default)]
    pub client: Option<ClientSection>,
    /// `[[frontends.routes]]`: paths under the path prefix.
    #[serde(default)]
    pub routes: Vec<RouteSection>,
    /// `[frontends.claims]`.
    #[serde(default)]
    pub claims: Option<ClaimsSection>,
    /// `[frontends.forward_auth]`.
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
    /// The public URL (origin) of the BFF (without `[[frontends]]`).
    #[serde(default)]
    pub public_url: Option<Spanned<String>>,
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
    /// `private_key_jwt` instead of a secret: the environment variable holding the client's
    /// private key (PEM, PKCS#8).
    #[serde(default)]
    pub private_key_env: Option<Spanned<String>>,
    /// `private_key_jwt`: a file holding the client's private key (PEM, PKCS#8).
    #[serde(default)]
    pub private_key_file: Option<Spanned<String>>,
    /// The private key's algorithm: `ES256` (default), `ES384`, `PS256`, `RS256` or `EdDSA`.
    #[serde(default)]
    pub private_key_alg: Option<Spanned<String>>,
    /// The private key's `kid`, as registered at the provider.
    #[serde(default)]
    pub private_key_kid: Option<String>,
    /// The login profile: `default` or `fapi2` (PR-03: pushed, sender-constrained,
    /// `private_key_jwt`, `iss` checked, PS256/ES256/EdDSA only, no Bearer fallback; every
    /// contradicting key is refused).
    #[serde(default)]
    pub profile: Option<Spanned<String>>,
    /// When authorization requests are pushed (RFC 9126): `when_required` (the default: when
    /// the provider says so) or `always`.
    #[serde(default)]
    pub pushed_authorization: Option<Spanned<String>>,
    /// Sends the authorization request as a request object signed with the private key
    /// (RFC 9101).
    #[serde(default)]
    pub request_object: Option<Spanned<bool>>,
    /// `acr_values` every login asks for (space-separated); the ID token's `acr` must be one.
    #[serde(default)]
    pub acr_values: Option<Spanned<String>>,
    /// `max_age` every login asks for, in seconds; the ID token's `auth_time` must be within.
    #[serde(default)]
    pub max_age_secs: Option<Spanned<u64>>,
    /// A resource indicator (RFC 8707) the login asks for: the session's tokens are for it.
    #[serde(default)]
    pub resource: Option<Spanned<String>>,
    /// Mutual TLS with the provider (RFC 8705): the client's certificate (PEM). With
    /// `tls_client_key_file` and no secret or private key, the client authenticates with
    /// `tls_client_auth`; in every case its tokens are bound to the certificate.
    #[serde(default)]
    pub tls_client_cert_file: Option<Spanned<String>>,
    /// The certificate's private key (PEM).
    #[serde(default)]
    pub tls_client_key_file: Option<Spanned<String>>,
    /// More roots to trust for the provider's TLS certificate (PEM): a private CA.
    #[serde(default)]
    pub tls_ca_file: Option<Spanned<String>>,
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
    /// The URL of one Redis node.
    #[serde(default)]
    pub url: Option<Spanned<String>>,
    /// The URLs of some nodes of a Redis Cluster (instead of `url`).
    #[serde(default)]
    pub cluster: Option<Spanned<Vec<String>>>,
    /// The URLs of the sentinels that know the master (instead of `url`).
    #[serde(default)]
    pub sentinels: Option<Spanned<Vec<String>>>,
    /// The master's name known to the sentinels.
    #[serde(default)]
    pub sentinel_master: Option<Spanned<String>>,
    /// The environment variable holding the master's password, with sentinels.
    #[serde(default)]
    pub sentinel_master_password_env: Option<Spanned<String>>,
    /// Replicas that must have a rotated session before its tokens are used (`WAIT`). Default
    /// 1 with `cluster` or `sentinels`, 0 with `url`.
    #[serde(default)]
    pub replica_ack: Option<Spanned<u32>>,
    /// How long to wait for them (ms). Default 100.
    #[serde(default)]
    pub replica_ack_timeout_ms: Option<Spanned<u64>>,
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

/// `[postgres]`: sessions and tokens in PostgreSQL (instead of `[redis]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSection {
    /// The environment variable holding the URL (it holds a password).
    pub url_env: Spanned<String>,
    /// The environment variable holding the 32-byte encryption key (base64).
    #[serde(default)]
    pub encryption_key_env: Option<Spanned<String>>,
    /// Stores sessions and tokens in the clear: only when said so.
    #[serde(default)]
    pub plaintext: Option<Spanned<bool>>,
}

/// `[postgres]`, resolved.
#[derive(Clone)]
pub struct ValidatedPostgres {
    /// The URL (a secret: it may hold a password).
    pub url: String,
    /// The encryption key (`None`: `plaintext = true`).
    pub key: Option<[u8; 32]>,
}

impl fmt::Debug for ValidatedPostgres {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValidatedPostgres")
            .field("encrypted", &self.key.is_some())
            .finish_non_exhaustive()
    }
}

/// The encryption key of a shared store's section (`redis`, `postgres`): from the variable
/// `encryption_key_env` names, or none with `plaintext = true` (a notice), never both, never
/// neither.
fn store_key(
    section: &str,
    encryption_key_env: Option<&Spanned<String>>,
    plaintext: Option<&Spanned<bool>>,
    err: &KeyError<'_>,
    env: &dyn Fn(&str) -> Option<String>,
    notices: &mut Vec<String>,
) -> Result<Option<[u8; 32]>, ConfigFileError> {
    let is_plaintext = plaintext.is_some_and(|p| *p.get_ref());
    match encryption_key_env {
        None if is_plaintext => {
            notices.push(format!(
                "{section}.plaintext: sessions, tokens and refresh tokens are stored in the clear"
            ));
            Ok(None)
        }
        None => Err(err(
            &format!("{section}.encryption_key_env"),
            None,
            "is missing: the store would hold refresh tokens, ID tokens and sessions in the clear; name the environment variable holding a 32-byte key (base64), or set plaintext = true to store them in plaintext knowingly".into(),
        )),
        Some(var) if is_plaintext => Err(err(
            &format!("{section}.plaintext"),
            plaintext.map(Spanned::span),
            format!(
                "is true, but encryption_key_env names {}: choose one",
                var.get_ref()
            ),
        )),
        Some(var) => env(var.get_ref())
            .and_then(|v| tokenkeeper::Encryption::key_from_base64(&v))
            .map(Some)
            .ok_or_else(|| {
                err(
                    &format!("{section}.encryption_key_env"),
                    Some(var.span()),
                    format!(
                        "the environment variable {} must hold 32 bytes in base64",
                        var.get_ref()
                    ),
                )
            }),
    }
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
    // Per array (as written: `frontends.routes`), its current element; per array under its
    // resolved parent (`frontends[1].routes`), how many elements so far.
    let mut current: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut counts: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    // `frontends.oidc` → `frontends[1].oidc`, under the arrays' current elements.
    let resolve = |name: &str, current: &std::collections::HashMap<String, usize>| {
        let mut resolved = String::new();
        let mut raw = String::new();
        for part in name.split('.').map(str::trim) {
            if !raw.is_empty() {
                raw.push('.');
                resolved.push('.');
            }
            raw.push_str(part);
            resolved.push_str(part);
            if let Some(i) = current.get(&raw) {
                resolved.push_str(&format!("[{i}]"));
            }
        }
        resolved
    };
    for header in text[..line_start].lines().map(str::trim) {
        if let Some(array) = header.strip_prefix("[[").and_then(|h| h.strip_suffix("]]")) {
            let array = array.trim();
            let (parent, last) = match array.rsplit_once('.') {
                Some((parent, last)) => (resolve(parent, &current), last.trim()),
                None => (String::new(), array),
            };
            let path = if parent.is_empty() {
                last.to_owned()
            } else {
                format!("{parent}.{last}")
            };
            let n = counts.entry(path.clone()).or_insert(0);
            table = format!("{path}[{n}]");
            current.insert(array.to_owned(), *n);
            *n += 1;
        } else if let Some(plain) = header.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            table = resolve(plain.trim(), &current);
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

/// What [`BffConfig::validate`] resolves: the parts to build the host from. `Debug` leaves the
/// secrets and the keys out.
#[derive(Clone)]
pub struct Validated {
    /// The listen address.
    pub listen: std::net::SocketAddr,
    /// Server threads.
    pub workers: usize,
    /// The frontends: one (named `default`) for a file without `[[frontends]]`.
    pub frontends: Vec<ValidatedFrontend>,
    /// `[redis]`, when there is one.
    pub redis: Option<ValidatedRedis>,
    /// `[postgres]`, when there is one.
    pub postgres: Option<ValidatedPostgres>,
    /// What the configuration allows that weakens security (`--check-config` prints them).
    pub notices: Vec<String>,
    /// The operations listener's address, with `[ops]`.
    pub ops_listen: Option<std::net::SocketAddr>,
    /// The administration API's bearer secret, with `ops.admin_token_env`.
    pub admin_token: Option<String>,
    /// `log_format = "json"`.
    pub json_logs: bool,
    /// `[telemetry]`.
    pub telemetry: Option<ValidatedTelemetry>,
}

impl fmt::Debug for Validated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Validated")
            .field("listen", &self.listen)
            .field("workers", &self.workers)
            .field("frontends", &self.frontends)
            .field("redis", &self.redis)
            .field("postgres", &self.postgres)
            .field("ops_listen", &self.ops_listen)
            .field("admin_api", &self.admin_token.is_some())
            .finish_non_exhaustive()
    }
}

/// Where `[redis]` says Redis is.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisAddress {
    /// One node.
    Node(String),
    /// Some nodes of a Redis Cluster.
    Cluster(Vec<String>),
    /// A master known to sentinels.
    Sentinel {
        /// The sentinels' URLs.
        sentinels: Vec<String>,
        /// The master's name.
        master: String,
        /// The master's password.
        password: Option<String>,
    },
}

impl fmt::Debug for RedisAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // URLs may hold passwords: only their number.
        match self {
            Self::Node(_) => f.write_str("Node"),
            Self::Cluster(nodes) => write!(f, "Cluster({} nodes)", nodes.len()),
            Self::Sentinel {
                sentinels, master, ..
            } => write!(f, "Sentinel({} sentinels, {master:?})", sentinels.len()),
        }
    }
}

impl RedisSection {
    /// Where Redis is: exactly one of `url`, `cluster` or `sentinels` (with `sentinel_master`),
    /// each URL a `redis://` or `rediss://` URL.
    fn address(
        &self,
        err: &KeyError<'_>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<RedisAddress, ConfigFileError> {
        let urls = |key: &str, list: &Spanned<Vec<String>>| {
            if list.get_ref().is_empty() {
                return Err(err(
                    key,
                    Some(list.span()),
                    "is empty: name at least one URL".into(),
                ));
            }
            if let Some(bad) = list.get_ref().iter().position(|u| !is_redis_url(u)) {
                return Err(err(
                    &format!("{key}[{bad}]"),
                    Some(list.span()),
                    "is not a redis:// or rediss:// URL".into(),
                ));
            }
            Ok(list.get_ref().clone())
        };
        let address = match (&self.url, &self.cluster, &self.sentinels) {
            (Some(url), None, None) => {
                if !is_redis_url(url.get_ref()) {
                    return Err(err(
                        "redis.url",
                        Some(url.span()),
                        "is not a redis:// or rediss:// URL".into(),
                    ));
                }
                RedisAddress::Node(url.get_ref().clone())
            }
            (None, Some(cluster), None) => RedisAddress::Cluster(urls("redis.cluster", cluster)?),
            (None, None, Some(sentinels)) => {
                let sentinels = urls("redis.sentinels", sentinels)?;
                let master = self
                    .sentinel_master
                    .as_ref()
                    .filter(|m| !m.get_ref().is_empty())
                    .ok_or_else(|| {
                        err(
                            "redis.sentinel_master",
                            None,
                            "is missing: name the master the sentinels watch".into(),
                        )
                    })?;
                let password = match &self.sentinel_master_password_env {
                    Some(var) => Some(env(var.get_ref()).ok_or_else(|| {
                        err(
                            "redis.sentinel_master_password_env",
                            Some(var.span()),
                            format!("the environment variable {} is not set", var.get_ref()),
                        )
                    })?),
                    None => None,
                };
                RedisAddress::Sentinel {
                    sentinels,
                    master: master.get_ref().clone(),
                    password,
                }
            }
            (None, None, None) => {
                return Err(err(
                    "redis.url",
                    None,
                    "is missing: give url (one node), cluster or sentinels".into(),
                ))
            }
            _ => {
                return Err(err(
                    "redis",
                    None,
                    "give one of url, cluster and sentinels".into(),
                ))
            }
        };
        let sentinel_only = [
            (
                "redis.sentinel_master",
                self.sentinel_master.as_ref().map(Spanned::span),
            ),
            (
                "redis.sentinel_master_password_env",
                self.sentinel_master_password_env
                    .as_ref()
                    .map(Spanned::span),
            ),
        ];
        if !matches!(address, RedisAddress::Sentinel { .. }) {
            if let Some((key, span)) = sentinel_only.into_iter().find(|(_, s)| s.is_some()) {
                return Err(err(key, span, "is for sentinels only".into()));
            }
        }
        Ok(address)
    }

    /// `replica_ack` and its timeout: `None` for 0.
    fn replica_ack(
        &self,
        address: &RedisAddress,
        err: &KeyError<'_>,
    ) -> Result<Option<(u32, std::time::Duration)>, ConfigFileError> {
        let default = u32::from(!matches!(address, RedisAddress::Node(_)));
        let replicas = self.replica_ack.as_ref().map_or(default, |r| *r.get_ref());
        let timeout = match &self.replica_ack_timeout_ms {
            Some(ms) if *ms.get_ref() == 0 || *ms.get_ref() > 10_000 => {
                return Err(err(
                    "redis.replica_ack_timeout_ms",
                    Some(ms.span()),
                    "must be between 1 and 10000".into(),
                ))
            }
            Some(ms) => std::time::Duration::from_millis(*ms.get_ref()),
            None => std::time::Duration::from_millis(100),
        };
        Ok((replicas > 0).then_some((replicas, timeout)))
    }
}

fn is_redis_url(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "redis" | "rediss"))
}

/// `[redis]`, resolved.
#[derive(Clone)]
pub struct ValidatedRedis {
    /// Where Redis is.
    pub address: RedisAddress,
    /// Replicas that must have a rotated session, and how long to wait for them.
    pub replica_ack: Option<(u32, std::time::Duration)>,
    /// The key prefix.
    pub prefix: String,
    /// The encryption key (`None`: `plaintext = true`).
    pub key: Option<[u8; 32]>,
}

impl fmt::Debug for ValidatedRedis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValidatedRedis")
            .field("address", &self.address)
            .field("replica_ack", &self.replica_ack)
            .field("prefix", &self.prefix)
            .field("encrypted", &self.key.is_some())
            .finish_non_exhaustive()
    }
}

/// The `private_key_jwt` key of a frontend's client.
#[derive(Clone)]
pub struct ClientKey {
    /// The key (PEM, PKCS#8).
    pub pem: String,
    /// Its algorithm.
    pub alg: tokenkeeper::dpop::DpopAlgorithm,
    /// Its `kid`.
    pub kid: Option<String>,
}

/// One frontend, resolved.
#[derive(Clone)]
pub struct ValidatedFrontend {
    /// Its name (`default` without `[[frontends]]`).
    pub name: String,
    /// The host names it answers, lower case (empty: any).
    pub hosts: Vec<String>,
    /// Its path prefix (`""`, or `/admin`).
    pub prefix: String,
    /// Its public origin (`https://app.example.com`).
    pub public_origin: String,
    /// Its callback URL.
    pub redirect_uri: String,
    /// The provider.
    pub issuer: String,
    /// The OpenID Connect client.
    pub client_id: String,
    /// The client secret (empty with a private key).
    pub client_secret: String,
    /// The client's `private_key_jwt` key, instead of a secret.
    pub client_key: Option<ClientKey>,
    /// The login's scopes.
    pub scope: Option<String>,
    /// The worker client (`[client]`): id, secret and scope.
    pub worker: Option<(String, String, Option<String>)>,
    /// Per-session DPoP.
    pub dpop_per_session: bool,
    /// Refuse Bearer answers to DPoP-bound logins.
    pub require_dpop: bool,
    /// The login profile (PR-03).
    pub profile: tokenkeeper::protocol::profile::Profile,
    /// When logins are pushed (RFC 9126), when set.
    pub pushed_authorization: Option<tokenkeeper::protocol::profile::PushedAuthorization>,
    /// Signed request objects (RFC 9101).
    pub request_object: bool,
    /// What every login asks of the user's authentication (PR-04).
    pub requirements: tokenkeeper::protocol::step_up::AuthenticationRequirements,
    /// The resource indicator the login asks for.
    pub resource: Option<tokenkeeper::Resource>,
    /// Mutual TLS with the provider: certificate, key and extra roots (files, read at start).
    pub client_tls: Option<ClientTls>,
    /// Plain-http provider allowed (loopback, or `allow_insecure_http_provider`).
    pub insecure_http_provider: bool,
    /// The BFF's options, with its routes (paths under the prefix).
    pub options: crate::BffOptions,
    /// Its SPA's files.
    pub static_dir: Option<std::path::PathBuf>,
    /// The names its sessions live under in the shared store: `None`, the store's own (the
    /// file's one frontend, as before frontends existed); `Some(name)`, the frontend's.
    pub session_namespace: Option<String>,
    /// A digest of everything above, secrets included: equal digests, same frontend (a
    /// reload keeps such a frontend as it runs, sessions, pools and all).
    pub fingerprint: [u8; 32],
}

impl fmt::Debug for ValidatedFrontend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValidatedFrontend")
            .field("name", &self.name)
            .field("hosts", &self.hosts)
            .field("prefix", &self.prefix)
            .field("public_origin", &self.public_origin)
            .field("redirect_uri", &self.redirect_uri)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field(
                "client_key",
                &self
                    .client_key
                    .as_ref()
                    .map(|k| (k.alg.as_str(), k.kid.clone())),
            )
            .field("scope", &self.scope)
            .field(
                "worker",
                &self.worker.as_ref().map(|(id, _, scope)| (id, scope)),
            )
            .field("dpop_per_session", &self.dpop_per_session)
            .field("require_dpop", &self.require_dpop)
            .field("profile", &self.profile)
            .field("pushed_authorization", &self.pushed_authorization)
            .field("request_object", &self.request_object)
            .field("requirements", &self.requirements)
            .field("resource", &self.resource)
            .field("client_tls", &self.client_tls)
            .field("insecure_http_provider", &self.insecure_http_provider)
            .field("options", &self.options)
            .field("static_dir", &self.static_dir)
            .field("session_namespace", &self.session_namespace)
            .finish_non_exhaustive()
    }
}

impl ValidatedFrontend {
    /// The frontend's routes.
    pub fn routes(&self) -> &[crate::ApiRoute] {
        &self.options.routes
    }

    fn digest(&self) -> [u8; 32] {
        use sha2::Digest as _;
        let mut hash = sha2::Sha256::new();
        hash.update(format!("{self:?}").as_bytes());
        for secret in [
            Some(self.client_secret.as_str()),
            self.client_key.as_ref().map(|k| k.pem.as_str()),
            self.worker.as_ref().map(|(_, secret, _)| secret.as_str()),
            self.options
                .forward_auth
                .as_ref()
                .and_then(|f| f.proxy_secret.as_deref()),
        ] {
            let secret = secret.unwrap_or_default();
            hash.update((secret.len() as u64).to_le_bytes());
            hash.update(secret.as_bytes());
        }
        hash.finalize().into()
    }
}

/// `[oidc]`'s mutual TLS with the provider: the files, checked at start (they are read again
/// when the frontend is built, so a renewed certificate is picked up by a reload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTls {
    /// The client certificate (PEM).
    pub cert_file: std::path::PathBuf,
    /// Its private key (PEM).
    pub key_file: std::path::PathBuf,
    /// More roots for the provider's certificate (PEM).
    pub ca_file: Option<std::path::PathBuf>,
}

/// Reads `tls_client_cert_file`, `tls_client_key_file` and `tls_ca_file`: both of the first two
/// or neither, each a file that makes a TLS identity.
fn validate_client_tls(
    oidc: &OidcSection,
    err: &KeyError<'_>,
) -> Result<Option<ClientTls>, ConfigFileError> {
    let (cert, key) = match (&oidc.tls_client_cert_file, &oidc.tls_client_key_file) {
        (None, None) => {
            if let Some(ca) = &oidc.tls_ca_file {
                return Err(err(
                    "oidc.tls_ca_file",
                    Some(ca.span()),
                    "applies only with tls_client_cert_file and tls_client_key_file".into(),
                ));
            }
            return Ok(None);
        }
        (Some(cert), Some(key)) => (cert, key),
        (Some(cert), None) => {
            return Err(err(
                "oidc.tls_client_key_file",
                Some(cert.span()),
                "is missing: tls_client_cert_file needs its key".into(),
            ))
        }
        (None, Some(key)) => {
            return Err(err(
                "oidc.tls_client_cert_file",
                Some(key.span()),
                "is missing: tls_client_key_file needs its certificate".into(),
            ))
        }
    };
    let tls = ClientTls {
        cert_file: cert.get_ref().into(),
        key_file: key.get_ref().into(),
        ca_file: oidc.tls_ca_file.as_ref().map(|c| c.get_ref().into()),
    };
    let identity = tokenkeeper::mtls::MtlsIdentity::from_pem_files(&tls.cert_file, &tls.key_file)
        .map_err(|e| {
        err(
            "oidc.tls_client_cert_file",
            Some(cert.span()),
            e.to_string(),
        )
    })?;
    if let (Some(ca), Some(span)) = (&tls.ca_file, oidc.tls_ca_file.as_ref().map(Spanned::span)) {
        let pem = std::fs::read(ca).map_err(|e| {
            err(
                "oidc.tls_ca_file",
                Some(span.clone()),
                format!("cannot be read: {}", e.kind()),
            )
        })?;
        identity
            .add_root_certificates(&pem)
            .map_err(|e| err("oidc.tls_ca_file", Some(span), e.to_string()))?;
    }
    Ok(Some(tls))
}

/// The login protocol of `[oidc]`, checked.
struct LoginProtocol {
    profile: tokenkeeper::protocol::profile::Profile,
    pushed: Option<tokenkeeper::protocol::profile::PushedAuthorization>,
    request_object: bool,
    requirements: tokenkeeper::protocol::step_up::AuthenticationRequirements,
}

/// Reads `profile`, `pushed_authorization`, `request_object`, `acr_values` and
/// `max_age_secs`; under `profile = "fapi2"`, refuses every key that contradicts it, naming it.
fn validate_login_protocol(
    oidc: &OidcSection,
    client_key: Option<&ClientKey>,
    client_tls: bool,
    dpop_per_session: bool,
    err: &KeyError<'_>,
) -> Result<LoginProtocol, ConfigFileError> {
    use tokenkeeper::protocol::profile::{Profile, PushedAuthorization, FAPI2_ALGORITHMS};
    let profile = match &oidc.profile {
        None => Profile::Default,
        Some(value) => Profile::parse(value.get_ref())
            .map_err(|e| err("oidc.profile", Some(value.span()), e.reason.clone()))?,
    };
    let pushed = match &oidc.pushed_authorization {
        None => None,
        Some(value) => Some(PushedAuthorization::parse(value.get_ref()).map_err(|e| {
            err(
                "oidc.pushed_authorization",
                Some(value.span()),
                e.reason.clone(),
            )
        })?),
    };
    let request_object = oidc.request_object.as_ref().is_some_and(|r| *r.get_ref());
    if request_object && client_key.is_none() {
        return Err(err(
            "oidc.request_object",
            oidc.request_object.as_ref().map(Spanned::span),
            "signs with the client's private key: give private_key_env or private_key_file".into(),
        ));
    }
    let mut requirements = tokenkeeper::protocol::step_up::AuthenticationRequirements::new();
    if let Some(values) = &oidc.acr_values {
        requirements = requirements
            .with_acr_values(values.get_ref())
            .map_err(|e| {
                let reason = match &e {
                    tokenkeeper::Error::Config(c) => c.reason.clone(),
                    other => other.to_string(),
                };
                err("oidc.acr_values", Some(values.span()), reason)
            })?;
    }
    if let Some(max_age) = &oidc.max_age_secs {
        requirements =
            requirements.with_max_age(std::time::Duration::from_secs(*max_age.get_ref()));
    }
    if profile == Profile::Fapi2 {
        let contradiction = |key: &str, span: Option<std::ops::Range<usize>>, why: &str| {
            Err(err(
                key,
                span,
                format!("contradicts profile = \"fapi2\": {why}"),
            ))
        };
        let secret_given = oidc.client_secret.is_some() || oidc.client_secret_env.is_some();
        if secret_given || (client_key.is_none() && !client_tls) {
            let span = oidc.client_secret_env.as_ref().map(Spanned::span);
            return contradiction(
                if span.is_some() { "oidc.client_secret_env" } else { "oidc.client_secret" },
                span,
                "FAPI 2.0 authenticates with private_key_jwt or mutual TLS (give private_key_env or private_key_file, or tls_client_cert_file and tls_client_key_file)",
            );
        }
        if let Some(key) = client_key.filter(|k| !FAPI2_ALGORITHMS.contains(&k.alg.as_str())) {
            let _ = key;
            return contradiction(
                "oidc.private_key_alg",
                oidc.private_key_alg.as_ref().map(Spanned::span),
                "FAPI 2.0 allows PS256, ES256 or EdDSA only",
            );
        }
        if !dpop_per_session && !client_tls {
            return contradiction(
                "oidc.dpop",
                oidc.dpop.as_ref().map(Spanned::span),
                "FAPI 2.0 needs sender-constrained tokens: dpop = \"per-session\", or a client certificate (tls_client_cert_file)",
            );
        }
        if let Some(require) = oidc.require_dpop.as_ref().filter(|r| !*r.get_ref()) {
            return contradiction(
                "oidc.require_dpop",
                Some(require.span()),
                "FAPI 2.0 has no Bearer fallback",
            );
        }
        if pushed == Some(PushedAuthorization::WhenRequired) {
            return contradiction(
                "oidc.pushed_authorization",
                oidc.pushed_authorization.as_ref().map(Spanned::span),
                "FAPI 2.0 pushes every authorization request",
            );
        }
        if let Some(insecure) = oidc
            .allow_insecure_http_provider
            .as_ref()
            .filter(|a| *a.get_ref())
        {
            return contradiction(
                "oidc.allow_insecure_http_provider",
                Some(insecure.span()),
                "FAPI 2.0 talks to its provider over TLS (plain http stays allowed on loopback only, for development)",
            );
        }
    }
    Ok(LoginProtocol {
        profile,
        pushed,
        request_object,
        requirements,
    })
}

/// What one frontend's configuration is made of: `[[frontends]]` entry, or the top-level
/// sections of a file without them.
struct FrontendView<'a> {
    /// `None`: the file's one frontend (`default`).
    name: Option<&'a Spanned<String>>,
    /// What its keys start with: `""` or `frontends[2].`.
    key: String,
    /// What `public_url`, `base_path` and `static_dir` start with: `bff.` or `frontends[2].`.
    host_key: String,
    public_url: Option<&'a Spanned<String>>,
    hosts: Option<&'a Spanned<Vec<String>>>,
    base_path: Option<&'a String>,
    static_dir: Option<&'a Spanned<String>>,
    cookie_name: Option<&'a Spanned<String>>,
    oidc: Option<&'a OidcSection>,
    client: Option<&'a ClientSection>,
    routes: &'a [RouteSection],
    claims: Option<&'a ClaimsSection>,
    forward_auth: Option<&'a ForwardAuthSection>,
}

/// Whether `name` is 1 to 64 letters, digits, `-` or `_`.
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
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
        let mut notices = Vec::new();
        let mut shared = self.shared_options(&err)?;
        let telemetry = match &self.telemetry {
            Some(section) => {
                #[cfg(not(feature = "otel"))]
                return Err(err(
                    "telemetry",
                    Some(section.otlp_traces_endpoint.span()),
                    "this build has no OpenTelemetry (feature `otel`)".into(),
                ));
                #[cfg(feature = "otel")]
                Some(section.validate(text)?)
            }
            None => None,
        };
        shared.trace_context = telemetry.is_some();
        if let (Some(_), Some(postgres)) = (&self.redis, &self.postgres) {
            return Err(err(
                "postgres",
                Some(postgres.url_env.span()),
                "and [redis] are both given: the fleet's sessions live in one of them".into(),
            ));
        }
        let redis_key = match &self.redis {
            Some(redis) => store_key(
                "redis",
                redis.encryption_key_env.as_ref(),
                redis.plaintext.as_ref(),
                &err,
                env,
                &mut notices,
            )?,
            None => None,
        };
        let postgres = match &self.postgres {
            Some(section) => Some(ValidatedPostgres {
                url: env(section.url_env.get_ref()).ok_or_else(|| {
                    err(
                        "postgres.url_env",
                        Some(section.url_env.span()),
                        format!(
                            "the environment variable {} is not set",
                            section.url_env.get_ref()
                        ),
                    )
                })?,
                key: store_key(
                    "postgres",
                    section.encryption_key_env.as_ref(),
                    section.plaintext.as_ref(),
                    &err,
                    env,
                    &mut notices,
                )?,
            }),
            None => None,
        };
        let redis = match (&self.redis, redis_key) {
            (Some(section), key) => {
                let address = section.address(&err, env)?;
                Some(ValidatedRedis {
                    replica_ack: section.replica_ack(&address, &err)?,
                    address,
                    prefix: section
                        .prefix
                        .clone()
                        .unwrap_or_else(|| "tokenkeeper-bff".into()),
                    key,
                })
            }
            (None, _) => None,
        };
        let mut frontends = Vec::new();
        for view in self.frontend_views(&err)? {
            frontends.push(self.validate_frontend(&view, &shared, &err, env, &mut notices)?);
        }
        // Two frontends that answer one host need distinct prefixes and cookie names.
        for (i, a) in frontends.iter().enumerate() {
            for b in &frontends[..i] {
                let key = |name: &str| format!("frontends[{i}].{name}");
                let span = |f: fn(&FrontendSection) -> Option<std::ops::Range<usize>>| {
                    self.frontends.get(i).and_then(f)
                };
                if a.name == b.name {
                    return Err(err(
                        &key("name"),
                        span(|f| Some(f.name.span())),
                        format!("{:?} is the name of another frontend", a.name),
                    ));
                }
                let shared_host = a.hosts.is_empty()
                    || b.hosts.is_empty()
                    || a.hosts.iter().any(|h| b.hosts.contains(h));
                if shared_host && a.prefix == b.prefix {
                    return Err(err(
                        &key("public_url"),
                        span(|f| Some(f.public_url.span())),
                        format!(
                            "answers the same host and path as frontend {:?}: give it another host or path prefix",
                            b.name
                        ),
                    ));
                }
                if shared_host && a.options.cookie_name == b.options.cookie_name {
                    return Err(err(
                        &key("cookie_name"),
                        span(|f| f.cookie_name.as_ref().map(Spanned::span)),
                        format!(
                            "{:?} is frontend {:?}'s session cookie too, on a host both answer",
                            a.options.cookie_name, b.name
                        ),
                    ));
                }
            }
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
            workers: shared.workers,
            frontends,
            redis,
            postgres,
            notices,
            ops_listen,
            admin_token,
            json_logs: self.bff.json_logs(),
            telemetry,
        })
    }

    /// `[bff]`'s settings that every frontend shares: sessions' lifetimes, trusted proxies,
    /// workers, insecure cookies; and the log format.
    fn shared_options(&self, err: &KeyError<'_>) -> Result<crate::BffOptions, ConfigFileError> {
        let mut options = crate::BffOptions {
            insecure_cookies: self
                .bff
                .insecure_cookies
                .as_ref()
                .is_some_and(|i| *i.get_ref()),
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
        if let Some(format) = &self.bff.log_format {
            if !matches!(format.get_ref().as_str(), "text" | "json") {
                return Err(err(
                    "bff.log_format",
                    Some(format.span()),
                    "is neither \"text\" nor \"json\"".into(),
                ));
            }
        }
        Ok(options)
    }

    /// The frontends: each `[[frontends]]` entry, or — without any — the file's top-level
    /// sections as the one frontend. Mixing both is refused, naming the top-level key.
    fn frontend_views(&self, err: &KeyError<'_>) -> Result<Vec<FrontendView<'_>>, ConfigFileError> {
        if self.frontends.is_empty() {
            return Ok(vec![FrontendView {
                name: None,
                key: String::new(),
                host_key: "bff.".into(),
                public_url: self.bff.public_url.as_ref(),
                hosts: None,
                base_path: self.bff.base_path.as_ref(),
                static_dir: self.bff.static_dir.as_ref(),
                cookie_name: None,
                oidc: self.oidc.as_ref(),
                client: self.client.as_ref(),
                routes: &self.routes,
                claims: self.claims.as_ref(),
                forward_auth: self.forward_auth.as_ref(),
            }]);
        }
        let misplaced = [
            (
                "bff.public_url",
                self.bff.public_url.as_ref().map(Spanned::span),
                self.bff.public_url.is_some(),
            ),
            ("bff.base_path", None, self.bff.base_path.is_some()),
            (
                "bff.static_dir",
                self.bff.static_dir.as_ref().map(Spanned::span),
                self.bff.static_dir.is_some(),
            ),
            (
                "oidc",
                self.oidc.as_ref().map(|o| o.issuer.span()),
                self.oidc.is_some(),
            ),
            ("client", None, self.client.is_some()),
            (
                "routes",
                self.routes.first().map(|r| r.path.span()),
                !self.routes.is_empty(),
            ),
            ("claims", None, self.claims.is_some()),
            ("forward_auth", None, self.forward_auth.is_some()),
        ];
        for (key, span, present) in misplaced {
            if present {
                return Err(err(
                    key,
                    span,
                    "belongs in each [[frontends]] entry when the file has frontends".into(),
                ));
            }
        }
        Ok(self
            .frontends
            .iter()
            .enumerate()
            .map(|(i, f)| FrontendView {
                name: Some(&f.name),
                key: format!("frontends[{i}]."),
                host_key: format!("frontends[{i}]."),
                public_url: Some(&f.public_url),
                hosts: f.hosts.as_ref(),
                base_path: f.base_path.as_ref(),
                static_dir: f.static_dir.as_ref(),
                cookie_name: f.cookie_name.as_ref(),
                oidc: Some(&f.oidc),
                client: f.client.as_ref(),
                routes: &f.routes,
                claims: f.claims.as_ref(),
                forward_auth: f.forward_auth.as_ref(),
            })
            .collect())
    }

    /// One frontend: its URL, match, client, routes, claims and forward auth.
    fn validate_frontend(
        &self,
        view: &FrontendView<'_>,
        shared: &crate::BffOptions,
        outer: &KeyError<'_>,
        env: &dyn Fn(&str) -> Option<String>,
        notices: &mut Vec<String>,
    ) -> Result<ValidatedFrontend, ConfigFileError> {
        let err = |key: &str, span: Option<std::ops::Range<usize>>, message: String| {
            outer(&format!("{}{key}", view.key), span, message)
        };
        let host_key = |name: &str| format!("{}{name}", view.host_key);
        let name = match view.name {
            None => "default".to_owned(),
            Some(name) => {
                if !plain_name(name.get_ref()) {
                    return Err(err(
                        "name",
                        Some(name.span()),
                        "must be 1 to 64 letters, digits, '-' or '_'".into(),
                    ));
                }
                name.get_ref().clone()
            }
        };
        let Some(public_url) = view.public_url else {
            return Err(outer(&host_key("public_url"), None, "is missing".into()));
        };
        let public = url::Url::parse(public_url.get_ref())
            .ok()
            .filter(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host().is_some()
                    && u.query().is_none()
                    && u.fragment().is_none()
                    && u.username().is_empty()
                    && u.password().is_none()
            })
            .ok_or_else(|| {
                outer(
                    &host_key("public_url"),
                    Some(public_url.span()),
                    "is not an absolute http(s) URL without query, fragment or credentials".into(),
                )
            })?;
        let insecure = shared.insecure_cookies;
        if insecure && !is_loopback(&public) {
            return Err(outer(
                "bff.insecure_cookies",
                self.bff.insecure_cookies.as_ref().map(Spanned::span),
                format!("is allowed only with a loopback public_url (127.0.0.1, ::1, localhost), and {} is not: session cookies without Secure would cross the network in the clear", public_url.get_ref()),
            ));
        }
        if public.scheme() == "http" && !insecure {
            return Err(outer(
                &host_key("public_url"),
                Some(public_url.span()),
                "is plain http: session cookies are Secure (set insecure_cookies = true for loopback development)".into(),
            ));
        }
        let public_origin = public.origin().ascii_serialization();
        // The path prefix: only for a frontend of several (the one frontend's public_url is an
        // origin, as it always was).
        let prefix = match view.name {
            Some(_) => public.path().trim_end_matches('/').to_owned(),
            None => String::new(),
        };
        if prefix.contains(['%', '{', '}', '*', ';']) || prefix.contains("//") {
            return Err(outer(
                &host_key("public_url"),
                Some(public_url.span()),
                "has a path that cannot be a plain path prefix".into(),
            ));
        }
        let hosts = match view.hosts {
            None if view.name.is_none() => Vec::new(),
            None => vec![public.host_str().unwrap_or_default().to_ascii_lowercase()],
            Some(list) if list.get_ref().iter().any(|h| h == "*") => {
                if list.get_ref().len() > 1 {
                    return Err(err(
                        "hosts",
                        Some(list.span()),
                        "\"*\" (any host) stands alone".into(),
                    ));
                }
                Vec::new()
            }
            Some(list) => {
                let mut hosts = Vec::new();
                for host in list.get_ref() {
                    let lower = host.to_ascii_lowercase();
                    let plain = !lower.is_empty()
                        && lower.len() <= 253
                        && lower.bytes().all(|b| {
                            b.is_ascii_alphanumeric()
                                || matches!(b, b'-' | b'.' | b'[' | b']' | b':')
                        })
                        && url::Host::parse(&lower).is_ok();
                    if !plain {
                        return Err(err(
                            "hosts",
                            Some(list.span()),
                            format!("{host:?} is not a host name (no port, no scheme)"),
                        ));
                    }
                    hosts.push(lower);
                }
                if hosts.is_empty() {
                    return Err(err("hosts", Some(list.span()), "lists no host".into()));
                }
                hosts
            }
        };
        let base_path = format!(
            "{prefix}/{}",
            view.base_path
                .map(String::as_str)
                .unwrap_or("/bff")
                .trim_matches('/')
        );
        let Some(oidc) = view.oidc else {
            return Err(err("oidc", None, "is missing".into()));
        };
        let issuer = oidc.issuer.get_ref();
        let Some(issuer_url) = url::Url::parse(issuer)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        else {
            return Err(err(
                "oidc.issuer",
                Some(oidc.issuer.span()),
                "is not an absolute http(s) URL".into(),
            ));
        };
        let allow_http = oidc
            .allow_insecure_http_provider
            .as_ref()
            .is_some_and(|a| *a.get_ref());
        let insecure_http_provider = issuer_url.scheme() == "http";
        if insecure_http_provider && !is_loopback(&issuer_url) {
            if !allow_http {
                return Err(err(
                    "oidc.issuer",
                    Some(oidc.issuer.span()),
                    "is plain http on a non-loopback host: tokens and client secrets would cross the network in the clear (use https, or set allow_insecure_http_provider = true knowingly)".into(),
                ));
            }
            notices.push(format!(
                "{}oidc.allow_insecure_http_provider: the provider {issuer} is plain http; tokens and the client secret cross the network in the clear",
                view.key
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
                    "is missing (or give client_secret_env, or a private key)".into(),
                )),
            }
        };
        let client_key = self.client_key(oidc, &err, env)?;
        let client_tls = validate_client_tls(oidc, &err)?;
        let client_secret = match &client_key {
            Some(_) => {
                if let Some(span) = oidc
                    .client_secret_env
                    .as_ref()
                    .map(Spanned::span)
                    .or(oidc.client_secret.as_ref().map(|_| oidc.issuer.span()))
                {
                    return Err(err(
                        "oidc.client_secret",
                        Some(span),
                        "and a private key are both given: choose one way to authenticate".into(),
                    ));
                }
                String::new()
            }
            // With a client certificate and no secret: tls_client_auth.
            None if client_tls.is_some()
                && oidc.client_secret.is_none()
                && oidc.client_secret_env.is_none() =>
            {
                String::new()
            }
            None => secret("oidc", &oidc.client_secret, &oidc.client_secret_env)?,
        };
        let worker = match view.client {
            Some(client) => Some((
                client.client_id.clone(),
                secret("client", &client.client_secret, &client.client_secret_env)?,
                client.scope.clone(),
            )),
            None => None,
        };
        let require_dpop = oidc.require_dpop.as_ref().is_some_and(|r| *r.get_ref());
        let dpop_per_session = match oidc.dpop.as_ref() {
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
        let plaintext_redis = self
            .redis
            .as_ref()
            .is_some_and(|r| r.plaintext.as_ref().is_some_and(|p| *p.get_ref()));
        let plaintext_postgres = self
            .postgres
            .as_ref()
            .is_some_and(|r| r.plaintext.as_ref().is_some_and(|p| *p.get_ref()));
        if dpop_per_session && (plaintext_redis || plaintext_postgres) {
            let section = if plaintext_redis { "redis" } else { "postgres" };
            return Err(err(
                "oidc.dpop",
                oidc.dpop.as_ref().map(Spanned::span),
                format!("\"per-session\" keeps each session's DPoP private key in the shared store, which needs encryption: give {section}.encryption_key_env instead of plaintext = true"),
            ));
        }
        if require_dpop && !dpop_per_session {
            return Err(err(
                "oidc.require_dpop",
                oidc.require_dpop.as_ref().map(Spanned::span),
                "needs dpop = \"per-session\" (there is no DPoP key to require)".into(),
            ));
        }
        let login = validate_login_protocol(
            oidc,
            client_key.as_ref(),
            client_tls.is_some(),
            dpop_per_session,
            &err,
        )?;
        let mut routes = Vec::new();
        for (i, route) in view.routes.iter().enumerate() {
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
            ) && view.client.is_none()
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
            let mut api = crate::ApiRoute::new(join(&prefix, path), upstream)
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
        let mut options = shared.clone();
        options.base_path = base_path.clone();
        options.routes = routes;
        options.name = name.clone();
        options.cookie_name = match (view.cookie_name, view.name) {
            (Some(cookie), _) => {
                if !plain_name(cookie.get_ref()) {
                    return Err(err(
                        "cookie_name",
                        Some(cookie.span()),
                        "must be 1 to 64 letters, digits, '-' or '_' (\"__Host-\" is put in front of it)".into(),
                    ));
                }
                cookie.get_ref().clone()
            }
            (None, Some(_)) => format!("bff-{name}"),
            (None, None) => "bff".to_owned(),
        };
        let static_dir = match view.static_dir {
            Some(dir) => {
                if !std::path::Path::new(dir.get_ref()).is_dir() {
                    return Err(outer(
                        &host_key("static_dir"),
                        Some(dir.span()),
                        "is not a directory".into(),
                    ));
                }
                Some(std::path::PathBuf::from(dir.get_ref()))
            }
            None => None,
        };
        if let Some(claims) = view.claims {
            options.claims = validate_claims(claims, &err)?;
        }
        if let Some(section) = view.forward_auth {
            options.forward_auth =
                Some(validate_forward_auth(section, dpop_per_session, &err, env)?);
        }
        let mut frontend = ValidatedFrontend {
            name,
            hosts,
            prefix,
            redirect_uri: format!("{public_origin}{base_path}/callback"),
            public_origin,
            issuer: issuer.clone(),
            client_id: oidc.client_id.clone(),
            client_secret,
            client_key,
            scope: oidc.scope.clone(),
            worker,
            dpop_per_session,
            require_dpop: require_dpop
                || (dpop_per_session
                    && login.profile == tokenkeeper::protocol::profile::Profile::Fapi2),
            profile: login.profile,
            pushed_authorization: login.pushed,
            request_object: login.request_object,
            requirements: login.requirements,
            client_tls,
            resource: match &oidc.resource {
                None => None,
                Some(value) => Some(
                    tokenkeeper::Resource::parse(value.get_ref())
                        .map_err(|e| err("oidc.resource", Some(value.span()), e.to_string()))?,
                ),
            },
            insecure_http_provider,
            options,
            static_dir,
            session_namespace: view.name.map(|n| n.get_ref().clone()),
            fingerprint: [0; 32],
        };
        frontend.fingerprint = frontend.digest();
        Ok(frontend)
    }

    /// `private_key_env` or `private_key_file`, with `private_key_alg` and `private_key_kid`:
    /// read and parsed now, so that a key that cannot sign is an error at start.
    fn client_key(
        &self,
        oidc: &OidcSection,
        err: &KeyError<'_>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<ClientKey>, ConfigFileError> {
        let pem = match (&oidc.private_key_env, &oidc.private_key_file) {
            (None, None) => {
                for (key, span) in [
                    (
                        "oidc.private_key_alg",
                        oidc.private_key_alg.as_ref().map(Spanned::span),
                    ),
                    (
                        "oidc.private_key_kid",
                        oidc.private_key_kid.as_ref().map(|_| oidc.issuer.span()),
                    ),
                ] {
                    if let Some(span) = span {
                        return Err(err(
                            key,
                            Some(span),
                            "applies only with private_key_env or private_key_file".into(),
                        ));
                    }
                }
                return Ok(None);
            }
            (Some(_), Some(file)) => {
                return Err(err(
                    "oidc.private_key_file",
                    Some(file.span()),
                    "and private_key_env are both given: choose one".into(),
                ))
            }
            (Some(var), None) => env(var.get_ref())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| {
                    err(
                        "oidc.private_key_env",
                        Some(var.span()),
                        format!("the environment variable {} is not set", var.get_ref()),
                    )
                })?,
            (None, Some(file)) => std::fs::read_to_string(file.get_ref()).map_err(|e| {
                err(
                    "oidc.private_key_file",
                    Some(file.span()),
                    format!("cannot be read: {}", e.kind()),
                )
            })?,
        };
        use tokenkeeper::dpop::DpopAlgorithm;
        let alg = match oidc
            .private_key_alg
            .as_ref()
            .map(|a| (a.get_ref().as_str(), a.span()))
        {
            None | Some(("ES256", _)) => DpopAlgorithm::ES256,
            Some(("ES384", _)) => DpopAlgorithm::ES384,
            Some(("PS256", _)) => DpopAlgorithm::PS256,
            Some(("RS256", _)) => DpopAlgorithm::RS256,
            Some(("EdDSA", _)) => DpopAlgorithm::EdDSA,
            Some((other, span)) => {
                return Err(err(
                    "oidc.private_key_alg",
                    Some(span),
                    format!("{other:?} is not one of ES256, ES384, PS256, RS256, EdDSA"),
                ))
            }
        };
        let key_name = if oidc.private_key_env.is_some() {
            "oidc.private_key_env"
        } else {
            "oidc.private_key_file"
        };
        let span = oidc
            .private_key_env
            .as_ref()
            .or(oidc.private_key_file.as_ref())
            .map(Spanned::span);
        // The error says what is wrong with the key, never the key.
        tokenkeeper::dpop::DpopKey::from_pem(&pem, alg).map_err(|e| {
            err(
                key_name,
                span,
                format!("is not a usable {} private key: {e}", alg.as_str()),
            )
        })?;
        if let Some(kid) = &oidc.private_key_kid {
            if kid.is_empty() || kid.len() > 256 || kid.chars().any(char::is_control) {
                return Err(err(
                    "oidc.private_key_kid",
                    None,
                    "must be 1 to 256 characters, no control characters".into(),
                ));
            }
        }
        Ok(Some(ClientKey {
            pem,
            alg,
            kid: oidc.private_key_kid.clone(),
        }))
    }
}

/// `prefix` and a route's `path`: `/admin` + `/api` = `/admin/api`; `/admin` + `/` = `/admin`.
fn join(prefix: &str, path: &str) -> String {
    match (prefix.is_empty(), path) {
        (true, _) => path.to_owned(),
        (false, "/") => prefix.to_owned(),
        (false, _) => format!("{prefix}{path}"),
    }
}
