//! Extractors for handlers.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokenkeeper::user::{SessionKey, UserTokenParams};
use tokenkeeper::{CachedToken, Error};
use tower_sessions::Session;

use crate::oidc::{Oidc, SessionUser, USER};

/// The logged-in user; 401 when there is none. `Debug` shows neither `sub` nor the claims
/// (SEC-25).
#[derive(Clone)]
pub struct CurrentUser {
    /// `sub`.
    pub sub: String,
    /// `sid` (the provider's session id, or ours).
    pub sid: String,
    /// The ID token's claims.
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// The key of this login's tokens.
    session: SessionKey,
}

impl std::fmt::Debug for CurrentUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CurrentUser")
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

impl CurrentUser {
    /// The key of this login's tokens (for background jobs): each login has its own, even
    /// two logins of one user in one provider session (SEC-14).
    pub fn session_key(&self) -> SessionKey {
        self.session.clone()
    }
}

async fn session_user(parts: &mut Parts) -> Result<(Session, SessionUser), Response> {
    let session = Session::from_request_parts(parts, &())
        .await
        .map_err(|e| e.into_response())?;
    match session.get::<SessionUser>(USER).await {
        Ok(Some(user)) => Ok((session, user)),
        Ok(None) => Err(StatusCode::UNAUTHORIZED.into_response()),
        Err(_) => Err(StatusCode::INTERNAL_SERVER_ERROR.into_response()),
    }
}

impl<S: Send + Sync> FromRequestParts<S> for CurrentUser {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let (_, user) = session_user(parts).await?;
        Ok(Self {
            session: user.key(),
            sub: user.sub,
            sid: user.sid,
            claims: user.claims,
        })
    }
}

/// The parameters of the user's token: the configured resource, if any.
fn token_params(oidc: &Oidc) -> UserTokenParams {
    match &oidc.inner.config.resource {
        Some(r) => UserTokenParams::new().resource(r.clone()),
        None => UserTokenParams::new(),
    }
}

/// A current access token of the logged-in user (refreshed when needed). 401 when there is no
/// user, or when the user must log in again (the session is then cleared).
#[derive(Debug, Clone)]
pub struct UserAccessToken(pub Arc<CachedToken>);

impl<S> FromRequestParts<S> for UserAccessToken
where
    Oidc: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let oidc = Oidc::from_ref(state);
        let (session, user) = session_user(parts).await?;
        let params = token_params(&oidc);
        match oidc
            .inner
            .users
            .get_access_token(&user.key(), &params)
            .await
        {
            Ok(token) => Ok(Self(token)),
            Err(Error::ReauthenticationRequired(reason)) => {
                tracing::info!(%reason, "the user must log in again; signing out");
                let _ = session.flush().await;
                Err(StatusCode::UNAUTHORIZED.into_response())
            }
            Err(error) => {
                tracing::warn!(%error, "no access token for the user");
                Err(StatusCode::BAD_GATEWAY.into_response())
            }
        }
    }
}

/// A reqwest client that attaches the logged-in user's token to every request (per request;
/// cheap: it shares one connection pool).
#[derive(Debug, Clone)]
pub struct UserHttpClient(pub reqwest_middleware::ClientWithMiddleware);

impl<S> FromRequestParts<S> for UserHttpClient
where
    Oidc: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let oidc = Oidc::from_ref(state);
        let (_, user) = session_user(parts).await?;
        let params = token_params(&oidc);
        static POOL: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
        let pool = POOL.get_or_init(reqwest::Client::new).clone();
        Ok(Self(
            reqwest_middleware::ClientBuilder::new(pool)
                .with(oidc.inner.users.middleware(user.key(), params))
                .build(),
        ))
    }
}
