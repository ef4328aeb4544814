#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

pub mod cache;
pub mod client_credentials;
pub mod clock;
mod crypto;
mod destinations;
pub mod dpop;
pub mod error;
pub mod exchange;
pub mod http;
pub mod metrics;
pub mod mtls;
pub mod protocol;
pub mod secret;
mod settings;
pub mod source;
pub mod user;

#[cfg(feature = "reqwest-middleware")]
pub mod delegation;
#[cfg(feature = "reqwest-middleware")]
pub mod middleware;
#[cfg(feature = "tower")]
pub mod tower;

pub use cache::{
    CacheKey, CachedToken, InMemoryTokenCache, Lease, LeaseGuard, LeaseOptions, TokenCache,
};
pub use client_credentials::{
    BackoffPolicy, ClientConfig, ClientCredentialsTokenManager,
    ClientCredentialsTokenManagerBuilder, LifetimePolicy, TokenRequestParams,
};
pub use clock::{Clock, Timestamp, TokioClock};
pub use crypto::Encryption;
pub use destinations::Destinations;
pub use error::{
    CacheError, ConfigError, Error, InvalidResponse, OAuthError, Result, TransportError,
    TransportErrorKind,
};
pub use exchange::TokenExchange;
pub use http::{HttpOptions, HttpRequest, HttpResponse, HttpTransport, ReqwestTransport};
pub use protocol::authorization::{
    random_token, AuthorizationRequest, AuthorizationRequestBuilder, Pkce,
};
pub use protocol::client_assertion::{
    AssertionContext, ClientAssertionProvider, FileAssertion, PrivateKeyJwt,
};
pub use protocol::client_auth::{AuthMethod, ClientAuthentication};
pub use protocol::device_authorization::DeviceAuthorization;
pub use protocol::discovery::{Discovery, MtlsEndpointAliases, ProviderMetadata};
pub use protocol::id_token::{
    IdTokenClaims, IdTokenValidator, JwksLifetime, LogoutToken, BACKCHANNEL_LOGOUT_EVENT,
};
pub use protocol::token_endpoint::TokenEndpoint;
pub use protocol::token_request::{Grant, TokenRequest};
pub use protocol::token_response::TokenResponse;
pub use protocol::types::{ClientId, ClientName, Resource, Scope, TokenType};
pub use secret::{AccessToken, ClientSecret, ExchangedToken, IdToken, RefreshToken};
pub use source::{ClientTokenSource, TokenSource, UserTokenSource};

#[cfg(feature = "reqwest-middleware")]
pub use middleware::{TokenMiddleware, UserTokenMiddleware};
#[cfg(feature = "tower")]
pub use tower::{Token, TokenLayer};

/// What the HTTP integrations do when no token can be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MissingToken {
    /// Fail the request with the token error (the default).
    #[default]
    Fail,
    /// Send the request without an `Authorization` header.
    SendWithout,
}
