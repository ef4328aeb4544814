//! Redacting newtypes for secrets: client secrets, access tokens, refresh tokens.
//!
//! None of these types implements `PartialEq` (comparing secrets is the job of constant-time
//! code, not `==`) and none prints its value: `Debug` shows the type name and, for tokens, a short
//! fingerprint so log lines can be correlated without revealing the token.

use sha2::{Digest, Sha256};
use std::fmt;

/// A short, non-reversible fingerprint of a high-entropy value, for `Debug` output and logs.
///
/// It is the first 8 hex digits of the SHA-256 of the value. Use it only for values with plenty
/// of entropy (tokens); secrets chosen by people are printed as `[redacted]` with no fingerprint.
pub(crate) fn fingerprint(value: &str) -> String {
    let digest = Sha256::digest(value.as_bytes());
    let mut out = String::with_capacity(8);
    for byte in &digest[..4] {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

macro_rules! secret_newtype {
    ($(#[$meta:meta])* $name:ident, fingerprint = $fp:expr) => {
        $(#[$meta])*
        #[derive(Clone)]
        pub struct $name(String);

        impl $name {
            /// Wraps a secret value.
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            /// The secret value itself. Take care where it goes: never into a log line, an error
            /// message or a URL.
            pub fn secret(&self) -> &str {
                &self.0
            }

            /// Whether the value is empty.
            pub fn is_empty(&self) -> bool {
                self.0.is_empty()
            }

            /// Compares two secrets in constant time (in the length of the shorter input).
            pub fn ct_eq(&self, other: &Self) -> bool {
                crate::secret::ct_eq(self.0.as_bytes(), other.0.as_bytes())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                if $fp {
                    write!(f, concat!(stringify!($name), "(sha256:{})"), fingerprint(&self.0))
                } else {
                    f.write_str(concat!(stringify!($name), "([redacted])"))
                }
            }
        }

        impl From<String> for $name {
            fn from(value: String) -> Self {
                Self(value)
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                Self(value.to_owned())
            }
        }
    };
}

secret_newtype!(
    /// A client secret (`client_secret`), used for `client_secret_basic` and `client_secret_post`.
    ///
    /// ```
    /// let secret = tokenkeeper::ClientSecret::new("s3cr3t");
    /// assert_eq!(format!("{secret:?}"), "ClientSecret([redacted])");
    /// ```
    ClientSecret,
    fingerprint = false
);

/// An OAuth 2.0 access token. `Debug` shows only a short SHA-256 fingerprint.
///
/// Cheap to clone (a shared buffer). Inside a cached token it shares one buffer with the
/// `Authorization` header value, so a stored token costs its bytes once.
///
/// ```
/// let token = tokenkeeper::AccessToken::new("eyJhbGciOi...");
/// assert!(!format!("{token:?}").contains("eyJ"));
/// assert_eq!(token.secret(), "eyJhbGciOi...");
/// ```
#[derive(Clone)]
pub struct AccessToken {
    buf: std::sync::Arc<str>,
    start: usize,
}

impl AccessToken {
    /// Wraps a token.
    pub fn new(value: impl Into<String>) -> Self {
        Self {
            buf: std::sync::Arc::from(value.into()),
            start: 0,
        }
    }

    /// The token itself. Take care where it goes: never into a log line, an error message or a
    /// URL.
    #[inline]
    pub fn secret(&self) -> &str {
        &self.buf[self.start..]
    }

    /// Whether the token is empty.
    pub fn is_empty(&self) -> bool {
        self.secret().is_empty()
    }

    /// Compares two tokens in constant time (in the length of the shorter input).
    pub fn ct_eq(&self, other: &Self) -> bool {
        ct_eq(self.secret().as_bytes(), other.secret().as_bytes())
    }

    /// `"<scheme> <token>"` in one shared buffer, and the token as a view into it.
    pub(crate) fn with_scheme(&self, scheme: &str) -> (std::sync::Arc<str>, AccessToken) {
        let full: std::sync::Arc<str> = std::sync::Arc::from(format!("{scheme} {}", self.secret()));
        let token = AccessToken {
            buf: full.clone(),
            start: scheme.len() + 1,
        };
        (full, token)
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccessToken(sha256:{})", fingerprint(self.secret()))
    }
}

impl From<String> for AccessToken {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

impl From<&str> for AccessToken {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

secret_newtype!(
    /// An OAuth 2.0 refresh token. `Debug` shows only a short SHA-256 fingerprint.
    RefreshToken,
    fingerprint = true
);

secret_newtype!(
    /// An OpenID Connect ID token (a JWT). `Debug` shows only a short SHA-256 fingerprint.
    IdToken,
    fingerprint = true
);

secret_newtype!(
    /// A token given up in a token exchange (RFC 8693): the subject token or the actor token.
    /// `Debug` shows only a short SHA-256 fingerprint.
    ExchangedToken,
    fingerprint = true
);

/// Constant-time byte comparison (the length is not secret).
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    diff == 0
}
