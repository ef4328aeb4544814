//! `tokenkeeper sidecar`: an egress token proxy for services in any language. A service calls
//! `http://127.0.0.1:15001/orders/…` with no credentials (or with its caller's token), and the
//! sidecar forwards to the route's upstream with the route's token:
//!
//! - `client`: the client's client-credentials token — Bearer, DPoP-bound (proofs and the API's
//!   nonces handled), mTLS-bound, with `client_secret` or `private_key_jwt` — cached, renewed
//!   ahead, and shared by a fleet through Redis (one token request per expiry for N sidecars);
//! - `exchange`: the caller's Bearer token exchanged (RFC 8693) for the upstream's audience,
//!   cached per subject (never beyond the caller's token: it must be a JWT with `exp`; a token
//!   the sidecar or the server cannot exchange is a 401 `token_refused`);
//! - `forward`: the caller's `Authorization` as it came;
//! - `none`.
//!
//! The caller never sees a token. The sidecar's own answers are JSON with a stable shape:
//! `{"error": "<code>", "message": "<text>"}` (codes: [`tokenkeeper_proxy::Refusal::code`],
//! `caller_unauthenticated`, `no_route`, `missing_bearer`, `token_refused`, `busy`: more than
//! [`MAX_EXCHANGES_IN_FLIGHT`] exchanges at once on a route).
//!
//! **Trust boundary (SC-02).** Any local process that can reach the sidecar can use its
//! tokens. By default it listens on loopback or a Unix socket (mode 0660); callers can be made
//! to authenticate with a shared secret (`X-Tokenkeeper-Key`) or, on a Unix socket, by their
//! user id (`SO_PEERCRED`). A non-loopback listen is refused unless callers authenticate.
//!
//! Forwarding is [`tokenkeeper_proxy`]'s engine, the one the BFF uses; the sidecar is its
//! [`tokenkeeper_proxy::Policy`] ([`SidecarPolicy`]) and a [`tokenkeeper_proxy::server::Handler`]
//! ([`SidecarHandler`]) that checks callers first.
//!
//! ```no_run
//! # fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use tokenkeeper_proxy::server::{Bound, ServerOptions};
//! use tokenkeeper_sidecar::{config::SidecarConfig, Sidecar};
//!
//! let text = std::fs::read_to_string("sidecar.toml")?;
//! let config = SidecarConfig::parse(&text)?;
//! config.check()?;
//! let sidecar = Sidecar::build(&config, &|name| std::env::var(name).ok())?;
//! let options = ServerOptions { workers: sidecar.workers(), ..ServerOptions::default() };
//! let server = Bound::bind_to(sidecar.listen(), options.workers)?
//!     .serve(Arc::new(sidecar.handler()), &options)?;
//! # let _ = server; Ok(()) }
//! ```

pub mod config;
mod policy;

use std::sync::Arc;

use http::{HeaderName, HeaderValue, Response, StatusCode};
use sha2::{Digest as _, Sha256};
use tokenkeeper::{ClientConfig, ClientCredentialsTokenManager, TokenRequestParams};
use tokenkeeper_proxy::server::{Listen, Peer};
use tokenkeeper_proxy::{Engine, ProxyBody, RequestHygiene, Route, UpstreamOptions};

use crate::config::{ClientSection, SidecarConfig, TokenKind};
pub use crate::policy::{RoutePlan, SidecarPolicy, MAX_EXCHANGES_IN_FLIGHT};

/// The header callers send the shared secret in.
pub const CALLER_KEY_HEADER: &str = "x-tokenkeeper-key";

/// Why the sidecar cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The configuration.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// A client, a key or a certificate.
    #[error("{key}: {source}")]
    Token {
        /// The key, as `clients[0]`.
        key: String,
        /// The token library's error.
        source: tokenkeeper::Error,
    },
    /// The upstream TLS settings.
    #[error("upstream TLS: {0}")]
    Upstream(#[from] tokenkeeper_proxy::UpstreamError),
}

/// Where `[redis]` says Redis is: exactly one of `url`, `cluster` and `sentinels`.
fn redis_topology(
    redis: &config::RedisSection,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<tokenkeeper_redis::RedisTopology, BuildError> {
    use tokenkeeper_redis::RedisTopology;
    let check = |key: &str, urls: &[String]| {
        if urls.is_empty() {
            return Err(invalid(key, "is empty: name at least one URL"));
        }
        match urls
            .iter()
            .position(|u| !(u.starts_with("redis://") || u.starts_with("rediss://")))
        {
            Some(i) => Err(invalid(
                format!("{key}[{i}]"),
                "is not a redis:// or rediss:// URL",
            )),
            None => Ok(urls.to_vec()),
        }
    };
    let sentinel_keys =
        redis.sentinel_master.is_some() || redis.sentinel_master_password_env.is_some();
    match (&redis.url, &redis.cluster, &redis.sentinels) {
        (Some(_), _, _) | (_, Some(_), _) if sentinel_keys => {
            Err(invalid("redis.sentinel_master", "is for sentinels only"))
        }
        (Some(url), None, None) => Ok(RedisTopology::node(
            check("redis.url", std::slice::from_ref(url))?.remove(0),
        )),
        (None, Some(nodes), None) => Ok(RedisTopology::cluster(check("redis.cluster", nodes)?)),
        (None, None, Some(sentinels)) => {
            let master = redis
                .sentinel_master
                .as_deref()
                .filter(|m| !m.is_empty())
                .ok_or_else(|| {
                    invalid(
                        "redis.sentinel_master",
                        "is missing: name the master the sentinels watch",
                    )
                })?;
            let topology = RedisTopology::sentinel(check("redis.sentinels", sentinels)?, master);
            match &redis.sentinel_master_password_env {
                Some(var) => Ok(topology.master_password(env(var).ok_or_else(|| {
                    invalid(
                        "redis.sentinel_master_password_env",
                        format!("the environment variable {var} is not set"),
                    )
                })?)),
                None => Ok(topology),
            }
        }
        (None, None, None) => Err(invalid(
            "redis.url",
            "is missing: give url (one node), cluster or sentinels",
        )),
        _ => Err(invalid("redis", "give one of url, cluster and sentinels")),
    }
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> BuildError {
    BuildError::Config(config::ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    })
}

/// A sidecar, built from its configuration.
#[derive(Debug)]
pub struct Sidecar {
    listen: Listen,
    workers: usize,
    handler: SidecarHandler,
}

/// Who may call.
#[derive(Clone)]
struct Callers {
    /// SHA-256 of the shared secret.
    secret: Option<[u8; 32]>,
    uids: Option<Vec<u32>>,
}

impl Callers {
    /// Whether the caller is let in: the secret (compared in constant time) and, on a Unix
    /// socket, the user id.
    fn admit(&self, headers: &http::HeaderMap, peer: &Peer) -> bool {
        if let Some(expected) = &self.secret {
            let Some(given) = headers.get(CALLER_KEY_HEADER) else {
                return false;
            };
            let given: [u8; 32] = Sha256::digest(given.as_bytes()).into();
            let difference = given
                .iter()
                .zip(expected)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if difference != 0 {
                return false;
            }
        }
        if let Some(uids) = &self.uids {
            match peer {
                Peer::Unix { uid: Some(uid), .. } => uids.contains(uid),
                _ => false,
            }
        } else {
            true
        }
    }
}

impl Sidecar {
    /// Builds the sidecar from a checked configuration; `env` reads environment variables
    /// (secrets, keys).
    pub fn build(
        config: &SidecarConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, BuildError> {
        config.check()?;
        let listen = config::parse_listen("sidecar.listen", &config.sidecar.listen)?;
        let workers = config
            .sidecar
            .workers
            .unwrap_or_else(tokenkeeper_proxy::server::default_workers);
        let secret = match &config.sidecar.caller_secret_env {
            Some(var) => {
                let value = env(var).filter(|v| v.len() >= 16).ok_or_else(|| {
                    invalid(
                        "sidecar.caller_secret_env",
                        format!("the environment variable {var} must hold at least 16 characters"),
                    )
                })?;
                Some(Sha256::digest(value.as_bytes()).into())
            }
            None => None,
        };
        let callers = Callers {
            secret,
            uids: config.sidecar.allowed_uids.clone(),
        };
        let mut upstream = UpstreamOptions::default();
        let tokens = build_clients(config, env, &mut upstream)?;
        let mut engine = Engine::builder("sidecar")
            .hygiene(RequestHygiene {
                drop: vec![HeaderName::from_static(CALLER_KEY_HEADER)],
                // The caller's cookies are its own business with the upstream.
                drop_cookies: false,
                ..RequestHygiene::default()
            })
            .upstream(upstream)
            .workers(workers);
        let mut plans = Vec::with_capacity(config.routes.len());
        for (i, route) in config.routes.iter().enumerate() {
            let key = |k: &str| format!("routes[{i}].{k}");
            let upstream: url::Url = route
                .upstream
                .parse()
                .map_err(|e| invalid(key("upstream"), format!("is not a URL: {e}")))?;
            let engine_route = Route::new(&route.path, upstream)
                .map_err(|e| invalid(key("path"), e.to_string()))?
                .timeout(SidecarConfig::timeout(route))
                .allow_encoded_slashes(route.allow_encoded_slashes)
                .pass_cors_headers(true)
                .drop_response_cookies(false);
            engine = engine.route(engine_route);
            let mut params = TokenRequestParams::default();
            if let Some(scope) = &route.scope {
                params = params.scope(tokenkeeper::Scope::parse(scope));
            }
            if let Some(resource) = &route.resource {
                let resource = tokenkeeper::Resource::parse(resource.as_str())
                    .map_err(|e| invalid(key("resource"), e.to_string()))?;
                params = params.resource(resource);
            }
            let token_error = |source| BuildError::Token {
                key: format!("routes[{i}]"),
                source,
            };
            plans.push(match route.token {
                TokenKind::None => RoutePlan::None,
                TokenKind::Forward => RoutePlan::Forward,
                TokenKind::Client => {
                    let name = route.client.as_deref().unwrap_or_default();
                    let layer = tokens
                        .as_ref()
                        .ok_or_else(|| invalid(key("client"), "no clients"))?
                        .layer_with(name, params.clone())
                        .map_err(token_error)?;
                    RoutePlan::Client(layer, name.to_owned(), params)
                }
                TokenKind::Exchange => RoutePlan::Exchange {
                    in_flight: Arc::new(tokio::sync::Semaphore::new(
                        policy::MAX_EXCHANGES_IN_FLIGHT,
                    )),
                    client: route.client.clone().unwrap_or_default(),
                    params,
                    audience: route.audience.clone(),
                },
            });
        }
        let engine = engine.build()?;
        let policy = SidecarPolicy::new(plans, tokens);
        Ok(Self {
            listen,
            workers,
            handler: SidecarHandler {
                current: Arc::new(std::sync::RwLock::new(Arc::new((engine, policy, callers)))),
            },
        })
    }

    /// Where it listens.
    pub fn listen(&self) -> &Listen {
        &self.listen
    }

    /// How many server workers it wants.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// The handler to serve ([`tokenkeeper_proxy::server::Bound::serve`]).
    pub fn handler(&self) -> SidecarHandler {
        self.handler.clone()
    }

    /// Makes `handler` (of a sidecar being served) use this sidecar's routes, clients and
    /// callers from its next request on; requests in flight finish with the old ones. The
    /// listen address and the worker count cannot change without a restart: then nothing
    /// changes, and the error says so.
    pub fn replace(&self, handler: &SidecarHandler, running: &Sidecar) -> Result<(), String> {
        if self.listen != running.listen {
            return Err(format!(
                "sidecar.listen changed ({} → {}): restart to apply it",
                running.listen, self.listen
            ));
        }
        if self.workers != running.workers {
            return Err("sidecar.workers changed: restart to apply it".into());
        }
        let new = self.handler.current().clone();
        *handler
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = new;
        Ok(())
    }
}

/// Builds the token manager of the `[[clients]]` (none: `None`), and puts an mTLS client's
/// certificate on the upstream connections.
fn build_clients(
    config: &SidecarConfig,
    env: &dyn Fn(&str) -> Option<String>,
    upstream: &mut UpstreamOptions,
) -> Result<Option<ClientCredentialsTokenManager>, BuildError> {
    if config.clients.is_empty() {
        return Ok(None);
    }
    let mut builder = ClientCredentialsTokenManager::builder();
    for (i, client) in config.clients.iter().enumerate() {
        builder = builder.client(
            &client.name,
            client_config(
                i,
                client,
                env,
                upstream,
                config.sidecar.allow_insecure_http_provider,
            )?,
        );
    }
    if let Some(redis) = &config.redis {
        let key_bytes = env(&redis.encryption_key_env)
            .and_then(|v| tokenkeeper::Encryption::key_from_base64(&v))
            .ok_or_else(|| {
                invalid(
                    "redis.encryption_key_env",
                    format!(
                        "the environment variable {} must hold 32 bytes in base64 (a fleet's shared tokens are always encrypted)",
                        redis.encryption_key_env
                    ),
                )
            })?;
        let token_error = |source: tokenkeeper::CacheError| BuildError::Token {
            key: "redis".into(),
            source: source.into(),
        };
        let encryption = tokenkeeper::Encryption::new("k1", &key_bytes).map_err(token_error)?;
        let topology = redis_topology(redis, env)?;
        // A failover takes a second or two and one dead shard is not a dead Redis: fail fast
        // for less time there (FL-06).
        let retry_pause = if topology.kind() == "node" {
            std::time::Duration::from_secs(1)
        } else {
            std::time::Duration::from_millis(100)
        };
        let cache = tokenkeeper_redis::RedisTokenCache::connect(
            topology,
            tokenkeeper_redis::RedisOptions {
                retry_pause,
                prefix: redis
                    .prefix
                    .clone()
                    .unwrap_or_else(|| "tokenkeeper-sidecar".into()),
                ..tokenkeeper_redis::RedisOptions::encrypted(encryption)
            },
        )
        .map_err(token_error)?;
        builder = builder
            .cache(Arc::new(tokenkeeper_redis::TwoTierTokenCache::new(
                cache.clone(),
            )))
            .lease(Arc::new(tokenkeeper_redis::RedisLease::new(&cache)));
    }
    builder
        .build()
        .map(Some)
        .map_err(|source| BuildError::Token {
            key: "clients".into(),
            source,
        })
}

fn client_config(
    i: usize,
    client: &ClientSection,
    env: &dyn Fn(&str) -> Option<String>,
    upstream: &mut UpstreamOptions,
    allow_http: bool,
) -> Result<ClientConfig, BuildError> {
    let key = |k: &str| format!("clients[{i}].{k}");
    let token_error = |source| BuildError::Token {
        key: format!("clients[{i}]"),
        source,
    };
    let secret = match &client.client_secret_env {
        Some(var) => env(var).filter(|v| !v.is_empty()).ok_or_else(|| {
            invalid(
                key("client_secret_env"),
                format!("the environment variable {var} is not set"),
            )
        })?,
        None => String::new(),
    };
    let mut config = match (&client.issuer, &client.token_endpoint) {
        (Some(issuer), _) => ClientConfig::from_issuer(issuer.as_str(), &client.client_id, secret),
        (None, Some(endpoint)) => ClientConfig::new(endpoint.as_str(), &client.client_id, secret),
        (None, None) => return Err(invalid(key("issuer"), "give issuer or token_endpoint")),
    }
    .allow_insecure_http(
        allow_http
            || loopback_http(
                client
                    .issuer
                    .as_deref()
                    .or(client.token_endpoint.as_deref()),
            ),
    );
    if let Some(scope) = &client.scope {
        config = config.scope(scope.as_str());
    }
    if let Some(file) = &client.private_key_jwt_file {
        let pem = std::fs::read_to_string(file).map_err(|e| {
            invalid(
                key("private_key_jwt_file"),
                format!("{}: {}", file.display(), e.kind()),
            )
        })?;
        let alg = tokenkeeper::dpop::DpopAlgorithm::parse(
            client.private_key_jwt_alg.as_deref().unwrap_or("ES256"),
        )
        .map_err(|e| invalid(key("private_key_jwt_alg"), e.to_string()))?;
        let signing = tokenkeeper::dpop::DpopKey::from_pem(&pem, alg).map_err(token_error)?;
        let mut signer = tokenkeeper::PrivateKeyJwt::new(signing);
        if let Some(kid) = &client.private_key_jwt_kid {
            signer = signer.with_kid(kid.as_str());
        }
        config = config.private_key_jwt(Arc::new(signer));
    }
    if client.dpop {
        let key = tokenkeeper::dpop::DpopKey::generate(tokenkeeper::dpop::DpopAlgorithm::ES256)
            .map_err(token_error)?;
        config = config.dpop(Arc::new(key)).require_dpop(client.require_dpop);
    }
    let ca =
        match &client.ca_file {
            Some(file) => Some(std::fs::read(file).map_err(|e| {
                invalid(key("ca_file"), format!("{}: {}", file.display(), e.kind()))
            })?),
            None => None,
        };
    if let (Some(cert), Some(private)) = (&client.mtls_cert_file, &client.mtls_key_file) {
        let mut identity =
            tokenkeeper::mtls::MtlsIdentity::from_pem_files(cert, private).map_err(token_error)?;
        if let Some(ca) = &ca {
            identity = identity.add_root_certificates(ca).map_err(token_error)?;
        }
        let method = if client.client_secret_env.is_some() {
            tokenkeeper::AuthMethod::ClientSecretBasic
        } else if client.private_key_jwt_file.is_some() {
            tokenkeeper::AuthMethod::PrivateKeyJwt
        } else {
            tokenkeeper::AuthMethod::TlsClientAuth
        };
        config = config.mtls(Arc::new(identity), method);
        // The upstreams see the same certificate: certificate-bound tokens (RFC 8705).
        let chain = std::fs::read(cert).map_err(|e| {
            invalid(
                key("mtls_cert_file"),
                format!("{}: {}", cert.display(), e.kind()),
            )
        })?;
        let private_key = std::fs::read(private).map_err(|e| {
            invalid(
                key("mtls_key_file"),
                format!("{}: {}", private.display(), e.kind()),
            )
        })?;
        if upstream
            .client_identity_pem
            .as_ref()
            .is_some_and(|(c, _)| *c != chain)
        {
            return Err(invalid(
                key("mtls_cert_file"),
                "one client certificate per sidecar: another client has a different one",
            ));
        }
        upstream.client_identity_pem = Some((chain, private_key));
    }
    if let Some(ca) = ca {
        upstream.extra_roots_pem = Some(ca);
    }
    Ok(config)
}

/// Whether a provider URL is plain http on loopback (a local development provider: allowed
/// without `allow_insecure_http_provider`).
fn loopback_http(url: Option<&str>) -> bool {
    url.and_then(|u| url::Url::parse(u).ok()).is_some_and(|u| {
        u.scheme() == "http"
            && u.host().is_some_and(|h| match h {
                url::Host::Domain(d) => d == "localhost",
                url::Host::Ipv4(ip) => ip.is_loopback(),
                url::Host::Ipv6(ip) => ip.is_loopback(),
            })
    })
}

/// What a request is served with: replaced whole by a reload.
type Current = Arc<(Engine, SidecarPolicy, Callers)>;

/// The sidecar's request handler: callers first, then the route, then the engine.
#[derive(Clone)]
pub struct SidecarHandler {
    current: Arc<std::sync::RwLock<Current>>,
}

impl std::fmt::Debug for SidecarHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SidecarHandler")
            .field("engine", &self.current().0)
            .finish_non_exhaustive()
    }
}

impl SidecarHandler {
    fn current(&self) -> Current {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The readiness checks of `/readyz`: every `client` route's token can be had (from the
    /// cache, or the token endpoint).
    pub fn readiness(&self) -> tokenkeeper_proxy::ops::Readiness {
        let handler = self.clone();
        Arc::new(move || {
            let current = handler.current();
            Box::pin(async move { current.1.readiness().await })
        })
    }
}

impl tokenkeeper_proxy::server::Handler for SidecarHandler {
    async fn handle(
        &self,
        request: http::Request<tokenkeeper_proxy::IncomingBody>,
        peer: Peer,
    ) -> Response<ProxyBody> {
        let current = self.current();
        let (engine, policy, callers) = &*current;
        if !callers.admit(request.headers(), &peer) {
            return json_error(
                StatusCode::UNAUTHORIZED,
                "caller_unauthenticated",
                "The caller is not allowed to use this sidecar.",
            );
        }
        match engine.route_for(request.uri().path()) {
            Some(route) => {
                engine
                    .forward(policy, route, request, peer.socket_addr())
                    .await
            }
            None => json_error(StatusCode::NOT_FOUND, "no_route", "No route for this path."),
        }
    }
}

/// The sidecar's own answer: `{"error": code, "message": text}`.
pub(crate) fn json_error(status: StatusCode, code: &str, message: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({ "error": code, "message": message }).to_string();
    let mut response = Response::new(ProxyBody::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    response
}
