//! Redis backends for [`tokenkeeper`]: what a fleet of instances shares.
//!
//! - [`RedisTokenCache`]: tokens in Redis, versioned, optionally encrypted ([`Encryption`]).
//! - [`TwoTierTokenCache`]: an in-memory L1 over the Redis L2, with invalidations broadcast.
//! - [`RedisLease`]: one token fetch per key across instances.
//! - [`RedisUserTokenStore`]: users' session tokens, shared by every instance.
//! - [`RedisLoginReplayStore`]: taken login callbacks, each login completed once across the fleet.
//! - [`RedisDpopKeyStore`]: per-session DPoP keys, always sealed.
//!
//! Each works on one Redis node, a Redis Cluster or a master found through Sentinel
//! ([`RedisTopology`], [`RedisTokenCache::connect`]).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use tokenkeeper::{ClientConfig, ClientCredentialsTokenManager};
//! use tokenkeeper_redis::{Encryption, RedisLease, RedisOptions, RedisTokenCache, TwoTierTokenCache};
//!
//! # let key = [7u8; 32];
//! // 32 random bytes, shared by the fleet (from a secret store): entries are sealed at rest.
//! let encryption = Encryption::new("2026-12", &key)?;
//! let redis = RedisTokenCache::new("redis://127.0.0.1:6379", RedisOptions::encrypted(encryption))?;
//! let tokens = ClientCredentialsTokenManager::builder()
//!     .client("catalog", ClientConfig::from_issuer("https://idp.example.com", "worker", "secret"))
//!     .cache(Arc::new(TwoTierTokenCache::new(redis.clone())))
//!     .lease(Arc::new(RedisLease::new(&redis)))
//!     .build()?;
//! # let _ = tokens; Ok(()) }
//! ```
//!
//! Every store seals what it writes (AES-256-GCM): a cache without an encryption key is refused
//! unless [`RedisOptions::plaintext`] asks for plaintext explicitly (SEC-15).
//!
//! When Redis is down or slow, every call gives up after [`RedisOptions::timeout`], requests go
//! on with the in-process tier and the token endpoint, the outage is logged once (and counted
//! with the `metrics` feature), and the cache is used again as soon as Redis answers.

mod cache;
mod codec;
mod dpop_keys;
mod lease;
mod login_replay;
mod outage;
mod subscription;
mod topology;
mod two_tier;
mod user_store;

pub use cache::{RedisOptions, RedisTokenCache, ReplicaAck};
pub use dpop_keys::RedisDpopKeyStore;
pub use lease::RedisLease;
pub use login_replay::RedisLoginReplayStore;
pub use tokenkeeper::Encryption;
pub use topology::{RedisConnection, RedisTopology};
pub use two_tier::TwoTierTokenCache;
pub use user_store::RedisUserTokenStore;
