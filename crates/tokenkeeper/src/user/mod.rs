//! Tokens on behalf of a user: per-session storage and refresh.

mod login;
mod manager;
mod pending;
mod store;
mod stored;

#[cfg(feature = "reqwest-middleware")]
pub use crate::middleware::UserTokenMiddleware;
pub use login::{Login, LoginRequest};
pub use manager::{Revocation, UserTokenManager, UserTokenManagerBuilder, UserTokenParams};
pub use pending::{InMemoryPendingLoginStore, PendingLoginStore};
pub use store::{
    AccessTokens, InMemoryUserTokenStore, SessionKey, StoreOutcome, UserTokenStore, UserTokens,
    Versioned,
};
