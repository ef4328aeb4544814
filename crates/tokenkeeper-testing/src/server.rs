//! The server: its builder, its routes, its lifecycle, and what tests ask of it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Map, Value};
use tokenkeeper::{Clock, TokioClock};

use crate::faults::{Fault, FaultRule, Times};
use crate::keys::SigningKey;
use crate::state::{lock, RecordedRequest, ServerState, TestClient};
use crate::transport::InProcessTransport;

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
            refresh: Mutex::new(crate::refresh_tokens::RefreshStore::default()),
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
            pushed: Mutex::new(HashMap::new()),
            require_pushed: std::sync::atomic::AtomicBool::new(false),
            request_jtis: Mutex::new(std::collections::HashSet::new()),
            devices: Mutex::new(HashMap::new()),
            device_timing: Mutex::new((5, 600)),
            authentication: Mutex::new(crate::state::Authentication::default()),
            last_authorization: Mutex::new(None),
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
        self.state.counter(name)
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

    /// Demands that every authorization request be pushed (RFC 9126): the metadata says
    /// `require_pushed_authorization_requests`, and `/authorize` refuses any request without a
    /// `request_uri`.
    pub fn set_require_pushed_authorization(&self, required: bool) {
        self.state.require_pushed.store(required, Ordering::Relaxed);
    }

    /// Pushed authorization requests accepted (`/par`).
    pub fn pushed_requests(&self) -> u64 {
        self.counter("par")
    }

    /// The last authorization request `/authorize` acted on — its parameters after a pushed
    /// request or a request object was read — and how it came: `"pushed"`, `"signed"` (a
    /// request object in the URL) or `"plain"`.
    pub fn last_authorization_request(&self) -> Option<(String, HashMap<String, String>)> {
        lock(&self.state.last_authorization).clone()
    }

    /// Request objects accepted (pushed or in the URL).
    pub fn request_objects(&self) -> u64 {
        self.counter("request_objects")
    }

    /// The `acr` of a login (`None`: no `acr` claim), and the stronger one a login that asks
    /// for it in `acr_values` steps up to (with a fresh `auth_time`).
    pub fn set_login_acr(&self, acr: Option<&str>, step_up: Option<&str>) {
        let mut auth = lock(&self.state.authentication);
        auth.acr = acr.map(str::to_owned);
        auth.step_up_acr = step_up.map(str::to_owned);
    }

    /// Makes the user's last authentication `ago` old: a login with a smaller `max_age` (or
    /// `prompt=login`) authenticates again.
    pub fn set_authenticated_ago(&self, ago: std::time::Duration) {
        let now = self.state.clock.now().as_millis() / 1000;
        lock(&self.state.authentication).auth_time = Some(now.saturating_sub(ago.as_secs()));
    }

    /// The `interval` and `expires_in` (seconds) of device authorizations from now on (default
    /// 5 and 600).
    pub fn set_device_timing(&self, interval: u64, expires_in: u64) {
        *lock(&self.state.device_timing) = (interval, expires_in);
    }

    /// The user with `user_code` approves the device as `sub`; false when no pending device
    /// authorization has that code.
    pub fn approve_device(&self, user_code: &str, sub: &str) -> bool {
        crate::device::decide(&self.state, user_code, Some(sub))
    }

    /// The user with `user_code` refuses the device.
    pub fn deny_device(&self, user_code: &str) -> bool {
        crate::device::decide(&self.state, user_code, None)
    }

    /// Device-code token requests received, and how many were answered `slow_down`.
    pub fn device_polls(&self) -> (u64, u64) {
        (
            self.counter("device_poll"),
            self.counter("device_slow_down"),
        )
    }

    /// Verifies an access token this server issued (signature, issuer, expiry) and returns its
    /// claims.
    pub fn verify_access_token(&self, token: &str) -> Result<Map<String, Value>, String> {
        crate::access_tokens::verify(&self.state, token)
    }
}

fn router(state: Arc<ServerState>) -> Router {
    Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(crate::discovery::oidc_metadata),
        )
        .route(
            "/.well-known/oauth-authorization-server",
            get(crate::discovery::metadata),
        )
        .route("/jwks", get(crate::discovery::jwks))
        .route("/token", post(crate::token::token))
        .route("/revoke", post(crate::revocation::revoke))
        .route("/authorize", get(crate::authorize::authorize))
        .route("/authorize/login", post(crate::authorize::login_form))
        .route("/end_session", get(crate::end_session::end_session))
        .route("/userinfo", get(crate::userinfo::userinfo))
        .route("/introspect", post(crate::introspection::introspect))
        .route("/par", post(crate::par::par))
        .route(
            "/device_authorization",
            post(crate::device::device_authorization),
        )
        .route(
            "/device",
            get(crate::device::verification_page).post(crate::device::verification_form),
        )
        .route("/mtls-api/{*rest}", get(crate::mtls_api::mtls_api))
        .with_state(state)
}
