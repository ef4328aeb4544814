//! Newtypes for protocol values.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use crate::error::ConfigError;

/// The name under which a client is registered with a token manager (not sent on the wire).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientName(Arc<str>);

impl ClientName {
    /// Wraps a registration name.
    pub fn new(name: impl AsRef<str>) -> Self {
        Self(Arc::from(name.as_ref()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ClientName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for ClientName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for ClientName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<&str> for ClientName {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

impl From<String> for ClientName {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

/// An OAuth 2.0 client identifier (`client_id`). Not a secret.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct ClientId(String);

impl ClientId {
    /// Wraps a client identifier.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The identifier.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for ClientId {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

impl From<String> for ClientId {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

/// A set of OAuth 2.0 scope tokens (RFC 6749 §3.3), kept normalised: sorted, without duplicates.
///
/// Two scopes with the same tokens in a different order are equal, and produce the same cache key.
///
/// ```
/// use tokenkeeper::Scope;
/// let a = Scope::parse("write read read");
/// let b = Scope::parse(" read  write ");
/// assert_eq!(a, b);
/// assert_eq!(a.to_string(), "read write");
/// ```
///
/// It is kept as one normalised string (sorted tokens joined by single spaces): a scope is
/// stored with every token, for every user session, so it must be small.
#[derive(Clone, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Scope(Box<str>);

impl Scope {
    /// Parses a space-separated scope string. Empty tokens are ignored.
    pub fn parse(scope: &str) -> Self {
        let tokens: BTreeSet<&str> = scope
            .split([' ', '\t', '\n', '\r'])
            .filter(|s| !s.is_empty())
            .collect();
        Self(
            tokens
                .into_iter()
                .collect::<Vec<_>>()
                .join(" ")
                .into_boxed_str(),
        )
    }

    /// Builds a scope from individual tokens.
    pub fn from_tokens<I, S>(tokens: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::parse(
            &tokens
                .into_iter()
                .map(|s| s.as_ref().to_owned())
                .collect::<Vec<_>>()
                .join(" "),
        )
    }

    /// Whether there is no scope token.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the scope contains `token`.
    pub fn contains(&self, token: &str) -> bool {
        self.iter().any(|t| t == token)
    }

    /// The tokens, in sorted order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.split(' ').filter(|s| !s.is_empty())
    }

    /// The normalised scope string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Checks that every token uses only the characters RFC 6749 §3.3 allows.
    pub(crate) fn validate(&self, field: &'static str) -> Result<(), ConfigError> {
        for token in self.iter() {
            let ok = token
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
            if !ok {
                return Err(ConfigError::new(
                    field,
                    format!("scope token {token:?} has a character RFC 6749 does not allow"),
                ));
            }
        }
        Ok(())
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scope({self})")
    }
}

impl From<&str> for Scope {
    fn from(value: &str) -> Self {
        Self::parse(value)
    }
}

impl From<String> for Scope {
    fn from(value: String) -> Self {
        Self::parse(&value)
    }
}

/// A resource indicator (RFC 8707): an absolute URI without a fragment naming the API a token is
/// for.
///
/// ```
/// use tokenkeeper::Resource;
/// assert!(Resource::parse("https://api.example.com/orders").is_ok());
/// assert!(Resource::parse("urn:example:orders").is_ok());
/// assert!(Resource::parse("/relative").is_err());
/// assert!(Resource::parse("https://api.example.com/#frag").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Resource(String);

impl Resource {
    /// Checks and wraps a resource indicator. The value is kept exactly as given (it is compared
    /// literally by authorization servers).
    pub fn parse(value: impl Into<String>) -> Result<Self, ConfigError> {
        let value = value.into();
        match url::Url::parse(&value) {
            Ok(url) if url.fragment().is_none() => Ok(Self(value)),
            Ok(_) => Err(ConfigError::new(
                "resource",
                format!("{value:?} has a fragment (RFC 8707 §2)"),
            )),
            Err(e) => Err(ConfigError::new(
                "resource",
                format!("{value:?} is not an absolute URI: {e}"),
            )),
        }
    }

    /// The indicator.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Resource({})", self.0)
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The `token_type` of an issued token (RFC 6749 §7.1), compared case-insensitively.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TokenType {
    /// `Bearer` (RFC 6750).
    Bearer,
    /// `DPoP` (RFC 9449): the token is bound to a key and sent with a proof.
    DPoP,
    /// `N_A` (RFC 8693): the issued token is not an access token.
    NotApplicable,
    /// Any other type, as the server spelled it.
    Other(String),
}

impl TokenType {
    /// Parses a `token_type` value, case-insensitively.
    ///
    /// ```
    /// use tokenkeeper::TokenType;
    /// assert_eq!(TokenType::parse("bearer"), TokenType::Bearer);
    /// assert_eq!(TokenType::parse("dpop"), TokenType::DPoP);
    /// ```
    pub fn parse(value: &str) -> Self {
        if value.eq_ignore_ascii_case("bearer") {
            Self::Bearer
        } else if value.eq_ignore_ascii_case("dpop") {
            Self::DPoP
        } else if value.eq_ignore_ascii_case("n_a") {
            Self::NotApplicable
        } else {
            Self::Other(value.to_owned())
        }
    }

    /// The authorization scheme to send the token with (`Bearer`, `DPoP`, ...).
    pub fn scheme(&self) -> &str {
        match self {
            Self::Bearer | Self::NotApplicable => "Bearer",
            Self::DPoP => "DPoP",
            Self::Other(s) => s,
        }
    }
}

impl fmt::Display for TokenType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Bearer => "Bearer",
            Self::DPoP => "DPoP",
            Self::NotApplicable => "N_A",
            Self::Other(s) => s,
        })
    }
}
