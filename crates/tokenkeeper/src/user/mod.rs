//! Tokens on behalf of a user: per-session storage and refresh.

mod manager;
mod store;

pub use manager::{UserTokenManager, UserTokenManagerBuilder, UserTokenParams};
pub use store::{
    InMemoryUserTokenStore, SessionKey, StoreOutcome, UserTokenStore, UserTokens, Versioned,
};
