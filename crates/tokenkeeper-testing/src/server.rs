//! The server: state, routes, lifecycle.
#![allow(clippy::result_large_err)] // handlers answer early with a ready `Response`

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde_json::{json, Map, Value};
use tokenkeeper::{Clock, TokioClock};

use crate::faults::{Fault, FaultRule, Times};
use crate::keys::SigningKey;
use crate::transport::InProcessTransport;

/// How a test client authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuthMethod {
    /// `client_secret_basic` only.
    Basic,
    /// `client_secret_post` only.
    Post,
    /// `client_secret_basic` or `client_secret_post`.
    Any,
    /// `private_key_jwt` only, with the client's registered public key
    /// ([`TestClient::private_key_jwt`]).
    PrivateKeyJwt,
    /// `client_secret_jwt` only (HS256 with the client secret).
    ClientSecretJwt,
    /// `tls_client_auth` (RFC 8705 §2.1): a certificate from the test CA naming the client's
    /// DNS name ([`TestClient::tls_client_auth`]), over the mTLS listener.
    TlsClientAuth,
    /// `self_signed_tls_client_auth` (RFC 8705 §2.2): the client's registered certificate
    /// ([`TestClient::self_signed_tls_client_auth`]), over the mTLS listener.
    SelfSignedTlsClientAuth,
}

/// A client registered at the test server.
#[derive(Debug, Clone)]
pub struct TestClient {
    /// `client_id`.
    pub client_id: String,
    /// The secret.
    pub client_secret: String,
    /// Accepted authentication.
    pub auth_method: ClientAuthMethod,
    /// Scopes the client may ask for; `None` allows any.
    pub allowed_scopes: Option<Vec<String>>,
    /// Registered redirect URIs (for the authorization code flow).
    pub redirect_uris: Vec<String>,
    /// The public JWK that verifies this client's `private_key_jwt` assertions.
    pub assertion_key: Option<Value>,
    /// Token requests without a DPoP proof are refused.
    pub dpop_required: bool,
    /// `tls_client_auth`: the DNS name the client's certificate must carry.
    pub tls_dns: Option<String>,
    /// `self_signed_tls_client_auth`: the `x5t#S256` of the client's certificate.
    pub tls_thumbprint: Option<String>,
}

impl TestClient {
    /// A client accepting either basic or post authentication, and any scope.
    pub fn new(client_id: &str, client_secret: &str) -> Self {
        Self {
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            auth_method: ClientAuthMethod::Any,
            allowed_scopes: None,
            redirect_uris: Vec::new(),
            assertion_key: None,
            dpop_required: false,
            tls_dns: None,
            tls_thumbprint: None,
        }
    }

    /// Authenticates only with `tls_client_auth`: a certificate from the test CA
    /// ([`crate::mtls::certs::CA`]) naming `dns`.
    pub fn tls_client_auth(mut self, dns: &str) -> Self {
        self.auth_method = ClientAuthMethod::TlsClientAuth;
        self.tls_dns = Some(dns.to_owned());
        self
    }

    /// Authenticates only with `self_signed_tls_client_auth`, with the certificate `cert_pem`.
    pub fn self_signed_tls_client_auth(mut self, cert_pem: &str) -> Self {
        self.auth_method = ClientAuthMethod::SelfSignedTlsClientAuth;
        self.tls_thumbprint = Some(crate::mtls::pem_thumbprint(cert_pem));
        self
    }

    /// Refuses token requests without a DPoP proof (`400 invalid_dpop_proof`).
    pub fn require_dpop(mut self) -> Self {
        self.dpop_required = true;
        self
    }

    /// Authenticates only with `private_key_jwt`, verified with this public JWK.
    pub fn private_key_jwt(mut self, public_jwk: Value) -> Self {
        self.auth_method = ClientAuthMethod::PrivateKeyJwt;
        self.assertion_key = Some(public_jwk);
        self
    }

    /// Registers a redirect URI.
    pub fn redirect_uri(mut self, uri: &str) -> Self {
        self.redirect_uris.push(uri.to_owned());
        self
    }

    /// Accepts only this authentication method.
    pub fn auth_method(mut self, method: ClientAuthMethod) -> Self {
        self.auth_method = method;
        self
    }

    /// Accepts only these scopes.
    pub fn allowed_scopes(mut self, scopes: &[&str]) -> Self {
        self.allowed_scopes = Some(scopes.iter().map(|s| (*s).to_owned()).collect());
        self
    }
}

/// A token request as the server received it, for exact-wire assertions.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// The request headers.
    pub headers: HeaderMap,
    /// The form fields, in order.
    pub form: Vec<(String, String)>,
}

impl RecordedRequest {
    /// The values of form field `name`.
    pub fn form_values(&self, name: &str) -> Vec<&str> {
        self.form
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The single value of form field `name`.
    pub fn form_value(&self, name: &str) -> Option<&str> {
        self.form_values(name).first().copied()
    }
}

pub(crate) struct ServerState {
    pub(crate) issuer: String,
    advertised_issuer: Mutex<Option<String>>,
    oidc_discovery: std::sync::atomic::AtomicBool,
    pub(crate) clients: Mutex<HashMap<String, TestClient>>,
    expires_in: Mutex<Option<u64>>,
    latency: Mutex<std::time::Duration>,
    counters: Mutex<HashMap<String, u64>>,
    faults: Mutex<Vec<FaultRule>>,
    recorded: Mutex<Vec<RecordedRequest>>,
    pub(crate) keys: Mutex<Vec<Arc<SigningKey>>>,
    pub(crate) login: Mutex<Option<String>>,
    pub(crate) codes: Mutex<HashMap<String, crate::authorize::CodeRecord>>,
    pub(crate) end_sessions: Mutex<u64>,
    pub(crate) clock: TokioClock,
    pub(crate) refresh: Mutex<crate::refresh::RefreshStore>,
    pub(crate) rotate_refresh_tokens: std::sync::atomic::AtomicBool,
    pub(crate) return_refresh_token: std::sync::atomic::AtomicBool,
    pub(crate) revocations: Mutex<u64>,
    pub(crate) id_token_overrides: Mutex<Map<String, Value>>,
    /// Claims the userinfo endpoint adds to (or replaces in) its answers.
    pub(crate) userinfo_overrides: Mutex<Map<String, Value>>,
    /// The `jti`s of client assertions already used (each is accepted once).
    assertion_jtis: Mutex<std::collections::HashSet<String>>,
    jwk_parameters: Mutex<Map<String, Value>>,
    jwks_cache_control: Mutex<Option<String>>,
    seq: AtomicU64,
    /// DPoP at the token endpoint.
    pub(crate) dpop: crate::dpop::DpopState,
    /// Ignore DPoP proofs and issue Bearer tokens (a server without DPoP support).
    pub(crate) dpop_ignored: std::sync::atomic::AtomicBool,
    /// `/authorize` shows a login page instead of logging the programmed user in.
    pub(crate) login_page: std::sync::atomic::AtomicBool,
    /// Token exchange: what to answer as `issued_token_type` (`None`: the usual).
    pub(crate) exchange_issued_type: Mutex<Option<Option<String>>>,
    /// The mTLS listener's base URL (`https://localhost:PORT`), when there is one.
    pub(crate) mtls_base: Mutex<Option<String>>,
}

impl ServerState {
    pub(crate) fn current_key(&self) -> Arc<SigningKey> {
        let keys = lock(&self.keys);
        keys[keys.len() - 1].clone()
    }

    pub(crate) fn key_by_kid(&self, kid: &str) -> Option<Arc<SigningKey>> {
        lock(&self.keys).iter().find(|k| k.kid == kid).cloned()
    }

    pub(crate) fn count(&self, what: &str) {
        *lock(&self.counters).entry(what.to_owned()).or_default() += 1;
    }

    fn next_fault(&self) -> Option<Fault> {
        let mut faults = lock(&self.faults);
        let rule = faults.first_mut()?;
        let fault = rule.fault.clone();
        if let Some(remaining) = rule.remaining.as_mut() {
            *remaining = remaining.saturating_sub(1);
            if *remaining == 0 {
                faults.remove(0);
            }
        }
        Some(fault)
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Builds a [`TestServer`].
#[derive(Debug)]
#[must_use]
pub struct TestServerBuilder {
    clients: Vec<TestClient>,
    expires_in: Option<u64>,
    bind: SocketAddr,
    fixed_key: bool,
    mtls: bool,
}

impl TestServerBuilder {
    /// Also serves over TLS with client certificates on a second port (RFC 8705), published
    /// as `mtls_endpoint_aliases`; its clients' certificates authenticate them
    /// ([`TestClient::tls_client_auth`]) and bind their tokens (`cnf.x5t#S256`). The TLS
    /// certificate is [`crate::mtls::certs::SERVER_CERT`], from the test CA.
    pub fn mtls(mut self) -> Self {
        self.mtls = true;
        self
    }

    /// Registers a client.
    pub fn client(mut self, client: TestClient) -> Self {
        self.clients.push(client);
        self
    }

    /// The `expires_in` of issued tokens; `None` omits it. Default 3600 s.
    pub fn expires_in(mut self, expires_in: Option<u64>) -> Self {
        self.expires_in = expires_in;
        self
    }

    /// Signs with a fixed key, the same in every process, instead of one generated at start:
    /// for benchmarks, whose figures must not move with the key. Never for anything else.
    pub fn fixed_signing_key(mut self) -> Self {
        self.fixed_key = true;
        self
    }

    /// The address to listen on (default `127.0.0.1:0`: a random loopback port). The issuer is
    /// `http://` plus the bound address.
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    /// Binds the address (a random loopback port by default) and starts serving.
    ///
    /// # Panics
    /// When the address cannot be bound; see [`TestServerBuilder::try_start`].
    pub async fn start(self) -> TestServer {
        match self.try_start().await {
            Ok(server) => server,
            Err(e) => panic!("tokenkeeper-testing: {e}"),
        }
    }

    /// Like [`TestServerBuilder::start`], with an error instead of a panic when the address
    /// cannot be bound.
    pub async fn try_start(self) -> std::io::Result<TestServer> {
        let listener = tokio::net::TcpListener::bind(self.bind)
            .await
            .map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot bind {}: {e}", self.bind))
            })?;
        let addr = listener.local_addr()?;
        let issuer = format!("http://{addr}");
        let key = if self.fixed_key {
            SigningKey::fixed("tk-test-1")
        } else {
            SigningKey::generate("tk-test-1")
        }
        .map_err(std::io::Error::other)?;
        let state = Arc::new(ServerState {
            issuer,
            advertised_issuer: Mutex::new(None),
            oidc_discovery: std::sync::atomic::AtomicBool::new(true),
            clients: Mutex::new(
                self.clients
                    .into_iter()
                    .map(|c| (c.client_id.clone(), c))
                    .collect(),
            ),
            expires_in: Mutex::new(self.expires_in),
            latency: Mutex::new(std::time::Duration::ZERO),
            counters: Mutex::new(HashMap::new()),
            faults: Mutex::new(Vec::new()),
            recorded: Mutex::new(Vec::new()),
            keys: Mutex::new(vec![Arc::new(key)]),
            login: Mutex::new(None),
            codes: Mutex::new(HashMap::new()),
            end_sessions: Mutex::new(0),
            clock: TokioClock::new(),
            refresh: Mutex::new(crate::refresh::RefreshStore::default()),
            rotate_refresh_tokens: std::sync::atomic::AtomicBool::new(false),
            return_refresh_token: std::sync::atomic::AtomicBool::new(true),
            revocations: Mutex::new(0),
            id_token_overrides: Mutex::new(Map::new()),
            userinfo_overrides: Mutex::new(Map::new()),
            assertion_jtis: Mutex::new(std::collections::HashSet::new()),
            jwk_parameters: Mutex::new(Map::new()),
            jwks_cache_control: Mutex::new(None),
            seq: AtomicU64::new(0),
            dpop: crate::dpop::DpopState::new(),
            dpop_ignored: std::sync::atomic::AtomicBool::new(false),
            login_page: std::sync::atomic::AtomicBool::new(false),
            exchange_issued_type: Mutex::new(None),
            mtls_base: Mutex::new(None),
        });
        let router = router(state.clone());
        let mtls_task = if self.mtls {
            let (mtls_addr, task) = crate::mtls::serve_tls(router.clone()).await?;
            *lock(&state.mtls_base) = Some(format!("https://localhost:{}", mtls_addr.port()));
            Some(task)
        } else {
            None
        };
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let serve_router = router.clone();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, serve_router)
                .with_graceful_shutdown(async move {
                    let _ = shutdown_rx.await;
                })
                .await;
            if let Some(task) = mtls_task {
                task.abort();
            }
        });
        Ok(TestServer {
            addr,
            state,
            router,
            shutdown: Some(shutdown_tx),
            task,
        })
    }
}

/// An in-process OAuth 2.0 / OpenID Connect authorization server for tests.
///
/// It listens on a random port of 127.0.0.1 and serves:
///
/// | path | what |
/// |---|---|
/// | `/.well-known/openid-configuration`, `/.well-known/oauth-authorization-server` | metadata |
/// | `/jwks` | the ES256 public key |
/// | `/token` | `client_credentials`, `authorization_code` (PKCE), `refresh_token` |
/// | `/authorize`, `/end_session` | the login (the programmed user, no page) and RP-initiated logout |
/// | `/revoke`, `/introspect` | RFC 7009 and RFC 7662 |
///
/// It validates what it receives — form encoding, no repeated fields, exactly one client
/// authentication method, the client's credentials (secret, `private_key_jwt`,
/// `client_secret_jwt` assertions with `jti` replay) and allowed scopes, DPoP proofs (signature,
/// `typ`, `alg`, `htm`, `htu`, `iat`, `jti` replay, a nonce when [`TestServer::set_dpop_nonce_required`],
/// `dpop_jkt` at the code exchange) — so a client bug fails the test. A valid proof gets a
/// DPoP-bound token (`cnf.jkt`); [`TestServer::start_api`] starts a protected API that checks
/// such tokens and their proofs. Access tokens are ES256 JWTs (`iss`, `sub`, `client_id`, `aud` from `resource`, `scope`,
/// `iat`, `exp`, `jti`). It counts requests per grant, records the last requests, and injects
/// faults ([`Fault`]).
///
/// [`TestServer::transport`] gives an in-process transport that calls the same routes without a
/// socket, for tests on `tokio::time::pause()`d time.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use tokenkeeper::{ClientConfig, ClientCredentialsTokenManager, TokenRequestParams};
/// use tokenkeeper_testing::{TestClient, TestServer};
///
/// let server = TestServer::builder()
///     .client(TestClient::new("worker", "secret"))
///     .start()
///     .await;
/// let tokens = ClientCredentialsTokenManager::builder()
///     .client("api", ClientConfig::new(server.token_endpoint(), "worker", "secret"))
///     .build()?;
/// tokens.get_token("api", &TokenRequestParams::default()).await?;
/// tokens.get_token("api", &TokenRequestParams::default()).await?;
/// assert_eq!(server.token_requests("client_credentials"), 1);
/// # Ok(()) }
/// ```
pub struct TestServer {
    addr: SocketAddr,
    state: Arc<ServerState>,
    router: Router,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer")
            .field("issuer", &self.state.issuer)
            .finish_non_exhaustive()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.abort();
    }
}

impl TestServer {
    /// A builder.
    pub fn builder() -> TestServerBuilder {
        TestServerBuilder {
            clients: Vec::new(),
            expires_in: Some(3600),
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            fixed_key: false,
            mtls: false,
        }
    }

    /// A server with one client, `client` / `secret`.
    pub async fn start() -> Self {
        Self::builder()
            .client(TestClient::new("client", "secret"))
            .start()
            .await
    }

    /// The socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The issuer, `http://127.0.0.1:PORT`.
    pub fn issuer(&self) -> &str {
        &self.state.issuer
    }

    /// The mTLS listener's base URL (`https://localhost:PORT`), with [`TestServerBuilder::mtls`].
    /// Its token endpoint is `{base}/token`; `{base}/mtls-api/…` is an API that accepts a
    /// certificate-bound token only over its certificate.
    pub fn mtls_base(&self) -> Option<String> {
        lock(&self.state.mtls_base).clone()
    }

    /// Calls to the mTLS API (`/mtls-api/…`), and how many it refused for a wrong certificate.
    pub fn mtls_api_calls(&self) -> (u64, u64) {
        (self.counter("mtls_api"), self.counter("mtls_api_refused"))
    }

    /// The token endpoint URL.
    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.state.issuer)
    }

    /// The JWKS URL.
    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks", self.state.issuer)
    }

    /// The router, for mounting elsewhere or calling in-process.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// An in-process transport to this server (no socket; obeys paused time).
    pub fn transport(&self) -> Arc<InProcessTransport> {
        Arc::new(InProcessTransport::new(self.router.clone()))
    }

    /// Registers (or replaces) a client.
    pub fn register_client(&self, client: TestClient) {
        lock(&self.state.clients).insert(client.client_id.clone(), client);
    }

    /// Sets the `expires_in` of tokens issued from now on (`None` omits it).
    pub fn set_expires_in(&self, expires_in: Option<u64>) {
        *lock(&self.state.expires_in) = expires_in;
    }

    /// Delays every token response by `latency` (on tokio's clock), faults included.
    pub fn set_latency(&self, latency: std::time::Duration) {
        *lock(&self.state.latency) = latency;
    }

    /// Serves (or not) `/.well-known/openid-configuration`; the RFC 8414
    /// `/.well-known/oauth-authorization-server` document is always served.
    pub fn set_oidc_discovery(&self, enabled: bool) {
        self.state
            .oidc_discovery
            .store(enabled, std::sync::atomic::Ordering::Relaxed);
    }

    /// Makes the metadata claim another issuer (to test issuer checks).
    pub fn set_advertised_issuer(&self, issuer: Option<&str>) {
        *lock(&self.state.advertised_issuer) = issuer.map(str::to_owned);
    }

    /// Injects `fault` into the next token requests. Faults queue up: the first one applies until
    /// used up.
    pub fn inject_fault(&self, fault: Fault, times: Times) {
        let remaining = match times {
            Times::Next(n) => Some(n),
            Times::Always => None,
        };
        if remaining == Some(0) {
            return;
        }
        lock(&self.state.faults).push(FaultRule { fault, remaining });
    }

    /// Removes every pending fault.
    pub fn clear_faults(&self) {
        lock(&self.state.faults).clear();
    }

    /// Token requests received for `grant_type` (faulted ones included).
    pub fn token_requests(&self, grant_type: &str) -> u64 {
        self.counter(&format!("grant:{grant_type}"))
    }

    /// Refresh requests refused with `invalid_grant` (an unknown, spent, revoked or misbound
    /// refresh token): a fleet that refreshes each token once sees none.
    pub fn refused_refreshes(&self) -> u64 {
        self.counter("refresh_refused")
    }

    /// All token requests received.
    pub fn total_token_requests(&self) -> u64 {
        self.counter("token")
    }

    /// Metadata requests received.
    pub fn discovery_requests(&self) -> u64 {
        self.counter("discovery")
    }

    fn counter(&self, name: &str) -> u64 {
        lock(&self.state.counters).get(name).copied().unwrap_or(0)
    }

    /// The last token requests received (at most 100), oldest first.
    pub fn recorded_requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state.recorded).clone()
    }

    /// The last token request received.
    pub fn last_token_request(&self) -> Option<RecordedRequest> {
        lock(&self.state.recorded).last().cloned()
    }

    /// Signs from now on with a new key; the JWKS serves it next to the previous ones, so
    /// relying parties that follow rotation refetch the JWKS on the unknown `kid`.
    pub fn rotate_signing_key(&self) {
        let mut keys = lock(&self.state.keys);
        let kid = format!(
            "tk-test-{}-{}",
            keys.len() + 1,
            self.state.seq.fetch_add(1, Ordering::Relaxed)
        );
        match SigningKey::generate(&kid) {
            Ok(key) => keys.push(Arc::new(key)),
            Err(e) => panic!("tokenkeeper-testing: {e}"),
        }
    }

    /// The user who "logs in" at the authorization endpoint (a programmable login, no UI):
    /// `None` (the default) answers `login_required`.
    pub fn set_login(&self, sub: Option<&str>) {
        *lock(&self.state.login) = sub.map(str::to_owned);
    }

    /// The authorization endpoint URL.
    pub fn authorization_endpoint(&self) -> String {
        format!("{}/authorize", self.state.issuer)
    }

    /// Changes the claims of the ID tokens issued from now on: each entry replaces the claim
    /// (`null` removes it). For tests of ID-token checks (`nonce`, `iss`, `azp`, `iat`, ...).
    pub fn set_id_token_claims(&self, overrides: Map<String, Value>) {
        *lock(&self.state.id_token_overrides) = overrides;
    }

    /// Claims the userinfo endpoint answers from now on, beside (or instead of) its own `sub`,
    /// `name` and `email`.
    pub fn set_userinfo_claims(&self, claims: Map<String, Value>) {
        *lock(&self.state.userinfo_overrides) = claims;
    }

    /// Userinfo requests received.
    pub fn userinfo_requests(&self) -> u64 {
        self.counter("userinfo")
    }

    /// A back-channel logout token (OpenID Connect Back-Channel Logout 1.0) for `client_id`,
    /// naming `sub` and/or `sid`, signed with the current key: `iss`, `aud`, `iat`, a fresh
    /// `jti`, `events`; `typ` `logout+jwt`.
    pub fn logout_token(&self, client_id: &str, sub: Option<&str>, sid: Option<&str>) -> String {
        let now = self.state.clock.now().as_millis() / 1000;
        let mut claims = Map::new();
        claims.insert("iss".into(), json!(self.state.issuer));
        claims.insert("aud".into(), json!(client_id));
        claims.insert("iat".into(), json!(now));
        claims.insert("exp".into(), json!(now + 120));
        claims.insert(
            "jti".into(),
            json!(format!("lt-{:016x}", fastrand::u64(..))),
        );
        claims.insert(
            "events".into(),
            json!({ tokenkeeper::BACKCHANNEL_LOGOUT_EVENT: {} }),
        );
        if let Some(sub) = sub {
            claims.insert("sub".into(), json!(sub));
        }
        if let Some(sid) = sid {
            claims.insert("sid".into(), json!(sid));
        }
        self.sign_jwt(&claims, Some("logout+jwt"))
    }

    /// Signs `claims` as a JWT with the server's current key (ES256, its `kid`), with `typ`
    /// when given: for tests that need a token of the server with claims of their choosing.
    pub fn sign_jwt(&self, claims: &Map<String, Value>, typ: Option<&str>) -> String {
        let key = self.state.current_key();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(key.kid.clone());
        header.typ = typ.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &key.encoding).unwrap_or_default()
    }

    /// Changes the parameters of every published JWK: each entry replaces the parameter (`null`
    /// removes it), e.g. `"use": "enc"` or `"alg": "RS256"`.
    pub fn set_jwk_parameters(&self, parameters: Map<String, Value>) {
        *lock(&self.state.jwk_parameters) = parameters;
    }

    /// The `Cache-Control` header of the JWKS response (none by default).
    pub fn set_jwks_cache_control(&self, value: Option<&str>) {
        *lock(&self.state.jwks_cache_control) = value.map(str::to_owned);
    }

    /// Stops publishing every signing key but the current one (after
    /// [`TestServer::rotate_signing_key`]: the old key is withdrawn).
    pub fn retire_old_signing_keys(&self) {
        let mut keys = lock(&self.state.keys);
        let current = keys.len() - 1;
        keys.drain(..current);
    }

    /// How many client assertions were accepted.
    pub fn client_assertions(&self) -> u64 {
        self.counter("client_assertions")
    }

    /// How many times the JWKS was fetched.
    pub fn jwks_requests(&self) -> u64 {
        self.counter("jwks")
    }

    /// How many RP-initiated logouts reached the end-session endpoint.
    pub fn end_sessions(&self) -> u64 {
        *lock(&self.state.end_sessions)
    }

    /// Rotates refresh tokens on every use (default off). With rotation, reusing a consumed
    /// refresh token is `invalid_grant` and revokes the whole grant, newest tokens included.
    pub fn set_rotate_refresh_tokens(&self, rotate: bool) {
        self.state
            .rotate_refresh_tokens
            .store(rotate, std::sync::atomic::Ordering::Relaxed);
    }

    /// Without rotation, whether a refresh response repeats the refresh token (default yes).
    pub fn set_return_refresh_token(&self, yes: bool) {
        self.state
            .return_refresh_token
            .store(yes, std::sync::atomic::Ordering::Relaxed);
    }

    /// A programmable login: issues a refresh token for user `sub` of client `client_id`, as if
    /// the user had just logged in and consented to `scope`.
    pub fn issue_refresh_token(&self, client_id: &str, sub: &str, scope: Option<&str>) -> String {
        lock(&self.state.refresh).issue(client_id, sub, scope, None)
    }

    /// Whether a refresh token is still usable (not consumed, revoked, or of a revoked grant).
    pub fn is_refresh_token_active(&self, token: &str) -> bool {
        lock(&self.state.refresh).is_active(token)
    }

    /// How many revocation requests named a token.
    pub fn revocations(&self) -> u64 {
        *lock(&self.state.revocations)
    }

    /// The revocation endpoint URL.
    pub fn revocation_endpoint(&self) -> String {
        format!("{}/revoke", self.state.issuer)
    }

    /// The introspection endpoint URL.
    pub fn introspection_endpoint(&self) -> String {
        format!("{}/introspect", self.state.issuer)
    }

    /// Token exchange answers: `None` the usual `issued_token_type` (the requested type, or an
    /// access token); `Some(None)` none at all; `Some(Some(t))` type `t` (to test clients).
    pub fn set_exchange_issued_type(&self, issued: Option<Option<&str>>) {
        *lock(&self.state.exchange_issued_type) = issued.map(|i| i.map(str::to_owned));
    }

    /// Shows a minimal login page at `/authorize` (a user name, no password: development only)
    /// instead of logging the programmed user in; `prompt=none` still answers at once.
    pub fn set_login_page(&self, enabled: bool) {
        self.state.login_page.store(enabled, Ordering::Relaxed);
    }

    /// Demands a DPoP nonce in token requests' proofs (`400 use_dpop_nonce` without the current
    /// one); every token endpoint response then carries `DPoP-Nonce`.
    pub fn set_dpop_nonce_required(&self, required: bool) {
        self.state
            .dpop
            .nonce_required
            .store(required, Ordering::Relaxed);
    }

    /// Replaces the token endpoint's DPoP nonce; returns the new one.
    pub fn rotate_dpop_nonce(&self) -> String {
        self.state.dpop.rotate_nonce()
    }

    /// Behaves like a server without DPoP support: proofs are checked but ignored, as is an
    /// authorization request's `dpop_jkt`, and tokens are `Bearer`.
    pub fn set_dpop_ignored(&self, ignored: bool) {
        self.state.dpop_ignored.store(ignored, Ordering::Relaxed);
    }

    /// How many DPoP proofs the token endpoint accepted.
    pub fn dpop_proofs_accepted(&self) -> u64 {
        self.state.dpop.accepted.load(Ordering::Relaxed)
    }

    /// How many DPoP proofs the token endpoint refused (a missing nonce included).
    pub fn dpop_proofs_refused(&self) -> u64 {
        self.state.dpop.refused.load(Ordering::Relaxed)
    }

    /// Starts the protected test API (its own port, so its own origin); see [`TestApi`](crate::TestApi).
    pub async fn start_api(&self) -> crate::api::TestApi {
        crate::api::TestApi::start(self.state.clone()).await
    }

    /// Verifies an access token this server issued (signature, issuer, expiry) and returns its
    /// claims.
    pub fn verify_access_token(&self, token: &str) -> Result<Map<String, Value>, String> {
        verify(&self.state, token)
    }
}

pub(crate) fn verify(state: &ServerState, token: &str) -> Result<Map<String, Value>, String> {
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_issuer(&[&state.issuer]);
    validation.validate_aud = false;
    validation.validate_exp = false;
    let kid = jsonwebtoken::decode_header(token)
        .map_err(|e| format!("invalid token: {e}"))?
        .kid
        .unwrap_or_default();
    let key = state.key_by_kid(&kid).ok_or("unknown signing key")?;
    let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding, &validation)
        .map_err(|e| format!("invalid token: {e}"))?;
    let now = state.clock.now().as_millis() / 1000;
    match data.claims.get("exp").and_then(Value::as_u64) {
        Some(exp) if exp > now => Ok(data.claims),
        Some(_) => Err("token expired".into()),
        None => Err("token has no exp".into()),
    }
}

fn router(state: Arc<ServerState>) -> Router {
    Router::new()
        .route("/.well-known/openid-configuration", get(oidc_metadata))
        .route("/.well-known/oauth-authorization-server", get(metadata))
        .route("/jwks", get(jwks))
        .route("/token", post(token))
        .route("/revoke", post(crate::refresh::revoke))
        .route("/authorize", get(crate::authorize::authorize))
        .route("/authorize/login", post(crate::authorize::login_form))
        .route("/end_session", get(crate::authorize::end_session))
        .route("/userinfo", get(crate::userinfo::userinfo))
        .route("/introspect", post(crate::refresh::introspect))
        .route("/mtls-api/{*rest}", get(crate::mtls::api))
        .with_state(state)
}

async fn oidc_metadata(State(state): State<Arc<ServerState>>) -> Response {
    if !state
        .oidc_discovery
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        state.count("discovery");
        return StatusCode::NOT_FOUND.into_response();
    }
    metadata(State(state)).await
}

async fn metadata(State(state): State<Arc<ServerState>>) -> Response {
    state.count("discovery");
    let issuer = lock(&state.advertised_issuer)
        .clone()
        .unwrap_or_else(|| state.issuer.clone());
    let base = &state.issuer;
    let mut metadata = json!({
        "issuer": issuer,
        "token_endpoint": format!("{base}/token"),
        "jwks_uri": format!("{base}/jwks"),
        "authorization_endpoint": format!("{base}/authorize"),
        "end_session_endpoint": format!("{base}/end_session"),
        "userinfo_endpoint": format!("{base}/userinfo"),
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": true,
        "subject_types_supported": ["public"],
        "revocation_endpoint": format!("{base}/revoke"),
        "introspection_endpoint": format!("{base}/introspect"),
        "grant_types_supported": ["client_credentials", "refresh_token", "authorization_code", crate::exchange::GRANT, crate::jwt_bearer::GRANT],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "prompt_values_supported": ["none", "login", "consent"],
        "dpop_signing_alg_values_supported": ["ES256", "ES384", "EdDSA", "PS256", "RS256"],
    });
    if let Some(mtls) = lock(&state.mtls_base).clone() {
        metadata["mtls_endpoint_aliases"] = json!({
            "token_endpoint": format!("{mtls}/token"),
            "revocation_endpoint": format!("{mtls}/revoke"),
            "introspection_endpoint": format!("{mtls}/introspect"),
        });
        metadata["tls_client_certificate_bound_access_tokens"] = json!(true);
        metadata["token_endpoint_auth_methods_supported"] = json!([
            "client_secret_basic",
            "client_secret_post",
            "tls_client_auth",
            "self_signed_tls_client_auth"
        ]);
    }
    Json(metadata).into_response()
}

async fn jwks(State(state): State<Arc<ServerState>>) -> Response {
    state.count("jwks");
    let extra = lock(&state.jwk_parameters).clone();
    let keys: Vec<Value> = lock(&state.keys)
        .iter()
        .map(|k| {
            let mut jwk = k.jwk.clone();
            for (name, value) in &extra {
                match value {
                    Value::Null => {
                        if let Some(map) = jwk.as_object_mut() {
                            map.remove(name);
                        }
                    }
                    value => jwk[name.as_str()] = value.clone(),
                }
            }
            jwk
        })
        .collect();
    let mut response = Json(json!({ "keys": keys })).into_response();
    if let Some(value) = lock(&state.jwks_cache_control)
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        response.headers_mut().insert(header::CACHE_CONTROL, value);
    }
    response
}

pub(crate) fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let mut response = (
        status,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"token\""),
        );
    }
    response
}

async fn token(
    State(state): State<Arc<ServerState>>,
    peer: Option<axum::Extension<crate::mtls::PeerCertificate>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let peer = peer.and_then(|p| p.0 .0);
    state.count("token");
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    {
        let mut recorded = lock(&state.recorded);
        recorded.push(RecordedRequest {
            headers: headers.clone(),
            form: form.clone(),
        });
        if recorded.len() > 100 {
            recorded.remove(0);
        }
    }
    if let Some(grant) = form.iter().find(|(k, _)| k == "grant_type") {
        state.count(&format!("grant:{}", grant.1));
    }
    let latency = *lock(&state.latency);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let fault = match state.next_fault() {
        Some(fault) => apply_fault(fault).await,
        None => None,
    };
    let mut response = match fault {
        Some(response) => response,
        None => match handle_token(&state, &headers, &form, peer.as_deref().map(Vec::as_slice)) {
            Ok(response) => response,
            Err(response) => response,
        },
    };
    if let Some(nonce) = state.dpop.current_nonce() {
        if let Ok(value) = HeaderValue::try_from(nonce) {
            response.headers_mut().insert("dpop-nonce", value);
        }
    }
    response
}

async fn apply_fault(fault: Fault) -> Option<Response> {
    match fault {
        Fault::Latency(delay) => {
            tokio::time::sleep(delay).await;
            None
        }
        Fault::OAuthError {
            status,
            error,
            description,
        } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            Some(oauth_error(
                status,
                &error,
                description.as_deref().unwrap_or(""),
            ))
        }
        Fault::HtmlBody { status } => Some(
            (
                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
                [(header::CONTENT_TYPE, "text/html")],
                "<html><body><h1>502 Bad Gateway</h1></body></html>",
            )
                .into_response(),
        ),
        Fault::MalformedJson => Some(
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                "{\"access_token\": \"abc\", \"token_type\": ",
            )
                .into_response(),
        ),
        Fault::OversizedBody { bytes } => {
            let chunk = Bytes::from(vec![b' '; 8192]);
            let chunks = bytes / 8192 + 1;
            let stream = futures_util::stream::iter(
                std::iter::once(Ok::<_, std::io::Error>(Bytes::from_static(
                    b"{\"access_token\":\"a\",\"token_type\":\"Bearer\",\"pad\":\"",
                )))
                .chain(std::iter::repeat_n(chunk, chunks).map(Ok))
                .chain(std::iter::once(Ok(Bytes::from_static(b"\"}")))),
            );
            Some(
                (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/json")],
                    Body::from_stream(stream),
                )
                    .into_response(),
            )
        }
        Fault::CloseConnection => {
            let stream = futures_util::stream::iter(vec![
                Ok(Bytes::from_static(b"{\"access_token\":\"abc\"")),
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "connection closed by fault injection",
                )),
            ]);
            Some(
                (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/json")],
                    Body::from_stream(stream),
                )
                    .into_response(),
            )
        }
    }
}

pub(crate) struct Authenticated {
    pub(crate) client: TestClient,
}

/// Authenticates the client of a request to any endpoint.
pub(crate) fn authenticate_request(
    state: &ServerState,
    headers: &HeaderMap,
    form: &[(String, String)],
    peer: Option<&[u8]>,
) -> Result<Authenticated, Response> {
    authenticate(state, headers, form, peer)
}

fn authenticate(
    state: &ServerState,
    headers: &HeaderMap,
    form: &[(String, String)],
    peer: Option<&[u8]>,
) -> Result<Authenticated, Response> {
    if let Some(authenticated) = crate::mtls::authenticate(state, headers, form, peer)? {
        return Ok(authenticated);
    }
    if form.iter().any(|(k, _)| k == "client_assertion_type") {
        if headers.contains_key(header::AUTHORIZATION)
            || form.iter().any(|(k, _)| k == "client_secret")
        {
            return Err(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "client authentication must use only one method",
            ));
        }
        return authenticate_assertion(state, form);
    }
    let basic = match headers.get(header::AUTHORIZATION) {
        Some(value) => {
            let value = value.to_str().unwrap_or_default();
            let Some(encoded) = value.strip_prefix("Basic ") else {
                return Err(oauth_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "unsupported Authorization scheme",
                ));
            };
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .ok()
                .and_then(|d| String::from_utf8(d).ok());
            let Some((id, secret)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
                return Err(oauth_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "malformed Basic credentials",
                ));
            };
            // RFC 6749 §2.3.1: both parts are form-urlencoded.
            let decode = |s: &str| -> String {
                url::form_urlencoded::parse(format!("x={s}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            };
            Some((decode(id), decode(secret)))
        }
        None => None,
    };
    let post_secret = form
        .iter()
        .find(|(k, _)| k == "client_secret")
        .map(|(_, v)| v.clone());
    let post_id = form
        .iter()
        .find(|(k, _)| k == "client_id")
        .map(|(_, v)| v.clone());
    if basic.is_some() && post_secret.is_some() {
        return Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "client authentication must use only one method",
        ));
    }
    let (method, id, secret) = match (basic, post_id, post_secret) {
        (Some((id, secret)), post_id, None) => {
            if post_id.is_some_and(|p| p != id) {
                return Err(oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "client_id does not match the credentials",
                ));
            }
            (ClientAuthMethod::Basic, id, secret)
        }
        (None, Some(id), Some(secret)) => (ClientAuthMethod::Post, id, secret),
        _ => {
            return Err(oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "no client authentication",
            ));
        }
    };
    let client = lock(&state.clients).get(&id).cloned();
    let Some(client) = client else {
        return Err(oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "unknown client",
        ));
    };
    if client.auth_method != ClientAuthMethod::Any && client.auth_method != method {
        return Err(oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "authentication method not allowed for this client",
        ));
    }
    if client.client_secret.as_bytes() != secret.as_bytes() {
        return Err(oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        ));
    }
    Ok(Authenticated { client })
}

/// Validates a client assertion (RFC 7523 §3): the type, the signature (the client's
/// registered key, or HS256 with its secret), `iss` = `sub` = the client, `aud` (the token
/// endpoint or the issuer), `exp` (present, not past, at most 10 minutes ahead) and `jti`
/// (present, each once).
fn authenticate_assertion(
    state: &ServerState,
    form: &[(String, String)],
) -> Result<Authenticated, Response> {
    let refuse = |why: &str| oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", why);
    let value = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if value("client_assertion_type")
        != Some(tokenkeeper::protocol::client_assertion::JWT_BEARER_ASSERTION)
    {
        return Err(refuse("unsupported client_assertion_type"));
    }
    let assertion = value("client_assertion").ok_or_else(|| refuse("no client_assertion"))?;
    let header =
        jsonwebtoken::decode_header(assertion).map_err(|_| refuse("malformed client_assertion"))?;
    let unverified =
        unverified_claims(assertion).ok_or_else(|| refuse("malformed client_assertion"))?;
    let iss = unverified
        .get("iss")
        .and_then(Value::as_str)
        .ok_or_else(|| refuse("no iss"))?
        .to_owned();
    if value("client_id").is_some_and(|id| id != iss) {
        return Err(refuse("client_id is not the assertion's iss"));
    }
    let client = lock(&state.clients)
        .get(&iss)
        .cloned()
        .ok_or_else(|| refuse("unknown client"))?;
    let key = match (client.auth_method, header.alg) {
        (ClientAuthMethod::ClientSecretJwt, jsonwebtoken::Algorithm::HS256) => {
            jsonwebtoken::DecodingKey::from_secret(client.client_secret.as_bytes())
        }
        (ClientAuthMethod::PrivateKeyJwt, alg)
            if !matches!(
                alg,
                jsonwebtoken::Algorithm::HS256
                    | jsonwebtoken::Algorithm::HS384
                    | jsonwebtoken::Algorithm::HS512
            ) =>
        {
            let jwk: jsonwebtoken::jwk::Jwk = client
                .assertion_key
                .clone()
                .and_then(|k| serde_json::from_value(k).ok())
                .ok_or_else(|| refuse("the client has no usable key"))?;
            jsonwebtoken::DecodingKey::from_jwk(&jwk).map_err(|_| refuse("unusable client key"))?
        }
        _ => return Err(refuse("authentication method not allowed for this client")),
    };
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.validate_exp = false; // checked below, on the server's clock
    validation.required_spec_claims.clear();
    let token_endpoint = format!("{}/token", state.issuer);
    validation.set_audience(&[token_endpoint.as_str(), state.issuer.as_str()]);
    let claims = jsonwebtoken::decode::<Map<String, Value>>(assertion, &key, &validation)
        .map_err(|_| refuse("client assertion refused"))?
        .claims;
    if claims.get("sub").and_then(Value::as_str) != Some(iss.as_str()) {
        return Err(refuse("sub is not the client"));
    }
    let now = state.clock.now().as_millis() / 1000;
    match claims.get("exp").and_then(Value::as_u64) {
        Some(exp) if exp + 15 >= now && exp <= now + 600 => {}
        Some(_) => return Err(refuse("the assertion expired or lives too long")),
        None => return Err(refuse("no exp")),
    }
    let jti = claims
        .get("jti")
        .and_then(Value::as_str)
        .ok_or_else(|| refuse("no jti"))?;
    if !lock(&state.assertion_jtis).insert(jti.to_owned()) {
        return Err(refuse("the assertion's jti was used before"));
    }
    state.count("client_assertions");
    Ok(Authenticated { client })
}

fn handle_token(
    state: &ServerState,
    headers: &HeaderMap,
    form: &[(String, String)],
    peer: Option<&[u8]>,
) -> Result<Response, Response> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with("application/x-www-form-urlencoded") {
        return Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (name, _) in form {
        if name != "resource" && name != "audience" && !seen.insert(name.as_str()) {
            return Err(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!("parameter {name} is repeated"),
            ));
        }
    }
    let auth = authenticate(state, headers, form, peer)?;
    // A token requested over mutual TLS is bound to the certificate (RFC 8705 §3).
    let x5t = peer.map(crate::mtls::thumbprint);
    let x5t = x5t.as_deref();
    let jkt = token_request_proof(state, headers, &auth.client)?;
    let jkt = jkt.as_deref();
    let grant = form
        .iter()
        .find(|(k, _)| k == "grant_type")
        .map(|(_, v)| v.as_str());
    match grant {
        Some("client_credentials") => client_credentials(state, &auth.client, form, jkt, x5t),
        Some(crate::jwt_bearer::GRANT) => {
            crate::jwt_bearer::jwt_bearer(state, &auth.client, form, jkt)
        }
        Some(crate::exchange::GRANT) => {
            crate::exchange::token_exchange(state, &auth.client, form, jkt)
        }
        Some("refresh_token") => {
            crate::refresh::refresh_token_grant(state, &auth.client, form, jkt, x5t)
        }
        Some("authorization_code") => {
            crate::authorize::authorization_code_grant(state, &auth.client, form, jkt)
        }
        Some(_) => Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant type not supported",
        )),
        None => Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "grant_type is missing",
        )),
    }
}

/// Checks a token request's DPoP proof (after client authentication, so that a nonce retry
/// needs a fresh client assertion); the thumbprint to bind tokens to, if any.
fn token_request_proof(
    state: &ServerState,
    headers: &HeaderMap,
    client: &TestClient,
) -> Result<Option<String>, Response> {
    let now = state.clock.now().as_millis() / 1000;
    let htu = format!("{}/token", state.issuer);
    let jkt = match state.dpop.verify(headers, "POST", &htu, None, now) {
        Ok(jkt) => jkt,
        Err(crate::dpop::ProofError::UseNonce) => {
            return Err(oauth_error(
                StatusCode::BAD_REQUEST,
                "use_dpop_nonce",
                "Authorization server requires nonce in DPoP proof",
            ))
        }
        Err(crate::dpop::ProofError::Invalid(why)) => {
            return Err(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_dpop_proof",
                &why,
            ))
        }
    };
    if jkt.is_none() && client.dpop_required {
        return Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_dpop_proof",
            "this client must send a DPoP proof",
        ));
    }
    if state.dpop_ignored.load(Ordering::Relaxed) {
        return Ok(None);
    }
    Ok(jkt)
}

/// `Bearer`, or `DPoP` for a token bound to a key.
pub(crate) fn token_type(jkt: Option<&str>) -> &'static str {
    if jkt.is_some() {
        "DPoP"
    } else {
        "Bearer"
    }
}

/// Signs an access token (ES256 JWT) for `sub`; returns it with the `expires_in` to announce.
pub(crate) fn issue_access_token(
    state: &ServerState,
    sub: &str,
    client_id: &str,
    scope: Option<&str>,
    resources: &[&str],
    extras: Map<String, Value>,
    jkt: Option<&str>,
) -> Result<(String, Option<u64>), Response> {
    let cnf = jkt.map(|jkt| json!({ "jkt": jkt }));
    issue_bound_access_token(state, sub, client_id, scope, resources, extras, cnf)
}

/// The claims of a JWT, read without checking anything (to find out who signed it).
pub(crate) fn unverified_claims(jwt: &str) -> Option<Map<String, Value>> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The `cnf` claim of a token bound to a DPoP key (`jkt`) and/or a certificate (`x5t#S256`).
pub(crate) fn cnf(jkt: Option<&str>, x5t: Option<&str>) -> Option<Value> {
    let mut cnf = Map::new();
    if let Some(jkt) = jkt {
        cnf.insert("jkt".into(), json!(jkt));
    }
    if let Some(x5t) = x5t {
        cnf.insert("x5t#S256".into(), json!(x5t));
    }
    (!cnf.is_empty()).then_some(Value::Object(cnf))
}

/// Signs an access token bound by `cnf` (`jkt` for DPoP, `x5t#S256` for mTLS), if given.
pub(crate) fn issue_bound_access_token(
    state: &ServerState,
    sub: &str,
    client_id: &str,
    scope: Option<&str>,
    resources: &[&str],
    extras: Map<String, Value>,
    cnf: Option<Value>,
) -> Result<(String, Option<u64>), Response> {
    let expires_in = *lock(&state.expires_in);
    let now = state.clock.now().as_millis() / 1000;
    let lifetime = expires_in.unwrap_or(3600);
    let seq = state.seq.fetch_add(1, Ordering::Relaxed);
    let aud = match resources.len() {
        0 => json!(format!("{}/api", state.issuer)),
        1 => json!(resources[0]),
        _ => json!(resources),
    };
    let mut claims = json!({
        "iss": state.issuer,
        "sub": sub,
        "client_id": client_id,
        "aud": aud,
        "iat": now,
        "exp": now + lifetime,
        "jti": format!("at-{seq}-{}", fastrand::u64(..)),
    });
    if let Some(scope) = scope {
        claims["scope"] = json!(scope);
    }
    if !extras.is_empty() {
        claims["ext"] = Value::Object(extras);
    }
    if let Some(cnf) = cnf {
        claims["cnf"] = cnf;
    }
    let key = state.current_key();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(key.kid.clone());
    header.typ = Some("at+jwt".into());
    let token = jsonwebtoken::encode(&header, &claims, &key.encoding).map_err(|e| {
        oauth_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            &format!("signing failed: {e}"),
        )
    })?;
    Ok((token, expires_in))
}

fn client_credentials(
    state: &ServerState,
    client: &TestClient,
    form: &[(String, String)],
    jkt: Option<&str>,
    x5t: Option<&str>,
) -> Result<Response, Response> {
    let scope = form
        .iter()
        .find(|(k, _)| k == "scope")
        .map(|(_, v)| v.clone());
    if let (Some(scope), Some(allowed)) = (&scope, &client.allowed_scopes) {
        if let Some(bad) = scope.split(' ').find(|s| !allowed.iter().any(|a| a == s)) {
            return Err(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                &format!("scope {bad} is not allowed"),
            ));
        }
    }
    let resources: Vec<&str> = form
        .iter()
        .filter(|(k, _)| k == "resource")
        .map(|(_, v)| v.as_str())
        .collect();
    for resource in &resources {
        if url::Url::parse(resource)
            .map(|u| u.fragment().is_some())
            .unwrap_or(true)
        {
            return Err(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_target",
                "resource must be an absolute URI without fragment",
            ));
        }
    }
    let extras: Map<String, Value> = form
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "grant_type" | "scope" | "resource" | "client_id" | "client_secret"
            )
        })
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let (token, expires_in) = issue_bound_access_token(
        state,
        &client.client_id,
        &client.client_id,
        scope.as_deref(),
        &resources,
        extras,
        cnf(jkt, x5t),
    )?;
    let mut body = json!({"access_token": token, "token_type": token_type(jkt)});
    if let Some(expires_in) = expires_in {
        body["expires_in"] = json!(expires_in);
    }
    if let Some(scope) = scope {
        body["scope"] = json!(scope);
    }
    let mut response = Json(body).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
