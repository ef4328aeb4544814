//! Error types.
//!
//! Every error is a value: [`Error`] is `Clone` so that one failed fetch can be handed to every
//! caller waiting on it. No error message carries a secret, a token or a URL query string.

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while getting or using a token.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid; raised when a manager is built.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No client is registered under this name.
    #[error("no client named {0:?} is registered with this token manager")]
    UnknownClient(String),
    /// The authorization server answered with an OAuth error (RFC 6749 §5.2).
    #[error(transparent)]
    OAuth(#[from] OAuthError),
    /// The request could not be sent or its response not read (connection, timeout, body).
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The server answered, but not with something we can accept.
    #[error(transparent)]
    InvalidResponse(#[from] InvalidResponse),
    /// Discovery failed or returned metadata that must be refused.
    #[error("discovery for issuer {issuer:?} failed: {reason}")]
    Discovery {
        /// The configured issuer.
        issuer: String,
        /// What went wrong.
        reason: String,
    },
    /// A token cache backend failed. The managers degrade to fetching without the cache, so a
    /// caller normally sees this only from direct cache calls.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// An ID token was refused (signature, issuer, audience, expiry or nonce).
    #[error("invalid ID token: {0}")]
    InvalidIdToken(String),
    /// The user's authentication does not meet what the login asked (PR-04): the ID token's
    /// `acr` is missing or not one of the `acr_values`, or its `auth_time` is missing or older
    /// than `max_age`.
    #[error("insufficient user authentication: {0}")]
    InsufficientAuthentication(String),
    /// The authorization response (the login's callback) was refused: its `iss` is missing or
    /// not the issuer (RFC 9207).
    #[error("authorization response refused: {0}")]
    AuthorizationResponse(String),
    /// A device authorization (RFC 8628) expired before the user answered.
    #[error("the device code expired before the user answered")]
    DeviceCodeExpired,
    /// The user must log in again: the session has no tokens, its refresh token was refused
    /// (`invalid_grant`, and the session's tokens were cleared), or it has no refresh token and
    /// its access token expired.
    #[error("re-authentication required: {0}")]
    ReauthenticationRequired(String),
    /// The client's tokens may not be sent to this origin (see
    /// [`ClientConfig::destination`](crate::ClientConfig::destination)); the request was not
    /// sent.
    #[error("tokens of this client may not be sent to {origin}")]
    DestinationNotAllowed {
        /// The refused origin (scheme, host, port).
        origin: String,
    },
    /// The server answered a DPoP token request with a token that is not DPoP-bound, and the
    /// client requires DPoP ([`ClientConfig::require_dpop`](crate::ClientConfig::require_dpop)).
    #[error(
        "the server issued a {token_type:?} token, but this client requires DPoP-bound tokens"
    )]
    DpopRequired {
        /// The `token_type` the server answered.
        token_type: String,
    },
    /// The token endpoint keeps asking for a DPoP nonce (`use_dpop_nonce`): after the one retry
    /// with the nonce it sent, or without sending one to retry with (UX-10). Usually a fleet of
    /// servers that do not share their nonces, or a proxy that drops the `DPoP-Nonce` header.
    /// [`Error::oauth_error`] is `use_dpop_nonce`.
    #[error("the token endpoint {endpoint} keeps answering use_dpop_nonce ({detail})")]
    DpopNonce {
        /// The token endpoint (redacted: no query).
        endpoint: String,
        /// What happened: retried with a new nonce, or no usable nonce was given.
        detail: String,
    },
    /// The subject token of a token exchange cannot be exchanged (it has expired, or its
    /// expiry is unknown); no request was sent.
    #[error("the subject token cannot be exchanged: {0}")]
    SubjectToken(String),
    /// A background task ended unexpectedly (it panicked or its runtime shut down).
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The OAuth error code, when the server sent one.
    pub fn oauth_error(&self) -> Option<&str> {
        match self {
            Error::OAuth(e) => Some(&e.error),
            Error::DpopNonce { .. } => Some("use_dpop_nonce"),
            _ => None,
        }
    }

    /// The token error inside a failure of the reqwest middleware, if that is what it is: one
    /// call from `reqwest_middleware::Error` (or from the tower layer's boxed error) to the
    /// typed [`Error`].
    ///
    /// ```
    /// use tokenkeeper::Error;
    /// let failure = reqwest_middleware::Error::middleware(Error::ReauthenticationRequired("no tokens".into()));
    /// assert!(matches!(Error::from_middleware(&failure), Some(Error::ReauthenticationRequired(_))));
    /// ```
    #[cfg(feature = "reqwest-middleware")]
    pub fn from_middleware(error: &reqwest_middleware::Error) -> Option<&Error> {
        match error {
            reqwest_middleware::Error::Middleware(e) => e.downcast_ref::<Error>(),
            reqwest_middleware::Error::Reqwest(_) => None,
        }
    }

    /// The token error inside a boxed error (as the tower layer returns), if that is what it is.
    pub fn from_boxed<'a>(
        error: &'a (dyn std::error::Error + Send + Sync + 'static),
    ) -> Option<&'a Error> {
        error.downcast_ref::<Error>()
    }

    /// The HTTP status of the response that caused the error, when there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::OAuth(e) => Some(e.status),
            Error::InvalidResponse(e) => e.status,
            Error::Transport(e) => e.status,
            _ => None,
        }
    }
}

/// An invalid configuration value, naming the field (and the client, when there is one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration{}: `{field}` {reason}", client.as_ref().map(|c| format!(" of client {c:?}")).unwrap_or_default())]
pub struct ConfigError {
    /// The client the field belongs to.
    pub client: Option<String>,
    /// The field, as named in the builder (`client_id`, `token_endpoint`, ...).
    pub field: &'static str,
    /// Why the value is refused.
    pub reason: String,
}

impl ConfigError {
    /// A configuration error for `field`.
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            client: None,
            field,
            reason: reason.into(),
        }
    }

    /// Names the client the field belongs to.
    pub fn for_client(mut self, client: impl Into<String>) -> Self {
        self.client = Some(client.into());
        self
    }
}

/// An OAuth 2.0 error response (RFC 6749 §5.2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("authorization server error {error:?} (HTTP {status}){}", description.as_ref().map(|d| format!(": {d}")).unwrap_or_default())]
pub struct OAuthError {
    /// HTTP status of the response.
    pub status: u16,
    /// The `error` code (`invalid_client`, `invalid_grant`, ...).
    pub error: String,
    /// `error_description`, when sent (truncated to 256 characters, control characters removed).
    pub description: Option<String>,
    /// `error_uri`, when sent.
    pub uri: Option<String>,
}

/// What kind of transport failure happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportErrorKind {
    /// The connection could not be made.
    Connect,
    /// The connect or request timeout elapsed.
    Timeout,
    /// The connection failed while the request was sent or the response read.
    Connection,
    /// The response body was larger than the configured limit.
    BodyTooLarge,
    /// Anything else.
    Other,
}

/// The request could not be completed at the HTTP level. The message names the endpoint
/// (without userinfo, query or fragment: they may hold secrets), so that an unreachable token
/// endpoint says which URL to fix (UX-03).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("HTTP transport error ({kind:?}){}: {message}", match .url { Some(url) => format!(" reaching {url}"), None => String::new() })]
pub struct TransportError {
    /// What kind of failure.
    pub kind: TransportErrorKind,
    /// The HTTP status, when a response head was received.
    pub status: Option<u16>,
    /// A description, without the URL.
    pub message: String,
    /// The URL it was sent to, redacted (no userinfo, query or fragment), when known.
    pub url: Option<String>,
}

impl TransportError {
    /// A transport error of the given kind.
    pub fn new(kind: TransportErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            status: None,
            message: message.into(),
            url: None,
        }
    }

    /// Records where the request went (redacted: no userinfo, query or fragment).
    pub fn with_url(mut self, url: &url::Url) -> Self {
        self.url = Some(crate::http::redact_url(url));
        self
    }

    /// Records the HTTP status that was received before the failure.
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }
}

/// The server answered with something that is not an acceptable response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid response{}: {reason}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
pub struct InvalidResponse {
    /// The HTTP status.
    pub status: Option<u16>,
    /// Why it was refused. Never contains the body itself.
    pub reason: String,
}

impl InvalidResponse {
    /// An invalid-response error.
    pub fn new(status: Option<u16>, reason: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.into(),
        }
    }
}

/// A cache backend failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("token cache error: {message}")]
pub struct CacheError {
    /// What went wrong.
    pub message: String,
}

impl CacheError {
    /// A cache error.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

/// Makes text from the network safe to put in an error message: no control characters, at most
/// `max` characters.
pub(crate) fn sanitize(text: &str, max: usize) -> String {
    let mut out: String = text.chars().filter(|c| !c.is_control()).take(max).collect();
    if text.chars().count() > max {
        out.push('…');
    }
    out
}
