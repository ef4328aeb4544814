//! Configuration, routes and handlers.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use serde::{Deserialize, Serialize};
use tokenkeeper::user::{SessionKey, UserTokenManager};
use tokenkeeper::{
    AuthorizationRequestBuilder, ClientConfig, Error, Grant, HttpOptions, IdTokenValidator,
    ReqwestTransport, Resource, Scope, TokenRequest, TokioClock,
};
use tower_sessions::cookie::SameSite;
use tower_sessions::{Session, SessionManagerLayer, SessionStore};

/// Session keys used by this crate.
pub(crate) const PENDING: &str = "tokenkeeper.pending_login";
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
    /// Where the provider sends the user after RP-initiated logout.
    pub post_logout_redirect_uri: Option<String>,
    /// Path prefix of the routes (default `/auth`).
    pub prefix: String,
    /// Session cookies without `Secure`: only for plain-http loopback development.
    pub insecure_cookies: bool,
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
            post_logout_redirect_uri: None,
            prefix: "/auth".into(),
            insecure_cookies: false,
        }
    }
}

/// What a login kept in the session between `/login` and `/callback`.
#[derive(Serialize, Deserialize)]
struct PendingLogin {
    state: String,
    nonce: String,
    verifier: String,
    return_url: String,
}

/// The logged-in user, as kept in the session.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct SessionUser {
    pub(crate) sub: String,
    pub(crate) sid: String,
    pub(crate) claims: serde_json::Map<String, serde_json::Value>,
    pub(crate) id_token: String,
}

impl SessionUser {
    pub(crate) fn key(&self) -> SessionKey {
        SessionKey::from_sub_sid(&self.sub, &self.sid)
    }
}

/// Why a callback was refused.
#[derive(Debug)]
pub enum LoginError {
    /// No login was started in this session (or it was already completed).
    NoPendingLogin,
    /// `state` is missing or does not match.
    StateMismatch,
    /// The `iss` of the response is missing or not the issuer (RFC 9207).
    IssuerMismatch,
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
            Self::NoPendingLogin => f.write_str("no login is pending in this session"),
            Self::StateMismatch => f.write_str("the state does not match the login's"),
            Self::IssuerMismatch => f.write_str("the response's iss is not the issuer (RFC 9207)"),
            Self::Provider(e) => write!(f, "the provider refused the login: {e}"),
            Self::Token(e) => write!(f, "{e}"),
            Self::Session(e) => write!(f, "session store: {e}"),
        }
    }
}

impl std::error::Error for LoginError {}

impl IntoResponse for LoginError {
    fn into_response(self) -> Response {
        tracing::warn!(error = %self, "login refused");
        let status = match self {
            Self::Session(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        (status, self.to_string()).into_response()
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
    validator: tokio::sync::OnceCell<IdTokenValidator>,
    transport: tokenkeeper::http::SharedTransport,
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
    /// Builds the login for `config`, keeping session tokens in `users`' store. `users` must be
    /// built for the same client (see [`Oidc::user_manager_for`]).
    pub fn new(config: OidcConfig, users: UserTokenManager) -> Result<Self, Error> {
        tokenkeeper::protocol::authorization::random_token(1)?;
        url::Url::parse(&config.redirect_uri).map_err(|e| {
            Error::Config(tokenkeeper::ConfigError::new(
                "redirect_uri",
                format!("is not an absolute URL: {e}"),
            ))
        })?;
        let transport: tokenkeeper::http::SharedTransport =
            Arc::new(ReqwestTransport::new(&HttpOptions::default())?);
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                users,
                validator: tokio::sync::OnceCell::new(),
                transport,
            }),
        })
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

    /// A session layer with this crate's cookie policy: `HttpOnly`, `SameSite=Lax`, `Secure`
    /// unless `insecure_cookies`.
    pub fn session_layer<S: SessionStore + Clone>(&self, store: S) -> SessionManagerLayer<S> {
        SessionManagerLayer::new(store)
            .with_http_only(true)
            .with_same_site(SameSite::Lax)
            .with_secure(!self.inner.config.insecure_cookies)
            .with_name("tk.sid")
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

    async fn validator(&self) -> Result<&IdTokenValidator, Error> {
        self.inner
            .validator
            .get_or_try_init(|| async {
                let metadata = self.metadata().await?;
                let jwks_uri = metadata.jwks_uri.clone().ok_or_else(|| Error::Discovery {
                    issuer: self.inner.config.issuer.clone(),
                    reason: "no jwks_uri".into(),
                })?;
                Ok::<_, Error>(IdTokenValidator::new(
                    self.inner.config.issuer.clone(),
                    self.inner.config.client_id.clone(),
                    jwks_uri,
                    self.inner.transport.clone(),
                    Arc::new(TokioClock::new()),
                ))
            })
            .await
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
}

/// Only local paths: `/x`, not `//host` or `http://…` (no open redirects).
pub(crate) fn local_url(url: Option<&str>) -> String {
    match url {
        Some(u) if u.starts_with('/') && !u.starts_with("//") && !u.starts_with("/\\") => {
            u.to_owned()
        }
        _ => "/".to_owned(),
    }
}

async fn login(
    State(oidc): State<Oidc>,
    session: Session,
    Query(query): Query<LoginQuery>,
) -> Response {
    let config = &oidc.inner.config;
    let metadata = match oidc.metadata().await {
        Ok(m) => m,
        Err(e) => return LoginError::Token(e).into_response(),
    };
    let Some(endpoint) = metadata.authorization_endpoint.clone() else {
        return LoginError::Provider("no authorization_endpoint".into()).into_response();
    };
    let mut builder = AuthorizationRequestBuilder::new(
        endpoint,
        config.client_id.clone(),
        config.redirect_uri.clone(),
    )
    .scope(config.scope.clone());
    if let Some(prompt) = &config.prompt {
        builder = builder.prompt(prompt.clone());
    }
    if let Some(resource) = &config.resource {
        builder = builder.resource(resource.clone());
    }
    for (k, v) in &config.extra {
        builder = builder.extra(k.clone(), v.clone());
    }
    let request = match builder.build() {
        Ok(r) => r,
        Err(e) => return LoginError::Token(e).into_response(),
    };
    let pending = PendingLogin {
        state: request.state.clone(),
        nonce: request.nonce.clone(),
        verifier: request.pkce.verifier().to_owned(),
        return_url: local_url(query.return_url.as_deref()),
    };
    if let Err(e) = session.insert(PENDING, pending).await {
        return LoginError::Session(e.to_string()).into_response();
    }
    Redirect::to(request.url.as_str()).into_response()
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    iss: Option<String>,
    error: Option<String>,
}

async fn callback(
    State(oidc): State<Oidc>,
    session: Session,
    Query(query): Query<CallbackQuery>,
) -> Response {
    match complete(&oidc, &session, query).await {
        Ok(return_url) => Redirect::to(&return_url).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn complete(
    oidc: &Oidc,
    session: &Session,
    query: CallbackQuery,
) -> Result<String, LoginError> {
    let config = &oidc.inner.config;
    // One use: the pending login is removed whatever happens next.
    let pending: PendingLogin = session
        .remove(PENDING)
        .await
        .map_err(|e| LoginError::Session(e.to_string()))?
        .ok_or(LoginError::NoPendingLogin)?;
    let state_ok = query.state.as_deref().is_some_and(|s| {
        s.len() == pending.state.len()
            && s.bytes()
                .zip(pending.state.bytes())
                .fold(0, |a, (x, y)| a | (x ^ y))
                == 0
    });
    if !state_ok {
        return Err(LoginError::StateMismatch);
    }
    let metadata = oidc.metadata().await.map_err(LoginError::Token)?;
    let iss_supported = metadata
        .extra
        .get("authorization_response_iss_parameter_supported")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    match query.iss.as_deref() {
        Some(iss) if iss != config.issuer => return Err(LoginError::IssuerMismatch),
        None if iss_supported => return Err(LoginError::IssuerMismatch),
        _ => {}
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
    let mut request = TokenRequest::new(Grant::AuthorizationCode {
        code,
        redirect_uri: config.redirect_uri.clone(),
        code_verifier: Some(pending.verifier),
    });
    if let Some(resource) = &config.resource {
        request = request.resource(resource.clone());
    }
    let users = &oidc.inner.users;
    let response = users
        .endpoint()
        .request(&request)
        .await
        .map_err(LoginError::Token)?;
    let id_token = response
        .id_token
        .clone()
        .ok_or_else(|| LoginError::Provider("no id_token in the token response".into()))?;
    let validator = oidc.validator().await.map_err(LoginError::Token)?;
    let claims = validator
        .validate(id_token.secret(), Some(&pending.nonce))
        .await
        .map_err(LoginError::Token)?;
    let user = SessionUser {
        sid: claims
            .sid
            .clone()
            .unwrap_or_else(|| session.id().map(|i| i.to_string()).unwrap_or_default()),
        sub: claims.sub.clone(),
        claims: claims.all,
        id_token: id_token.secret().to_owned(),
    };
    users
        .store_login(&user.key(), &response, config.resource.as_ref())
        .await
        .map_err(LoginError::Token)?;
    // A new session id after login: no session fixation.
    session
        .cycle_id()
        .await
        .map_err(|e| LoginError::Session(e.to_string()))?;
    session
        .insert(USER, &user)
        .await
        .map_err(|e| LoginError::Session(e.to_string()))?;
    Ok(pending.return_url)
}

async fn logout(State(oidc): State<Oidc>, session: Session) -> Response {
    let user: Option<SessionUser> = session.get(USER).await.ok().flatten();
    let _ = session.flush().await;
    let Some(user) = user else {
        return Redirect::to("/").into_response();
    };
    if let Err(error) = oidc.inner.users.logout(&user.key()).await {
        tracing::warn!(%error, "logout: the session's tokens could not be cleared");
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
