//! The sidecar's configuration file (TOML), checked whole before anything starts: every
//! refusal names its key.
//!
//! ```toml
//! [sidecar]
//! listen = "127.0.0.1:15001"        # or "unix:/run/tokenkeeper/sidecar.sock"
//! workers = 2                       # optional: server threads (default: one per core)
//! caller_secret_env = "SIDECAR_KEY" # optional: callers send it in X-Tokenkeeper-Key
//! allowed_uids = [1000]             # optional, Unix socket only: which users may call
//! allow_insecure_http_provider = false  # optional: http issuers off loopback (tests only)
//!
//! [ops]                             # optional: /healthz, /readyz, /metrics
//! listen = "127.0.0.1:15090"
//!
//! [redis]                           # optional: share client tokens across a fleet
//! url = "redis://127.0.0.1:6379"    # one node; or cluster = ["redis://…", …]; or
//!                                   # sentinels = ["redis://…:26379", …] + sentinel_master
//! encryption_key_env = "SIDECAR_REDIS_KEY"  # 32 bytes, base64 (required)
//! prefix = "tokenkeeper-sidecar"    # optional
//!
//! [[clients]]
//! name = "orders"
//! issuer = "https://idp.example.com"   # or token_endpoint = "https://idp.example.com/token"
//! client_id = "orders-caller"
//! client_secret_env = "ORDERS_SECRET"  # or private_key_jwt_file = "key.pem" (PKCS#8)
//! scope = "orders.read"                # optional
//! dpop = true                          # optional: DPoP-bound tokens (a key per start)
//! mtls_cert_file = "client.pem"        # optional, with mtls_key_file: mTLS-bound tokens
//! mtls_key_file = "client.key"
//!
//! [[routes]]
//! path = "/orders"                     # http://127.0.0.1:15001/orders/... → upstream/...
//! upstream = "https://orders.internal/v1"
//! token = "client"                     # client | exchange | forward | none
//! client = "orders"                    # client and exchange: which client
//! audience = "orders"                  # exchange: the audience asked for (optional)
//! scope = "orders.write"               # client and exchange: overrides the client's (optional)
//! timeout_secs = 30                    # optional: time to the upstream's response headers
//! ```

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use tokenkeeper_proxy::server::Listen;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SidecarConfig {
    /// `[sidecar]`.
    pub sidecar: SidecarSection,
    /// `[ops]`.
    #[serde(default)]
    pub ops: Option<OpsSection>,
    /// `[redis]`.
    #[serde(default)]
    pub redis: Option<RedisSection>,
    /// `[[clients]]`.
    #[serde(default)]
    pub clients: Vec<ClientSection>,
    /// `[[routes]]`.
    #[serde(default)]
    pub routes: Vec<RouteSection>,
}

/// `[sidecar]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SidecarSection {
    /// `127.0.0.1:15001` or `unix:/path`.
    pub listen: String,
    /// Server threads (default: one per core).
    #[serde(default)]
    pub workers: Option<usize>,
    /// The environment variable holding the callers' shared secret.
    #[serde(default)]
    pub caller_secret_env: Option<String>,
    /// Unix socket only: the user ids that may call.
    #[serde(default)]
    pub allowed_uids: Option<Vec<u32>>,
    /// http issuers and token endpoints off loopback (never in production).
    #[serde(default)]
    pub allow_insecure_http_provider: bool,
}

/// `[ops]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpsSection {
    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub listen: String,
}

/// `[redis]`: one of `url`, `cluster` and `sentinels`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSection {
    /// One node: `redis://…` or `rediss://…`.
    #[serde(default)]
    pub url: Option<String>,
    /// Some nodes of a Redis Cluster.
    #[serde(default)]
    pub cluster: Option<Vec<String>>,
    /// The sentinels that know the master.
    #[serde(default)]
    pub sentinels: Option<Vec<String>>,
    /// The master's name, with `sentinels`.
    #[serde(default)]
    pub sentinel_master: Option<String>,
    /// The environment variable holding the master's password, with `sentinels`.
    #[serde(default)]
    pub sentinel_master_password_env: Option<String>,
    /// The environment variable holding the encryption key (32 bytes, base64).
    pub encryption_key_env: String,
    /// Key prefix (default `tokenkeeper-sidecar`).
    #[serde(default)]
    pub prefix: Option<String>,
}

impl std::fmt::Debug for RedisSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // URLs may hold passwords.
        f.debug_struct("RedisSection")
            .field("url", &self.url.as_ref().map(|_| "…"))
            .field("cluster", &self.cluster.as_ref().map(Vec::len))
            .field("sentinels", &self.sentinels.as_ref().map(Vec::len))
            .field("sentinel_master", &self.sentinel_master)
            .field("encryption_key_env", &self.encryption_key_env)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// `[[clients]]`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSection {
    /// The name routes use.
    pub name: String,
    /// The issuer (discovery finds the token endpoint).
    #[serde(default)]
    pub issuer: Option<String>,
    /// The token endpoint (instead of `issuer`).
    #[serde(default)]
    pub token_endpoint: Option<String>,
    /// The client id.
    pub client_id: String,
    /// The environment variable holding the client secret.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// A PKCS#8 PEM key file: `private_key_jwt` client authentication.
    #[serde(default)]
    pub private_key_jwt_file: Option<PathBuf>,
    /// The key's algorithm (`ES256` default; `PS256`, `EdDSA`, …).
    #[serde(default)]
    pub private_key_jwt_alg: Option<String>,
    /// The key id sent in assertions.
    #[serde(default)]
    pub private_key_jwt_kid: Option<String>,
    /// Scope asked for.
    #[serde(default)]
    pub scope: Option<String>,
    /// DPoP-bound tokens, with a key made at start.
    #[serde(default)]
    pub dpop: bool,
    /// Refuse a token the server did not bind to the DPoP key.
    #[serde(default)]
    pub require_dpop: bool,
    /// A client certificate (PEM): mTLS to the token endpoint, certificate-bound tokens, and
    /// the same certificate to the routes' upstreams.
    #[serde(default)]
    pub mtls_cert_file: Option<PathBuf>,
    /// Its key (PEM).
    #[serde(default)]
    pub mtls_key_file: Option<PathBuf>,
    /// CA certificates (PEM) for a private token endpoint's and upstreams' certificates.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for ClientSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSection")
            .field("name", &self.name)
            .field("client_id", &self.client_id)
            .field("client_secret_env", &self.client_secret_env)
            .finish_non_exhaustive()
    }
}

/// `[[routes]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    /// The local path prefix.
    pub path: String,
    /// The upstream.
    pub upstream: String,
    /// `client`, `exchange`, `forward` or `none`.
    pub token: TokenKind,
    /// The client (`client`, `exchange`).
    #[serde(default)]
    pub client: Option<String>,
    /// The audience asked for in an exchange.
    #[serde(default)]
    pub audience: Option<String>,
    /// The scope asked for (`client`, `exchange`).
    #[serde(default)]
    pub scope: Option<String>,
    /// The resource indicator asked for (`client`, `exchange`).
    #[serde(default)]
    pub resource: Option<String>,
    /// Seconds to the upstream's response headers (default 30).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// Let `%2F` through in paths.
    #[serde(default)]
    pub allow_encoded_slashes: bool,
}

/// A route's token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// The client's client-credentials token.
    Client,
    /// The caller's Bearer token exchanged (RFC 8693) with the client.
    Exchange,
    /// The caller's `Authorization` as it came.
    Forward,
    /// No token.
    None,
}

/// A configuration that cannot work, with the key to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not TOML, or not the sidecar's keys (the parser's message has the line).
    #[error("{0}")]
    Parse(String),
    /// A value that cannot work.
    #[error("{key}: {reason}")]
    Invalid {
        /// The key, as `routes[1].client`.
        key: String,
        /// Why.
        reason: String,
    },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// Parses a `listen` value: `host:port` or `unix:/path`.
pub fn parse_listen(key: &str, text: &str) -> Result<Listen, ConfigError> {
    if let Some(path) = text.strip_prefix("unix:") {
        if path.is_empty() || !path.starts_with('/') {
            return Err(invalid(
                key,
                "a Unix socket needs an absolute path (unix:/run/…)",
            ));
        }
        return Ok(Listen::Unix(PathBuf::from(path)));
    }
    text.parse::<SocketAddr>().map(Listen::Tcp).map_err(|_| {
        invalid(
            key,
            format!("{text:?} is neither host:port (an IP) nor unix:/path"),
        )
    })
}

impl SidecarConfig {
    /// Parses the file's text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))
    }

    /// Checks what parsing cannot: names, references, the trust boundary (SC-02).
    pub fn check(&self) -> Result<(), ConfigError> {
        let listen = parse_listen("sidecar.listen", &self.sidecar.listen)?;
        if let Some(ops) = &self.ops {
            parse_listen("ops.listen", &ops.listen)?;
        }
        if let Some(workers) = self.sidecar.workers {
            if workers == 0 || workers > 1024 {
                return Err(invalid("sidecar.workers", "must be between 1 and 1024"));
            }
        }
        let authenticated = self.sidecar.caller_secret_env.is_some();
        match &listen {
            Listen::Tcp(addr) if !addr.ip().is_loopback() && !authenticated => {
                return Err(invalid(
                    "sidecar.listen",
                    format!(
                        "{addr} is not loopback: any host that reaches it could use the sidecar's \
                         tokens. Listen on 127.0.0.1 or a Unix socket, or set caller_secret_env"
                    ),
                ))
            }
            Listen::Tcp(_) if self.sidecar.allowed_uids.is_some() => {
                return Err(invalid(
                    "sidecar.allowed_uids",
                    "applies to a Unix socket only (TCP callers have no user id)",
                ))
            }
            _ => {}
        }
        let mut names = BTreeSet::new();
        for (i, client) in self.clients.iter().enumerate() {
            let key = |k: &str| format!("clients[{i}].{k}");
            if client.name.is_empty() || !names.insert(client.name.as_str()) {
                return Err(invalid(key("name"), "must be present and unique"));
            }
            match (&client.issuer, &client.token_endpoint) {
                (Some(_), Some(_)) | (None, None) => {
                    return Err(invalid(
                        key("issuer"),
                        "give issuer or token_endpoint (one)",
                    ))
                }
                _ => {}
            }
            match (&client.client_secret_env, &client.private_key_jwt_file) {
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        key("client_secret_env"),
                        "give client_secret_env or private_key_jwt_file, not both",
                    ))
                }
                (None, None) if client.mtls_cert_file.is_none() => {
                    return Err(invalid(
                        key("client_secret_env"),
                        "the client needs a secret, a private_key_jwt_file, or mTLS",
                    ))
                }
                _ => {}
            }
            if client.mtls_cert_file.is_some() != client.mtls_key_file.is_some() {
                return Err(invalid(
                    key("mtls_key_file"),
                    "mtls_cert_file and mtls_key_file go together",
                ));
            }
            if client.require_dpop && !client.dpop {
                return Err(invalid(key("require_dpop"), "needs dpop = true"));
            }
        }
        let mut paths = BTreeSet::new();
        for (i, route) in self.routes.iter().enumerate() {
            let key = |k: &str| format!("routes[{i}].{k}");
            if !paths.insert(route.path.trim_end_matches('/')) {
                return Err(invalid(
                    key("path"),
                    format!("{} is listed twice", route.path),
                ));
            }
            let needs_client = matches!(route.token, TokenKind::Client | TokenKind::Exchange);
            match (&route.client, needs_client) {
                (None, true) => {
                    return Err(invalid(
                        key("client"),
                        "token = client/exchange needs a client",
                    ))
                }
                (Some(_), false) => {
                    return Err(invalid(
                        key("client"),
                        "only token = client/exchange uses a client",
                    ))
                }
                (Some(name), true) if !names.contains(name.as_str()) => {
                    return Err(invalid(key("client"), format!("no client named {name:?}")))
                }
                _ => {}
            }
            if route.audience.is_some() && route.token != TokenKind::Exchange {
                return Err(invalid(
                    key("audience"),
                    "only token = exchange asks for an audience",
                ));
            }
            if (route.scope.is_some() || route.resource.is_some()) && !needs_client {
                return Err(invalid(
                    key("scope"),
                    "only token = client/exchange asks for a scope or resource",
                ));
            }
            if route.timeout_secs == Some(0) {
                return Err(invalid(key("timeout_secs"), "must be at least 1"));
            }
        }
        if self.routes.is_empty() {
            return Err(invalid(
                "routes",
                "the sidecar needs at least one [[routes]]",
            ));
        }
        Ok(())
    }

    /// A route's timeout.
    pub(crate) fn timeout(route: &RouteSection) -> Duration {
        Duration::from_secs(route.timeout_secs.unwrap_or(30))
    }
}
