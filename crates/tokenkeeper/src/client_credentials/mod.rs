//! Client-credentials tokens (RFC 6749 §4.4) for machine-to-machine calls.

pub(crate) mod config;
pub(crate) mod flight;
mod manager;
mod params;
mod policy;

pub use config::ClientConfig;
#[cfg(any(feature = "reqwest-middleware", feature = "tower"))]
pub(crate) use manager::BoundClient;
pub use manager::{ClientCredentialsTokenManager, ClientCredentialsTokenManagerBuilder};
pub use params::TokenRequestParams;
pub use policy::{BackoffPolicy, LifetimePolicy};
