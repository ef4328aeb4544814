//! Local API routes: handlers in the same axum app get the same semantics as remote routes —
//! the anti-forgery header, no redirects, 401/403 without `Location` or `Set-Cookie` — and the
//! session's user through the [`BffUser`] extractor.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use tokenkeeper::user::UserTokenParams;
use tokenkeeper::{CachedToken, Error};

use crate::bff::Bff;
use crate::responses::plain;
use crate::session::BffSession;

impl Bff {
    /// Wraps the local API `router` in the BFF's API semantics: requests without the
    /// anti-forgery header get 401 and never reach a handler; a redirect from a handler becomes
    /// a 401; 401 and 403 answers lose any `Location` and `Set-Cookie` (BF-04, BF-09).
    ///
    /// ```
    /// # fn run(bff: tokenkeeper_bff::Bff) {
    /// use axum::routing::get;
    /// use tokenkeeper_bff::BffUser;
    /// let api = bff.local_api(axum::Router::new().route(
    ///     "/api/me",
    ///     get(|user: BffUser| async move { user.session.sub.clone() }),
    /// ));
    /// let app: axum::Router = axum::Router::new().merge(bff.router()).merge(api.with_state(bff));
    /// # }
    /// ```
    pub fn local_api<S: Clone + Send + Sync + 'static>(&self, router: Router<S>) -> Router<S> {
        router.route_layer(axum::middleware::from_fn_with_state(
            self.clone(),
            api_guard,
        ))
    }
}

async fn api_guard(State(bff): State<Bff>, request: Request, next: Next) -> Response {
    if !bff.anti_forgery_ok(request.headers()) {
        return plain(StatusCode::UNAUTHORIZED, "Anti-forgery header missing.");
    }
    let mut response = next.run(request).await;
    if response.status().is_redirection() {
        return plain(StatusCode::UNAUTHORIZED, "Not logged in.");
    }
    if matches!(
        response.status(),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
    ) {
        response.headers_mut().remove(header::LOCATION);
        response.headers_mut().remove(header::SET_COOKIE);
    }
    response
}

/// The logged-in user of a local API request (401 when there is no live session). Uses the
/// session (its expiry slides).
#[derive(Clone)]
pub struct BffUser {
    /// The session.
    pub session: Arc<BffSession>,
    bff: Bff,
}

impl std::fmt::Debug for BffUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BffUser")
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

impl BffUser {
    /// The user's access token for `params` (refreshed as needed). When it can no longer be had,
    /// the session is signed out and the error is [`Error::ReauthenticationRequired`].
    pub async fn access_token(&self, params: &UserTokenParams) -> Result<Arc<CachedToken>, Error> {
        let result = self
            .bff
            .oidc()
            .users()
            .get_access_token(&self.session.key(), params)
            .await;
        if let Err(Error::ReauthenticationRequired(_)) = &result {
            self.bff.end_session(&self.session, "token").await;
        }
        result
    }

    /// A reqwest client that attaches the user's token (with DPoP proofs where configured).
    pub fn http_client(&self, params: UserTokenParams) -> reqwest_middleware::ClientWithMiddleware {
        reqwest_middleware::ClientBuilder::new(self.bff.inner.http.clone())
            .with(
                self.bff
                    .oidc()
                    .users()
                    .middleware(self.session.key(), params),
            )
            .build()
    }
}

impl<S> FromRequestParts<S> for BffUser
where
    Bff: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let bff = Bff::from_ref(state);
        match bff.session(&parts.headers, true).await {
            Ok(Some(session)) => Ok(Self { session, bff }),
            Ok(None) => Err(plain(StatusCode::UNAUTHORIZED, "Not logged in.")),
            Err(error) => {
                crate::store_outage::warn(&error, "local api call");
                Err(plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Unavailable right now.",
                ))
            }
        }
    }
}
