//! Per-request parameters.

use crate::protocol::types::{Resource, Scope};

/// Parameters of one `get_token` call. The default asks for the client's configured token.
///
/// A scope or resource given here replaces the client's; extra parameters are merged over the
/// client's (same name: this one wins). Every distinct set of parameters is a distinct cache
/// entry.
///
/// ```
/// use tokenkeeper::{Resource, TokenRequestParams};
/// let params = TokenRequestParams::new()
///     .scope("orders.read")
///     .resource(Resource::parse("https://orders.example.com").unwrap())
///     .extra("tenant", "acme");
/// assert!(!params.is_default());
/// assert!(TokenRequestParams::default().is_default());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenRequestParams {
    pub(crate) scope: Option<Scope>,
    pub(crate) resources: Vec<Resource>,
    pub(crate) extra: Vec<(String, String)>,
    pub(crate) force_renewal: bool,
    pub(crate) exchange: Option<std::sync::Arc<crate::exchange::TokenExchange>>,
}

impl TokenRequestParams {
    /// No overrides: the client's configured token.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests this scope instead of the client's.
    pub fn scope(mut self, scope: impl Into<Scope>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// Requests this resource instead of the client's (call again for several).
    pub fn resource(mut self, resource: Resource) -> Self {
        self.resources.push(resource);
        self
    }

    /// Adds an extra form parameter.
    pub fn extra(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra.push((name.into(), value.into()));
        self
    }

    /// Makes the request a token exchange (RFC 8693) of `exchange`'s subject token: see
    /// [`crate::exchange`].
    pub fn exchange(mut self, exchange: crate::exchange::TokenExchange) -> Self {
        self.exchange = Some(std::sync::Arc::new(exchange));
        self
    }

    /// Skips the cache: fetch a new token now, and store it.
    pub fn force_renewal(mut self, force: bool) -> Self {
        self.force_renewal = force;
        self
    }

    /// Whether the call asks for the client's configured token (no override, no force).
    #[inline]
    pub fn is_default(&self) -> bool {
        self.scope.is_none()
            && self.resources.is_empty()
            && self.extra.is_empty()
            && !self.force_renewal
            && self.exchange.is_none()
    }

    /// Whether the parameters override anything (force aside).
    #[inline]
    pub(crate) fn has_overrides(&self) -> bool {
        self.scope.is_some()
            || !self.resources.is_empty()
            || !self.extra.is_empty()
            || self.exchange.is_some()
    }
}
