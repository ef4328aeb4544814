//! The client-credentials token manager.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument as _;

use crate::cache::{
    lease_or_settled, BuildKeyHasher, CacheKey, CachedToken, InMemoryTokenCache, KeyWriter, Lease,
    LeaseGuard, LeaseOptions, LeaseOutcome, SharedCache,
};
use crate::clock::Clock;
use crate::clock::Timestamp;
use crate::error::{ConfigError, Error};
use crate::exchange::TokenExchange;
use crate::metrics::ClientMetrics;
use crate::protocol::discovery::{Discovery, DEFAULT_METADATA_LIFETIME};
use crate::protocol::token_endpoint::TokenEndpoint;
use crate::protocol::token_request::{Grant, TokenRequest};
use crate::protocol::token_response::TokenResponse;
use crate::protocol::types::{ClientName, Resource, Scope};

use super::config::{validate_extra, ClientConfig, ValidatedEndpoint};
use super::flight::{FlightMode, Flights, Joined};
use super::params::TokenRequestParams;
use super::policy::{BackoffPolicy, LifetimePolicy};
use crate::settings::{settings_setters, Settings};

/// Acquires, caches and refreshes client-credentials tokens for named clients.
///
/// Cheap to clone (an `Arc` inside); clones share clients, cache and in-flight fetches.
///
/// # Guarantees
///
/// - **Cache key**: every input that changes the token is in the key — client name, normalised
///   scope, sorted resources, sorted extra parameters — so two parameter sets never share a token.
/// - **Lifetime**: a token is handed out until `expires_in − skew` after it was received (see
///   [`LifetimePolicy`]); without `expires_in`, for the default lifetime.
/// - **Refresh ahead**: a hit in the last [`LifetimePolicy::refresh_ahead`] part of the lifetime
///   returns the current token at once and starts exactly one background refresh.
/// - **Single flight**: concurrent callers for one key share one token request; the request runs
///   in its own task, so cancelling a caller does not cancel it.
/// - **Failures**: every waiter gets the error; the key then backs off ([`BackoffPolicy`]) and,
///   while it does, callers without a valid token get the error at once. A still-valid token
///   keeps being served while refreshes fail.
/// - **Cache failures** degrade to fetching without the cache, with a warning.
///
/// # Example
///
/// ```no_run
/// # async fn run() -> Result<(), tokenkeeper::Error> {
/// use tokenkeeper::{ClientConfig, ClientCredentialsTokenManager, TokenRequestParams};
///
/// let tokens = ClientCredentialsTokenManager::builder()
///     .client(
///         "catalog",
///         ClientConfig::new("https://idp.example.com/token", "worker", "secret")
///             .scope("catalog.read"),
///     )
///     .build()?;
/// let token = tokens.get_token("catalog", &TokenRequestParams::default()).await?;
/// println!("expires at {:?}", token.expires_at());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ClientCredentialsTokenManager {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    /// Client names hash with FNV (names come from configuration, not from the network).
    clients: HashMap<ClientName, Arc<RegisteredClient>, BuildKeyHasher>,
    cache: SharedCache,
    clock: Arc<dyn Clock>,
    lifetime: LifetimePolicy,
    backoff: BackoffPolicy,
    flights: Flights,
    lease: Option<(Arc<dyn Lease>, LeaseOptions)>,
    /// When the last cache-error warning was logged (ms), to log one per minute, not per call.
    last_cache_warning: std::sync::atomic::AtomicU64,
}

/// A client, ready to use.
pub(crate) struct RegisteredClient {
    pub(crate) name: ClientName,
    endpoint: TokenEndpoint,
    scope: Option<Scope>,
    resources: Vec<Resource>,
    extra: BTreeMap<String, String>,
    pub(crate) default_key: CacheKey,
    /// How its DPoP-bound tokens are presented (with DPoP).
    pub(crate) dpop: Option<crate::dpop::Presenter>,
    metrics: ClientMetrics,
    /// The origins its tokens may be sent to (`None`: any).
    pub(crate) destinations: Option<crate::destinations::Destinations>,
    /// The key of the subject-token hashes in token-exchange cache keys (DL-02).
    exchange_key: Arc<aws_lc_rs::hmac::Key>,
    /// The assertions of the JWT bearer grant, when the client uses it (DL-06).
    grant_assertions: Option<Arc<dyn crate::protocol::client_assertion::ClientAssertionProvider>>,
    client_id: String,
    /// The `x5t#S256` of the client's TLS certificate (mTLS), when it has one.
    x5t: Option<Arc<str>>,
    /// Whether the "lifetime shorter than the skew" warning was logged (once per client).
    short_lifetime_warned: std::sync::atomic::AtomicBool,
}

impl fmt::Debug for ClientCredentialsTokenManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.inner.clients.keys().collect();
        names.sort();
        f.debug_struct("ClientCredentialsTokenManager")
            .field("clients", &names)
            .field("cache", &self.inner.cache)
            .field("lifetime", &self.inner.lifetime)
            .finish_non_exhaustive()
    }
}

/// Builds a [`ClientCredentialsTokenManager`]; every configuration error surfaces in
/// [`ClientCredentialsTokenManagerBuilder::build`].
#[must_use]
pub struct ClientCredentialsTokenManagerBuilder {
    clients: Vec<(String, ClientConfig)>,
    cache: Option<SharedCache>,
    discovery_lifetime: Duration,
    settings: Settings,
    exchange_hash_key: Option<[u8; 32]>,
}

impl fmt::Debug for ClientCredentialsTokenManagerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentialsTokenManagerBuilder")
            .field("clients", &self.clients)
            .finish_non_exhaustive()
    }
}

impl ClientCredentialsTokenManagerBuilder {
    /// Registers a client under `name`.
    pub fn client(mut self, name: impl Into<String>, config: ClientConfig) -> Self {
        self.clients.push((name.into(), config));
        self
    }

    /// Uses `cache` instead of a new [`InMemoryTokenCache`].
    pub fn cache(mut self, cache: SharedCache) -> Self {
        self.cache = Some(cache);
        self
    }

    settings_setters!();

    /// The key of the subject-token hashes in token-exchange cache keys (see
    /// [`crate::exchange`]); random per manager by default. Instances that share a cache
    /// (Redis) share exchanged tokens only when they use the same key. Keep it secret: with it,
    /// a known token's hash can be recognised in the cache's keys.
    pub fn exchange_hash_key(mut self, key: &[u8; 32]) -> Self {
        self.exchange_hash_key = Some(*key);
        self
    }

    /// How long discovery metadata is kept (default one hour).
    pub fn discovery_lifetime(mut self, lifetime: Duration) -> Self {
        self.discovery_lifetime = lifetime;
        self
    }

    /// Checks the configuration and builds the manager.
    pub fn build(self) -> Result<ClientCredentialsTokenManager, Error> {
        let settings = self.settings.resolve()?;
        if self.clients.is_empty() {
            return Err(ConfigError::new("clients", "no client is registered").into());
        }
        let clock = settings.clock;
        let transport = settings.transport;
        let cache = self
            .cache
            .unwrap_or_else(|| Arc::new(InMemoryTokenCache::with_clock(clock.clone())));
        let mut discoveries: HashMap<(String, bool), Arc<Discovery>> = HashMap::new();
        // One store of authorization-server nonces, one of API nonces, for all clients.
        let server_nonces = Arc::new(crate::dpop::NonceStore::new(64));
        let api_nonces = Arc::new(crate::dpop::NonceStore::new(crate::dpop::API_NONCE_ORIGINS));
        let mut clients = HashMap::with_hasher(BuildKeyHasher::default());
        let exchange_key = Arc::new(match &self.exchange_hash_key {
            Some(bytes) => aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, bytes),
            None => crate::exchange::random_hash_key(),
        });
        for (name, config) in self.clients {
            if name.trim().is_empty() {
                return Err(ConfigError::new("name", "a client name is empty").into());
            }
            let validated = config.validate().map_err(|e| e.for_client(&name))?;
            let auth = config.authentication();
            // A client certificate: token requests over it, and the mTLS endpoint aliases.
            let client_transport = config.transport_for(&transport);
            let endpoint = match validated.endpoint {
                ValidatedEndpoint::Url(url) => TokenEndpoint::new(url, auth, client_transport),
                ValidatedEndpoint::Issuer(issuer) => {
                    let issuer_key = (issuer.clone(), config.allow_insecure_http);
                    let discovery = match discoveries.get(&issuer_key) {
                        Some(d) => d.clone(),
                        None => {
                            let d = Arc::new(
                                Discovery::new(issuer.clone(), transport.clone(), clock.clone())
                                    .map_err(|e| e.for_client(&name))?
                                    .with_lifetime(self.discovery_lifetime)
                                    .allow_insecure_http(config.allow_insecure_http),
                            );
                            discoveries.insert(issuer_key, d.clone());
                            d
                        }
                    };
                    TokenEndpoint::from_discovery(discovery, auth, client_transport)
                        .mtls_aliases(config.mtls.is_some())
                }
            };
            let endpoint = config.with_dpop(endpoint, &clock, Some(&server_nonces));
            let dpop = config.dpop.as_ref().map(|key| {
                crate::dpop::Presenter::new(key.clone(), api_nonces.clone(), clock.clone())
            });
            let client_name = ClientName::new(&name);
            let x5t = config.mtls.as_ref().map(|identity| identity.thumbprint());
            let default_key = cache_key(
                &client_name,
                validated.scope.as_ref(),
                &validated.resources,
                &validated.extra,
                dpop.as_ref(),
                x5t.as_deref(),
                None,
            );
            let client = RegisteredClient {
                metrics: ClientMetrics::new(&name, "client_credentials"),
                name: client_name.clone(),
                endpoint,
                scope: validated.scope,
                resources: validated.resources,
                extra: validated.extra,
                default_key,
                dpop,
                destinations: validated.destinations,
                exchange_key: exchange_key.clone(),
                grant_assertions: config.grant_assertions.clone(),
                x5t,
                client_id: config.client_id.clone(),
                short_lifetime_warned: std::sync::atomic::AtomicBool::new(false),
            };
            if clients.insert(client_name, Arc::new(client)).is_some() {
                return Err(ConfigError::new(
                    "name",
                    format!("client {name:?} is registered twice"),
                )
                .into());
            }
        }
        Ok(ClientCredentialsTokenManager {
            inner: Arc::new(Inner {
                clients,
                cache,
                clock,
                lifetime: settings.lifetime,
                backoff: settings.backoff,
                flights: Flights::default(),
                lease: settings.lease,
                last_cache_warning: std::sync::atomic::AtomicU64::new(0),
            }),
        })
    }
}

/// The canonical cache key of a client-credentials token.
fn cache_key(
    client: &ClientName,
    scope: Option<&Scope>,
    resources: &[Resource],
    extra: &BTreeMap<String, String>,
    dpop: Option<&crate::dpop::Presenter>,
    x5t: Option<&str>,
    exchange: Option<(&TokenExchange, &aws_lc_rs::hmac::Key)>,
) -> CacheKey {
    let mut key = KeyWriter::new("cc");
    key.field("client", client.as_str());
    key.field("scope", &scope.map(ToString::to_string).unwrap_or_default());
    for resource in resources {
        key.field("resource", resource.as_str());
    }
    for (name, value) in extra {
        key.field("x", name);
        key.field("v", value);
    }
    if let Some(dpop) = dpop {
        // Tokens bound to one key are useless with another (PK-05, PK-07: the thumbprint, never
        // the key).
        key.field("jkt", dpop.key().thumbprint());
    }
    if let Some(x5t) = x5t {
        // Certificate-bound tokens (RFC 8705) are useless over another certificate.
        key.field("x5t", x5t);
    }
    if let Some((exchange, hash_key)) = exchange {
        exchange.write_key(&mut key, hash_key);
    }
    key.finish()
}

/// A client plus the request and cache key of one parameter set.
pub(crate) struct Resolved {
    pub(crate) key: CacheKey,
    request: TokenRequest,
    /// The exchange, for a token-exchange request.
    exchange: Option<Arc<TokenExchange>>,
}

/// What a parameter set asks for: the client's settings with the parameters' overrides.
struct Asked<'a> {
    scope: Option<&'a Scope>,
    resources: std::borrow::Cow<'a, [Resource]>,
    extra: std::borrow::Cow<'a, BTreeMap<String, String>>,
    exchange: Option<&'a TokenExchange>,
}

impl RegisteredClient {
    fn asked<'a>(&'a self, params: &'a TokenRequestParams) -> Result<Asked<'a>, Error> {
        use std::borrow::Cow;
        if let Some(scope) = params.scope.as_ref() {
            scope.validate("scope")?;
        }
        let resources = if params.resources.is_empty() {
            Cow::Borrowed(&self.resources[..])
        } else {
            let mut resources = params.resources.clone();
            resources.sort();
            resources.dedup();
            Cow::Owned(resources)
        };
        let extra = if params.extra.is_empty() {
            Cow::Borrowed(&self.extra)
        } else {
            let mut extra = self.extra.clone();
            extra.extend(validate_extra(&params.extra, "extra")?);
            Cow::Owned(extra)
        };
        let exchange = params.exchange.as_deref();
        if let Some(exchange) = exchange {
            exchange.validate()?;
        }
        Ok(Asked {
            scope: params.scope.as_ref().or(self.scope.as_ref()),
            resources,
            extra,
            exchange,
        })
    }

    fn key_of(&self, params: &TokenRequestParams, asked: &Asked<'_>) -> CacheKey {
        if params.has_overrides() {
            cache_key(
                &self.name,
                asked.scope,
                &asked.resources,
                &asked.extra,
                self.dpop.as_ref(),
                self.x5t.as_deref(),
                asked.exchange.map(|e| (e, &*self.exchange_key)),
            )
        } else {
            self.default_key.clone()
        }
    }

    /// The cache key of `params` alone (the hit path of per-call parameters).
    pub(crate) fn key(&self, params: &TokenRequestParams) -> Result<CacheKey, Error> {
        Ok(self.key_of(params, &self.asked(params)?))
    }

    pub(crate) fn resolve(&self, params: &TokenRequestParams) -> Result<Resolved, Error> {
        let asked = self.asked(params)?;
        let key = self.key_of(params, &asked);
        let mut request = TokenRequest::new(match asked.exchange {
            Some(exchange) => exchange.grant(),
            None => Grant::ClientCredentials,
        });
        for audience in asked.exchange.iter().flat_map(|e| &e.audiences) {
            request = request.extra("audience", audience.clone());
        }
        if let Some(scope) = asked.scope {
            request = request.scope(scope.clone());
        }
        for resource in asked.resources.iter() {
            request = request.resource(resource.clone());
        }
        for (name, value) in asked.extra.iter() {
            request = request.extra(name.clone(), value.clone());
        }
        Ok(Resolved {
            key,
            request,
            exchange: params.exchange.clone(),
        })
    }
}

impl ClientCredentialsTokenManager {
    /// A builder.
    pub fn builder() -> ClientCredentialsTokenManagerBuilder {
        ClientCredentialsTokenManagerBuilder {
            clients: Vec::new(),
            cache: None,
            discovery_lifetime: DEFAULT_METADATA_LIFETIME,
            settings: Settings::default(),
            exchange_hash_key: None,
        }
    }

    /// The names of the registered clients.
    pub fn client_names(&self) -> impl Iterator<Item = &str> {
        self.inner.clients.keys().map(ClientName::as_str)
    }

    /// The cache in use.
    pub fn cache(&self) -> &SharedCache {
        &self.inner.cache
    }

    pub(crate) fn registered(&self, client: &str) -> Result<Arc<RegisteredClient>, Error> {
        self.inner
            .clients
            .get(client)
            .cloned()
            .ok_or_else(|| Error::UnknownClient(client.to_owned()))
    }

    /// How `client`'s DPoP-bound tokens are presented (`None` without a DPoP key): for requests
    /// that the integrations do not send themselves, such as a WebSocket handshake (see
    /// [`crate::dpop::Presenter::present`]).
    pub fn presenter(&self, client: &str) -> Result<Option<crate::dpop::Presenter>, Error> {
        Ok(self.registered(client)?.dpop.clone())
    }

    /// Asks the token endpoint for a new token for `client` and `params` **now**, past the
    /// cache and the single flight, and returns the server's response as it is (with
    /// `expires_in`, the token's real lifetime): for one-shot tools such as `tokenkeeper
    /// token`. Services use [`ClientCredentialsTokenManager::get_token`].
    pub async fn request_token(
        &self,
        client: &str,
        params: &TokenRequestParams,
    ) -> Result<TokenResponse, Error> {
        let registered = self.registered(client)?;
        let resolved = registered.resolve(params)?;
        if let Some(exchange) = &resolved.exchange {
            exchange.live_subject_expiry(self.inner.clock.now())?;
        }
        let response = Inner::send(&registered, &resolved).await?;
        if let Some(exchange) = &resolved.exchange {
            exchange.check_issued(response.issued_token_type.as_deref())?;
        }
        Ok(response)
    }

    /// The cache key `get_token(client, params)` uses.
    pub fn cache_key(&self, client: &str, params: &TokenRequestParams) -> Result<CacheKey, Error> {
        Ok(self.registered(client)?.resolve(params)?.key)
    }

    /// A valid token for `client` and `params`: from the cache, or fetched now.
    ///
    /// A cache hit takes no lock and does no I/O with the in-memory cache.
    #[inline]
    pub async fn get_token(
        &self,
        client: &str,
        params: &TokenRequestParams,
    ) -> Result<Arc<CachedToken>, Error> {
        let registered = self
            .inner
            .clients
            .get(client)
            .ok_or_else(|| Error::UnknownClient(client.to_owned()))?;
        self.inner.get_token(registered, params).await
    }

    /// Removes `token` from the cache if it is still the one cached for `client` and `params`
    /// (compare-and-remove): call it when an API rejected the token. Returns whether it was
    /// removed. Concurrent rejections of the same token remove it once, and lead to one new fetch.
    pub async fn invalidate(
        &self,
        client: &str,
        params: &TokenRequestParams,
        token: &CachedToken,
    ) -> Result<bool, Error> {
        let key = self.cache_key(client, params)?;
        Ok(self.inner.invalidate(&key, token).await)
    }
}

impl Inner {
    /// The hit path, then the miss path.
    #[inline]
    pub(crate) async fn get_token(
        self: &Arc<Self>,
        client: &Arc<RegisteredClient>,
        params: &TokenRequestParams,
    ) -> Result<Arc<CachedToken>, Error> {
        if params.is_default() {
            if let Some(token) = self.try_hit(client, &client.default_key, params) {
                return Ok(token);
            }
        } else if params.exchange.is_some() && !params.force_renewal {
            // A service exchanges the token of each request it serves: the key alone (a
            // keyed hash of the subject), not the whole token request, on the hit path.
            if let Some(token) = self.try_hit(client, &client.key(params)?, params) {
                return Ok(token);
            }
        }
        self.get_token_slow(client, params).await
    }

    /// A key precomputed for `params` (the integrations keep one).
    #[inline]
    pub(crate) async fn get_token_with_key(
        self: &Arc<Self>,
        client: &Arc<RegisteredClient>,
        key: &CacheKey,
        params: &TokenRequestParams,
    ) -> Result<Arc<CachedToken>, Error> {
        if !params.force_renewal {
            if let Some(token) = self.try_hit(client, key, params) {
                return Ok(token);
            }
        }
        self.get_token_slow(client, params).await
    }

    #[inline]
    pub(crate) fn try_hit(
        self: &Arc<Self>,
        client: &Arc<RegisteredClient>,
        key: &CacheKey,
        params: &TokenRequestParams,
    ) -> Option<Arc<CachedToken>> {
        let token = self.cache.get_local(key)?;
        let now = self.clock.now();
        if !token.is_valid_at(now) {
            return None;
        }
        if token.needs_refresh_at(now) {
            self.refresh_ahead(client, key, &token, params, now);
        }
        client.metrics.hit();
        Some(token)
    }

    #[cold]
    fn refresh_ahead(
        self: &Arc<Self>,
        client: &Arc<RegisteredClient>,
        key: &CacheKey,
        token: &CachedToken,
        params: &TokenRequestParams,
        now: crate::clock::Timestamp,
    ) {
        if !token.try_claim_refresh(now, self.backoff.base) {
            return;
        }
        let Ok(resolved) = client.resolve(params) else {
            return;
        };
        debug_assert_eq!(&resolved.key, key);
        client.metrics.refresh();
        tracing::debug!(client = %client.name, "starting refresh-ahead");
        // The flight runs in its own task; nobody waits for it here.
        let _ = self.join_or_start(client, resolved, FlightMode::RefreshAhead, now, None);
    }

    #[inline(never)]
    async fn get_token_slow(
        self: &Arc<Self>,
        client: &Arc<RegisteredClient>,
        params: &TokenRequestParams,
    ) -> Result<Arc<CachedToken>, Error> {
        let resolved = client.resolve(params)?;
        if let Some(exchange) = &resolved.exchange {
            // An expired subject is refused before any flight (no backoff state for it).
            exchange.live_subject_expiry(self.clock.now())?;
        }
        let mode = if params.force_renewal {
            FlightMode::Force
        } else {
            // The local tier was checked on the hit path (for default parameters); look in every
            // tier now.
            match self.cache.get(&resolved.key).await {
                Ok(Some(token)) => {
                    let now = self.clock.now();
                    if token.is_valid_at(now) {
                        if token.needs_refresh_at(now) {
                            self.refresh_ahead(client, &resolved.key, &token, params, now);
                        }
                        client.metrics.hit();
                        return Ok(token);
                    }
                }
                Ok(None) => {}
                Err(error) => {
                    client.metrics.cache_error();
                    self.cache_warning(
                        &client.name,
                        &error,
                        "token cache lookup failed; fetching without the cache",
                    );
                }
            }
            FlightMode::Miss
        };
        client.metrics.miss();
        let now = self.clock.now();
        match self.join_or_start(client, resolved, mode, now, None) {
            Joined::Flight(flight) => flight.await,
            Joined::BackingOff(error) => Err(error),
        }
    }

    /// An API answered 401 for `rejected` (the token cached under `key`): renews it, at most
    /// once per token and with the key's backoff (CC-14). `Ok(None)`: a 401 already renewed the
    /// token that `rejected` replaced, too recently — back off, do not retry.
    pub(crate) async fn renew_rejected(
        self: &Arc<Self>,
        client: &Arc<RegisteredClient>,
        params: &TokenRequestParams,
        rejected: &Arc<CachedToken>,
    ) -> Result<Option<Arc<CachedToken>>, Error> {
        let now = self.clock.now();
        if !rejected.may_renew_at(now) {
            tracing::debug!(client = %client.name, renewals = rejected.renewals(), "the API rejected a token that a 401 renewed moments ago; backing off");
            return Ok(None);
        }
        let resolved = client.resolve(&params.clone().force_renewal(false))?;
        let mode = FlightMode::Renewal {
            renewals: rejected.renewals().saturating_add(1),
        };
        client.metrics.miss();
        match self.join_or_start(client, resolved, mode, now, Some(rejected.clone())) {
            Joined::Flight(flight) => flight.await.map(Some),
            Joined::BackingOff(error) => Err(error),
        }
    }

    fn join_or_start(
        self: &Arc<Self>,
        client: &Arc<RegisteredClient>,
        resolved: Resolved,
        mode: FlightMode,
        now: crate::clock::Timestamp,
        rejected: Option<Arc<CachedToken>>,
    ) -> Joined {
        let key = resolved.key.clone();
        self.flights.join_or_start(&key, mode, now, |id| {
            let inner = self.clone();
            let client = client.clone();
            let span =
                tracing::debug_span!("tokenkeeper.fetch", client = %client.name, mode = ?mode);
            async move { inner.fetch(id, client, resolved, mode, rejected).await }.instrument(span)
        })
    }

    /// Logs a cache failure as a warning at most once a minute (debug otherwise): an outage of
    /// the cache backend gives one warning, not one per request.
    fn cache_warning(&self, client: &ClientName, error: &crate::error::CacheError, message: &str) {
        let now = self.clock.now().as_millis();
        let last = self
            .last_cache_warning
            .load(std::sync::atomic::Ordering::Relaxed);
        if now.saturating_sub(last) >= 60_000
            && self
                .last_cache_warning
                .compare_exchange(
                    last,
                    now,
                    std::sync::atomic::Ordering::Relaxed,
                    std::sync::atomic::Ordering::Relaxed,
                )
                .is_ok()
        {
            tracing::warn!(client = %client, %error, "{message}");
        } else {
            tracing::debug!(client = %client, %error, "{message}");
        }
    }

    /// Takes the distributed lease, or waits for its holder's token. `Err(token)`: another
    /// instance stored a token meanwhile. `Ok(None)`: no lease (none configured, backend down,
    /// or waited too long): fetch locally.
    async fn lease_or_token(
        &self,
        key: &CacheKey,
        mode: FlightMode,
        started: Timestamp,
        rejected: Option<&CachedToken>,
    ) -> Result<Option<LeaseGuard>, Arc<CachedToken>> {
        let Some((lease, options)) = &self.lease else {
            return Ok(None);
        };
        let settled = || async {
            match self.cache.get(key).await {
                Ok(Some(token)) if mode.settles(&token, self.clock.now(), started, rejected) => {
                    Some(token)
                }
                _ => None,
            }
        };
        match lease_or_settled(lease.as_ref(), options, key, settled).await {
            LeaseOutcome::Held(guard) => Ok(Some(guard)),
            LeaseOutcome::Settled(token) => Err(token),
            LeaseOutcome::Unavailable => Ok(None),
        }
    }

    /// The body of one flight: re-read the cache, take the lease, fetch, store, record the
    /// outcome.
    async fn fetch(
        self: Arc<Self>,
        id: u64,
        client: Arc<RegisteredClient>,
        resolved: Resolved,
        mode: FlightMode,
        rejected: Option<Arc<CachedToken>>,
    ) -> Result<Arc<CachedToken>, Error> {
        let key = &resolved.key;
        let started = self.clock.now();
        if let Some(rejected) = &rejected {
            // Compare-and-remove: only the rejected token goes, never a newer one.
            self.invalidate(key, rejected).await;
        }
        if mode != FlightMode::Force {
            // Another flight may have filled the cache between our miss and this flight's start.
            if let Ok(Some(token)) = self.cache.get(key).await {
                if mode.settles(&token, started, started, rejected.as_deref()) {
                    self.flights.finish(key, id, Ok(()), started, &self.backoff);
                    return Ok(token);
                }
            }
        }
        let guard = match self
            .lease_or_token(key, mode, started, rejected.as_deref())
            .await
        {
            Ok(guard) => guard,
            Err(token) => {
                self.flights
                    .finish(key, id, Ok(()), self.clock.now(), &self.backoff);
                return Ok(token);
            }
        };
        let result = self.fetch_and_store(&client, &resolved, mode).await;
        if let Some(guard) = guard {
            guard.release().await;
        }
        let now = self.clock.now();
        match &result {
            Ok(_) => self.flights.finish(key, id, Ok(()), now, &self.backoff),
            Err(error) => {
                self.flights.finish(key, id, Err(error), now, &self.backoff);
                self.flights.prune(now);
            }
        }
        result
    }

    /// Requests a token and stores it.
    /// Sends `resolved`'s token request for `client` (with a fresh JWT bearer assertion when
    /// the client has one).
    async fn send(client: &RegisteredClient, resolved: &Resolved) -> Result<TokenResponse, Error> {
        match (&client.grant_assertions, &resolved.exchange) {
            (Some(provider), None) => {
                // A fresh assertion for each token request (a file re-read when it changed).
                let audience = client.endpoint.url().await?;
                let context = crate::protocol::client_assertion::AssertionContext {
                    client_id: &client.client_id,
                    audience: audience.as_str(),
                };
                let assertion = provider.assertion(&context).await?;
                let request = resolved.request.with_grant(Grant::JwtBearer { assertion });
                client.endpoint.request(&request).await
            }
            _ => client.endpoint.request(&resolved.request).await,
        }
    }

    async fn fetch_and_store(
        &self,
        client: &RegisteredClient,
        resolved: &Resolved,
        mode: FlightMode,
    ) -> Result<Arc<CachedToken>, Error> {
        let key = &resolved.key;
        let subject_expires_at = match &resolved.exchange {
            Some(exchange) => Some(exchange.live_subject_expiry(self.clock.now())?),
            None => None,
        };
        let started = tokio::time::Instant::now();
        let response = Self::send(client, resolved).await;
        client
            .metrics
            .token_request(started.elapsed(), response.is_ok());
        let now = self.clock.now();
        let result = response.and_then(|response| {
            if let Some(exchange) = &resolved.exchange {
                exchange.check_issued(response.issued_token_type.as_deref())?;
            }
            self.warn_if_short(client, response.expires_in);
            let (mut refresh_at, mut expires_at) = self.lifetime.times(now, response.expires_in);
            if let Some(subject_expires_at) = subject_expires_at {
                // Never handed out after the subject token expires (DL-03), and — like every
                // token — a little before it does: the subject's remaining life with the same
                // skew (UX-09).
                let remaining = std::time::Duration::from_millis(
                    subject_expires_at
                        .as_millis()
                        .saturating_sub(now.as_millis()),
                );
                let (_, subject_usable) = self.lifetime.times(now, Some(remaining));
                expires_at = expires_at.min(subject_usable);
                refresh_at = refresh_at.min(expires_at);
            }
            let token = CachedToken::new(
                response.access_token,
                response.token_type,
                response.scope,
                now,
                refresh_at,
                expires_at,
            )?;
            Ok(Arc::new(match mode {
                FlightMode::Renewal { renewals } => token.renewed_after_rejection(
                    renewals,
                    now.saturating_add(self.backoff.jittered(u32::from(renewals))),
                ),
                _ => token,
            }))
        });
        match &result {
            Ok(token) => {
                if let Err(error) = self.cache.put(key, token.clone()).await {
                    client.metrics.cache_error();
                    self.cache_warning(
                        &client.name,
                        &error,
                        "token cache write failed; the token is used without caching",
                    );
                }
            }
            Err(error) => {
                tracing::warn!(client = %client.name, %error, "token request failed");
            }
        }
        result
    }

    /// Logs once per client that the server's tokens live shorter than the configured skew.
    fn warn_if_short(&self, client: &RegisteredClient, expires_in: Option<Duration>) {
        if self.lifetime.is_shorter_than_skew(expires_in)
            && !client
                .short_lifetime_warned
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!(
                client = %client.name,
                expires_in = ?expires_in,
                skew = ?self.lifetime.skew,
                "the server's tokens live shorter than the configured skew; a tenth of their lifetime is used as the skew instead"
            );
        }
    }

    pub(crate) async fn invalidate(&self, key: &CacheKey, token: &CachedToken) -> bool {
        match self.cache.remove_if(key, token.access_token()).await {
            Ok(removed) => removed,
            Err(error) => {
                tracing::warn!(%error, "token cache invalidation failed");
                false
            }
        }
    }
}
