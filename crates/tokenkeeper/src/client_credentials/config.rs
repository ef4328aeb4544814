//! Client configuration.

use std::collections::BTreeMap;
use std::fmt;

use url::Url;

use crate::error::ConfigError;
use crate::protocol::client_auth::AuthMethod;
use crate::protocol::token_request::RESERVED_PARAMS;
use crate::protocol::types::{Resource, Scope};
use crate::secret::ClientSecret;

/// Where a client's token endpoint is.
#[derive(Clone, Debug)]
pub(crate) enum EndpointConfig {
    TokenEndpoint(String),
    Issuer(String),
}

/// The configuration of one client-credentials client.
///
/// Nothing is checked until the manager is built; then every problem is reported with the name of
/// the field and of the client.
///
/// ```
/// use tokenkeeper::{AuthMethod, ClientConfig};
/// let config = ClientConfig::new("https://idp.example.com/token", "worker", "secret")
///     .scope("orders.read orders.write")
///     .resource("https://orders.example.com")
///     .extra("tenant", "acme")
///     .auth_method(AuthMethod::ClientSecretPost);
/// # let _ = config;
/// ```
#[derive(Clone)]
pub struct ClientConfig {
    pub(crate) endpoint: EndpointConfig,
    pub(crate) client_id: String,
    pub(crate) client_secret: Option<ClientSecret>,
    pub(crate) auth_method: AuthMethod,
    pub(crate) scope: Option<String>,
    pub(crate) resources: Vec<String>,
    pub(crate) extra: Vec<(String, String)>,
    pub(crate) destinations: Vec<String>,
    pub(crate) allow_insecure_http: bool,
    pub(crate) assertions:
        Option<std::sync::Arc<dyn crate::protocol::client_assertion::ClientAssertionProvider>>,
    pub(crate) dpop: Option<std::sync::Arc<crate::dpop::DpopKey>>,
    pub(crate) require_dpop: bool,
    pub(crate) grant_assertions:
        Option<std::sync::Arc<dyn crate::protocol::client_assertion::ClientAssertionProvider>>,
    pub(crate) mtls: Option<std::sync::Arc<crate::mtls::MtlsIdentity>>,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("endpoint", &self.endpoint)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("auth_method", &self.auth_method)
            .field("scope", &self.scope)
            .field("resources", &self.resources)
            .field("extra", &self.extra)
            .field("destinations", &self.destinations)
            .field("allow_insecure_http", &self.allow_insecure_http)
            .field("assertions", &self.assertions)
            .field("dpop", &self.dpop)
            .field("require_dpop", &self.require_dpop)
            .field("grant_assertions", &self.grant_assertions)
            .field("mtls", &self.mtls)
            .finish()
    }
}

impl ClientConfig {
    /// A client of the token endpoint at `token_endpoint`, authenticating with
    /// `client_secret_basic`.
    pub fn new(
        token_endpoint: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: impl Into<ClientSecret>,
    ) -> Self {
        Self {
            endpoint: EndpointConfig::TokenEndpoint(token_endpoint.into()),
            client_id: client_id.into(),
            client_secret: Some(client_secret.into()),
            auth_method: AuthMethod::ClientSecretBasic,
            scope: None,
            resources: Vec::new(),
            extra: Vec::new(),
            destinations: Vec::new(),
            allow_insecure_http: false,
            assertions: None,
            dpop: None,
            require_dpop: false,
            grant_assertions: None,
            mtls: None,
        }
    }

    /// A client of the issuer at `issuer`, whose token endpoint is found by discovery
    /// (OpenID Connect Discovery or RFC 8414).
    pub fn from_issuer(
        issuer: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: impl Into<ClientSecret>,
    ) -> Self {
        let mut config = Self::new(String::new(), client_id, client_secret);
        config.endpoint = EndpointConfig::Issuer(issuer.into());
        config
    }

    /// The issuer, for a client built with [`ClientConfig::from_issuer`].
    pub(crate) fn issuer(&self) -> Option<&str> {
        match &self.endpoint {
            EndpointConfig::Issuer(issuer) => Some(issuer),
            EndpointConfig::TokenEndpoint(_) => None,
        }
    }

    /// How the client authenticates (default `client_secret_basic`). For `private_key_jwt` use
    /// [`ClientConfig::private_key_jwt`]; `client_secret_jwt` signs with the client secret.
    pub fn auth_method(mut self, method: AuthMethod) -> Self {
        self.auth_method = method;
        self
    }

    /// Gets tokens with the JWT bearer grant (RFC 7523 §2.1) instead of `client_credentials`:
    /// each token request carries an `assertion` from `provider` — a workload identity token
    /// read from a file ([`FileAssertion`](crate::FileAssertion), as Kubernetes projects
    /// service-account tokens), or one signed here ([`PrivateKeyJwt`](crate::PrivateKeyJwt)).
    /// The client still authenticates as configured (use [`AuthMethod::None`] with an empty
    /// secret for a client that does not).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tokenkeeper::{AuthMethod, ClientConfig, FileAssertion};
    /// let config = ClientConfig::new("https://idp.example.com/token", "workload", "")
    ///     .auth_method(AuthMethod::None)
    ///     .jwt_bearer_grant(Arc::new(FileAssertion::new("/var/run/secrets/tokens/idp-token")));
    /// # let _ = config;
    /// ```
    pub fn jwt_bearer_grant(
        mut self,
        provider: std::sync::Arc<dyn crate::protocol::client_assertion::ClientAssertionProvider>,
    ) -> Self {
        self.grant_assertions = Some(provider);
        self
    }

    /// Talks to the authorization server over mutual TLS with `identity` (RFC 8705): its
    /// tokens are bound to the certificate (`cnf.x5t#S256`; the thumbprint is in the cache
    /// key), the provider's `mtls_endpoint_aliases` are used when discovery publishes them, and
    /// `method` is how the client authenticates — [`AuthMethod::TlsClientAuth`] or
    /// [`AuthMethod::SelfSignedTlsClientAuth`] (the certificate itself; no secret), or any other
    /// method for certificate-bound tokens only. Present the tokens over the same certificate:
    /// [`MtlsIdentity::http_client`](crate::mtls::MtlsIdentity::http_client). See
    /// [`crate::mtls`].
    pub fn mtls(
        mut self,
        identity: std::sync::Arc<crate::mtls::MtlsIdentity>,
        method: AuthMethod,
    ) -> Self {
        self.mtls = Some(identity);
        self.auth_method = method;
        self
    }

    /// Authenticates with `private_key_jwt` (RFC 7523): `provider` makes a fresh signed
    /// assertion for every request (token requests and their retries, revocation). No secret
    /// is needed (pass `""` to the constructor).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tokenkeeper::dpop::{DpopAlgorithm, DpopKey};
    /// use tokenkeeper::{ClientConfig, PrivateKeyJwt};
    /// let signer = PrivateKeyJwt::new(DpopKey::generate(DpopAlgorithm::ES256)?);
    /// let config = ClientConfig::new("https://idp.example.com/token", "worker", "")
    ///     .private_key_jwt(Arc::new(signer));
    /// # let _ = config; Ok::<(), tokenkeeper::Error>(())
    /// ```
    pub fn private_key_jwt(
        mut self,
        provider: std::sync::Arc<dyn crate::protocol::client_assertion::ClientAssertionProvider>,
    ) -> Self {
        self.auth_method = AuthMethod::PrivateKeyJwt;
        self.assertions = Some(provider);
        self
    }

    /// Asks for DPoP-bound tokens (RFC 9449), proving possession of `key`: every token request
    /// carries a proof, and the middleware and tower layer send each request with the `DPoP`
    /// scheme and a fresh proof. Give several clients the same `Arc` to share one key; the
    /// key's thumbprint is part of the cache key, so tokens bound to different keys never mix.
    ///
    /// A server that ignores the proof and answers a Bearer token gets a warning and a count
    /// (`tokenkeeper_dpop_downgrades_total`) and the token is sent as Bearer, unless
    /// [`ClientConfig::require_dpop`] makes that an error.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tokenkeeper::dpop::{DpopAlgorithm, DpopKey};
    /// use tokenkeeper::ClientConfig;
    /// let key = Arc::new(DpopKey::generate(DpopAlgorithm::ES256)?);
    /// let config = ClientConfig::new("https://idp.example.com/token", "worker", "secret")
    ///     .dpop(key)
    ///     .require_dpop(true);
    /// # let _ = config; Ok::<(), tokenkeeper::Error>(())
    /// ```
    pub fn dpop(mut self, key: std::sync::Arc<crate::dpop::DpopKey>) -> Self {
        self.dpop = Some(key);
        self
    }

    /// With DPoP: refuse a token that the server did not bind to the key
    /// ([`Error::DpopRequired`](crate::Error::DpopRequired)) instead of using it as a Bearer
    /// token (default `false`: warn and count). Set it when the API accepts only DPoP, or when
    /// a Bearer token must not exist for this client.
    pub fn require_dpop(mut self, require: bool) -> Self {
        self.require_dpop = require;
        self
    }

    /// The client authentication this configuration describes (checked by `validate`).
    pub(crate) fn authentication(&self) -> crate::protocol::client_auth::ClientAuthentication {
        use crate::protocol::client_auth::ClientAuthentication;
        use crate::protocol::types::ClientId;
        let client_id = ClientId::new(self.client_id.clone());
        let secret = self.client_secret.clone().unwrap_or_else(|| "".into());
        match (self.auth_method, &self.assertions) {
            (AuthMethod::ClientSecretPost, _) => ClientAuthentication::ClientSecretPost {
                client_id,
                client_secret: secret,
            },
            (AuthMethod::None, _) => ClientAuthentication::None { client_id },
            (AuthMethod::TlsClientAuth, _) => ClientAuthentication::Tls {
                client_id,
                self_signed: false,
            },
            (AuthMethod::SelfSignedTlsClientAuth, _) => ClientAuthentication::Tls {
                client_id,
                self_signed: true,
            },
            (AuthMethod::ClientSecretJwt, _) => ClientAuthentication::ClientSecretJwt {
                client_id,
                client_secret: secret,
            },
            (AuthMethod::PrivateKeyJwt, Some(provider)) => ClientAuthentication::PrivateKeyJwt {
                client_id,
                provider: provider.clone(),
            },
            // `validate` refuses private_key_jwt without a provider.
            (AuthMethod::ClientSecretBasic | AuthMethod::PrivateKeyJwt, _) => {
                ClientAuthentication::ClientSecretBasic {
                    client_id,
                    client_secret: secret,
                }
            }
        }
    }

    /// The scope to request, space-separated.
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// A resource indicator to request (RFC 8707); call again for more.
    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        self.resources.push(resource.into());
        self
    }

    /// An extra form parameter sent with every token request.
    pub fn extra(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra.push((name.into(), value.into()));
        self
    }

    /// An origin (`https://api.example.com`) this client's tokens may be sent to; call again
    /// for more. Once one is named, the HTTP integrations refuse to attach the token to a
    /// request for any other origin ([`crate::Error::DestinationNotAllowed`]). Without any,
    /// every origin is allowed.
    pub fn destination(mut self, origin: impl Into<String>) -> Self {
        self.destinations.push(origin.into());
        self
    }

    /// Accepts plain `http://` endpoints on hosts other than loopback (`127.0.0.0/8`, `::1`,
    /// `localhost`), where tokens and secrets then travel unencrypted. Off by default: only for
    /// a private network you trust (SEC-10).
    pub fn allow_insecure_http(mut self, allow: bool) -> Self {
        self.allow_insecure_http = allow;
        self
    }

    pub(crate) fn validate(&self) -> Result<ValidatedClient, ConfigError> {
        let endpoint = match &self.endpoint {
            EndpointConfig::TokenEndpoint(raw) => ValidatedEndpoint::Url(parse_endpoint_url(
                raw,
                "token_endpoint",
                self.allow_insecure_http,
            )?),
            EndpointConfig::Issuer(raw) => {
                parse_endpoint_url(raw, "issuer", self.allow_insecure_http)?;
                ValidatedEndpoint::Issuer(raw.clone())
            }
        };
        if self.require_dpop && self.dpop.is_none() {
            return Err(ConfigError::new(
                "require_dpop",
                "is set, but the client has no DPoP key: use `ClientConfig::dpop`",
            ));
        }
        if self.client_id.trim().is_empty() {
            return Err(ConfigError::new("client_id", "is empty"));
        }
        if self.client_id.chars().any(char::is_control) {
            return Err(ConfigError::new("client_id", "has control characters"));
        }
        match (&self.client_secret, self.auth_method) {
            (_, AuthMethod::None) => {}
            (_, AuthMethod::TlsClientAuth | AuthMethod::SelfSignedTlsClientAuth) => {
                if self.mtls.is_none() {
                    return Err(ConfigError::new(
                        "auth_method",
                        format!(
                            "{} needs a client certificate: use `ClientConfig::mtls`",
                            self.auth_method.as_str()
                        ),
                    ));
                }
            }
            (_, AuthMethod::PrivateKeyJwt) => {
                if self.assertions.is_none() {
                    return Err(ConfigError::new(
                        "auth_method",
                        "private_key_jwt needs an assertion provider: use `ClientConfig::private_key_jwt`",
                    ));
                }
            }
            (Some(secret), _) if !secret.is_empty() => {}
            _ => {
                return Err(ConfigError::new(
                    "client_secret",
                    format!("is empty, but {} needs one", self.auth_method.as_str()),
                ))
            }
        }
        let scope = match &self.scope {
            Some(raw) => {
                let scope = Scope::parse(raw);
                scope.validate("scope")?;
                Some(scope).filter(|s| !s.is_empty())
            }
            None => None,
        };
        let mut resources = self
            .resources
            .iter()
            .map(|r| Resource::parse(r.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        resources.sort();
        resources.dedup();
        let extra = validate_extra(&self.extra, "extra")?;
        let destinations = if self.destinations.is_empty() {
            None
        } else {
            Some(crate::destinations::Destinations::parse(
                &self.destinations,
            )?)
        };
        Ok(ValidatedClient {
            endpoint,
            scope,
            resources,
            extra,
            destinations,
        })
    }
}

pub(crate) enum ValidatedEndpoint {
    Url(Url),
    Issuer(String),
}

pub(crate) struct ValidatedClient {
    pub(crate) endpoint: ValidatedEndpoint,
    pub(crate) scope: Option<Scope>,
    pub(crate) resources: Vec<Resource>,
    pub(crate) extra: BTreeMap<String, String>,
    pub(crate) destinations: Option<crate::destinations::Destinations>,
}

/// Whether `url`'s host is a loopback host, where plain http never leaves the machine.
pub(crate) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(host)) => {
            host.eq_ignore_ascii_case("localhost")
                || host.to_ascii_lowercase().ends_with(".localhost")
        }
        None => false,
    }
}

/// An http(s) URL; plain `http` only on a loopback host unless `allow_insecure_http` (SEC-10).
pub(crate) fn parse_endpoint_url(
    raw: &str,
    field: &'static str,
    allow_insecure_http: bool,
) -> Result<Url, ConfigError> {
    let url = parse_http_url(raw, field)?;
    if url.scheme() == "http" && !allow_insecure_http && !is_loopback(&url) {
        return Err(ConfigError::new(
            field,
            format!(
                "{raw:?} is plain http on a host that is not loopback; use https, or opt in with `allow_insecure_http(true)`"
            ),
        ));
    }
    Ok(url)
}

pub(crate) fn parse_http_url(raw: &str, field: &'static str) -> Result<Url, ConfigError> {
    if raw.trim().is_empty() {
        return Err(ConfigError::new(field, "is empty"));
    }
    let url = Url::parse(raw)
        .map_err(|e| ConfigError::new(field, format!("{raw:?} is not a valid URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConfigError::new(
            field,
            format!("{raw:?} must use https (or http for local development)"),
        ));
    }
    if url.fragment().is_some() {
        return Err(ConfigError::new(
            field,
            format!("{raw:?} must not have a fragment"),
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::new(
            field,
            "must not carry credentials in the URL; use the client secret",
        ));
    }
    Ok(url)
}

pub(crate) fn validate_extra(
    extra: &[(String, String)],
    field: &'static str,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut out = BTreeMap::new();
    for (name, value) in extra {
        if name.is_empty() {
            return Err(ConfigError::new(
                field,
                "has a parameter with an empty name",
            ));
        }
        if RESERVED_PARAMS.contains(&name.as_str()) {
            return Err(ConfigError::new(
                field,
                format!(
                    "parameter {name:?} is set by tokenkeeper itself; use the dedicated setting"
                ),
            ));
        }
        if out.insert(name.clone(), value.clone()).is_some() {
            return Err(ConfigError::new(
                field,
                format!("parameter {name:?} is given twice (servers refuse repeated parameters)"),
            ));
        }
    }
    Ok(out)
}

impl ClientConfig {
    /// Validates the configuration and builds its token endpoint client (discovery included).
    pub(crate) fn endpoint(
        &self,
        name: &str,
        transport: &crate::http::SharedTransport,
        clock: &std::sync::Arc<dyn crate::clock::Clock>,
        discovery_lifetime: std::time::Duration,
    ) -> Result<
        (
            crate::protocol::token_endpoint::TokenEndpoint,
            ValidatedClient,
        ),
        ConfigError,
    > {
        let validated = self.validate().map_err(|e| e.for_client(name))?;
        let auth = self.authentication();
        let dpop = |endpoint: crate::protocol::token_endpoint::TokenEndpoint| {
            self.with_dpop(endpoint, clock, None)
                .mtls_aliases(self.mtls.is_some())
        };
        // Discovery goes over the shared transport; the endpoint's requests (token, revocation,
        // introspection) over the client certificate, when there is one.
        let discovery_transport = transport;
        let transport = &self.transport_for(transport);
        let endpoint = match &validated.endpoint {
            ValidatedEndpoint::Url(url) => {
                dpop(crate::protocol::token_endpoint::TokenEndpoint::new(
                    url.clone(),
                    auth,
                    transport.clone(),
                ))
            }
            ValidatedEndpoint::Issuer(issuer) => {
                let discovery = crate::protocol::discovery::Discovery::new(
                    issuer.clone(),
                    discovery_transport.clone(),
                    clock.clone(),
                )
                .map_err(|e| e.for_client(name))?
                .with_lifetime(discovery_lifetime)
                .allow_insecure_http(self.allow_insecure_http);
                dpop(
                    crate::protocol::token_endpoint::TokenEndpoint::from_discovery(
                        std::sync::Arc::new(discovery),
                        auth,
                        transport.clone(),
                    ),
                )
            }
        };
        Ok((endpoint, validated))
    }

    /// The transport of this client's requests to the authorization server: over its client
    /// certificate (mTLS), or `shared`.
    pub(crate) fn transport_for(
        &self,
        shared: &crate::http::SharedTransport,
    ) -> crate::http::SharedTransport {
        match &self.mtls {
            Some(identity) => std::sync::Arc::new(crate::mtls::MtlsTransport {
                identity: identity.clone(),
            }),
            None => shared.clone(),
        }
    }

    /// `endpoint` with this client's DPoP settings and `clock` (and `nonces`, the store shared
    /// by the endpoints of one manager, when given).
    pub(crate) fn with_dpop(
        &self,
        endpoint: crate::protocol::token_endpoint::TokenEndpoint,
        clock: &std::sync::Arc<dyn crate::clock::Clock>,
        nonces: Option<&std::sync::Arc<crate::dpop::NonceStore>>,
    ) -> crate::protocol::token_endpoint::TokenEndpoint {
        let mut endpoint = endpoint
            .with_clock(clock.clone())
            .require_dpop(self.require_dpop);
        if let Some(nonces) = nonces {
            endpoint = endpoint.with_nonce_store(nonces.clone());
        }
        match &self.dpop {
            Some(key) => endpoint.dpop(key.clone()),
            None => endpoint,
        }
    }
}
