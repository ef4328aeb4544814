//! Client-credentials tokens (RFC 6749 §4.4) for machine-to-machine calls.

pub(crate) mod config;
pub(crate) mod flight;
mod manager;
mod params;
mod policy;

pub use config::ClientConfig;
pub(crate) use manager::RegisteredClient;
pub use manager::{ClientCredentialsTokenManager, ClientCredentialsTokenManagerBuilder};
pub use params::TokenRequestParams;
pub use policy::{BackoffPolicy, LifetimePolicy};
