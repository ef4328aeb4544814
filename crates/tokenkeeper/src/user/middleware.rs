//! A reqwest middleware that attaches a user's token, bound to a session key — for background
//! jobs and websocket handlers, where no HTTP request is at hand.

use http::{header::AUTHORIZATION, Extensions, StatusCode};
use reqwest_middleware::{Middleware, Next};

use super::{SessionKey, UserTokenManager, UserTokenParams};

/// Attaches the access token of one session; on a 401, refreshes once and retries (when the
/// body can be replayed). Fails the request with the token error (for instance
/// [`crate::Error::ReauthenticationRequired`]) when no token can be had.
///
/// ```no_run
/// # fn run(users: tokenkeeper::user::UserTokenManager) {
/// use tokenkeeper::user::{SessionKey, UserTokenParams};
/// let session = SessionKey::from_sub_sid("alice", "s-1");
/// let http = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     .with(users.middleware(session, UserTokenParams::default()))
///     .build();
/// # let _ = http; }
/// ```
#[derive(Debug, Clone)]
pub struct UserTokenMiddleware {
    manager: UserTokenManager,
    session: SessionKey,
    params: UserTokenParams,
}

impl UserTokenManager {
    /// A middleware bound to `session`.
    pub fn middleware(&self, session: SessionKey, params: UserTokenParams) -> UserTokenMiddleware {
        UserTokenMiddleware {
            manager: self.clone(),
            session,
            params,
        }
    }
}

#[async_trait::async_trait]
impl Middleware for UserTokenMiddleware {
    async fn handle(
        &self,
        mut req: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let token = self
            .manager
            .get_access_token(&self.session, &self.params)
            .await
            .map_err(reqwest_middleware::Error::middleware)?;
        let retry = req.try_clone();
        req.headers_mut()
            .insert(AUTHORIZATION, token.authorization_header().clone());
        let response = next.clone().run(req, extensions).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let Some(mut retry) = retry else {
            return Ok(response);
        };
        drop(response);
        let fresh = self
            .manager
            .get_access_token(&self.session, &self.params.clone().force_renewal(true))
            .await
            .map_err(reqwest_middleware::Error::middleware)?;
        retry
            .headers_mut()
            .insert(AUTHORIZATION, fresh.authorization_header().clone());
        next.run(retry, extensions).await
    }
}
