//! The user token manager.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use url::Url;

use super::login::LoginDpop;
use super::store::{InMemoryUserTokenStore, SessionKey, StoreOutcome, UserTokenStore, UserTokens};
use crate::cache::{
    lease_or_settled, CacheKey, CachedToken, KeyWriter, Lease, LeaseOptions, LeaseOutcome,
};
use crate::client_credentials::flight::{FlightMode, Flights, Joined};
use crate::client_credentials::{BackoffPolicy, ClientConfig, LifetimePolicy};
use crate::clock::{Clock, Timestamp};
use crate::destinations::Destinations;
use crate::dpop::{DpopAlgorithm, DpopKey, DpopKeyStore, NonceStore, Presenter};
use crate::error::{ConfigError, Error};
use crate::metrics::ClientMetrics;
use crate::protocol::client_assertion::ClientAssertionProvider;
use crate::protocol::discovery::DEFAULT_METADATA_LIFETIME;
use crate::protocol::profile::{Profile, PushedAuthorization};
use crate::protocol::token_endpoint::TokenEndpoint;
use crate::protocol::token_request::{Grant, TokenRequest};
use crate::protocol::token_response::TokenResponse;
use crate::protocol::types::{Resource, Scope};
use crate::settings::{settings_setters, Settings};
use std::sync::atomic::{AtomicBool, Ordering};

/// Parameters of one user-token request.
///
/// The default asks for the session's default token: the one the login stored, for the
/// client's configured resource (if any). A resource or a scope given here asks for a token of
/// its own: every distinct (resource, scope) is its own entry in the session, refreshed with the
/// session's one refresh token, and never returned for, nor written over, another (UT-06,
/// UT-11).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserTokenParams {
    resource: Option<Resource>,
    scope: Option<Scope>,
    force_renewal: bool,
}

impl UserTokenParams {
    /// The default token.
    pub fn new() -> Self {
        Self::default()
    }

    /// A token for this resource (RFC 8707); each resource has its own token, all refreshed with
    /// the session's one refresh token.
    pub fn resource(mut self, resource: Resource) -> Self {
        self.resource = Some(resource);
        self
    }

    /// A token for exactly this (narrower) scope, obtained with the refresh token and kept as
    /// an entry of its own.
    pub fn scope(mut self, scope: impl Into<Scope>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// Refresh now even if the stored token is valid.
    pub fn force_renewal(mut self, force: bool) -> Self {
        self.force_renewal = force;
        self
    }
}

/// What the client's configuration adds to every request: its resource and scope are the
/// defaults of [`UserTokenParams`], its extra parameters go with every refresh.
#[derive(Debug, Default)]
struct Defaults {
    resource: Option<Resource>,
    scope: Option<Scope>,
    extra: Vec<(String, String)>,
}

impl Defaults {
    fn resource<'a>(&'a self, params: &'a UserTokenParams) -> Option<&'a Resource> {
        params.resource.as_ref().or(self.resource.as_ref())
    }

    /// The entry of the session that `params` name: the resource, and the scope when one is
    /// asked for (a resource is an absolute URI without spaces, so " scope=" cannot be part of
    /// it: distinct parameters never share an entry).
    fn slot<'a>(&'a self, params: &'a UserTokenParams) -> std::borrow::Cow<'a, str> {
        let resource = self.resource(params).map_or("", Resource::as_str);
        match &params.scope {
            None => std::borrow::Cow::Borrowed(resource),
            Some(scope) => std::borrow::Cow::Owned(format!("{resource} scope={scope}")),
        }
    }
}

/// Keeps users' access tokens valid: per session, refreshed ahead of expiry with the session's
/// refresh token, exactly once at a time.
///
/// # Guarantees
///
/// - **One refresh per session at a time**, in this process (a per-session lock; concurrent
///   callers for the same token share one refresh) and, with a [`Lease`], across instances. The
///   refresh token is re-read from the store once the lock is held, so a refresh token rotated by
///   the previous holder is the one used: one-time refresh tokens never race.
/// - **Safe persistence**: new tokens are stored with a compare-and-set on the session's version
///   before the lock is released; a response without `refresh_token` keeps the old one.
/// - **`invalid_grant`** clears the session's tokens and returns
///   [`Error::ReauthenticationRequired`], with no retry. Any other failure keeps the stored tokens
///   (and the key backs off like client-credentials fetches).
/// - **Per-resource and per-scope tokens** are distinct entries sharing the refresh token; a
///   refresh for one never returns, nor overwrites, another's token (UT-06, UT-11).
/// - **401s** renew a token at most once, then back off (see [`crate::source`]).
/// - Usable anywhere: everything is keyed by [`SessionKey`], so background jobs and websocket
///   handlers use it as well as request handlers.
#[derive(Clone)]
pub struct UserTokenManager {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: TokenEndpoint,
    defaults: Defaults,
    destinations: Option<Destinations>,
    metrics: ClientMetrics,
    short_lifetime_warned: AtomicBool,
    revocation_endpoint: Option<Url>,
    store: Arc<dyn UserTokenStore>,
    clock: Arc<dyn Clock>,
    lifetime: LifetimePolicy,
    backoff: BackoffPolicy,
    flights: Flights,
    session_locks: Mutex<HashMap<SessionKey, Arc<tokio::sync::Mutex<()>>>>,
    lease: Option<(Arc<dyn Lease>, LeaseOptions)>,
    transport: crate::http::SharedTransport,
    validator: tokio::sync::OnceCell<Arc<crate::protocol::id_token::IdTokenValidator>>,
    dpop: Option<UserDpop>,
    login: LoginProtocol,
}

/// How logins are started: the profile, pushed authorization, request objects.
pub(crate) struct LoginProtocol {
    pub(crate) profile: Profile,
    pub(crate) pushed: PushedAuthorization,
    /// Signs request objects (RFC 9101), when they are on.
    pub(crate) request_signer: Option<Arc<dyn ClientAssertionProvider>>,
}

/// How the sessions' tokens are bound to DPoP keys.
enum UserDpop {
    /// One key for the client ([`ClientConfig::dpop`]).
    Client(Presenter),
    /// A key per session, made at login, kept in a key store, dropped at logout.
    PerSession {
        keys: Arc<dyn DpopKeyStore>,
        algorithm: DpopAlgorithm,
        nonces: Arc<NonceStore>,
        /// Keys read from the store, so that presenting a token costs no store round trip.
        local: Mutex<HashMap<String, Arc<DpopKey>>>,
    },
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How many keys a manager keeps at hand from a per-session key store.
const LOCAL_KEYS: usize = 10_000;

impl fmt::Debug for UserTokenManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserTokenManager")
            .field("endpoint", &self.inner.endpoint)
            .field("store", &self.inner.store)
            .finish_non_exhaustive()
    }
}

/// Builds a [`UserTokenManager`].
#[must_use]
pub struct UserTokenManagerBuilder {
    client: ClientConfig,
    store: Option<Arc<dyn UserTokenStore>>,
    revocation_endpoint: Option<String>,
    settings: Settings,
    per_session_dpop: Option<(DpopAlgorithm, Option<Arc<dyn DpopKeyStore>>)>,
    profile: Profile,
    pushed: Option<PushedAuthorization>,
    request_objects: bool,
    request_signer: Option<Arc<dyn ClientAssertionProvider>>,
}

impl fmt::Debug for UserTokenManagerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserTokenManagerBuilder")
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

impl UserTokenManagerBuilder {
    /// Stores sessions in `store` (default: in memory).
    pub fn store(mut self, store: Arc<dyn UserTokenStore>) -> Self {
        self.store = Some(store);
        self
    }

    settings_setters!();

    /// The RFC 7009 revocation endpoint (found by discovery when the client is configured with
    /// an issuer).
    pub fn revocation_endpoint(mut self, url: impl Into<String>) -> Self {
        self.revocation_endpoint = Some(url.into());
        self
    }

    /// Binds each session's tokens to a DPoP key of its own (PK-08): made at login (its
    /// thumbprint goes on the authorization request as `dpop_jkt`), used for the code exchange,
    /// every refresh and every API call, and removed at logout. Keys live in an
    /// [`InMemoryDpopKeyStore`](crate::dpop::InMemoryDpopKeyStore) unless
    /// [`UserTokenManagerBuilder::dpop_key_store`] names another (for a fleet,
    /// `tokenkeeper_redis::RedisDpopKeyStore`, which seals them). For one key shared by every
    /// session, give the client a key instead ([`ClientConfig::dpop`]).
    ///
    /// A provider that answers a login's or a refresh's proof with a Bearer token gets a
    /// warning and a count (`tokenkeeper_dpop_downgrades_total`), and the session's tokens are
    /// Bearer; with [`ClientConfig::require_dpop`] on the client, such an answer is refused
    /// ([`Error::DpopRequired`]) and the login fails (SEC-27).
    pub fn per_session_dpop(mut self, algorithm: DpopAlgorithm) -> Self {
        let store = self.per_session_dpop.and_then(|(_, store)| store);
        self.per_session_dpop = Some((algorithm, store));
        self
    }

    /// Keeps per-session DPoP keys in `store` (implies [`UserTokenManagerBuilder::per_session_dpop`]
    /// with ES256 unless an algorithm was set).
    pub fn dpop_key_store(mut self, store: Arc<dyn DpopKeyStore>) -> Self {
        let algorithm = self
            .per_session_dpop
            .map(|(alg, _)| alg)
            .unwrap_or_default();
        self.per_session_dpop = Some((algorithm, Some(store)));
        self
    }

    /// Logs in under `profile` (PR-03): [`Profile::Fapi2`] turns on pushed authorization,
    /// the issuer as client assertions' audience, the `iss` check on every callback,
    /// PS256/ES256/EdDSA only and no Bearer fallback, and [`UserTokenManagerBuilder::build`]
    /// refuses — naming the setting — a client that contradicts it: client authentication
    /// other than `private_key_jwt` or mTLS, no DPoP and no TLS certificate, another algorithm,
    /// pushed authorization set to [`PushedAuthorization::WhenRequired`].
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tokenkeeper::dpop::{DpopAlgorithm, DpopKey};
    /// use tokenkeeper::protocol::profile::Profile;
    /// use tokenkeeper::user::UserTokenManager;
    /// use tokenkeeper::{ClientConfig, PrivateKeyJwt};
    ///
    /// let key = PrivateKeyJwt::new(DpopKey::generate(DpopAlgorithm::ES256)?);
    /// let client = ClientConfig::from_issuer("https://idp.example.com", "bank-web", "")
    ///     .private_key_jwt(Arc::new(key));
    /// let users = UserTokenManager::builder(client.clone())
    ///     .per_session_dpop(DpopAlgorithm::ES256)
    ///     .profile(Profile::Fapi2)
    ///     .build()?;
    /// # let _ = users;
    /// // Without sender-constrained tokens the profile refuses the client, naming the setting.
    /// let refused = UserTokenManager::builder(client).profile(Profile::Fapi2).build();
    /// assert!(refused.unwrap_err().to_string().contains("dpop"));
    /// # Ok::<(), tokenkeeper::Error>(())
    /// ```
    pub fn profile(mut self, profile: Profile) -> Self {
        self.profile = profile;
        self
    }

    /// When authorization requests are pushed (RFC 9126, PR-01): by default when the provider
    /// requires it; [`PushedAuthorization::Always`] pushes every one.
    pub fn pushed_authorization(mut self, pushed: PushedAuthorization) -> Self {
        self.pushed = Some(pushed);
        self
    }

    /// Sends the authorization request as a signed request object (RFC 9101, PR-02), pushed
    /// or in the URL, signed with the client's `private_key_jwt` key (see
    /// [`UserTokenManagerBuilder::request_object_signer`] for another key).
    pub fn signed_request_objects(mut self, on: bool) -> Self {
        self.request_objects = on;
        self
    }

    /// Signs request objects with `signer` (implies
    /// [`UserTokenManagerBuilder::signed_request_objects`]): for a client that authenticates
    /// otherwise (mTLS), or keeps its signing key in a KMS.
    pub fn request_object_signer(mut self, signer: Arc<dyn ClientAssertionProvider>) -> Self {
        self.request_objects = true;
        self.request_signer = Some(signer);
        self
    }

    /// Checks the configuration and builds the manager.
    pub fn build(mut self) -> Result<UserTokenManager, Error> {
        let request_signer = if self.request_objects {
            let signer = self
                .request_signer
                .clone()
                .or_else(|| self.client.assertions.clone().filter(|a| a.signs_jwts()));
            match signer {
                Some(signer) if signer.signs_jwts() => Some(signer),
                _ => {
                    return Err(ConfigError::new(
                        "request_object",
                        "signed request objects need a signing key: private_key_jwt with a PrivateKeyJwt key, or a request_object_signer",
                    )
                    .for_client("user")
                    .into())
                }
            }
        } else {
            None
        };
        let fapi2 = self.profile == Profile::Fapi2;
        if fapi2 {
            let dpop_algorithm = match (&self.client.dpop, &self.per_session_dpop) {
                (Some(key), _) => Some(key.algorithm().as_str()),
                (None, Some((algorithm, _))) => Some(algorithm.as_str()),
                (None, None) => None,
            };
            let facts = crate::protocol::profile::ClientFacts {
                auth_method: self.client.auth_method,
                assertion_algorithm: self.client.assertions.as_ref().and_then(|a| a.algorithm()),
                dpop_algorithm,
                mtls: self.client.mtls.is_some(),
                pushed: self.pushed,
                request_object_algorithm: request_signer.as_ref().and_then(|s| s.algorithm()),
            };
            crate::protocol::profile::check_fapi2(&facts).map_err(|e| e.for_client("user"))?;
            let dpop_on = facts.dpop_algorithm.is_some();
            if self.client.issuer().is_none() {
                return Err(ConfigError::new(
                    "issuer",
                    "profile fapi2 needs a client built from the issuer (ClientConfig::from_issuer)",
                )
                .for_client("user")
                .into());
            }
            // No Bearer fallback: a DPoP request answered with a Bearer token is refused (with
            // mTLS only, the tokens are bound to the certificate instead).
            if dpop_on {
                self.client.require_dpop = true;
            }
        }
        let login = LoginProtocol {
            profile: self.profile,
            pushed: if fapi2 {
                PushedAuthorization::Always
            } else {
                self.pushed.unwrap_or_default()
            },
            request_signer,
        };
        // `require_dpop` with per-session keys: the client config has no key of its own (each
        // session has one), so the endpoint is told directly (SEC-27).
        let require_per_session_dpop = self.client.require_dpop && self.per_session_dpop.is_some();
        if require_per_session_dpop {
            self.client.require_dpop = false;
        }
        let settings = self.settings.resolve()?;
        let (clock, transport) = (settings.clock, settings.transport);
        let nonces = Arc::new(NonceStore::new(crate::dpop::API_NONCE_ORIGINS));
        let dpop = match (&self.client.dpop, self.per_session_dpop) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "dpop",
                    "the client has a DPoP key and per-session keys are asked for: choose one",
                )
                .for_client("user")
                .into())
            }
            (Some(key), None) => Some(UserDpop::Client(Presenter::new(
                key.clone(),
                nonces,
                clock.clone(),
            ))),
            (None, Some((algorithm, keys))) => Some(UserDpop::PerSession {
                keys: keys.unwrap_or_else(|| Arc::new(crate::dpop::InMemoryDpopKeyStore::new())),
                algorithm,
                nonces,
                local: Mutex::new(HashMap::new()),
            }),
            (None, None) => None,
        };
        let (endpoint, validated) =
            self.client
                .endpoint("user", &transport, &clock, DEFAULT_METADATA_LIFETIME)?;
        let endpoint = if require_per_session_dpop {
            endpoint.require_dpop(true)
        } else {
            endpoint
        };
        // FAPI 2.0: client assertions name the issuer, whatever endpoint they go to.
        let endpoint = match self.client.issuer().filter(|_| fapi2) {
            Some(issuer) => endpoint.assertion_audience(issuer),
            None => endpoint,
        };
        if validated.resources.len() > 1 {
            return Err(ConfigError::new(
                "resource",
                "a user token manager takes one default resource (ask for others per call with `UserTokenParams::resource`)",
            )
            .for_client("user")
            .into());
        }
        let defaults = Defaults {
            resource: validated.resources.into_iter().next(),
            scope: validated.scope,
            extra: validated.extra.into_iter().collect(),
        };
        let revocation_endpoint = match self.revocation_endpoint {
            Some(raw) => Some(crate::client_credentials::config::parse_endpoint_url(
                &raw,
                "revocation_endpoint",
                self.client.allow_insecure_http,
            )?),
            None => None,
        };
        Ok(UserTokenManager {
            inner: Arc::new(Inner {
                endpoint,
                defaults,
                destinations: validated.destinations,
                metrics: ClientMetrics::new("user", "refresh_token"),
                short_lifetime_warned: AtomicBool::new(false),
                revocation_endpoint,
                store: self
                    .store
                    .unwrap_or_else(|| Arc::new(InMemoryUserTokenStore::new())),
                clock,
                lifetime: settings.lifetime,
                backoff: settings.backoff,
                flights: Flights::default(),
                session_locks: Mutex::new(HashMap::new()),
                lease: settings.lease,
                transport: transport.clone(),
                validator: tokio::sync::OnceCell::new(),
                dpop,
                login,
            }),
        })
    }
}

/// How long before a token's refresh window the in-process tier of a store stops answering
/// for it (instances' clocks may differ by this much).
const LOCAL_MARGIN: std::time::Duration = std::time::Duration::from_secs(1);

/// What happened to a session's refresh token at logout.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Revocation {
    /// The authorization server revoked it (RFC 7009).
    Revoked,
    /// The session had no refresh token: nothing to revoke.
    NoRefreshToken,
    /// No revocation endpoint is known: the refresh token was only forgotten.
    NoEndpoint,
    /// The revocation request failed: the refresh token may still be valid at the server.
    Failed(Error),
}

impl Revocation {
    /// Whether no refresh token is left valid at the server (revoked, or there was none).
    pub fn succeeded(&self) -> bool {
        matches!(self, Self::Revoked | Self::NoRefreshToken)
    }
}

/// The key of a session's refresh flight (and of its lease): a digest of the session key, so
/// that `sub` and `sid` never appear in a log line that names the key (SEC-06).
fn flight_key(session: &SessionKey, slot: &str) -> CacheKey {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(session.as_str().as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let mut key = KeyWriter::new("ut");
    key.field("session", &hex);
    key.field("resource", slot);
    key.finish()
}

impl UserTokenManager {
    /// A builder for the OAuth client `client` (token endpoint or issuer, id, secret).
    pub fn builder(client: ClientConfig) -> UserTokenManagerBuilder {
        UserTokenManagerBuilder {
            client,
            store: None,
            revocation_endpoint: None,
            settings: Settings::default(),
            per_session_dpop: None,
            profile: Profile::Default,
            pushed: None,
            request_objects: false,
            request_signer: None,
        }
    }

    /// The login profile ([`UserTokenManagerBuilder::profile`]).
    pub fn profile(&self) -> Profile {
        self.inner.login.profile
    }

    pub(crate) fn login_protocol(&self) -> &LoginProtocol {
        &self.inner.login
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn UserTokenStore> {
        &self.inner.store
    }

    /// The token endpoint client (for the code exchange at login).
    pub fn endpoint(&self) -> &TokenEndpoint {
        &self.inner.endpoint
    }

    pub(crate) fn transport(&self) -> &crate::http::SharedTransport {
        &self.inner.transport
    }

    /// The clock the manager reads time from.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    pub(crate) fn validator_cell(
        &self,
    ) -> &tokio::sync::OnceCell<Arc<crate::protocol::id_token::IdTokenValidator>> {
        &self.inner.validator
    }

    /// A cached token made from a token response received now.
    pub fn cached_token(&self, response: &TokenResponse) -> Result<Arc<CachedToken>, Error> {
        Ok(Arc::new(self.new_token(response)?))
    }

    fn new_token(&self, response: &TokenResponse) -> Result<CachedToken, Error> {
        let now = self.inner.clock.now();
        if self
            .inner
            .lifetime
            .is_shorter_than_skew(response.expires_in)
            && !self
                .inner
                .short_lifetime_warned
                .swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                expires_in = ?response.expires_in,
                skew = ?self.inner.lifetime.skew,
                "the server's user tokens live shorter than the configured skew; a tenth of their lifetime is used as the skew instead"
            );
        }
        let (refresh_at, expires_at) = self.inner.lifetime.times(now, response.expires_in);
        Ok(CachedToken::new(
            response.access_token.clone(),
            response.token_type.clone(),
            response.scope.clone(),
            now,
            refresh_at,
            expires_at,
        )?)
    }

    /// Stores the tokens of a login (the code exchange response) for `session`, replacing any:
    /// the access token becomes the session's token for `resource` (default: the client's
    /// configured resource). The ID token is not kept (keep it in the web session if you need
    /// it for logout).
    pub async fn store_login(
        &self,
        session: &SessionKey,
        response: &TokenResponse,
        resource: Option<&Resource>,
    ) -> Result<(), Error> {
        self.store_login_bound(session, response, resource, None)
            .await
    }

    /// [`UserTokenManager::store_login`], for tokens bound to the DPoP key `dpop_jkt`.
    pub(crate) async fn store_login_bound(
        &self,
        session: &SessionKey,
        response: &TokenResponse,
        resource: Option<&Resource>,
        dpop_jkt: Option<String>,
    ) -> Result<(), Error> {
        let now = self.inner.clock.now();
        let mut tokens = UserTokens {
            dpop_jkt,
            refresh_token: response.refresh_token.clone(),
            refresh_expires_at: response
                .refresh_expires_in()
                .map(|lifetime| now.saturating_add(lifetime)),
            ..UserTokens::default()
        };
        let params = UserTokenParams {
            resource: resource.cloned(),
            ..UserTokenParams::default()
        };
        tokens.access_tokens.insert(
            &*self.inner.defaults.slot(&params),
            self.cached_token(response)?,
        );
        self.replace(session, tokens).await
    }

    /// The origins the tokens may be sent to (see [`crate::ClientConfig::destination`]).
    pub fn destinations(&self) -> Option<&Destinations> {
        self.inner.destinations.as_ref()
    }

    /// How `session`'s DPoP-bound tokens are presented: the client's key, or the session's own
    /// (from the store's in-process tier and the manager's key cache when they have it); `None`
    /// without DPoP. For requests that the integrations do not send themselves (a WebSocket
    /// handshake): see [`crate::dpop::Presenter::present`].
    pub async fn presenter(&self, session: &SessionKey) -> Result<Option<Presenter>, Error> {
        match &self.inner.dpop {
            None => Ok(None),
            Some(UserDpop::Client(presenter)) => Ok(Some(presenter.clone())),
            Some(UserDpop::PerSession { nonces, .. }) => {
                let jkt = match self.inner.store.get_local(session) {
                    Some(stored) => stored.value.dpop_jkt.clone(),
                    None => self
                        .inner
                        .store
                        .get(session)
                        .await?
                        .and_then(|s| s.value.dpop_jkt.clone()),
                };
                let Some(key) = self.dpop_key(jkt.as_deref()).await? else {
                    return Ok(None);
                };
                Ok(Some(Presenter::new(
                    key,
                    nonces.clone(),
                    self.inner.clock.clone(),
                )))
            }
        }
    }

    /// The DPoP key of tokens bound to `jkt`: the client's key, or the session's from the key
    /// store. A session whose key is gone must log in again.
    pub(crate) async fn dpop_key(&self, jkt: Option<&str>) -> Result<Option<Arc<DpopKey>>, Error> {
        match &self.inner.dpop {
            None => Ok(None),
            Some(UserDpop::Client(presenter)) => Ok(Some(presenter.key().clone())),
            Some(UserDpop::PerSession { keys, local, .. }) => {
                let Some(jkt) = jkt else { return Ok(None) };
                if let Some(key) = lock(local).get(jkt) {
                    return Ok(Some(key.clone()));
                }
                let key = keys.get(jkt).await?.ok_or_else(|| {
                    Error::ReauthenticationRequired("the session's DPoP key is gone".into())
                })?;
                let mut local = lock(local);
                if local.len() >= LOCAL_KEYS {
                    local.clear();
                }
                local.insert(jkt.to_owned(), key.clone());
                Ok(Some(key))
            }
        }
    }

    /// The DPoP key a new login binds its tokens to (PK-08), `None` without DPoP: the client's
    /// key, or — with per-session keys — a new one. Its thumbprint ([`LoginDpop::jkt`]) goes on
    /// the authorization request as `dpop_jkt`.
    ///
    /// Nothing is stored (SEC-13): the caller keeps the [`LoginDpop`] with the rest of the
    /// pending login — `tokenkeeper-axum` seals it into the browser's login cookie
    /// ([`LoginDpop::to_bytes`], which holds a per-session private key: seal it, never send it
    /// in plaintext) — and hands it back in [`LoginRequest::dpop`](super::LoginRequest::dpop).
    /// The key reaches the key store only when the login completes.
    pub fn new_login_dpop(&self) -> Result<Option<LoginDpop>, Error> {
        match &self.inner.dpop {
            None => Ok(None),
            Some(UserDpop::Client(presenter)) => Ok(Some(LoginDpop {
                jkt: presenter.key().thumbprint().to_owned(),
                key: None,
            })),
            Some(UserDpop::PerSession { algorithm, .. }) => {
                let key = Arc::new(DpopKey::generate(*algorithm)?);
                Ok(Some(LoginDpop {
                    jkt: key.thumbprint().to_owned(),
                    key: Some(key),
                }))
            }
        }
    }

    /// The key of a login's code exchange: the client's key, or the login's own (whose
    /// thumbprint must be the `dpop_jkt` the login was started with).
    pub(crate) fn login_dpop_key(
        &self,
        login: Option<&LoginDpop>,
    ) -> Result<Option<Arc<DpopKey>>, Error> {
        let refused =
            |reason: &str| Error::ReauthenticationRequired(format!("login DPoP key: {reason}"));
        match (&self.inner.dpop, login) {
            (None, _) => Ok(None),
            (Some(_), None) => Err(refused("the login was started without one")),
            (Some(UserDpop::Client(presenter)), Some(login)) => {
                if presenter.key().thumbprint() != login.jkt {
                    return Err(refused("not the client's key"));
                }
                Ok(Some(presenter.key().clone()))
            }
            (Some(UserDpop::PerSession { .. }), Some(login)) => match &login.key {
                Some(key) if key.thumbprint() == login.jkt => Ok(Some(key.clone())),
                _ => Err(refused("the login's key is missing")),
            },
        }
    }

    /// Keeps a completed login's session key for the session (no more expiry).
    pub(crate) async fn keep_session_key(&self, key: &Arc<DpopKey>) -> Result<(), Error> {
        if let Some(UserDpop::PerSession { keys, .. }) = &self.inner.dpop {
            keys.put(key.clone(), None).await?;
        }
        Ok(())
    }

    /// Forgets a per-session key (at logout, or when its login fails).
    pub(crate) async fn drop_dpop_key(&self, jkt: Option<&str>) {
        let (Some(UserDpop::PerSession { keys, local, .. }), Some(jkt)) = (&self.inner.dpop, jkt)
        else {
            return;
        };
        lock(local).remove(jkt);
        if let Err(error) = keys.remove(jkt).await {
            tracing::warn!(%error, "a DPoP key could not be removed from the key store");
        }
    }

    /// Replaces the session's tokens.
    pub async fn replace(&self, session: &SessionKey, tokens: UserTokens) -> Result<(), Error> {
        let tokens = Arc::new(tokens);
        for _ in 0..8 {
            let current = self.inner.store.get(session).await?;
            let expected = current.map(|v| v.version);
            if let StoreOutcome::Stored(_) = self
                .inner
                .store
                .store(session, tokens.clone(), expected)
                .await?
            {
                return Ok(());
            }
        }
        Err(Error::Internal(
            "the session kept changing while it was stored".into(),
        ))
    }

    /// A valid access token of `session` for `params`: the stored one, or refreshed now.
    pub async fn get_access_token(
        &self,
        session: &SessionKey,
        params: &UserTokenParams,
    ) -> Result<Arc<CachedToken>, Error> {
        if !params.force_renewal {
            if let Some(token) = self.cached(session, params) {
                return Ok(token);
            }
        }
        let inner = &self.inner;
        let stored = match inner.store.get(session).await {
            Ok(stored) => stored,
            Err(error) => {
                // The store is down: a valid token from its in-process tier still serves
                // (RS-01); without one, the caller gets the store's error.
                let local = inner.store.get_local(session).and_then(|local| {
                    let token = local
                        .value
                        .access_tokens
                        .get(&inner.defaults.slot(params))?;
                    token.is_valid_at(inner.clock.now()).then(|| token.clone())
                });
                if let Some(token) = local.filter(|_| !params.force_renewal) {
                    tracing::debug!(%error, "token store unavailable; serving the in-process copy");
                    return Ok(token);
                }
                return Err(error.into());
            }
        }
        .ok_or_else(|| Error::ReauthenticationRequired("the session has no tokens".into()))?;
        let now = inner.clock.now();
        if !params.force_renewal {
            if let Some(token) = self.hit(session, params, &stored.value, now) {
                return Ok(token);
            }
        }
        let mode = if params.force_renewal {
            FlightMode::Force
        } else {
            FlightMode::Miss
        };
        match self.start(session, params, mode, now, None) {
            Joined::Flight(flight) => flight.await,
            Joined::BackingOff(error) => Err(error),
        }
    }

    /// The session's valid token for `params` from the store's in-process tier, without
    /// waiting (the hit path).
    ///
    /// The in-process tier answers only until [`LOCAL_MARGIN`] before the token's refresh
    /// window: a refresh at expiry or ahead of it, on any instance, happens inside that window,
    /// so a token taken from memory is never one another instance has already replaced that
    /// way (UT-12). Inside the window the store itself is read.
    pub(crate) fn cached(
        &self,
        session: &SessionKey,
        params: &UserTokenParams,
    ) -> Option<Arc<CachedToken>> {
        let token = self
            .inner
            .store
            .get_local_token(session, &self.inner.defaults.slot(params))?;
        let now = self.inner.clock.now();
        if now.saturating_add(LOCAL_MARGIN) >= token.refresh_at() || !token.is_valid_at(now) {
            return None;
        }
        self.inner.metrics.hit();
        Some(token)
    }

    fn hit(
        &self,
        session: &SessionKey,
        params: &UserTokenParams,
        tokens: &UserTokens,
        now: Timestamp,
    ) -> Option<Arc<CachedToken>> {
        let inner = &self.inner;
        let token = tokens.access_tokens.get(&inner.defaults.slot(params))?;
        if !token.is_valid_at(now) {
            return None;
        }
        if token.needs_refresh_at(now)
            && tokens.refresh_token.is_some()
            && token.try_claim_refresh(now, inner.backoff.base)
        {
            // Refresh ahead in the background; this caller keeps the current token.
            inner.metrics.refresh();
            let _ = self.start(session, params, FlightMode::RefreshAhead, now, None);
        }
        inner.metrics.hit();
        Some(token.clone())
    }

    /// An API answered 401 for `rejected`: refreshes it, at most once per token and with the
    /// renewal backoff (CC-14). `Ok(None)`: backing off, do not retry.
    pub(crate) async fn renew_rejected(
        &self,
        session: &SessionKey,
        params: &UserTokenParams,
        rejected: &Arc<CachedToken>,
    ) -> Result<Option<Arc<CachedToken>>, Error> {
        let now = self.inner.clock.now();
        if !rejected.may_renew_at(now) {
            tracing::debug!(
                renewals = rejected.renewals(),
                "the API rejected a user token that a 401 renewed moments ago; backing off"
            );
            return Ok(None);
        }
        let mode = FlightMode::Renewal {
            renewals: rejected.renewals().saturating_add(1),
        };
        let params = params.clone().force_renewal(false);
        match self.start(session, &params, mode, now, Some(rejected.clone())) {
            Joined::Flight(flight) => flight.await.map(Some),
            Joined::BackingOff(error) => Err(error),
        }
    }

    fn start(
        &self,
        session: &SessionKey,
        params: &UserTokenParams,
        mode: FlightMode,
        now: Timestamp,
        rejected: Option<Arc<CachedToken>>,
    ) -> Joined {
        let key = flight_key(session, &self.inner.defaults.slot(params));
        let this = self.clone();
        let (session, params) = (session.clone(), params.clone());
        let flight_key = key.clone();
        self.inner
            .flights
            .join_or_start(&key, mode, now, move |id| async move {
                let result = this
                    .refresh(&session, &params, mode, rejected.as_deref())
                    .await;
                let now = this.inner.clock.now();
                match &result {
                    Ok(_) => {
                        this.inner
                            .flights
                            .finish(&flight_key, id, Ok(()), now, &this.inner.backoff)
                    }
                    Err(Error::ReauthenticationRequired(_)) => {
                        // Not a transient failure: no backoff.
                        this.inner
                            .flights
                            .finish(&flight_key, id, Ok(()), now, &this.inner.backoff)
                    }
                    Err(error) => this.inner.flights.finish(
                        &flight_key,
                        id,
                        Err(error),
                        now,
                        &this.inner.backoff,
                    ),
                }
                result
            })
    }

    async fn session_lock(&self, session: &SessionKey) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self
                .inner
                .session_locks
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            locks.entry(session.clone()).or_default().clone()
        };
        lock.lock_owned().await
    }

    fn forget_lock(&self, session: &SessionKey) {
        let mut locks = self
            .inner
            .session_locks
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if locks
            .get(session)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            locks.remove(session);
        }
    }

    /// One refresh, under the session lock (and the lease, if any).
    async fn refresh(
        &self,
        session: &SessionKey,
        params: &UserTokenParams,
        mode: FlightMode,
        rejected: Option<&CachedToken>,
    ) -> Result<Arc<CachedToken>, Error> {
        let started = self.inner.clock.now();
        let guard = self.session_lock(session).await;
        let result = self
            .refresh_locked(session, params, mode, started, rejected)
            .await;
        drop(guard);
        self.forget_lock(session);
        result
    }

    async fn refresh_locked(
        &self,
        session: &SessionKey,
        params: &UserTokenParams,
        mode: FlightMode,
        started: Timestamp,
        rejected: Option<&CachedToken>,
    ) -> Result<Arc<CachedToken>, Error> {
        let inner = &self.inner;
        let lease_key = flight_key(session, "");
        let mut lease_guard = None;
        if let Some((lease, options)) = &inner.lease {
            // Another instance refreshing this session: its stored tokens will do.
            let settled = || async {
                self.settled(session, params, mode, started, rejected)
                    .await
                    .ok()
                    .flatten()
            };
            match lease_or_settled(lease.as_ref(), options, &lease_key, settled).await {
                LeaseOutcome::Held(guard) => lease_guard = Some(guard),
                LeaseOutcome::Settled(token) => return Ok(token),
                LeaseOutcome::Unavailable => {}
            }
        }
        let result = self
            .refresh_with_lock_held(session, params, mode, started, rejected)
            .await;
        if let Some(guard) = lease_guard {
            guard.release().await;
        }
        result
    }

    /// The stored token, if one that settles this refresh is there now.
    async fn settled(
        &self,
        session: &SessionKey,
        params: &UserTokenParams,
        mode: FlightMode,
        started: Timestamp,
        rejected: Option<&CachedToken>,
    ) -> Result<Option<Arc<CachedToken>>, Error> {
        let now = self.inner.clock.now();
        let stored = self.inner.store.get(session).await?;
        Ok(stored.and_then(|s| {
            s.value
                .access_tokens
                .get(&self.inner.defaults.slot(params))
                .filter(|t| mode.settles(t, now, started, rejected))
                .cloned()
        }))
    }

    async fn refresh_with_lock_held(
        &self,
        session: &SessionKey,
        params: &UserTokenParams,
        mode: FlightMode,
        started: Timestamp,
        rejected: Option<&CachedToken>,
    ) -> Result<Arc<CachedToken>, Error> {
        if let Some(token) = self
            .refresh_attempt(session, params, mode, started, rejected, true)
            .await?
        {
            return Ok(token);
        }
        // The refresh token was refused, but the stored one had changed meanwhile: once more,
        // with the stored one.
        self.refresh_attempt(session, params, mode, started, rejected, false)
            .await?
            .ok_or_else(|| Error::ReauthenticationRequired("the refresh token was refused".into()))
    }

    /// One refresh from the stored session; `Ok(None)` when `retry` and the refresh token was
    /// refused but is no longer the stored one (another instance rotated it, or a write lost
    /// in a failover was written again: FL-03), so that the session is not ended for it.
    async fn refresh_attempt(
        &self,
        session: &SessionKey,
        params: &UserTokenParams,
        mode: FlightMode,
        started: Timestamp,
        rejected: Option<&CachedToken>,
        retry: bool,
    ) -> Result<Option<Arc<CachedToken>>, Error> {
        let inner = &self.inner;
        let slot = inner.defaults.slot(params);
        // Re-read: the previous holder may have refreshed (and rotated the refresh token).
        let Some(current) = inner.store.get(session).await? else {
            return Err(Error::ReauthenticationRequired(
                "the session has no tokens".into(),
            ));
        };
        let now = inner.clock.now();
        let existing = current.value.access_tokens.get(&slot).cloned();
        if let Some(token) = &existing {
            if mode.settles(token, now, started, rejected) {
                return Ok(Some(token.clone()));
            }
        }
        let Some(refresh_token) = current.value.refresh_token.clone() else {
            return match existing {
                Some(token) if token.is_valid_at(now) => Ok(Some(token)),
                _ => Err(Error::ReauthenticationRequired(
                    "the access token expired and the session has no refresh token".into(),
                )),
            };
        };
        let mut request = TokenRequest::new(Grant::RefreshToken {
            refresh_token: refresh_token.clone(),
        });
        if let Some(scope) = params.scope.as_ref().or(inner.defaults.scope.as_ref()) {
            request = request.scope(scope.clone());
        }
        if let Some(resource) = inner.defaults.resource(params) {
            request = request.resource(resource.clone());
        }
        for (name, value) in &inner.defaults.extra {
            request = request.extra(name.clone(), value.clone());
        }
        let key = self.dpop_key(current.value.dpop_jkt.as_deref()).await?;
        let requested = tokio::time::Instant::now();
        let response = inner.endpoint.request_with(&request, key.as_deref()).await;
        inner
            .metrics
            .token_request(requested.elapsed(), response.is_ok());
        let response = match response {
            Ok(response) => response,
            Err(error) if error.oauth_error() == Some("invalid_grant") => {
                if retry {
                    let latest = inner.store.get(session).await?;
                    let stored_now = latest
                        .as_ref()
                        .and_then(|l| l.value.refresh_token.as_ref())
                        .map(|t| t.secret().to_owned());
                    if stored_now.is_some_and(|now| now != refresh_token.secret()) {
                        tracing::info!(session = %session.log_id(), "refresh token refused, but the stored one changed meanwhile; refreshing with it");
                        return Ok(None);
                    }
                }
                tracing::info!(session = %session.log_id(), "refresh token refused (invalid_grant); the session must log in again");
                inner.store.clear(session).await?;
                self.drop_dpop_key(current.value.dpop_jkt.as_deref()).await;
                return Err(Error::ReauthenticationRequired(format!(
                    "the refresh token was refused: {error}"
                )));
            }
            Err(error) => {
                tracing::warn!(session = %session.log_id(), %error, "refresh failed; the stored tokens are kept");
                return Err(error);
            }
        };
        let token = self.new_token(&response)?;
        let token = Arc::new(match mode {
            FlightMode::Renewal { renewals } => token.renewed_after_rejection(
                renewals,
                now.saturating_add(inner.backoff.jittered(u32::from(renewals))),
            ),
            _ => token,
        });
        let mut version = current.version;
        let mut base = current.value;
        for _ in 0..8 {
            let mut next = (*base).clone();
            if let Some(rotated) = &response.refresh_token {
                next.refresh_token = Some(rotated.clone());
                next.refresh_expires_at = response
                    .refresh_expires_in()
                    .map(|lifetime| now.saturating_add(lifetime));
            }
            next.access_tokens.insert(&*slot, token.clone());
            match inner
                .store
                .store(session, Arc::new(next), Some(version))
                .await?
            {
                StoreOutcome::Stored(_) => return Ok(Some(token)),
                StoreOutcome::Conflict => {
                    // Someone wrote the session meanwhile (a new login, say): apply ours on top.
                    let Some(latest) = inner.store.get(session).await? else {
                        return Err(Error::ReauthenticationRequired(
                            "the session was cleared".into(),
                        ));
                    };
                    version = latest.version;
                    base = latest.value;
                }
            }
        }
        Err(Error::Internal(
            "the session kept changing while it was stored".into(),
        ))
    }

    /// Logs the session out: revokes its refresh token (RFC 7009, `token_type_hint=refresh_token`)
    /// and clears its tokens. A revocation failure is logged (warning) and counted
    /// (`tokenkeeper_revocation_failures_total`); the tokens are cleared anyway, and the
    /// returned [`Revocation`] tells the caller what happened to the refresh token.
    pub async fn logout(&self, session: &SessionKey) -> Result<Revocation, Error> {
        let stored = self.inner.store.get(session).await?;
        let jkt = stored.as_ref().and_then(|s| s.value.dpop_jkt.clone());
        let outcome = match stored.and_then(|s| s.value.refresh_token.clone()) {
            None => Revocation::NoRefreshToken,
            Some(refresh_token) => match self.revocation_url().await {
                Some(url) => match self
                    .inner
                    .endpoint
                    .revoke(url, refresh_token.secret(), "refresh_token")
                    .await
                {
                    Ok(()) => Revocation::Revoked,
                    Err(error) => {
                        self.inner.metrics.revocation_failed();
                        tracing::warn!(session = %session.log_id(), %error, "refresh token revocation failed; logging out anyway");
                        Revocation::Failed(error)
                    }
                },
                None => {
                    self.inner.metrics.revocation_failed();
                    tracing::warn!(session = %session.log_id(), "no revocation endpoint; the refresh token is only forgotten");
                    Revocation::NoEndpoint
                }
            },
        };
        self.inner.store.clear(session).await?;
        self.drop_dpop_key(jkt.as_deref()).await;
        Ok(outcome)
    }

    /// Forgets `session`'s tokens (and its DPoP key) without revoking anything at the provider:
    /// for a session replaced by a newer login **of the same provider session** (a step-up, a
    /// second login with the same `sid`). The newer login shares the provider's grant, and many
    /// providers revoke a whole grant with any of its refresh tokens — revoking the replaced
    /// session's token would end the new one too. A session replaced by a login of another
    /// provider session is logged out with [`UserTokenManager::logout`] (SEC-14).
    pub async fn forget(&self, session: &SessionKey) -> Result<(), Error> {
        let stored = self.inner.store.get(session).await?;
        let jkt = stored.as_ref().and_then(|s| s.value.dpop_jkt.clone());
        self.inner.store.clear(session).await?;
        self.drop_dpop_key(jkt.as_deref()).await;
        Ok(())
    }

    /// Revokes the refresh and access tokens of a token response that will not be used (a login
    /// refused after the code exchange: SEC-03). Failures are logged and counted.
    pub async fn revoke_response(&self, response: &TokenResponse) -> Revocation {
        let Some(url) = self.revocation_url().await else {
            self.inner.metrics.revocation_failed();
            tracing::warn!(
                "no revocation endpoint; the tokens of a refused login are only forgotten"
            );
            return Revocation::NoEndpoint;
        };
        let mut outcome = Revocation::Revoked;
        let tokens = response
            .refresh_token
            .as_ref()
            .map(|t| (t.secret(), "refresh_token"))
            .into_iter()
            .chain(std::iter::once((
                response.access_token.secret(),
                "access_token",
            )));
        for (token, hint) in tokens {
            if let Err(error) = self.inner.endpoint.revoke(url.clone(), token, hint).await {
                // A JWT access token may be refused (`unsupported_token_type`): it expires.
                if hint == "refresh_token" || error.oauth_error() != Some("unsupported_token_type")
                {
                    self.inner.metrics.revocation_failed();
                    tracing::warn!(%error, hint, "revoking a refused login's token failed");
                    outcome = Revocation::Failed(error);
                }
            }
        }
        outcome
    }

    async fn revocation_url(&self) -> Option<Url> {
        if let Some(url) = &self.inner.revocation_endpoint {
            return Some(url.clone());
        }
        let discovery = self.inner.endpoint.discovery()?;
        let metadata = discovery.metadata().await.ok()?;
        let alias = metadata
            .mtls_endpoint_aliases
            .as_ref()
            .and_then(|a| a.revocation_endpoint.as_ref())
            .filter(|_| self.inner.endpoint.uses_mtls_aliases());
        alias.or(metadata.revocation_endpoint.as_ref()).cloned()
    }
}
