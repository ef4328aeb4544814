//! Authorization requests (RFC 6749 §4.1) with PKCE (RFC 7636), state and nonce.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use url::Url;

use crate::error::Error;
use crate::protocol::types::{Resource, Scope};

/// A random value from the operating system's CSPRNG, base64url-encoded (`bytes` of entropy).
pub fn random_token(bytes: usize) -> Result<String, Error> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| Error::Internal(format!("no randomness: {e}")))?;
    Ok(URL_SAFE_NO_PAD.encode(buf))
}

/// A PKCE verifier and its S256 challenge. Only S256 is offered: `plain` protects nothing.
///
/// ```
/// let pkce = tokenkeeper::Pkce::new().unwrap();
/// assert_eq!(pkce.verifier().len(), 43);
/// assert_eq!(pkce.challenge(), tokenkeeper::Pkce::challenge_of(pkce.verifier()));
/// ```
#[derive(Clone)]
pub struct Pkce {
    verifier: String,
    challenge: String,
}

impl fmt::Debug for Pkce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkce")
            .field("challenge", &self.challenge)
            .finish_non_exhaustive()
    }
}

impl Pkce {
    /// A fresh verifier (32 random bytes, 43 characters) and its challenge.
    pub fn new() -> Result<Self, Error> {
        let verifier = random_token(32)?;
        let challenge = Self::challenge_of(&verifier);
        Ok(Self {
            verifier,
            challenge,
        })
    }

    /// `BASE64URL(SHA256(verifier))`.
    pub fn challenge_of(verifier: &str) -> String {
        URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
    }

    /// The verifier (secret until the code exchange).
    pub fn verifier(&self) -> &str {
        &self.verifier
    }

    /// The S256 challenge.
    pub fn challenge(&self) -> &str {
        &self.challenge
    }
}

/// An authorization code request: what to send the browser to, and what to keep for the
/// callback (state, nonce, PKCE verifier). `Debug` shows the endpoint only.
#[derive(Clone)]
pub struct AuthorizationRequest {
    /// The URL to redirect the user agent to.
    pub url: Url,
    /// The `state` to check on the callback.
    pub state: String,
    /// The `nonce` to check in the ID token.
    pub nonce: String,
    /// The PKCE verifier to send with the code.
    pub pkce: Pkce,
    /// Every parameter of the request, in order (what [`AuthorizationRequest::url`] carries):
    /// to push them (RFC 9126) or sign them (RFC 9101) instead.
    pub params: Vec<(String, String)>,
}

impl std::fmt::Debug for AuthorizationRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut endpoint = self.url.clone();
        endpoint.set_query(None);
        f.debug_struct("AuthorizationRequest")
            .field("endpoint", &endpoint.as_str())
            .finish_non_exhaustive()
    }
}

/// Builds an [`AuthorizationRequest`].
///
/// ```
/// use tokenkeeper::AuthorizationRequestBuilder;
/// let request = AuthorizationRequestBuilder::new(
///     "https://idp.example.com/authorize".parse().unwrap(),
///     "web",
///     "https://app.example.com/callback",
/// )
/// .scope("openid offline_access")
/// .prompt("consent")
/// .build()
/// .unwrap();
/// let query: Vec<(String, String)> = request.url.query_pairs().into_owned().collect();
/// assert!(query.contains(&("code_challenge_method".into(), "S256".into())));
/// assert!(query.contains(&("state".into(), request.state.clone())));
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct AuthorizationRequestBuilder {
    endpoint: Url,
    client_id: String,
    redirect_uri: String,
    scope: Scope,
    prompt: Option<String>,
    resources: Vec<Resource>,
    requirements: crate::protocol::step_up::AuthenticationRequirements,
    extra: Vec<(String, String)>,
}

impl AuthorizationRequestBuilder {
    /// A request to `endpoint` for `client_id`, coming back to `redirect_uri`.
    pub fn new(
        endpoint: Url,
        client_id: impl Into<String>,
        redirect_uri: impl Into<String>,
    ) -> Self {
        Self {
            endpoint,
            client_id: client_id.into(),
            redirect_uri: redirect_uri.into(),
            scope: Scope::parse("openid"),
            prompt: None,
            resources: Vec::new(),
            requirements: Default::default(),
            extra: Vec::new(),
        }
    }

    /// What the login asks of the user's authentication: `acr_values` and `max_age` (PR-04).
    pub fn requirements(
        mut self,
        requirements: crate::protocol::step_up::AuthenticationRequirements,
    ) -> Self {
        self.requirements = requirements;
        self
    }

    /// The scope (default `openid`).
    pub fn scope(mut self, scope: impl Into<Scope>) -> Self {
        self.scope = scope.into();
        self
    }

    /// `prompt` (`login`, `consent`, `none`, ...).
    pub fn prompt(mut self, prompt: impl Into<String>) -> Self {
        self.prompt = Some(prompt.into());
        self
    }

    /// A resource indicator.
    pub fn resource(mut self, resource: Resource) -> Self {
        self.resources.push(resource);
        self
    }

    /// An extra parameter.
    pub fn extra(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra.push((name.into(), value.into()));
        self
    }

    /// Draws state, nonce and PKCE, and builds the URL.
    pub fn build(self) -> Result<AuthorizationRequest, Error> {
        let state = random_token(24)?;
        let nonce = random_token(24)?;
        let pkce = Pkce::new()?;
        let mut params: Vec<(String, String)> = [
            ("response_type", "code"),
            ("client_id", self.client_id.as_str()),
            ("redirect_uri", self.redirect_uri.as_str()),
            ("scope", &self.scope.to_string()),
            ("state", state.as_str()),
            ("nonce", nonce.as_str()),
            ("code_challenge", pkce.challenge()),
            ("code_challenge_method", "S256"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        if let Some(prompt) = &self.prompt {
            params.push(("prompt".into(), prompt.clone()));
        }
        for resource in &self.resources {
            params.push(("resource".into(), resource.as_str().to_owned()));
        }
        params.extend(self.requirements.params());
        params.extend(self.extra.iter().cloned());
        let mut url = self.endpoint;
        url.query_pairs_mut().extend_pairs(params.iter());
        Ok(AuthorizationRequest {
            url,
            state,
            nonce,
            pkce,
            params,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_rfc_7636_appendix_b() {
        assert_eq!(
            Pkce::challenge_of("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn wl_01_authorization_request_has_state_nonce_and_s256_challenge() {
        let request = AuthorizationRequestBuilder::new(
            Url::parse("https://idp.example.com/authorize").unwrap_or_else(|e| panic!("{e}")),
            "web",
            "https://app.example.com/cb",
        )
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
        let query: std::collections::HashMap<String, String> =
            request.url.query_pairs().into_owned().collect();
        assert_eq!(query["response_type"], "code", "no implicit grant");
        assert_eq!(query["state"], request.state);
        assert_eq!(query["nonce"], request.nonce);
        assert_eq!(query["code_challenge_method"], "S256");
        assert_eq!(
            query["code_challenge"],
            Pkce::challenge_of(request.pkce.verifier())
        );
        assert!(request.state.len() >= 32 && request.nonce.len() >= 32);
        let other = AuthorizationRequestBuilder::new(request.url.clone(), "web", "x")
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(other.state, request.state, "fresh randomness each time");
    }
}
