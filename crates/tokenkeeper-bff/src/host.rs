//! The `tokenkeeper bff` host: its frontends built from a validated configuration file, each
//! with its static files (the SPA, with a fallback to `index.html`), on one session store; and
//! its reload (BF-18).

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokenkeeper::user::UserTokenManager;
use tokenkeeper::{ClientConfig, ClientCredentialsTokenManager, Error};
use tokenkeeper_axum::{Oidc, OidcConfig};

use std::collections::HashMap;
use std::sync::Mutex;

use crate::config::{Validated, ValidatedFrontend};
use crate::{Bff, BffSessionStore, Frontend, Frontends, FrontendsHandler, InMemoryBffSessionStore};

/// The `tokenkeeper bff` host: its frontends (served by [`Host::handler`]) and the session
/// store they share. [`Host::reload`] replaces what changed in the configuration.
pub struct Host {
    handler: FrontendsHandler,
    stores: Stores,
    /// What a reload must restart for: listen address, workers, Redis, operations listener.
    fixed: String,
    /// Per running frontend, its configuration's fingerprint.
    running: Mutex<HashMap<String, [u8; 32]>>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("handler", &self.handler)
            .finish_non_exhaustive()
    }
}

/// The session store the frontends share: Redis, PostgreSQL, or sessions in this process
/// (kept per frontend across reloads).
struct Stores {
    #[cfg(feature = "redis")]
    redis: Option<tokenkeeper_redis::RedisTokenCache>,
    #[cfg(feature = "postgres")]
    postgres: Option<tokenkeeper_postgres::PostgresDatabase>,
    /// Per frontend name, its sessions and user tokens when there is no Redis: a rebuilt
    /// frontend (a reload) finds them again.
    memory: Mutex<HashMap<String, MemoryStores>>,
}

/// One frontend's stores in this process.
#[derive(Clone)]
struct MemoryStores {
    sessions: Arc<InMemoryBffSessionStore>,
    tokens: Arc<tokenkeeper::user::InMemoryUserTokenStore>,
}

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Frontends new in the configuration.
    pub added: Vec<String>,
    /// Frontends whose configuration changed: rebuilt (their sessions stay in the store).
    pub changed: Vec<String>,
    /// Frontends no longer configured: their WebSocket relays are closed.
    pub removed: Vec<String>,
    /// Frontends that run on as they were.
    pub unchanged: Vec<String>,
}

/// The settings a reload cannot apply.
fn fixed_settings(validated: &Validated) -> String {
    format!(
        "{:?} {:?} {:?} {:?} {:?} {:?} {:?}",
        validated.listen,
        validated.workers,
        validated.json_logs,
        validated.telemetry,
        validated.redis.as_ref().map(|r| (
            {
                // URLs may hold passwords: compared by digest.
                use sha2::Digest as _;
                let urls = match &r.address {
                    crate::config::RedisAddress::Node(url) => vec![url.clone()],
                    crate::config::RedisAddress::Cluster(urls) => urls.clone(),
                    crate::config::RedisAddress::Sentinel {
                        sentinels,
                        master,
                        password,
                    } => {
                        let mut all = sentinels.clone();
                        all.push(master.clone());
                        all.extend(password.clone());
                        all
                    }
                };
                sha2::Sha256::digest(format!("{:?} {urls:?}", r.address)).to_vec()
            },
            r.replica_ack,
            &r.prefix,
            r.key.map(|k| {
                use sha2::Digest as _;
                sha2::Sha256::digest(k).to_vec()
            })
        )),
        validated.postgres.as_ref().map(|p| {
            use sha2::Digest as _;
            sha2::Sha256::digest(format!("{} {:?}", p.url, p.key)).to_vec()
        }),
        (
            validated.ops_listen,
            validated.admin_token.as_ref().map(|t| {
                use sha2::Digest as _;
                sha2::Sha256::digest(t.as_bytes()).to_vec()
            })
        ),
    )
}

/// Builds the host from a validated configuration: one [`Bff`] per frontend, on one session
/// store. Start each frontend's discovery and the cleanup with [`Host::start`].
pub fn build(validated: &Validated) -> Result<Host, Error> {
    let stores = Stores::new(validated)?;
    let mut list = Vec::with_capacity(validated.frontends.len());
    for frontend in &validated.frontends {
        list.push(stores.frontend(frontend)?);
    }
    Ok(Host {
        handler: FrontendsHandler::new(Frontends::new(list)?),
        stores,
        fixed: fixed_settings(validated),
        running: Mutex::new(
            validated
                .frontends
                .iter()
                .map(|f| (f.name.clone(), f.fingerprint))
                .collect(),
        ),
    })
}

impl Host {
    /// What serves the requests (give it to [`tokenkeeper_proxy::server::Bound::serve`]), and
    /// answers the operations listener.
    pub fn handler(&self) -> &FrontendsHandler {
        &self.handler
    }

    /// Starts every frontend's discovery ([`Bff::spawn_discovery`]) and the sessions' cleanup
    /// (every `cleanup_every`); the cleanup task is returned.
    pub fn start(&self, cleanup_every: std::time::Duration) -> tokio::task::JoinHandle<()> {
        for frontend in self.handler.current().iter() {
            frontend.bff().spawn_discovery();
        }
        let sessions = self.handler.spawn_cleanup(cleanup_every);
        #[cfg(feature = "postgres")]
        if let Some(db) = self.stores.postgres.clone() {
            // Users' tokens, leases, one-use markers and DPoP keys past their expiry, in
            // batches (sessions are claimed by the frontends' own cleanup, which revokes).
            struct AbortOnDrop(tokio::task::JoinHandle<()>);
            impl Drop for AbortOnDrop {
                fn drop(&mut self) {
                    self.0.abort();
                }
            }
            let rows = tokio::spawn(async move {
                let mut ticks = tokio::time::interval(cleanup_every);
                loop {
                    ticks.tick().await;
                    if let Err(error) = db.cleanup_expired(1000).await {
                        tracing::warn!(%error, "PostgreSQL cleanup failed; trying again later");
                    }
                }
            });
            // Both stop when the returned task is aborted.
            let (rows, sessions) = (AbortOnDrop(rows), AbortOnDrop(sessions));
            return tokio::spawn(async move {
                let _both = (rows, sessions);
                std::future::pending::<()>().await;
            });
        }
        sessions
    }

    /// Applies `next` (validated): frontends added are built, changed ones rebuilt, removed
    /// ones dropped (their WebSocket relays closed), unchanged ones kept as they run — with
    /// their sessions, connections and tokens. Requests in flight finish on the frontends they
    /// began with. A change to what cannot be reloaded (listen address, workers, log format,
    /// Redis, the operations listener) is refused, and nothing changes.
    pub fn reload(&self, next: &Validated) -> Result<Reloaded, Error> {
        if fixed_settings(next) != self.fixed {
            return Err(Error::Config(tokenkeeper::ConfigError::new(
                "bff",
                "bff.listen, bff.workers, bff.log_format, [redis], [postgres], [ops] or [telemetry] changed: restart to apply them",
            )));
        }
        let current = self.handler.current();
        let mut running = self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut done = Reloaded::default();
        let mut list = Vec::with_capacity(next.frontends.len());
        let mut fresh = Vec::new();
        for frontend in &next.frontends {
            let kept = running
                .get(&frontend.name)
                .filter(|print| **print == frontend.fingerprint)
                .and_then(|_| current.get(&frontend.name));
            match kept {
                Some(kept) => {
                    done.unchanged.push(frontend.name.clone());
                    list.push(kept.clone());
                }
                None => {
                    if running.contains_key(&frontend.name) {
                        done.changed.push(frontend.name.clone());
                    } else {
                        done.added.push(frontend.name.clone());
                    }
                    let built = self.stores.frontend(frontend)?;
                    fresh.push(built.bff().clone());
                    list.push(built);
                }
            }
        }
        let frontends = Frontends::new(list)?;
        for old in current.iter() {
            if frontends.get(old.name()).is_none() {
                done.removed.push(old.name().to_owned());
                old.bff().close_websockets();
            }
        }
        self.handler.replace(frontends);
        for bff in fresh {
            bff.spawn_discovery();
        }
        *running = next
            .frontends
            .iter()
            .map(|f| (f.name.clone(), f.fingerprint))
            .collect();
        Ok(done)
    }
}

impl Host {
    /// Reads, checks and applies the configuration file at `path` ([`Host::reload`]), as a
    /// SIGHUP or a change of the file asks: a file that does not parse or validate is refused
    /// with its key and line, and the running configuration stays. Each outcome is logged and
    /// counted (`tokenkeeper_bff_config_reloads_total{outcome="applied"|"refused"}`).
    pub fn reload_file(
        &self,
        path: &std::path::Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Reloaded, String> {
        let outcome = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot be read: {}", path.display(), e.kind()))
            .and_then(|text| {
                let config = crate::config::BffConfig::parse(&text)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                let validated = config
                    .validate(&text, env)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                for notice in &validated.notices {
                    tracing::warn!(file = %path.display(), "{notice}");
                }
                self.reload(&validated)
                    .map_err(|e| format!("{}: {e}", path.display()))
            });
        match &outcome {
            Ok(done) => {
                crate::metrics::config_reload("applied");
                tracing::warn!(
                    file = %path.display(),
                    added = ?done.added,
                    changed = ?done.changed,
                    removed = ?done.removed,
                    unchanged = ?done.unchanged,
                    "configuration reloaded"
                );
            }
            Err(error) => {
                crate::metrics::config_reload("refused");
                tracing::error!(%error, "configuration refused; the running one stays");
            }
        }
        outcome
    }
}

impl Stores {
    fn new(validated: &Validated) -> Result<Self, Error> {
        #[cfg(feature = "redis")]
        let redis = match &validated.redis {
            Some(section) => Some(
                tokenkeeper_redis::RedisTokenCache::connect(
                    match &section.address {
                        crate::config::RedisAddress::Node(url) => {
                            tokenkeeper_redis::RedisTopology::node(url)
                        }
                        crate::config::RedisAddress::Cluster(urls) => {
                            tokenkeeper_redis::RedisTopology::cluster(urls.clone())
                        }
                        crate::config::RedisAddress::Sentinel {
                            sentinels,
                            master,
                            password,
                        } => {
                            let topology = tokenkeeper_redis::RedisTopology::sentinel(
                                sentinels.clone(),
                                master,
                            );
                            match password {
                                Some(password) => topology.master_password(password),
                                None => topology,
                            }
                        }
                    },
                    tokenkeeper_redis::RedisOptions {
                        replica_ack: section.replica_ack.map(|(replicas, timeout)| {
                            tokenkeeper_redis::ReplicaAck { replicas, timeout }
                        }),
                        prefix: section.prefix.clone(),
                        encryption: match section.key {
                            Some(key) => Some(tokenkeeper::Encryption::new("k1", &key)?),
                            None => None,
                        },
                        // `validate` allows no key only with `plaintext = true`.
                        plaintext: section.key.is_none(),
                        // A failover takes a second or two and one dead shard is not a dead
                        // Redis: fail fast for less time there (FL-06).
                        retry_pause: match section.address {
                            crate::config::RedisAddress::Node(_) => {
                                std::time::Duration::from_secs(1)
                            }
                            _ => std::time::Duration::from_millis(100),
                        },
                        ..tokenkeeper_redis::RedisOptions::default()
                    },
                )
                .map_err(Error::from)?,
            ),
            None => None,
        };
        #[cfg(not(feature = "redis"))]
        if validated.redis.is_some() {
            return Err(Error::Config(tokenkeeper::ConfigError::new(
                "redis",
                "this build has no Redis support (feature `redis`)",
            )));
        }
        #[cfg(feature = "postgres")]
        let postgres = match &validated.postgres {
            Some(section) => Some(
                tokenkeeper_postgres::PostgresDatabase::new(
                    &section.url,
                    tokenkeeper_postgres::PostgresOptions {
                        encryption: match section.key {
                            Some(key) => Some(tokenkeeper::Encryption::new("k1", &key)?),
                            None => None,
                        },
                        // `validate` allows no key only with `plaintext = true`.
                        plaintext: section.key.is_none(),
                        ..tokenkeeper_postgres::PostgresOptions::default()
                    },
                )
                .map_err(Error::from)?,
            ),
            None => None,
        };
        #[cfg(not(feature = "postgres"))]
        if validated.postgres.is_some() {
            return Err(Error::Config(tokenkeeper::ConfigError::new(
                "postgres",
                "this build has no PostgreSQL support (feature `postgres`)",
            )));
        }
        Ok(Self {
            #[cfg(feature = "redis")]
            redis,
            #[cfg(feature = "postgres")]
            postgres,
            memory: Mutex::default(),
        })
    }

    /// The BFF of one frontend, and its static files.
    fn frontend(&self, f: &ValidatedFrontend) -> Result<Frontend, Error> {
        let issuer = f.issuer.clone();
        let mut client =
            ClientConfig::from_issuer(issuer.clone(), f.client_id.clone(), f.client_secret.clone())
                .allow_insecure_http(f.insecure_http_provider)
                .require_dpop(f.require_dpop);
        if let Some(resource) = &f.resource {
            // The session's default token is the login's resource's.
            client = client.resource(resource.as_str());
        }
        let mut transport = None;
        let mut login_cookie_key = None;
        if let Some(tls) = &f.client_tls {
            let mut identity =
                tokenkeeper::mtls::MtlsIdentity::from_pem_files(&tls.cert_file, &tls.key_file)?;
            if let Some(ca) = &tls.ca_file {
                let pem = std::fs::read(ca).map_err(|e| {
                    Error::Config(tokenkeeper::ConfigError::new(
                        "tls_ca_file",
                        format!("cannot be read: {}", e.kind()),
                    ))
                })?;
                identity = identity.add_root_certificates(&pem)?;
            }
            let identity = Arc::new(identity);
            // tls_client_auth without a secret or a key; certificate-bound tokens in any case.
            let method = if f.client_key.is_some() {
                tokenkeeper::AuthMethod::PrivateKeyJwt
            } else if f.client_secret.is_empty() {
                tokenkeeper::AuthMethod::TlsClientAuth
            } else {
                tokenkeeper::AuthMethod::ClientSecretBasic
            };
            client = client.mtls(identity.clone(), method);
            // Discovery and the JWKS trust the provider's CA too.
            transport = Some(Arc::new(tokenkeeper::ReqwestTransport::from_client(
                identity.http_client(),
                tokenkeeper::HttpOptions::default().max_response_bytes,
            )));
            // Without a secret, the login cookie's key comes from the certificate's key (the
            // same on every instance of a fleet).
            let key = std::fs::read(&tls.key_file).unwrap_or_default();
            use sha2::Digest as _;
            let mut hash = sha2::Sha256::new();
            hash.update(b"tokenkeeper-bff login cookie key (mTLS)\0");
            hash.update(f.client_id.as_bytes());
            hash.update(b"\0");
            hash.update(&key);
            let derived: [u8; 32] = hash.finalize().into();
            login_cookie_key = Some(Arc::new(tokenkeeper::Encryption::new("k1", &derived)?));
        }
        if let Some(key) = &f.client_key {
            let mut signer = tokenkeeper::PrivateKeyJwt::new(tokenkeeper::dpop::DpopKey::from_pem(
                &key.pem, key.alg,
            )?);
            if let Some(kid) = &key.kid {
                signer = signer.with_kid(kid.clone());
            }
            client = client.private_key_jwt(Arc::new(signer));
            // Without a client secret, the login cookie's key comes from the private key, so
            // that every instance of a fleet opens the others' login cookies.
            use sha2::Digest as _;
            let mut hash = sha2::Sha256::new();
            hash.update(b"tokenkeeper-bff login cookie key\0");
            hash.update(f.client_id.as_bytes());
            hash.update(b"\0");
            hash.update(key.pem.as_bytes());
            let derived: [u8; 32] = hash.finalize().into();
            login_cookie_key = Some(Arc::new(tokenkeeper::Encryption::new("k1", &derived)?));
        }
        let mut users = UserTokenManager::builder(client)
            .profile(f.profile)
            .signed_request_objects(f.request_object);
        if let Some(pushed) = f.pushed_authorization {
            users = users.pushed_authorization(pushed);
        }
        if let Some(transport) = transport {
            users = users.transport(transport);
        }
        if f.dpop_per_session {
            users = users.per_session_dpop(tokenkeeper::dpop::DpopAlgorithm::ES256);
        }
        let memory = self
            .memory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(f.name.clone())
            .or_insert_with(|| MemoryStores {
                sessions: Arc::new(InMemoryBffSessionStore::new()),
                tokens: Arc::new(tokenkeeper::user::InMemoryUserTokenStore::new()),
            })
            .clone();
        if !self.shared() {
            users = users.store(memory.tokens.clone());
        }
        #[cfg(feature = "postgres")]
        if let Some(db) = &self.postgres {
            users = users
                .store(Arc::new(tokenkeeper_postgres::PostgresUserTokenStore::new(
                    db,
                )))
                .lease(Arc::new(tokenkeeper_postgres::PostgresLease::new(db)));
            if f.dpop_per_session {
                users = users.dpop_key_store(Arc::new(
                    tokenkeeper_postgres::PostgresDpopKeyStore::new(db)?,
                ));
            }
        }
        #[cfg(feature = "redis")]
        if let Some(redis) = &self.redis {
            users = users
                .store(Arc::new(tokenkeeper_redis::RedisUserTokenStore::new(redis)))
                .lease(Arc::new(tokenkeeper_redis::RedisLease::new(redis)));
            if f.dpop_per_session {
                users = users
                    .dpop_key_store(Arc::new(tokenkeeper_redis::RedisDpopKeyStore::new(redis)?));
            }
        }
        let mut oidc_config = OidcConfig::new(
            issuer.clone(),
            f.client_id.clone(),
            f.client_secret.clone(),
            f.redirect_uri.clone(),
        );
        if let Some(scope) = &f.scope {
            oidc_config.scope = tokenkeeper::Scope::parse(scope);
        }
        oidc_config.insecure_cookies = f.options.insecure_cookies;
        oidc_config.requirements = f.requirements.clone();
        oidc_config.resource = f.resource.clone();
        oidc_config.login_cookie_key = login_cookie_key;
        if let Some(namespace) = &f.session_namespace {
            oidc_config.login_cookie_name = Some(format!("tk.login-{namespace}"));
        }
        #[allow(unused_mut)]
        let mut oidc = Oidc::new(oidc_config, users.build()?)?;
        let sessions: Arc<dyn BffSessionStore> = match self.shared_redis() {
            #[cfg(feature = "redis")]
            Some(redis) => {
                oidc = oidc.with_login_replay_store(Arc::new(
                    tokenkeeper_redis::RedisLoginReplayStore::new(redis),
                ));
                let store = crate::RedisBffSessionStore::new(redis);
                Arc::new(match &f.session_namespace {
                    Some(name) => store.for_frontend(name),
                    None => store,
                })
            }
            _ => self
                .shared_postgres(&mut oidc, f)
                .unwrap_or(memory.sessions),
        };
        let clients = match &f.worker {
            Some((client_id, secret, scope)) => {
                let mut worker =
                    ClientConfig::from_issuer(issuer, client_id.clone(), secret.clone())
                        .allow_insecure_http(f.insecure_http_provider);
                if let Some(scope) = scope {
                    worker = worker.scope(scope.as_str());
                }
                Some(
                    ClientCredentialsTokenManager::builder()
                        .client("bff", worker)
                        .build()?,
                )
            }
            None => None,
        };
        let bff = Bff::with_store(oidc, f.options.clone(), sessions, clients)?;
        let files = match &f.static_dir {
            Some(dir) => spa_under(&f.prefix, dir.clone()),
            None => Router::new(),
        };
        Ok(Frontend::new(bff, files)
            .hosts(&f.hosts)
            .path_prefix(&f.prefix))
    }

    /// Whether the frontends share a store with other instances (Redis or PostgreSQL).
    fn shared(&self) -> bool {
        #[cfg(feature = "postgres")]
        if self.postgres.is_some() {
            return true;
        }
        self.shared_redis().is_some()
    }

    /// The PostgreSQL session store of frontend `f` (and its login replay store on `oidc`).
    #[cfg(feature = "postgres")]
    fn shared_postgres(
        &self,
        oidc: &mut Oidc,
        f: &ValidatedFrontend,
    ) -> Option<Arc<dyn BffSessionStore>> {
        let db = self.postgres.as_ref()?;
        *oidc = oidc.clone().with_login_replay_store(Arc::new(
            tokenkeeper_postgres::PostgresLoginReplayStore::new(db),
        ));
        let store = crate::PostgresBffSessionStore::new(db);
        Some(Arc::new(match &f.session_namespace {
            Some(name) => store.for_frontend(name),
            None => store,
        }))
    }

    #[cfg(not(feature = "postgres"))]
    fn shared_postgres(
        &self,
        _oidc: &mut Oidc,
        _f: &ValidatedFrontend,
    ) -> Option<Arc<dyn BffSessionStore>> {
        None
    }

    #[cfg(feature = "redis")]
    fn shared_redis(&self) -> Option<&tokenkeeper_redis::RedisTokenCache> {
        self.redis.as_ref()
    }

    #[cfg(not(feature = "redis"))]
    fn shared_redis(&self) -> Option<std::convert::Infallible> {
        None
    }
}

/// Serves the files of `dir`; a path that names no file and has no extension gets
/// `index.html` (the SPA's own routes), anything else 404.
pub fn spa(dir: PathBuf) -> Router {
    spa_under("", dir)
}

/// [`spa`] for a frontend under a path prefix (`/admin`): `/admin/app.js` is `dir/app.js`.
pub fn spa_under(prefix: &str, dir: PathBuf) -> Router {
    let prefix = prefix.trim_end_matches('/').to_owned();
    Router::new().fallback(move |uri: Uri| {
        let dir = dir.clone();
        let path = match uri.path().strip_prefix(prefix.as_str()) {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => Some(rest.to_owned()),
            _ => None,
        };
        async move {
            match path {
                Some(path) => serve(&dir, &path).await,
                None => StatusCode::NOT_FOUND.into_response(),
            }
        }
    })
}

async fn serve(dir: &Path, path: &str) -> Response {
    let decoded: String = url::form_urlencoded::parse(format!("p={path}").as_bytes())
        .next()
        .map(|(_, v)| v.replace(' ', "+"))
        .unwrap_or_default();
    let relative = Path::new(decoded.trim_start_matches('/'));
    // Only plain names: no `..`, no root, no prefix, no hidden files.
    let safe = relative.components().all(|c| match c {
        Component::Normal(name) => !name.to_string_lossy().starts_with('.'),
        _ => false,
    });
    if !safe && !decoded.trim_start_matches('/').is_empty() {
        return StatusCode::NOT_FOUND.into_response();
    }
    let mut file = dir.join(relative);
    if decoded.trim_start_matches('/').is_empty() || file.is_dir() {
        file = file.join("index.html");
    }
    let fallback = relative.extension().is_none();
    let bytes = match tokio::fs::read(&file).await {
        Ok(bytes) => bytes,
        Err(_) if fallback => match tokio::fs::read(dir.join("index.html")).await {
            Ok(bytes) => {
                file = dir.join("index.html");
                bytes
            }
            Err(_) => return StatusCode::NOT_FOUND.into_response(),
        },
        Err(_) => return StatusCode::NOT_FOUND.into_response(),
    };
    let content_type = match file.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        Body::from(bytes),
    )
        .into_response()
}
