//! OpenID Connect login for [axum](https://docs.rs/axum) with tokenkeeper.
//!
//! - `GET {prefix}/login?returnUrl=/path` — authorization code + PKCE S256 + `state` + `nonce`
//!   (optional `prompt`, scopes, resources and extra parameters from [`OidcConfig`]).
//! - `GET {prefix}/callback` — checks `state` and the RFC 9207 `iss`, exchanges the code,
//!   validates the ID token against the issuer's JWKS (following key rotation), stores the
//!   tokens for the session (a [`UserTokenManager`], in memory or Redis) and rotates the session
//!   id.
//! - `GET {prefix}/logout` — revokes the refresh token (RFC 7009), clears the session, then
//!   redirects to the provider's `end_session_endpoint` (RP-initiated logout) when it has one.
//! - Extractors: [`CurrentUser`], [`UserAccessToken`] (refreshed as needed), [`UserHttpClient`]
//!   (a reqwest client attaching the user's token); for APIs that call further APIs on their
//!   caller's behalf, [`BearerToken`] and [`DelegatedClient`] (token exchange, forwarding or
//!   the service's own token, per downstream: see [`tokenkeeper::delegation`]).
//!
//! Sessions come from [`tower_sessions`]; [`Oidc::session_layer`] configures their cookie
//! (`HttpOnly`, `SameSite=Lax`, `Secure` unless [`OidcConfig::insecure_cookies`] for loopback
//! development).

mod delegation;
mod extract;
mod login_cookie;
mod oidc;
mod return_url;
mod store;

pub use delegation::{BearerToken, DelegatedClient};
pub use extract::{CurrentUser, UserAccessToken, UserHttpClient};
pub use oidc::{Callback, CallbackQuery, CompletedLogin, LoginError, LoginStart, Oidc, OidcConfig};
pub use return_url::{local_return_url, MAX_RETURN_URL};
pub use store::SessionStoreUserTokenStore;
pub use tokenkeeper::user::UserTokenManager;
