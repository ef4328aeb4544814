//! A [`tower`](https://docs.rs/tower) layer that attaches client-credentials tokens to
//! `http::Request`s — for hyper, tonic, or any `tower::Service` HTTP client.
//!
//! ```no_run
//! # fn run<S>(client: S) -> Result<(), tokenkeeper::Error> {
//! use tower_layer::Layer;
//! use tokenkeeper::{ClientConfig, ClientCredentialsTokenManager};
//! let tokens = ClientCredentialsTokenManager::builder()
//!     .client("catalog", ClientConfig::new("https://idp.example.com/token", "worker", "secret"))
//!     .build()?;
//! let client = tokens.layer("catalog")?.layer(client);
//! # let _ = client; Ok(()) }
//! ```
//!
//! Retrying on a 401 needs the request body twice. The layer retries only when the body type
//! implements [`ReplayBody`] and [`ReplayBody::try_replay`] returns a copy; wrap a body in
//! [`NonReplayable`] to opt out. The copy is made before each request is sent; an inner
//! service that can hand the request back with its 401 answer (as [`ReturnedRequest`]) spares
//! it: see [`TokenLayer::requests_returned_on_401`].

mod body;
mod future;
mod layer;

pub use body::{NonReplayable, ReplayBody, ReturnedRequest};
pub use future::ResponseFuture;
pub use layer::{Token, TokenLayer};

/// The error of the [`Token`] service: the inner service's error, or a token error
/// ([`crate::Error`]), boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
