//! Configuration, routes and handlers.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use serde::{Deserialize, Serialize};
use tokenkeeper::protocol::step_up::AuthenticationRequirements;
use tokenkeeper::user::LoginOptions;
use tokenkeeper::user::{
    InMemoryLoginReplayStore, LoginDpop, LoginReplayStore, LoginRequest, SessionKey,
    UserTokenManager,
};
use tokenkeeper::{ClientConfig, Error, Resource, Scope};
use tower_sessions::cookie::SameSite;
use tower_sessions::{Session, SessionManagerLayer, SessionStore};

use crate::extract::CurrentUser;
use crate::login_cookie::{LoginCookie, PendingLogin};
use crate::return_url::local_return_url;

/// Session keys used by this crate.
pub(crate) const USER: &str = "tokenkeeper.user";

/// How the application logs users in.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// The issuer (discovery is used to find the endpoints).
    pub issuer: String,
    /// The client id.
    pub client_id: String,
    /// The client secret.
    pub client_secret: tokenkeeper::ClientSecret,
    /// The absolute callback URL registered at the provider (`…{prefix}/callback`).
    pub redirect_uri: String,
    /// Scopes to ask for (default `openid offline_access`).
    pub scope: Scope,
    /// `prompt` to send (`consent` is needed by some providers for refresh tokens).
    pub prompt: Option<String>,
    /// A resource indicator to ask for at login, code exchange and refresh.
    pub resource: Option<Resource>,
    /// Extra authorization parameters.
    pub extra: Vec<(String, String)>,
    /// What every login asks of the user's authentication (`acr_values`, `max_age`); a login
    /// may ask for more ([`LoginStart::requirements`]). The ID token must meet it (PR-04).
    pub requirements: AuthenticationRequirements,
    /// Where the provider sends the user after RP-initiated logout.
    pub post_logout_redirect_uri: Option<String>,
    /// Path prefix of the routes (default `/auth`).
    pub prefix: String,
    /// Session cookies without `Secure` (and so without the `__Host-` prefix): only for
    /// plain-http loopback development.
    pub insecure_cookies: bool,
    /// How long a login may take between `/login` and its callback (default 10 min).
    pub pending_login_ttl: std::time::Duration,
    /// The key that seals a login in progress into the browser's login cookie (SEC-13). By
    /// default it is derived from the client secret (HKDF), so every instance of a fleet with
    /// the same client shares it; a client without a secret (private_key_jwt) gets a random
    /// key per process unless one is set here — set it for a fleet. [`Encryption::accept`]
    /// lets a key rotate without breaking logins in progress.
    ///
    /// [`Encryption::accept`]: tokenkeeper::Encryption::accept
    pub login_cookie_key: Option<Arc<tokenkeeper::Encryption>>,
    /// The login cookie's name (default `tk.login`; with Secure cookies it always gets the
    /// `__Host-` prefix). Several logins on one host (a BFF's frontends under path prefixes)
    /// each need their own: a browser keeps one cookie per name and host. Letters, digits, `-`,
    /// `_` and `.` only.
    pub login_cookie_name: Option<String>,
}

impl OidcConfig {
    /// A configuration with defaults for the rest.
    pub fn new(
        issuer: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: impl Into<tokenkeeper::ClientSecret>,
        redirect_uri: impl Into<String>,
    ) -> Self {
        Self {
            issuer: issuer.into(),
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            redirect_uri: redirect_uri.into(),
            scope: Scope::parse("openid offline_access"),
            prompt: None,
            resource: None,
            extra: Vec::new(),
            requirements: AuthenticationRequirements::new(),
            post_logout_redirect_uri: None,
            prefix: "/auth".into(),
            insecure_cookies: false,
            pending_login_ttl: std::time::Duration::from_secs(600),
            login_cookie_key: None,
            login_cookie_name: None,
        }
    }
}

/// The key under which the replay store remembers that the login with this `state` was
/// taken: a hash (the store never sees the `state`).
fn claim_key(state: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(state.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The logged-in user, as kept in the session.
#[derive(Serialize, Deserialize, Clone)]
pub(crate) struct SessionUser {
    pub(crate) sub: String,
    pub(crate) sid: String,
    pub(crate) claims: serde_json::Map<String, serde_json::Value>,
    pub(crate) id_token: String,
    /// The key of this login's tokens (one record per login: SEC-14). Sessions written before
    /// it existed key their tokens by `sub` and `sid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tokens: Option<String>,
}

impl std::fmt::Debug for SessionUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Claims and the ID token identify a person (SEC-25): the key's hash only.
        f.debug_struct("SessionUser")
            .field("session", &self.key().log_id())
            .finish_non_exhaustive()
    }
}

impl SessionUser {
    pub(crate) fn key(&self) -> SessionKey {
        match &self.tokens {
            Some(key) => SessionKey::new(key),
            None => SessionKey::from_sub_sid(&self.sub, &self.sid),
        }
    }
}

/// Why a login or a callback was refused. The browser gets a short, generic message; the
/// details go to the log (SEC-06).
#[derive(Debug)]
#[non_exhaustive]
pub enum LoginError {
    /// No login is pending for this `state` (already completed, expired, or never started).
    NoPendingLogin,
    /// `state` is missing or does not match the one this browser started with.
    StateMismatch,
    /// The `iss` of the response is missing or not the issuer (RFC 9207).
    IssuerMismatch,
    /// The `returnUrl` is not a local path (SEC-01).
    InvalidReturnUrl,
    /// A step-up login's `acr_values` or `max_age` cannot be sent.
    InvalidStepUp,
    /// The provider answered with an error.
    Provider(String),
    /// The code exchange or the ID token failed.
    Token(Error),
    /// The session store failed.
    Session(String),
}

impl std::fmt::Display for LoginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoPendingLogin => f.write_str("no login is pending for this state"),
            Self::StateMismatch => f.write_str("the state does not match the login's"),
            Self::IssuerMismatch => f.write_str("the response's iss is not the issuer (RFC 9207)"),
            Self::InvalidReturnUrl => f.write_str("the returnUrl is not a local path"),
            Self::InvalidStepUp => f.write_str("the step-up's acr_values or max_age is not usable"),
            Self::Provider(e) => write!(f, "the provider refused the login: {e}"),
            Self::Token(e) => write!(f, "{e}"),
            Self::Session(e) => write!(f, "session store: {e}"),
        }
    }
}

impl std::error::Error for LoginError {}

impl IntoResponse for LoginError {
    fn into_response(self) -> Response {
        let (status, message) = match &self {
            Self::Session(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Login is unavailable right now.",
            ),
            Self::Token(Error::Discovery { .. } | Error::Transport(_)) => {
                (StatusCode::BAD_GATEWAY, "Login is unavailable right now.")
            }
            Self::InvalidReturnUrl => (StatusCode::BAD_REQUEST, "Invalid returnUrl."),
            Self::InvalidStepUp => (StatusCode::BAD_REQUEST, "Invalid step-up request."),
            _ => (StatusCode::BAD_REQUEST, "Login failed. Please try again."),
        };
        tracing::warn!(error = %self, status = status.as_u16(), "login refused");
        (
            status,
            [(axum::http::header::CACHE_CONTROL, "no-store")],
            message,
        )
            .into_response()
    }
}

/// Login, callback and logout for one provider, and the user token manager behind them.
#[derive(Clone)]
pub struct Oidc {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: OidcConfig,
    pub(crate) users: UserTokenManager,
    replays: Arc<dyn LoginReplayStore>,
    login_cookie: LoginCookie,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field("issuer", &self.inner.config.issuer)
            .field("client_id", &self.inner.config.client_id)
            .finish_non_exhaustive()
    }
}

impl Oidc {
    /// Builds the login for `config`, keeping session tokens in `users`' store; logins in
    /// progress travel sealed in their cookie, and taken callbacks are remembered in memory
    /// (see [`Oidc::with_login_replay_store`] for a fleet).
    ///
    /// Fails, naming the field, when the configuration cannot work: a relative `redirect_uri`,
    /// or a `users` manager not built for this client from this issuer (see
    /// [`Oidc::user_manager_for`]) — at construction, not at the first login.
    pub fn new(config: OidcConfig, users: UserTokenManager) -> Result<Self, Error> {
        let field = |field: &'static str, reason: String| {
            Error::Config(tokenkeeper::ConfigError::new(field, reason))
        };
        tokenkeeper::protocol::authorization::random_token(1)?;
        url::Url::parse(&config.redirect_uri)
            .map_err(|e| field("redirect_uri", format!("is not an absolute URL: {e}")))?;
        match users.endpoint().discovery() {
            None => {
                return Err(field(
                    "users",
                    "the user token manager must be built from the issuer (ClientConfig::from_issuer), so that login can find the provider's endpoints".into(),
                ))
            }
            Some(discovery) if discovery.issuer() != config.issuer => {
                return Err(field(
                    "issuer",
                    format!(
                        "is {:?}, but the user token manager is built for issuer {:?}",
                        config.issuer,
                        discovery.issuer()
                    ),
                ))
            }
            Some(_) => {}
        }
        let manager_client = users.endpoint().authentication().client_id().as_str();
        if manager_client != config.client_id {
            return Err(field(
                "client_id",
                format!(
                    "is {:?}, but the user token manager is built for client {manager_client:?}",
                    config.client_id
                ),
            ));
        }
        if config.pending_login_ttl.is_zero() {
            return Err(field(
                "pending_login_ttl",
                "must be greater than zero".into(),
            ));
        }
        let key = match &config.login_cookie_key {
            Some(key) => key.clone(),
            None => match crate::login_cookie::derived_key(
                &config.client_id,
                config.client_secret.secret(),
            ) {
                Some(key) => Arc::new(key),
                None => {
                    tracing::info!("the client has no secret: login cookies are sealed with a random key of this process (set OidcConfig::login_cookie_key for a fleet)");
                    Arc::new(crate::login_cookie::random_key()?)
                }
            },
        };
        let name = config.login_cookie_name.as_deref().unwrap_or("tk.login");
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(field(
                "login_cookie_name",
                "must be 1 to 64 letters, digits, '-', '_' or '.'".into(),
            ));
        }
        let login_cookie = LoginCookie::new(
            &if config.insecure_cookies {
                name.to_owned()
            } else {
                format!("__Host-{name}")
            },
            !config.insecure_cookies,
            key,
        );
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                users,
                replays: Arc::new(InMemoryLoginReplayStore::new()),
                login_cookie,
            }),
        })
    }

    /// Remembers taken login callbacks in `store` instead of this process's memory: with a
    /// store shared by the instances (`tokenkeeper_redis::RedisLoginReplayStore`), two
    /// callbacks of one login sent to two instances at once make one code exchange (SEC-02).
    /// A login started on one instance completes on any in either case: it travels in the
    /// browser's sealed login cookie.
    pub fn with_login_replay_store(self, store: Arc<dyn LoginReplayStore>) -> Self {
        let inner = Arc::try_unwrap(self.inner).unwrap_or_else(|shared| Inner {
            config: shared.config.clone(),
            users: shared.users.clone(),
            replays: shared.replays.clone(),
            login_cookie: shared.login_cookie.clone(),
        });
        Self {
            inner: Arc::new(Inner {
                replays: store,
                ..inner
            }),
        }
    }

    /// The URL that logs `user` out: `{prefix}/logout?sid=…`. Logout needs the session's `sid`
    /// so that a link or form on another site cannot log the user out (SEC-04).
    pub fn logout_url(&self, user: &CurrentUser) -> String {
        let sid: String = url::form_urlencoded::byte_serialize(user.sid.as_bytes()).collect();
        format!(
            "{}/logout?sid={sid}",
            self.inner.config.prefix.trim_end_matches('/')
        )
    }

    /// The link of a step-up login (PR-04): `{prefix}/login?acr_values=…&max_age=…&returnUrl=…`,
    /// for an API's RFC 9470 challenge
    /// ([`tokenkeeper::protocol::step_up::step_up_challenge`] reads it from the API's
    /// response). The login replaces the session's tokens with ones from the stronger
    /// authentication, and brings the user back to `return_url`.
    ///
    /// ```
    /// # fn run(oidc: &tokenkeeper_axum::Oidc) -> Result<(), tokenkeeper::Error> {
    /// use tokenkeeper::protocol::step_up::AuthenticationRequirements;
    /// let needs = AuthenticationRequirements::new().with_acr_values("urn:example:mfa")?;
    /// let link = oidc.step_up_url(&needs, "/orders/42");
    /// assert_eq!(link, "/auth/login?acr_values=urn%3Aexample%3Amfa&returnUrl=%2Forders%2F42");
    /// # Ok(()) }
    /// ```
    pub fn step_up_url(&self, needs: &AuthenticationRequirements, return_url: &str) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        if !needs.acr_values().is_empty() {
            query.append_pair("acr_values", &needs.acr_values().join(" "));
        }
        if let Some(max_age) = needs.max_age() {
            query.append_pair("max_age", &max_age.as_secs().to_string());
        }
        query.append_pair("returnUrl", return_url);
        format!(
            "{}/login?{}",
            self.inner.config.prefix.trim_end_matches('/'),
            query.finish()
        )
    }

    /// A user token manager (in-memory store) for `config`'s client.
    pub fn user_manager_for(config: &OidcConfig) -> Result<UserTokenManager, Error> {
        UserTokenManager::builder(ClientConfig::from_issuer(
            config.issuer.clone(),
            config.client_id.clone(),
            config.client_secret.clone(),
        ))
        .build()
    }

    /// The user token manager (for background jobs: tokens by [`SessionKey`]).
    pub fn users(&self) -> &UserTokenManager {
        &self.inner.users
    }

    /// A session layer with this crate's cookie policy: `HttpOnly`, `SameSite=Lax`, path `/`,
    /// `Secure` and named `__Host-tk.sid` (the prefix pins it to this host, SEC-07) unless
    /// `insecure_cookies` (then `tk.sid`).
    ///
    /// Anonymous requests never write the session: a login keeps its state sealed in a cookie
    /// of its own (SEC-13), so the session store only grows with users who logged in.
    pub fn session_layer<S: SessionStore + Clone>(&self, store: S) -> SessionManagerLayer<S> {
        let insecure = self.inner.config.insecure_cookies;
        SessionManagerLayer::new(store)
            .with_http_only(true)
            .with_same_site(SameSite::Lax)
            .with_secure(!insecure)
            .with_path("/")
            .with_name(if insecure { "tk.sid" } else { "__Host-tk.sid" })
    }

    /// The routes `{prefix}/login`, `{prefix}/callback`, `{prefix}/logout`. Put a session layer
    /// around the application.
    pub fn router<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        let prefix = self.inner.config.prefix.trim_end_matches('/').to_owned();
        Router::new()
            .route(&format!("{prefix}/login"), get(login))
            .route(&format!("{prefix}/callback"), get(callback))
            .route(&format!("{prefix}/logout"), get(logout))
            .with_state(self.clone())
    }

    async fn metadata(&self) -> Result<Arc<tokenkeeper::ProviderMetadata>, Error> {
        let discovery = self
            .inner
            .users
            .endpoint()
            .discovery()
            .cloned()
            .ok_or_else(|| {
                Error::Config(tokenkeeper::ConfigError::new(
                    "issuer",
                    "the user token manager must be built from the issuer",
                ))
            })?;
        discovery.metadata().await
    }
}

#[derive(Deserialize)]
struct LoginQuery {
    #[serde(rename = "returnUrl")]
    return_url: Option<String>,
    acr_values: Option<String>,
    max_age: Option<String>,
}

/// `GET {prefix}/login?returnUrl=&acr_values=&max_age=`: a login, or a step-up login (PR-04)
/// when `acr_values` or `max_age` is given ([`Oidc::step_up_url`] makes such a link).
async fn login(
    State(oidc): State<Oidc>,
    Query(query): Query<LoginQuery>,
) -> Result<Response, LoginError> {
    let prompt = oidc.inner.config.prompt.clone();
    let mut start = LoginStart::new(query.return_url.as_deref()).prompt(prompt.as_deref());
    if query.acr_values.is_some() || query.max_age.is_some() {
        let mut requirements = AuthenticationRequirements::new();
        if let Some(values) = &query.acr_values {
            requirements = requirements
                .with_acr_values(values)
                .map_err(|_| LoginError::InvalidStepUp)?;
        }
        if let Some(max_age) = &query.max_age {
            let secs: u64 = max_age
                .parse()
                .ok()
                .filter(|s| *s <= 10 * 365 * 86_400)
                .ok_or(LoginError::InvalidStepUp)?;
            requirements = requirements.with_max_age(std::time::Duration::from_secs(secs));
        }
        start = start.requirements(requirements);
    }
    oidc.begin_login(&start).await
}

/// The query of a login callback. `Debug` shows which parameters are there, not the code or
/// the state.
#[derive(Clone, Default, Deserialize)]
pub struct CallbackQuery {
    /// `code`.
    pub code: Option<String>,
    /// `state`.
    pub state: Option<String>,
    /// `iss` (RFC 9207).
    pub iss: Option<String>,
    /// `error`, when the provider refused.
    pub error: Option<String>,
    /// `session_state` (OpenID Connect Session Management), when the provider sends it.
    pub session_state: Option<String>,
}

impl std::fmt::Debug for CallbackQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallbackQuery")
            .field("code", &self.code.is_some())
            .field("state", &self.state.is_some())
            .field("iss", &self.iss)
            .field("error", &self.error.is_some())
            .finish_non_exhaustive()
    }
}

/// A login completed by [`Oidc::finish_login`].
#[derive(Clone)]
#[non_exhaustive]
pub struct CompletedLogin {
    /// The user and their tokens' session key (the tokens are stored already).
    pub login: tokenkeeper::user::Login,
    /// Where to send the browser: the login's checked local `returnUrl` (default `/`).
    pub return_url: String,
    /// The provider's `session_state`, when it sent one.
    pub session_state: Option<String>,
    /// What the login was started with in [`Oidc::start_login_replacing`].
    pub replaces: Option<String>,
}

impl std::fmt::Debug for CompletedLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The user's claims and tokens stay out of logs (SEC-25): the session key's hash only.
        f.debug_struct("CompletedLogin")
            .field("session", &self.login.session)
            .field("replaces", &self.replaces.is_some())
            .finish_non_exhaustive()
    }
}

/// How to start a login ([`Oidc::begin_login`]).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct LoginStart<'a> {
    /// Where to send the browser afterwards: a local path (SEC-01; default `/`).
    pub return_url: Option<&'a str>,
    /// `prompt`, passed as it is.
    pub prompt: Option<&'a str>,
    /// The caller's handle of the session this login replaces (see
    /// [`Oidc::start_login_replacing`]).
    pub replaces: Option<&'a str>,
    /// What this login asks of the user's authentication — a step-up (PR-04) — instead of
    /// the configuration's [`OidcConfig::requirements`].
    pub requirements: Option<AuthenticationRequirements>,
}

impl<'a> LoginStart<'a> {
    /// A login coming back to `return_url`.
    pub fn new(return_url: Option<&'a str>) -> Self {
        Self {
            return_url,
            ..Self::default()
        }
    }

    /// With `prompt`.
    pub fn prompt(mut self, prompt: Option<&'a str>) -> Self {
        self.prompt = prompt;
        self
    }

    /// Replacing the caller's session `replaces`.
    pub fn replaces(mut self, replaces: Option<&'a str>) -> Self {
        self.replaces = replaces;
        self
    }

    /// Asking for `requirements` (a step-up).
    pub fn requirements(mut self, requirements: AuthenticationRequirements) -> Self {
        self.requirements = Some(requirements);
        self
    }
}

/// What a login callback came to ([`Oidc::finish_login`]).
#[derive(Debug)]
#[non_exhaustive]
pub struct Callback {
    /// The `prompt` the login was started with, when the pending login was found (`none`: a
    /// silent login, whose failure is an answer, not an error page).
    pub prompt: Option<String>,
    /// The completed login, or why it failed.
    pub result: Result<CompletedLogin, LoginError>,
}

async fn callback(
    State(oidc): State<Oidc>,
    session: Session,
    headers: axum::http::HeaderMap,
    Query(query): Query<CallbackQuery>,
) -> Response {
    let result = match oidc.finish_login(&headers, query).await.result {
        Ok(done) => start_session(&oidc, &session, done).await,
        Err(e) => Err(e),
    };
    let (mut response, clear) = match result {
        Ok(return_url) => (Redirect::to(&return_url).into_response(), true),
        // A forged callback (wrong state) leaves the login in progress alone.
        Err(e @ LoginError::StateMismatch) => (e.into_response(), false),
        Err(e) => (e.into_response(), true),
    };
    if clear {
        for cookie in oidc.clear_login_cookies() {
            response
                .headers_mut()
                .append(axum::http::header::SET_COOKIE, cookie);
        }
    }
    response
}

/// Keeps a completed login's user in the (new) web session; the return URL. A login that
/// replaces another in the same web session logs the other's tokens out (SEC-14).
async fn start_session(
    oidc: &Oidc,
    session: &Session,
    done: CompletedLogin,
) -> Result<String, LoginError> {
    let login = done.login;
    let replaced: Option<SessionUser> = session.get(USER).await.ok().flatten();
    if let Some(replaced) = replaced.filter(|r| r.key() != login.session) {
        if replaced.sub == login.sub && replaced.sid == login.sid {
            // The same provider session (a step-up): the new login shares its grant, which
            // revoking the replaced login's refresh token would end at many providers.
            if let Err(error) = oidc.inner.users.forget(&replaced.key()).await {
                tracing::warn!(%error, "the replaced login's tokens could not be cleared");
            }
        } else {
            match oidc.inner.users.logout(&replaced.key()).await {
                Ok(revocation) if !revocation.succeeded() => {
                    tracing::warn!(
                        ?revocation,
                        "the replaced login's refresh token was not revoked"
                    );
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "the replaced login's tokens could not be cleared");
                }
            }
        }
    }
    let user = SessionUser {
        tokens: Some(login.session.as_str().to_owned()),
        sid: login.sid,
        sub: login.sub,
        claims: login.claims.all,
        id_token: login.id_token.secret().to_owned(),
    };
    // A new session id after login: no session fixation.
    session
        .cycle_id()
        .await
        .map_err(|e| LoginError::Session(e.to_string()))?;
    session
        .insert(USER, &user)
        .await
        .map_err(|e| LoginError::Session(e.to_string()))?;
    tracing::debug!(session = %user.key().log_id(), "login completed");
    Ok(done.return_url)
}

impl Oidc {
    /// Starts a login: checks `return_url` (SEC-01 rules; default `/`) and answers with the
    /// redirect to the provider, setting the short-lived login cookie that holds the pending
    /// login (`state`, PKCE verifier, nonce, return URL, the DPoP login key) sealed. Nothing is
    /// stored on the server (SEC-13). `prompt` is passed as it is (the caller checks it against the provider's
    /// `prompt_values_supported` if it must).
    pub async fn start_login(
        &self,
        return_url: Option<&str>,
        prompt: Option<&str>,
    ) -> Result<Response, LoginError> {
        self.start_login_replacing(return_url, prompt, None).await
    }

    /// [`Oidc::start_login`], carrying `replaces` — the caller's own handle of the session
    /// this login will replace (a BFF's session id) — sealed in the login cookie, to get it back
    /// in [`CompletedLogin::replaces`] and end that session when the new one starts (SEC-14).
    /// A cookie of the caller's that the callback would not see (`SameSite=Strict`: the
    /// callback is a navigation from the provider's site) travels this way.
    pub async fn start_login_replacing(
        &self,
        return_url: Option<&str>,
        prompt: Option<&str>,
        replaces: Option<&str>,
    ) -> Result<Response, LoginError> {
        self.begin_login(&LoginStart {
            return_url,
            prompt,
            replaces,
            requirements: None,
        })
        .await
    }

    /// Starts a login as `start` says ([`LoginStart`]): the user token manager builds the
    /// request — pushed and signed as its protocol says, with the login's `acr_values` and
    /// `max_age` (the configuration's, or `start`'s when it asks) — and the login cookie keeps
    /// what the callback checks.
    pub async fn begin_login(&self, start: &LoginStart<'_>) -> Result<Response, LoginError> {
        let return_url = match start.return_url {
            None => "/".to_owned(),
            Some(raw) => {
                let origin = url::Url::parse(&self.inner.config.redirect_uri)
                    .map(|u| u.origin().ascii_serialization())
                    .unwrap_or_default();
                local_return_url(raw, &origin).ok_or(LoginError::InvalidReturnUrl)?
            }
        };
        let config = &self.inner.config;
        let requirements = start
            .requirements
            .clone()
            .unwrap_or_else(|| config.requirements.clone());
        let mut options = LoginOptions::new(config.redirect_uri.clone())
            .scope(config.scope.clone())
            .requirements(requirements.clone());
        if let Some(prompt) = start.prompt {
            options = options.prompt(prompt.to_owned());
        }
        if let Some(resource) = &config.resource {
            options = options.resource(resource.clone());
        }
        for (k, v) in &config.extra {
            options = options.extra(k.clone(), v.clone());
        }
        let started = self
            .inner
            .users
            .start_login(&options)
            .await
            .map_err(LoginError::Token)?;
        let dpop = match &started.dpop {
            Some(dpop) => {
                use base64::Engine as _;
                let bytes = dpop.to_bytes().map_err(LoginError::Token)?;
                Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
            }
            None => None,
        };
        let ttl = config.pending_login_ttl;
        let pending = PendingLogin {
            state: started.state.clone(),
            nonce: started.nonce.clone(),
            verifier: started.code_verifier.clone(),
            return_url,
            prompt: start.prompt.map(str::to_owned),
            dpop,
            expires_at: self
                .inner
                .users
                .clock()
                .now()
                .saturating_add(ttl)
                .as_millis(),
            replaces: start.replaces.map(str::to_owned),
            acr_values: (!requirements.acr_values().is_empty())
                .then(|| requirements.acr_values().join(" ")),
            max_age: requirements.max_age().map(|d| d.as_secs()),
        };
        let cookies = self
            .inner
            .login_cookie
            .seal(&pending, ttl.as_secs().max(1))
            .map_err(LoginError::Session)?;
        let mut response = Redirect::to(started.url.as_str()).into_response();
        for cookie in cookies {
            response
                .headers_mut()
                .append(axum::http::header::SET_COOKIE, cookie);
        }
        Ok(response)
    }

    /// Completes a login from its callback: opens this browser's sealed login cookie, checks
    /// `state` against it (before anything is recorded, so a forged callback cannot cancel a
    /// login in progress), checks the RFC 9207 `iss`, claims the login once in the replay store
    /// (the first server-side state of a login: only for a callback that carries a valid login
    /// cookie, its `state` and a `code`), then exchanges the code and validates the ID token
    /// ([`UserTokenManager::complete_login`]), which stores the tokens. The caller starts its
    /// session and clears the login cookies ([`Oidc::clear_login_cookies`]) — unless the
    /// error is [`LoginError::StateMismatch`].
    pub async fn finish_login(
        &self,
        headers: &axum::http::HeaderMap,
        query: CallbackQuery,
    ) -> Callback {
        let mut prompt = None;
        let result = self.finish(headers, query, &mut prompt).await;
        Callback { prompt, result }
    }

    async fn finish(
        &self,
        headers: &axum::http::HeaderMap,
        query: CallbackQuery,
        prompt: &mut Option<String>,
    ) -> Result<CompletedLogin, LoginError> {
        let config = &self.inner.config;
        let now = self.inner.users.clock().now();
        let pending = self
            .inner
            .login_cookie
            .open(headers, now)
            .ok_or(LoginError::NoPendingLogin)?;
        let state_ok = query
            .state
            .as_deref()
            .is_some_and(|s| ct_eq(s.as_bytes(), pending.state.as_bytes()));
        if !state_ok {
            return Err(LoginError::StateMismatch);
        }
        prompt.clone_from(&pending.prompt);
        // RFC 9207: checked by the user token manager (always under FAPI 2.0).
        match self
            .inner
            .users
            .check_callback_issuer(query.iss.as_deref())
            .await
        {
            Ok(()) => {}
            Err(Error::AuthorizationResponse(_)) => return Err(LoginError::IssuerMismatch),
            Err(e) => return Err(LoginError::Token(e)),
        }
        if let Some(error) = query.error {
            // Reflected from the query string: keep it short and printable.
            let error: String = error
                .chars()
                .filter(|c| c.is_ascii_graphic())
                .take(64)
                .collect();
            return Err(LoginError::Provider(error));
        }
        let code = query
            .code
            .ok_or_else(|| LoginError::Provider("no code".into()))?;
        // One use: the login is claimed atomically, until its cookie expires; a second
        // callback (a double submit, on this instance or another) finds it taken.
        let ttl = std::time::Duration::from_millis(
            pending.expires_at.saturating_sub(now.as_millis()).max(1),
        );
        let first = self
            .inner
            .replays
            .claim(&claim_key(&pending.state), ttl)
            .await
            .map_err(|e| LoginError::Session(e.to_string()))?;
        if !first {
            return Err(LoginError::NoPendingLogin);
        }
        let dpop = match &pending.dpop {
            Some(encoded) => {
                use base64::Engine as _;
                let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(encoded)
                    .map_err(|_| LoginError::NoPendingLogin)?;
                Some(LoginDpop::from_bytes(&bytes).map_err(LoginError::Token)?)
            }
            None => None,
        };
        let requirements = pending
            .requirements()
            .map_err(|_| LoginError::NoPendingLogin)?;
        // The code exchange, the ID token check (the tokens of a refused login are revoked)
        // and the session's tokens stored: one implementation, in the user token manager.
        let login = self
            .inner
            .users
            .complete_login(&LoginRequest {
                code: &code,
                code_verifier: &pending.verifier,
                redirect_uri: &config.redirect_uri,
                nonce: &pending.nonce,
                resource: config.resource.as_ref(),
                dpop: dpop.as_ref(),
                requirements: Some(&requirements),
            })
            .await
            .map_err(LoginError::Token)?;
        let session_state = query
            .session_state
            .filter(|s| s.len() <= 512 && s.chars().all(|c| c.is_ascii_graphic()));
        Ok(CompletedLogin {
            login,
            return_url: pending.return_url,
            session_state,
            replaces: pending.replaces,
        })
    }

    /// `Set-Cookie` values that delete the login cookies (a sealed login may take several).
    pub fn clear_login_cookies(&self) -> Vec<axum::http::HeaderValue> {
        self.inner.login_cookie.clear()
    }

    /// The provider's metadata (discovery).
    pub async fn provider_metadata(&self) -> Result<Arc<tokenkeeper::ProviderMetadata>, Error> {
        self.metadata().await
    }

    /// The configuration.
    pub fn config(&self) -> &OidcConfig {
        &self.inner.config
    }
}

#[derive(Deserialize)]
struct LogoutQuery {
    sid: Option<String>,
}

/// Whether a request comes from the app's own pages (SEC-24): `Sec-Fetch-Site: same-origin`
/// (or `none`: the user typed or bookmarked it), or, from a browser that sends no
/// `Sec-Fetch-Site`, an `Origin` that is the app's. A page of another site can forge neither.
pub(crate) fn same_origin_request(headers: &axum::http::HeaderMap, origin: &str) -> bool {
    match headers
        .get("sec-fetch-site")
        .map(axum::http::HeaderValue::as_bytes)
    {
        Some(b"same-origin" | b"none") => true,
        Some(_) => false,
        None => headers
            .get(axum::http::header::ORIGIN)
            .is_some_and(|o| o.as_bytes() == origin.as_bytes()),
    }
}

/// `GET {prefix}/logout?sid=…`: the `sid` must be the session's (SEC-04), and the request must
/// come from the app's own pages (SEC-24: some providers give every client of an SSO session
/// the same `sid`, so a site that knows it could otherwise log the user out with a link);
/// anonymous callers are sent home (logout is idempotent).
async fn logout(
    State(oidc): State<Oidc>,
    session: Session,
    headers: axum::http::HeaderMap,
    Query(query): Query<LogoutQuery>,
) -> Response {
    let user: Option<SessionUser> = session.get(USER).await.ok().flatten();
    let Some(user) = user else {
        return Redirect::to("/").into_response();
    };
    let origin = url::Url::parse(&oidc.inner.config.redirect_uri)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_default();
    if !same_origin_request(&headers, &origin) {
        tracing::warn!("logout refused: not a same-origin request");
        return (
            StatusCode::FORBIDDEN,
            [(axum::http::header::CACHE_CONTROL, "no-store")],
            "Invalid logout request.",
        )
            .into_response();
    }
    let sid_ok = query
        .sid
        .as_deref()
        .is_some_and(|sid| ct_eq(sid.as_bytes(), user.sid.as_bytes()));
    if !sid_ok {
        tracing::warn!("logout refused: the sid is missing or not the session's");
        return (
            StatusCode::BAD_REQUEST,
            [(axum::http::header::CACHE_CONTROL, "no-store")],
            "Invalid logout request.",
        )
            .into_response();
    }
    let _ = session.flush().await;
    match oidc.inner.users.logout(&user.key()).await {
        Ok(revocation) if !revocation.succeeded() => {
            tracing::warn!(?revocation, "logout: the refresh token was not revoked");
        }
        Ok(_) => {}
        Err(error) => {
            tracing::warn!(%error, "logout: the session's tokens could not be cleared");
        }
    }
    match oidc
        .metadata()
        .await
        .ok()
        .and_then(|m| m.end_session_endpoint.clone())
    {
        Some(mut end_session) => {
            {
                let mut query = end_session.query_pairs_mut();
                query.append_pair("id_token_hint", &user.id_token);
                query.append_pair("client_id", &oidc.inner.config.client_id);
                if let Some(uri) = &oidc.inner.config.post_logout_redirect_uri {
                    query.append_pair("post_logout_redirect_uri", uri);
                }
            }
            Redirect::to(end_session.as_str()).into_response()
        }
        None => Redirect::to("/").into_response(),
    }
}

/// Constant-time equality of two byte strings.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |acc, (x, y)| acc | (x ^ y)) == 0
}
