//! The user token manager.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use url::Url;

use super::store::{InMemoryUserTokenStore, SessionKey, StoreOutcome, UserTokenStore, UserTokens};
use crate::cache::{
    lease_or_settled, CacheKey, CachedToken, KeyWriter, Lease, LeaseOptions, LeaseOutcome,
};
use crate::client_credentials::flight::{FlightMode, Flights, Joined};
use crate::client_credentials::{BackoffPolicy, ClientConfig, LifetimePolicy};
use crate::clock::{Clock, Timestamp};
use crate::error::Error;
use crate::protocol::discovery::DEFAULT_METADATA_LIFETIME;
use crate::protocol::token_endpoint::TokenEndpoint;
use crate::protocol::token_request::{Grant, TokenRequest};
use crate::protocol::token_response::TokenResponse;
use crate::protocol::types::{Resource, Scope};
use crate::settings::{settings_setters, Settings};

/// Parameters of one user-token request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserTokenParams {
    resource: Option<Resource>,
    scope: Option<Scope>,
    force_renewal: bool,
}

impl UserTokenParams {
    /// The default token (no resource).
    pub fn new() -> Self {
        Self::default()
    }

    /// A token for this resource (RFC 8707); each resource has its own token, all refreshed with
    /// the session's one refresh token.
    pub fn resource(mut self, resource: Resource) -> Self {
        self.resource = Some(resource);
        self
    }

    /// A narrower scope for the refreshed token.
    pub fn scope(mut self, scope: impl Into<Scope>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// Refresh now even if the stored token is valid.
    pub fn force_renewal(mut self, force: bool) -> Self {
        self.force_renewal = force;
        self
    }

    fn slot(&self) -> &str {
        self.resource.as_ref().map_or("", Resource::as_str)
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
/// - **Per-resource tokens** are distinct entries sharing the refresh token; a refresh for one
///   resource never returns another's token.
/// - Usable anywhere: everything is keyed by [`SessionKey`], so background jobs and websocket
///   handlers use it as well as request handlers.
#[derive(Clone)]
pub struct UserTokenManager {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: TokenEndpoint,
    revocation_endpoint: Option<Url>,
    store: Arc<dyn UserTokenStore>,
    clock: Arc<dyn Clock>,
    lifetime: LifetimePolicy,
    backoff: BackoffPolicy,
    flights: Flights,
    session_locks: Mutex<HashMap<SessionKey, Arc<tokio::sync::Mutex<()>>>>,
    lease: Option<(Arc<dyn Lease>, LeaseOptions)>,
}

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

    /// Checks the configuration and builds the manager.
    pub fn build(self) -> Result<UserTokenManager, Error> {
        let settings = self.settings.resolve()?;
        let (clock, transport) = (settings.clock, settings.transport);
        let (endpoint, _) =
            self.client
                .endpoint("user", &transport, &clock, DEFAULT_METADATA_LIFETIME)?;
        let revocation_endpoint = match self.revocation_endpoint {
            Some(raw) => Some(crate::client_credentials::config::parse_http_url(
                &raw,
                "revocation_endpoint",
            )?),
            None => None,
        };
        Ok(UserTokenManager {
            inner: Arc::new(Inner {
                endpoint,
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
            }),
        })
    }
}

fn flight_key(session: &SessionKey, slot: &str) -> CacheKey {
    let mut key = KeyWriter::new("ut");
    key.field("session", session.as_str());
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
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn UserTokenStore> {
        &self.inner.store
    }

    /// The token endpoint client (for the code exchange at login).
    pub fn endpoint(&self) -> &TokenEndpoint {
        &self.inner.endpoint
    }

    /// A cached token made from a token response received now.
    pub fn cached_token(&self, response: &TokenResponse) -> Result<Arc<CachedToken>, Error> {
        let now = self.inner.clock.now();
        let (refresh_at, expires_at) = self.inner.lifetime.times(now, response.expires_in);
        Ok(Arc::new(CachedToken::new(
            response.access_token.clone(),
            response.token_type.clone(),
            response.scope.clone(),
            now,
            refresh_at,
            expires_at,
        )?))
    }

    /// Stores the tokens of a login (the code exchange response) for `session`, replacing any.
    /// The ID token is not kept (keep it in the web session if you need it for logout).
    pub async fn store_login(
        &self,
        session: &SessionKey,
        response: &TokenResponse,
        resource: Option<&Resource>,
    ) -> Result<(), Error> {
        let mut tokens = UserTokens {
            refresh_token: response.refresh_token.clone(),
            ..UserTokens::default()
        };
        tokens.access_tokens.insert(
            resource.map_or("", Resource::as_str),
            self.cached_token(response)?,
        );
        self.replace(session, tokens).await
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
        let inner = &self.inner;
        let stored =
            inner.store.get(session).await?.ok_or_else(|| {
                Error::ReauthenticationRequired("the session has no tokens".into())
            })?;
        let now = inner.clock.now();
        if !params.force_renewal {
            if let Some(token) = stored.value.access_tokens.get(params.slot()) {
                if token.is_valid_at(now) {
                    if token.needs_refresh_at(now)
                        && stored.value.refresh_token.is_some()
                        && token.try_claim_refresh(now, inner.backoff.base)
                    {
                        // Refresh ahead in the background; this caller keeps the current token.
                        let _ = self.start(session, params, FlightMode::RefreshAhead, now);
                    }
                    return Ok(token.clone());
                }
            }
        }
        let mode = if params.force_renewal {
            FlightMode::Force
        } else {
            FlightMode::Miss
        };
        match self.start(session, params, mode, now) {
            Joined::Flight(flight) => flight.await,
            Joined::BackingOff(error) => Err(error),
        }
    }

    fn start(
        &self,
        session: &SessionKey,
        params: &UserTokenParams,
        mode: FlightMode,
        now: Timestamp,
    ) -> Joined {
        let key = flight_key(session, params.slot());
        let this = self.clone();
        let (session, params) = (session.clone(), params.clone());
        let flight_key = key.clone();
        self.inner
            .flights
            .join_or_start(&key, mode, now, move |id| async move {
                let result = this.refresh(&session, &params, mode).await;
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
    ) -> Result<Arc<CachedToken>, Error> {
        let started = self.inner.clock.now();
        let guard = self.session_lock(session).await;
        let result = self.refresh_locked(session, params, mode, started).await;
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
    ) -> Result<Arc<CachedToken>, Error> {
        let inner = &self.inner;
        let lease_key = flight_key(session, "");
        let mut lease_guard = None;
        if let Some((lease, options)) = &inner.lease {
            // Another instance refreshing this session: its stored tokens will do.
            let settled = || async {
                self.settled(session, params, mode, started)
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
            .refresh_with_lock_held(session, params, mode, started)
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
    ) -> Result<Option<Arc<CachedToken>>, Error> {
        let now = self.inner.clock.now();
        let stored = self.inner.store.get(session).await?;
        Ok(stored.and_then(|s| {
            s.value
                .access_tokens
                .get(params.slot())
                .filter(|t| match mode {
                    FlightMode::Force => t.is_valid_at(now) && t.issued_at() > started,
                    _ => mode.accepts(t, now),
                })
                .cloned()
        }))
    }

    async fn refresh_with_lock_held(
        &self,
        session: &SessionKey,
        params: &UserTokenParams,
        mode: FlightMode,
        started: Timestamp,
    ) -> Result<Arc<CachedToken>, Error> {
        let inner = &self.inner;
        // Re-read: the previous holder may have refreshed (and rotated the refresh token).
        let Some(current) = inner.store.get(session).await? else {
            return Err(Error::ReauthenticationRequired(
                "the session has no tokens".into(),
            ));
        };
        let now = inner.clock.now();
        let existing = current.value.access_tokens.get(params.slot()).cloned();
        if let Some(token) = &existing {
            let settles = match mode {
                FlightMode::Force => token.is_valid_at(now) && token.issued_at() > started,
                _ => mode.accepts(token, now),
            };
            if settles {
                return Ok(token.clone());
            }
        }
        let Some(refresh_token) = current.value.refresh_token.clone() else {
            return match existing {
                Some(token) if token.is_valid_at(now) => Ok(token),
                _ => Err(Error::ReauthenticationRequired(
                    "the access token expired and the session has no refresh token".into(),
                )),
            };
        };
        let mut request = TokenRequest::new(Grant::RefreshToken {
            refresh_token: refresh_token.clone(),
        });
        if let Some(scope) = &params.scope {
            request = request.scope(scope.clone());
        }
        if let Some(resource) = &params.resource {
            request = request.resource(resource.clone());
        }
        let response = match inner.endpoint.request(&request).await {
            Ok(response) => response,
            Err(error) if error.oauth_error() == Some("invalid_grant") => {
                tracing::info!(session = %session, "refresh token refused (invalid_grant); the session must log in again");
                inner.store.clear(session).await?;
                return Err(Error::ReauthenticationRequired(format!(
                    "the refresh token was refused: {error}"
                )));
            }
            Err(error) => {
                tracing::warn!(session = %session, %error, "refresh failed; the stored tokens are kept");
                return Err(error);
            }
        };
        let token = self.cached_token(&response)?;
        let mut version = current.version;
        let mut base = current.value;
        for _ in 0..8 {
            let mut next = (*base).clone();
            if let Some(rotated) = &response.refresh_token {
                next.refresh_token = Some(rotated.clone());
            }
            next.access_tokens
                .insert(params.slot().to_owned(), token.clone());
            match inner
                .store
                .store(session, Arc::new(next), Some(version))
                .await?
            {
                StoreOutcome::Stored(_) => return Ok(token),
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
    /// and clears its tokens. A revocation failure is logged; the tokens are cleared anyway.
    pub async fn logout(&self, session: &SessionKey) -> Result<(), Error> {
        let stored = self.inner.store.get(session).await?;
        if let Some(refresh_token) = stored.and_then(|s| s.value.refresh_token.clone()) {
            match self.revocation_url().await {
                Some(url) => {
                    if let Err(error) = self
                        .inner
                        .endpoint
                        .revoke(url, refresh_token.secret(), "refresh_token")
                        .await
                    {
                        tracing::warn!(session = %session, %error, "refresh token revocation failed; logging out anyway");
                    }
                }
                None => {
                    tracing::warn!(session = %session, "no revocation endpoint; the refresh token is only forgotten")
                }
            }
        }
        self.inner.store.clear(session).await?;
        Ok(())
    }

    async fn revocation_url(&self) -> Option<Url> {
        if let Some(url) = &self.inner.revocation_endpoint {
            return Some(url.clone());
        }
        let discovery = self.inner.endpoint.discovery()?;
        discovery.metadata().await.ok()?.revocation_endpoint.clone()
    }
}
