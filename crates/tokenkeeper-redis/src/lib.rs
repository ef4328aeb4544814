//! Redis backends for [`tokenkeeper`]: what a fleet of instances shares.
//!
//! - [`RedisTokenCache`]: tokens in Redis, versioned, optionally encrypted ([`Encryption`]).
//! - [`TwoTierTokenCache`]: an in-memory L1 over the Redis L2, with invalidations broadcast.
//! - [`RedisLease`]: one token fetch per key across instances.
//! - [`RedisUserTokenStore`]: users' session tokens, shared by every instance.
//! - [`RedisPendingLoginStore`]: pending logins, each callback consumed once across the fleet.
//! - [`RedisDpopKeyStore`]: per-session DPoP keys, always sealed.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use tokenkeeper::{ClientConfig, ClientCredentialsTokenManager};
//! use tokenkeeper_redis::{RedisLease, RedisOptions, RedisTokenCache, TwoTierTokenCache};
//!
//! let redis = RedisTokenCache::new("redis://127.0.0.1:6379", RedisOptions::default())?;
//! let tokens = ClientCredentialsTokenManager::builder()
//!     .client("catalog", ClientConfig::from_issuer("https://idp.example.com", "worker", "secret"))
//!     .cache(Arc::new(TwoTierTokenCache::new(redis.clone())))
//!     .lease(Arc::new(RedisLease::new(&redis)))
//!     .build()?;
//! # let _ = tokens; Ok(()) }
//! ```
//!
//! When Redis is down or slow, every call gives up after [`RedisOptions::timeout`], requests go
//! on with the in-process tier and the token endpoint, the outage is logged once (and counted
//! with the `metrics` feature), and the cache is used again as soon as Redis answers.

mod cache;
mod codec;
mod dpop_keys;
mod lease;
mod outage;
mod pending;
mod subscription;
mod two_tier;
mod user_store;

pub use cache::{RedisOptions, RedisTokenCache};
pub use dpop_keys::RedisDpopKeyStore;
pub use lease::RedisLease;
pub use pending::RedisPendingLoginStore;
pub use tokenkeeper::Encryption;
pub use two_tier::TwoTierTokenCache;
pub use user_store::RedisUserTokenStore;
