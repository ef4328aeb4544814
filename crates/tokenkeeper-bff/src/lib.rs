//! A backend-for-frontend host: a browser app talks only to the BFF, with a session cookie;
//! the BFF logs the user in (OpenID Connect, through `tokenkeeper-axum`'s one login
//! implementation), keeps the tokens server-side, and proxies API calls with the right token.
//!
//! - Management endpoints under a base path (default `/bff`): `login`, `callback`, `logout`,
//!   `user` (see [`Bff::router`]).
//! - Anti-forgery: API routes and `user` need `X-CSRF: 1`; API answers are never redirects
//!   (401 / 403, no `Location`, no `Set-Cookie`).
//! - Remote API routes ([`ApiRoute`]): a path prefix mapped to an upstream, with the token type
//!   of the route ([`RouteToken`]), DPoP and API nonces through the token middleware, bodies
//!   streamed both ways.
//! - Server-side sessions ([`BffSessionStore`]): the cookie (`__Host-bff`, HttpOnly, Secure,
//!   `SameSite=Strict`) holds a random id only; sliding expiry with an absolute maximum.
//!
//! - Several frontends in one host ([`Frontends`], [`FrontendsHandler`]): each a [`Bff`] of its
//!   own, matched by host and path prefix, replaceable while serving (a reload).
//! - Proxying goes through [`tokenkeeper_proxy`]'s engine, the one `tokenkeeper sidecar` uses
//!   too: the BFF is its [`tokenkeeper_proxy::Policy`]. Serve the BFF with [`Bff::router`] (in an
//!   axum app) or [`Bff::handler`] (the per-core server `tokenkeeper bff` runs, at nginx's speed).
//!
//! # Layout
//!
//! Each module uses only those below it (a test, `en_01_layout`, fails on any import circle):
//!
//! ```text
//! host                   config file → frontends, each a Bff   (feature `config`)
//! frontends              several BFFs in one host: matched by host and path, replaceable
//! ops                    readiness and the administration API, for the operations listener
//! router                 axum router; BffHandler for the per-core server
//!   ├── management       login, callback, logout, user, auth, back-channel, diagnostics
//!   │     └── userinfo   the provider's userinfo, merged at login
//!   ├── proxy            the engine's Policy: anti-forgery, session, token, upgrades
//!   │     └── websocket  the WebSocket relay
//!   │           └── access   which token a request gets (none, client, user)
//!   └── local            local API routes and BffUser
//! bff                    options, state, sessions, cookies, ending sessions
//!   ├── relays           open WebSocket relays per session
//!   ├── routes           ApiRoute, RouteToken, AntiForgery
//!   │     └── route_policy   who may use a route: claims, scopes
//!   ├── claims           what the user endpoint shows of the claims
//!   ├── forward_auth     the identity headers of {base}/auth (a reverse proxy's auth_request)
//!   ├── session, redis_store, postgres_store   session stores
//!   └── responses, metrics, store_outage   short answers, counters, outage warnings
//! ```
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use tokenkeeper_axum::{Oidc, OidcConfig};
//! use tokenkeeper_bff::{ApiRoute, Bff, BffOptions};
//! let oidc_config = OidcConfig::new("https://idp.example.com", "spa", "secret", "https://app.example.com/bff/callback");
//! let oidc = Oidc::new(oidc_config.clone(), Oidc::user_manager_for(&oidc_config)?)?;
//! let bff = Bff::new(
//!     oidc,
//!     BffOptions::default().route(ApiRoute::new("/api", "https://api.internal/".parse()?)),
//! )?;
//! let app: axum::Router = axum::Router::new().merge(bff.router());
//! # let _ = app; Ok(()) }
//! ```

mod access;
mod bff;
mod claims;
#[cfg(feature = "config")]
pub mod config;
mod forward_auth;
mod frontends;
#[cfg(feature = "config")]
pub mod host;
mod local;
mod management;
pub mod metrics;
mod ops;
#[cfg(feature = "postgres")]
mod postgres_store;
mod proxy;
#[cfg(feature = "redis")]
mod redis_store;
mod relays;
mod responses;
mod route_policy;
mod router;
mod routes;
mod session;
mod store_outage;
mod userinfo;
mod websocket;

pub use bff::{Bff, BffOptions};
pub use claims::{ClaimsHook, UserClaims, PROTOCOL_CLAIMS};
pub use forward_auth::{ForwardAuth, PROXY_SECRET_HEADER};
pub use frontends::{Frontend, Frontends, FrontendsHandler};
pub use local::BffUser;
#[cfg(feature = "postgres")]
pub use postgres_store::PostgresBffSessionStore;
pub use proxy::Admitted;
#[cfg(feature = "redis")]
pub use redis_store::RedisBffSessionStore;
pub use route_policy::RoutePolicy;
pub use router::BffHandler;
pub use routes::{AntiForgery, ApiRoute, RouteToken};
pub use session::{session_id_hash, BffSession, BffSessionStore, InMemoryBffSessionStore};
pub use tokenkeeper_proxy::Cidr;
