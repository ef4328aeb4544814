//! Starting a login: the authorization request — PKCE, state, nonce, the DPoP login key's
//! `dpop_jkt`, `acr_values` and `max_age` — signed into a request object (RFC 9101) and pushed
//! (RFC 9126) when the manager's protocol says so, and the URL to send the browser to.

use url::Url;

use crate::error::{ConfigError, Error};
use crate::protocol::authorization::AuthorizationRequestBuilder;
use crate::protocol::profile::PushedAuthorization;
use crate::protocol::step_up::AuthenticationRequirements;
use crate::protocol::types::{Resource, Scope};

use super::login::LoginDpop;
use super::manager::UserTokenManager;

/// What to start a login with.
///
/// ```
/// use std::time::Duration;
/// use tokenkeeper::protocol::step_up::AuthenticationRequirements;
/// use tokenkeeper::user::LoginOptions;
///
/// let options = LoginOptions::new("https://app.example.com/callback")
///     .scope("openid offline_access")
///     .requirements(
///         AuthenticationRequirements::new()
///             .with_acr_values("urn:example:mfa")?
///             .with_max_age(Duration::from_secs(300)),
///     );
/// # let _ = options; Ok::<(), tokenkeeper::Error>(())
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct LoginOptions {
    /// The callback URL registered at the provider.
    pub redirect_uri: String,
    /// The scope (default `openid offline_access`).
    pub scope: Scope,
    /// `prompt`, when wanted.
    pub prompt: Option<String>,
    /// A resource indicator, asked for at login and repeated at the code exchange.
    pub resource: Option<Resource>,
    /// `acr_values` and `max_age` (PR-04); checked against the ID token at the callback.
    pub requirements: AuthenticationRequirements,
    /// Other parameters.
    pub extra: Vec<(String, String)>,
}

impl LoginOptions {
    /// A login coming back to `redirect_uri`, with the default scope.
    pub fn new(redirect_uri: impl Into<String>) -> Self {
        Self {
            redirect_uri: redirect_uri.into(),
            scope: Scope::parse("openid offline_access"),
            prompt: None,
            resource: None,
            requirements: AuthenticationRequirements::new(),
            extra: Vec::new(),
        }
    }

    /// The scope.
    pub fn scope(mut self, scope: impl Into<Scope>) -> Self {
        self.scope = scope.into();
        self
    }

    /// `prompt`.
    pub fn prompt(mut self, prompt: impl Into<String>) -> Self {
        self.prompt = Some(prompt.into());
        self
    }

    /// A resource indicator.
    pub fn resource(mut self, resource: Resource) -> Self {
        self.resource = Some(resource);
        self
    }

    /// What the login asks of the user's authentication.
    pub fn requirements(mut self, requirements: AuthenticationRequirements) -> Self {
        self.requirements = requirements;
        self
    }

    /// Another parameter.
    pub fn extra(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra.push((name.into(), value.into()));
        self
    }
}

/// A started login: the URL to send the browser to, and what the callback needs — keep it
/// sealed until then (`tokenkeeper-axum` seals it into a cookie). `Debug` shows the
/// authorization endpoint and whether the request was pushed, none of the secrets.
#[derive(Clone)]
#[non_exhaustive]
pub struct StartedLogin {
    /// Where to send the browser. After a push it carries only `client_id` and `request_uri`.
    pub url: Url,
    /// The `state` to check on the callback.
    pub state: String,
    /// The `nonce` to check in the ID token.
    pub nonce: String,
    /// The PKCE verifier to send with the code.
    pub code_verifier: String,
    /// The login's DPoP key, when DPoP is on (its thumbprint went as `dpop_jkt`).
    pub dpop: Option<LoginDpop>,
    /// What was asked of the user's authentication (to check at the callback).
    pub requirements: AuthenticationRequirements,
    /// Whether the request was pushed (RFC 9126).
    pub pushed: bool,
    /// The callback URL the request named (repeated at the code exchange).
    pub redirect_uri: String,
    /// The resource the request asked for, if any (repeated at the code exchange).
    pub resource: Option<Resource>,
}

impl std::fmt::Debug for StartedLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut endpoint = self.url.clone();
        endpoint.set_query(None);
        f.debug_struct("StartedLogin")
            .field("endpoint", &endpoint.as_str())
            .field("pushed", &self.pushed)
            .field("dpop", &self.dpop)
            .finish_non_exhaustive()
    }
}

impl UserTokenManager {
    /// Starts a login: draws state, nonce and PKCE (S256), makes the login's DPoP key
    /// (`dpop_jkt`), adds `acr_values`/`max_age`, then — as the manager is configured
    /// ([`UserTokenManagerBuilder::signed_request_objects`],
    /// [`UserTokenManagerBuilder::pushed_authorization`], [`UserTokenManagerBuilder::profile`])
    /// or the provider requires (`require_pushed_authorization_requests`) — signs the
    /// parameters into a request object and pushes them with the client's authentication
    /// and a DPoP proof of the login key. The browser then sees only `client_id` and
    /// `request_uri`.
    ///
    /// The manager must be built from the issuer ([`crate::ClientConfig::from_issuer`]).
    ///
    /// [`UserTokenManagerBuilder::signed_request_objects`]: super::UserTokenManagerBuilder::signed_request_objects
    /// [`UserTokenManagerBuilder::pushed_authorization`]: super::UserTokenManagerBuilder::pushed_authorization
    /// [`UserTokenManagerBuilder::profile`]: super::UserTokenManagerBuilder::profile
    pub async fn start_login(&self, options: &LoginOptions) -> Result<StartedLogin, Error> {
        let discovery = self.endpoint().discovery().cloned().ok_or_else(|| {
            Error::Config(ConfigError::new(
                "client",
                "starting a login needs a manager built from the issuer (ClientConfig::from_issuer)",
            ))
        })?;
        let metadata = discovery.metadata().await?;
        let missing = |what: &str| Error::Discovery {
            issuer: discovery.issuer().to_owned(),
            reason: what.to_owned(),
        };
        let endpoint = metadata
            .authorization_endpoint
            .clone()
            .ok_or_else(|| missing("no authorization_endpoint"))?;
        let client_id = self
            .endpoint()
            .authentication()
            .client_id()
            .as_str()
            .to_owned();
        let dpop = self.new_login_dpop()?;
        let mut builder =
            AuthorizationRequestBuilder::new(endpoint.clone(), &client_id, &options.redirect_uri)
                .scope(options.scope.clone())
                .requirements(options.requirements.clone());
        if let Some(prompt) = &options.prompt {
            builder = builder.prompt(prompt.clone());
        }
        if let Some(resource) = &options.resource {
            builder = builder.resource(resource.clone());
        }
        for (name, value) in &options.extra {
            builder = builder.extra(name.clone(), value.clone());
        }
        if let Some(dpop) = &dpop {
            builder = builder.extra("dpop_jkt", dpop.jkt().to_owned());
        }
        let request = builder.build()?;
        let protocol = self.login_protocol();
        let push = protocol.pushed == PushedAuthorization::Always
            || metadata.require_pushed_authorization_requests;
        let mut params = request.params.clone();
        let mut signed = false;
        if let Some(signer) = &protocol.request_signer {
            let now = self.clock().now().as_millis() / 1000;
            let jwt = crate::protocol::request_object::sign(
                signer.as_ref(),
                &client_id,
                discovery.issuer(),
                &params,
                now,
            )
            .await?;
            params = vec![
                ("client_id".to_owned(), client_id.clone()),
                ("request".to_owned(), jwt),
            ];
            signed = true;
        }
        let url = if push {
            let par_endpoint = self
                .endpoint()
                .metadata_endpoint("pushed_authorization_request_endpoint")
                .await?
                .ok_or_else(|| {
                    missing("authorization requests must be pushed, but the provider publishes no pushed_authorization_request_endpoint")
                })?;
            let key = self.login_dpop_key(dpop.as_ref())?;
            let pushed =
                crate::protocol::par::push(self.endpoint(), par_endpoint, params, key.as_deref())
                    .await?;
            crate::protocol::par::authorization_url(&endpoint, &client_id, &pushed)
        } else if signed {
            // OpenID Connect asks for `response_type`, `client_id` and `scope` outside the
            // request object too (Core §6.1); the provider uses the signed values.
            let mut url = endpoint;
            url.query_pairs_mut()
                .extend_pairs(params.iter())
                .append_pair("response_type", "code")
                .append_pair("scope", &options.scope.to_string());
            url
        } else {
            request.url.clone()
        };
        Ok(StartedLogin {
            url,
            state: request.state,
            nonce: request.nonce,
            code_verifier: request.pkce.verifier().to_owned(),
            dpop,
            requirements: options.requirements.clone(),
            pushed: push,
            redirect_uri: options.redirect_uri.clone(),
            resource: options.resource.clone(),
        })
    }

    /// Completes a login started with [`UserTokenManager::start_login`] from its callback's
    /// query (`code`, `state`, `iss`, or `error`): checks `state` against the started login's
    /// (in constant time), the provider's `error`, the RFC 9207 `iss`
    /// ([`UserTokenManager::check_callback_issuer`]), then exchanges the code and checks the ID
    /// token against everything the login asked ([`UserTokenManager::complete_login`]). A
    /// refused callback is [`Error::AuthorizationResponse`]. The caller keeps `started` sealed
    /// until the callback, and uses it once (a replayed callback is the caller's to refuse:
    /// `tokenkeeper-axum` claims each login once in a replay store).
    ///
    /// ```no_run
    /// # async fn run(users: tokenkeeper::user::UserTokenManager, callback: url::Url) -> Result<(), tokenkeeper::Error> {
    /// use tokenkeeper::user::LoginOptions;
    /// let started = users.start_login(&LoginOptions::new("https://app.example.com/cb")).await?;
    /// // ... the browser goes to `started.url` and comes back to the callback ...
    /// let login = users.finish_login(&started, callback.query().unwrap_or("")).await?;
    /// # let _ = login; Ok(()) }
    /// ```
    pub async fn finish_login(
        &self,
        started: &StartedLogin,
        callback_query: &str,
    ) -> Result<super::Login, Error> {
        let refuse = |why: &str| Error::AuthorizationResponse(why.to_owned());
        let mut params = std::collections::HashMap::new();
        for (name, value) in url::form_urlencoded::parse(callback_query.as_bytes()) {
            if params.insert(name.clone(), value).is_some() {
                return Err(refuse(&format!(
                    "its {} is repeated",
                    crate::error::sanitize(&name, 32)
                )));
            }
        }
        let state_ok = params.get("state").is_some_and(|state| {
            let (a, b) = (state.as_bytes(), started.state.as_bytes());
            a.len() == b.len() && a.iter().zip(b).fold(0, |acc, (x, y)| acc | (x ^ y)) == 0
        });
        if !state_ok {
            return Err(refuse("its state is not the login's"));
        }
        self.check_callback_issuer(params.get("iss").map(|v| v.as_ref()))
            .await?;
        if let Some(error) = params.get("error") {
            return Err(refuse(&format!(
                "the provider refused the login: {}",
                crate::error::sanitize(error, 64)
            )));
        }
        let code = params.get("code").ok_or_else(|| refuse("it has no code"))?;
        self.complete_login(&super::LoginRequest {
            code,
            code_verifier: &started.code_verifier,
            redirect_uri: &started.redirect_uri,
            nonce: &started.nonce,
            resource: started.resource.as_ref(),
            dpop: started.dpop.as_ref(),
            requirements: Some(&started.requirements),
        })
        .await
    }

    /// Checks a callback's RFC 9207 `iss`: when present it must be the issuer; when absent the
    /// callback is refused if the provider says it sends one
    /// (`authorization_response_iss_parameter_supported`) or the profile is FAPI 2.0 (which
    /// asks for it). [`Error::AuthorizationResponse`] otherwise.
    pub async fn check_callback_issuer(&self, iss: Option<&str>) -> Result<(), Error> {
        let discovery = self.endpoint().discovery().cloned().ok_or_else(|| {
            Error::Config(ConfigError::new(
                "client",
                "checking a callback needs a manager built from the issuer (ClientConfig::from_issuer)",
            ))
        })?;
        match iss {
            Some(iss) if iss == discovery.issuer() => Ok(()),
            Some(_) => Err(Error::AuthorizationResponse(
                "its iss is not the issuer (RFC 9207)".into(),
            )),
            None => {
                let metadata = discovery.metadata().await?;
                let announced = metadata
                    .extra
                    .get("authorization_response_iss_parameter_supported")
                    .and_then(serde_json::Value::as_bool)
                    .unwrap_or(false);
                if announced || self.profile() == crate::protocol::profile::Profile::Fapi2 {
                    Err(Error::AuthorizationResponse(
                        "it has no iss (RFC 9207)".into(),
                    ))
                } else {
                    Ok(())
                }
            }
        }
    }
}
