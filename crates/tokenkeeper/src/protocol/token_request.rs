//! Token requests (RFC 6749 §4, RFC 8693, RFC 8707).

use std::fmt;

use crate::protocol::types::{Resource, Scope};
use crate::secret::RefreshToken;

/// The grant of a token request.
#[derive(Clone)]
#[non_exhaustive]
pub enum Grant {
    /// `client_credentials` (RFC 6749 §4.4).
    ClientCredentials,
    /// `refresh_token` (RFC 6749 §6).
    RefreshToken {
        /// The refresh token.
        refresh_token: RefreshToken,
    },
    /// `authorization_code` (RFC 6749 §4.1.3), with the PKCE verifier (RFC 7636).
    AuthorizationCode {
        /// The code from the authorization response.
        code: String,
        /// The redirect URI used in the authorization request.
        redirect_uri: String,
        /// The PKCE code verifier.
        code_verifier: Option<String>,
    },
    /// Token exchange (RFC 8693).
    TokenExchange {
        /// `subject_token`.
        subject_token: String,
        /// `subject_token_type`.
        subject_token_type: String,
        /// `requested_token_type`, when wanted.
        requested_token_type: Option<String>,
        /// `actor_token` and its type, when acting for someone.
        actor: Option<(String, String)>,
    },
    /// The JWT bearer grant (RFC 7523 §2.1): a JWT assertion (for instance a workload identity
    /// token) traded for an access token.
    JwtBearer {
        /// The assertion (a compact JWS).
        assertion: String,
    },
    /// Any other grant (an extension grant URI), with its own parameters.
    Other {
        /// `grant_type`.
        grant_type: String,
        /// Its parameters.
        params: Vec<(String, String)>,
    },
}

impl Grant {
    /// The `grant_type` value.
    pub fn grant_type(&self) -> &str {
        match self {
            Self::ClientCredentials => "client_credentials",
            Self::RefreshToken { .. } => "refresh_token",
            Self::AuthorizationCode { .. } => "authorization_code",
            Self::TokenExchange { .. } => "urn:ietf:params:oauth:grant-type:token-exchange",
            Self::JwtBearer { .. } => "urn:ietf:params:oauth:grant-type:jwt-bearer",
            Self::Other { grant_type, .. } => grant_type,
        }
    }

    fn write(&self, form: &mut Vec<(String, String)>) {
        form.push(("grant_type".into(), self.grant_type().into()));
        match self {
            Self::ClientCredentials => {}
            Self::RefreshToken { refresh_token } => {
                form.push(("refresh_token".into(), refresh_token.secret().into()));
            }
            Self::AuthorizationCode {
                code,
                redirect_uri,
                code_verifier,
            } => {
                form.push(("code".into(), code.clone()));
                form.push(("redirect_uri".into(), redirect_uri.clone()));
                if let Some(v) = code_verifier {
                    form.push(("code_verifier".into(), v.clone()));
                }
            }
            Self::TokenExchange {
                subject_token,
                subject_token_type,
                requested_token_type,
                actor,
            } => {
                form.push(("subject_token".into(), subject_token.clone()));
                form.push(("subject_token_type".into(), subject_token_type.clone()));
                if let Some(t) = requested_token_type {
                    form.push(("requested_token_type".into(), t.clone()));
                }
                if let Some((token, ty)) = actor {
                    form.push(("actor_token".into(), token.clone()));
                    form.push(("actor_token_type".into(), ty.clone()));
                }
            }
            Self::JwtBearer { assertion } => {
                form.push(("assertion".into(), assertion.clone()));
            }
            Self::Other { params, .. } => form.extend(params.iter().cloned()),
        }
    }
}

impl fmt::Debug for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Grants carry codes and tokens: print only the type.
        write!(f, "Grant({})", self.grant_type())
    }
}

/// A request to the token endpoint: a grant plus scope, resources and extra parameters.
///
/// ```
/// use tokenkeeper::{Grant, Resource, Scope, TokenRequest};
/// let request = TokenRequest::new(Grant::ClientCredentials)
///     .scope(Scope::parse("orders.read"))
///     .resource(Resource::parse("https://api.example.com").unwrap())
///     .extra("tenant", "acme");
/// assert_eq!(request.grant().grant_type(), "client_credentials");
/// ```
#[derive(Clone, Debug)]
pub struct TokenRequest {
    grant: Grant,
    scope: Option<Scope>,
    resources: Vec<Resource>,
    extra: Vec<(String, String)>,
}

/// Form fields a caller may not set through [`TokenRequest::extra`]: they belong to the grant or
/// to client authentication.
pub(crate) const RESERVED_PARAMS: &[&str] = &[
    "grant_type",
    "client_id",
    "client_secret",
    "client_assertion",
    "client_assertion_type",
    "scope",
    "resource",
    "refresh_token",
    "code",
    "code_verifier",
    "redirect_uri",
    "subject_token",
    "subject_token_type",
    "actor_token",
    "actor_token_type",
    "requested_token_type",
    "assertion",
];

impl TokenRequest {
    /// A request for `grant`, with no scope, resource or extra parameter.
    pub fn new(grant: Grant) -> Self {
        Self {
            grant,
            scope: None,
            resources: Vec::new(),
            extra: Vec::new(),
        }
    }

    /// Sets the scope (an empty scope is not sent).
    pub fn scope(mut self, scope: Scope) -> Self {
        self.scope = Some(scope);
        self
    }

    /// Adds a resource indicator (RFC 8707). Each one is sent as its own `resource` field.
    pub fn resource(mut self, resource: Resource) -> Self {
        self.resources.push(resource);
        self
    }

    /// Adds an extra form parameter.
    pub fn extra(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra.push((name.into(), value.into()));
        self
    }

    /// The same request with another grant.
    pub(crate) fn with_grant(&self, grant: Grant) -> Self {
        Self {
            grant,
            ..self.clone()
        }
    }

    /// The grant.
    pub fn grant(&self) -> &Grant {
        &self.grant
    }

    /// The scope.
    pub fn get_scope(&self) -> Option<&Scope> {
        self.scope.as_ref()
    }

    /// The resources.
    pub fn resources(&self) -> &[Resource] {
        &self.resources
    }

    /// The form fields, in order, without client authentication.
    pub(crate) fn form(&self) -> Vec<(String, String)> {
        let mut form = Vec::with_capacity(4 + self.resources.len() + self.extra.len());
        self.grant.write(&mut form);
        if let Some(scope) = self.scope.as_ref().filter(|s| !s.is_empty()) {
            form.push(("scope".into(), scope.to_string()));
        }
        for resource in &self.resources {
            form.push(("resource".into(), resource.as_str().into()));
        }
        form.extend(self.extra.iter().cloned());
        form
    }
}
