//! Tokens on behalf of a user: per-session storage and refresh.

mod login;
mod manager;
mod login_replay;
mod store;
mod stored;

#[cfg(feature = "reqwest-middleware")]
pub use crate::middleware::UserTokenMiddleware;
pub use login::{Login, LoginDpop, LoginRequest};
pub use manager::{Revocation, UserTokenManager, UserTokenManagerBuilder, UserTokenParams};
pub use login_replay::{InMemoryLoginReplayStore, LoginReplayStore};
pub use store::{
    AccessTokens, InMemoryUserTokenStore, SessionKey, StoreOutcome, UserTokenStore, UserTokens,
    Versioned,
};
