//! Tokens on behalf of a user: per-session storage and refresh.

mod manager;
#[cfg(feature = "reqwest-middleware")]
mod middleware;
mod store;
mod stored;

pub use manager::{UserTokenManager, UserTokenManagerBuilder, UserTokenParams};
#[cfg(feature = "reqwest-middleware")]
pub use middleware::UserTokenMiddleware;
pub use store::{
    AccessTokens, InMemoryUserTokenStore, SessionKey, StoreOutcome, UserTokenStore, UserTokens,
    Versioned,
};
