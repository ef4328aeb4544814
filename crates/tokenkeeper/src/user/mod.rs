//! Tokens on behalf of a user: per-session storage and refresh.

mod login;
mod login_replay;
mod login_start;
mod manager;
mod session_tier;
mod store;
mod stored;
mod userinfo;
pub use session_tier::SessionTier;
pub use stored::StoredSessionError;

#[cfg(feature = "reqwest-middleware")]
pub use crate::middleware::UserTokenMiddleware;
pub use login::{Login, LoginDpop, LoginRequest};
pub use login_replay::{InMemoryLoginReplayStore, LoginReplayStore};
pub use login_start::{LoginOptions, StartedLogin};
pub use manager::{Revocation, UserTokenManager, UserTokenManagerBuilder, UserTokenParams};
pub use store::{
    AccessTokens, InMemoryUserTokenStore, SessionKey, StoreOutcome, UserTokenStore, UserTokens,
    Versioned,
};
