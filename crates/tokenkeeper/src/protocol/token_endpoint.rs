//! The token endpoint client.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method};
use url::Url;

use crate::clock::{Clock, TokioClock};
use crate::dpop::{DpopKey, NonceStore, ProofRequest};
use crate::error::Error;
use crate::http::{redact_url, HttpRequest, HttpResponse, SharedTransport};
use crate::protocol::client_auth::ClientAuthentication;
use crate::protocol::discovery::Discovery;
use crate::protocol::token_request::TokenRequest;
use crate::protocol::token_response::{parse_token_response, TokenResponse};
use crate::protocol::types::TokenType;

/// The `DPoP` request header.
pub(crate) const DPOP: http::HeaderName = http::HeaderName::from_static("dpop");

/// How many servers' nonces one endpoint's default store keeps.
const AS_NONCE_ORIGINS: usize = 16;

/// Whether a failed DPoP token request should be retried: the server said `use_dpop_nonce` (or
/// `invalid_dpop_proof`) and gave a nonce other than the one sent (PK-02, PK-10).
fn asks_for_new_nonce(
    result: &Result<TokenResponse, Error>,
    response: &HttpResponse,
    sent: Option<&str>,
) -> bool {
    let Err(error) = result else { return false };
    if !matches!(
        error.oauth_error(),
        Some("use_dpop_nonce" | "invalid_dpop_proof")
    ) {
        return false;
    }
    match crate::dpop::challenge::dpop_nonce(&response.headers) {
        Some(new) => Some(new) != sent,
        None => false,
    }
}

/// Where the token endpoint is: a fixed URL, or found through discovery.
#[derive(Clone, Debug)]
pub enum EndpointLocation {
    /// A fixed URL.
    Url(Url),
    /// The `token_endpoint` of the issuer's metadata.
    Discovery(Arc<Discovery>),
}

/// Sends token requests for one client: builds the form, authenticates the client, reads and
/// validates the response.
///
/// ```no_run
/// # async fn run() -> Result<(), tokenkeeper::Error> {
/// use std::sync::Arc;
/// use tokenkeeper::{ClientAuthentication, Grant, HttpOptions, ReqwestTransport, TokenEndpoint, TokenRequest};
/// let transport = Arc::new(ReqwestTransport::new(&HttpOptions::default())?);
/// let endpoint = TokenEndpoint::new(
///     "https://idp.example.com/token".parse().unwrap(),
///     ClientAuthentication::ClientSecretBasic {
///         client_id: "worker".into(),
///         client_secret: "secret".into(),
///     },
///     transport,
/// );
/// let response = endpoint.request(&TokenRequest::new(Grant::ClientCredentials)).await?;
/// # let _ = response; Ok(()) }
/// ```
///
/// # DPoP
///
/// With a key ([`TokenEndpoint::dpop`], or per request with [`TokenEndpoint::request_with`])
/// every request carries a proof (RFC 9449 §5). The server's nonce is kept in a
/// [`NonceStore`] (fed from every response); a `400 use_dpop_nonce` (or `invalid_dpop_proof`)
/// that brings a new nonce is retried exactly once, with a fresh proof and a fresh client
/// assertion (PK-02). A server that answers a DPoP request with a Bearer token is logged and
/// counted (`tokenkeeper_dpop_downgrades_total`), or refused with [`Error::DpopRequired`] when
/// [`TokenEndpoint::require_dpop`] is set (PK-12).
#[derive(Clone)]
pub struct TokenEndpoint {
    location: EndpointLocation,
    auth: ClientAuthentication,
    transport: SharedTransport,
    dpop: Option<Arc<DpopKey>>,
    require_dpop: bool,
    nonces: Arc<NonceStore>,
    clock: Arc<dyn Clock>,
    /// Use the provider's `mtls_endpoint_aliases` (a client with a TLS certificate).
    mtls_aliases: bool,
    /// The `aud` of client assertions: the issuer (FAPI 2.0), or by default the URL of the
    /// token endpoint.
    assertion_audience: Option<String>,
}

impl fmt::Debug for TokenEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let location = match &self.location {
            EndpointLocation::Url(url) => redact_url(url),
            EndpointLocation::Discovery(d) => format!("discovery({})", d.issuer()),
        };
        f.debug_struct("TokenEndpoint")
            .field("location", &location)
            .field("auth", &self.auth.method())
            .field("client_id", self.auth.client_id())
            .field("dpop", &self.dpop.as_ref().map(|k| k.thumbprint()))
            .finish()
    }
}

impl TokenEndpoint {
    /// A client of the token endpoint at `url`.
    pub fn new(url: Url, auth: ClientAuthentication, transport: SharedTransport) -> Self {
        Self {
            location: EndpointLocation::Url(url),
            auth,
            transport,
            dpop: None,
            require_dpop: false,
            nonces: Arc::new(NonceStore::new(AS_NONCE_ORIGINS)),
            clock: Arc::new(TokioClock::new()),
            mtls_aliases: false,
            assertion_audience: None,
        }
    }

    /// The `aud` of every client assertion (`private_key_jwt`, `client_secret_jwt`), whatever
    /// endpoint is called: the issuer, as FAPI 2.0 asks. By default it is the token endpoint's
    /// URL.
    pub fn assertion_audience(mut self, audience: impl Into<String>) -> Self {
        self.assertion_audience = Some(audience.into());
        self
    }

    /// The audience of a client assertion sent to `url`.
    fn audience_for(&self, url: &Url) -> String {
        self.assertion_audience
            .clone()
            .unwrap_or_else(|| url.to_string())
    }

    /// Sends a DPoP proof made with `key` on every request (unless [`TokenEndpoint::request_with`]
    /// names another key).
    pub fn dpop(mut self, key: Arc<DpopKey>) -> Self {
        self.dpop = Some(key);
        self
    }

    /// Refuses a non-DPoP token answered to a DPoP request ([`Error::DpopRequired`]) instead of
    /// logging a warning and using it as a Bearer token.
    pub fn require_dpop(mut self, require: bool) -> Self {
        self.require_dpop = require;
        self
    }

    /// Keeps the server's DPoP nonces in `nonces` (to share one store between the endpoints of
    /// one server).
    pub fn with_nonce_store(mut self, nonces: Arc<NonceStore>) -> Self {
        self.nonces = nonces;
        self
    }

    /// Dates proofs with `clock` (default [`TokioClock`]).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The DPoP key of every request, if one is set.
    pub fn dpop_key(&self) -> Option<&Arc<DpopKey>> {
        self.dpop.as_ref()
    }

    /// A client of the token endpoint named by the issuer's discovery metadata.
    pub fn from_discovery(
        discovery: Arc<Discovery>,
        auth: ClientAuthentication,
        transport: SharedTransport,
    ) -> Self {
        Self {
            location: EndpointLocation::Discovery(discovery),
            ..Self::new(
                Url::parse("http://discovery.invalid/").unwrap_or_else(|_| unreachable!()),
                auth,
                transport,
            )
        }
    }

    /// Uses the provider's `mtls_endpoint_aliases` when discovery publishes them (RFC 8705
    /// §5): for a client whose transport presents a TLS certificate.
    pub fn mtls_aliases(mut self, yes: bool) -> Self {
        self.mtls_aliases = yes;
        self
    }

    /// Whether the provider's `mtls_endpoint_aliases` are used.
    pub fn uses_mtls_aliases(&self) -> bool {
        self.mtls_aliases
    }

    /// The transport of this client's requests to the authorization server (over its TLS
    /// certificate, for a client with one).
    pub fn transport(&self) -> &SharedTransport {
        &self.transport
    }

    /// The client authentication in use.
    pub fn authentication(&self) -> &ClientAuthentication {
        &self.auth
    }

    /// The endpoint URL (fetching discovery metadata if needed).
    pub async fn url(&self) -> Result<Url, Error> {
        match &self.location {
            EndpointLocation::Url(url) => Ok(url.clone()),
            EndpointLocation::Discovery(discovery) => {
                let metadata = discovery.metadata().await?;
                let alias = metadata
                    .mtls_endpoint_aliases
                    .as_ref()
                    .and_then(|a| a.token_endpoint.as_ref())
                    .filter(|_| self.mtls_aliases);
                Ok(alias.unwrap_or(&metadata.token_endpoint).clone())
            }
        }
    }

    /// Sends `request` and returns the validated response (with a DPoP proof when the endpoint
    /// has a key).
    pub async fn request(&self, request: &TokenRequest) -> Result<TokenResponse, Error> {
        self.request_with(request, self.dpop.as_deref()).await
    }

    /// Sends `request` with a proof made with `dpop` (none: no proof), and returns the
    /// validated response.
    #[tracing::instrument(name = "tokenkeeper.token_request", skip_all, fields(grant = request.grant().grant_type(), client_id = %self.auth.client_id(), dpop = dpop.is_some()))]
    pub async fn request_with(
        &self,
        request: &TokenRequest,
        dpop: Option<&DpopKey>,
    ) -> Result<TokenResponse, Error> {
        let url = self.url().await?;
        let mut retried = false;
        let result = loop {
            let mut http_request = self.http_request(url.clone(), request).await?;
            let sent_nonce = match dpop {
                Some(key) => Some(self.add_proof(key, &mut http_request)?),
                None => None,
            };
            let response = self.transport.send(http_request).await?;
            self.nonces.update(&url, &response.headers);
            let result = parse_token_response(&response);
            if let (Some(sent), false) = (&sent_nonce, retried) {
                if asks_for_new_nonce(&result, &response, sent.as_deref()) {
                    tracing::debug!("the server asks for a new DPoP nonce; retrying once");
                    retried = true;
                    continue;
                }
            }
            break result;
        };
        match result {
            Ok(response) if dpop.is_some() => self.check_binding(response),
            Ok(response) => Ok(response),
            Err(e) if dpop.is_some() && e.oauth_error() == Some("use_dpop_nonce") => {
                Err(Error::DpopNonce {
                    endpoint: redact_url(&url),
                    detail: if retried {
                        "it refused the nonce it had just given".into()
                    } else {
                        "it gave no new nonce to retry with".into()
                    },
                })
            }
            Err(e) => {
                tracing::debug!(error = %e, "token request failed");
                Err(e)
            }
        }
    }

    /// Adds a proof to a request for the token endpoint; returns the nonce it carries.
    fn add_proof(&self, key: &DpopKey, request: &mut HttpRequest) -> Result<Option<String>, Error> {
        let nonce = self.nonces.get(&request.url);
        let proof = key.proof(
            &ProofRequest {
                method: "POST",
                url: &request.url,
                access_token: None,
                nonce: nonce.as_deref(),
            },
            self.clock.now(),
        )?;
        let value = HeaderValue::try_from(proof)
            .map_err(|_| Error::Internal("a DPoP proof is not a header value".into()))?;
        request.headers.insert(DPOP, value);
        Ok(nonce)
    }

    /// PK-12: what to do with a non-DPoP token answered to a DPoP request.
    fn check_binding(&self, response: TokenResponse) -> Result<TokenResponse, Error> {
        if response.token_type == TokenType::DPoP {
            return Ok(response);
        }
        if self.require_dpop {
            return Err(Error::DpopRequired {
                token_type: crate::error::sanitize(response.token_type.scheme(), 40),
            });
        }
        crate::metrics::dpop_downgrade(self.auth.client_id().as_str());
        tracing::warn!(
            client_id = %self.auth.client_id(),
            token_type = %crate::error::sanitize(response.token_type.scheme(), 40),
            "the server answered a DPoP token request with a token that is not DPoP-bound; it is sent as a Bearer token"
        );
        Ok(response)
    }

    /// Revokes `token` at the revocation endpoint `url` (RFC 7009), authenticating as for the
    /// token endpoint (with a fresh assertion for the assertion methods). A 200 means revoked
    /// (or unknown, which is the same to the caller).
    #[tracing::instrument(name = "tokenkeeper.revoke", skip_all, fields(client_id = %self.auth.client_id()))]
    pub async fn revoke(&self, url: Url, token: &str, token_type_hint: &str) -> Result<(), Error> {
        let form = vec![
            ("token".to_owned(), token.to_owned()),
            ("token_type_hint".to_owned(), token_type_hint.to_owned()),
        ];
        let response = self.authenticated_post(url, form).await?;
        if response.status.is_success() {
            Ok(())
        } else {
            Err(crate::protocol::token_response::parse_error_response(
                &response,
            ))
        }
    }

    /// Introspects `token` at the introspection endpoint `url` (RFC 7662), authenticating as
    /// for the token endpoint (with a fresh assertion for the assertion methods); returns the
    /// response's members (`active` and, when active, the token's claims).
    ///
    /// ```no_run
    /// # async fn run(endpoint: tokenkeeper::TokenEndpoint) -> Result<(), tokenkeeper::Error> {
    /// let url = "https://idp.example.com/introspect".parse().unwrap();
    /// let claims = endpoint.introspect(url, "a-token", Some("access_token")).await?;
    /// if claims.get("active") == Some(&serde_json::Value::Bool(true)) { /* ... */ }
    /// # Ok(()) }
    /// ```
    #[tracing::instrument(name = "tokenkeeper.introspect", skip_all, fields(client_id = %self.auth.client_id()))]
    pub async fn introspect(
        &self,
        url: Url,
        token: &str,
        token_type_hint: Option<&str>,
    ) -> Result<serde_json::Map<String, serde_json::Value>, Error> {
        let mut form = vec![("token".to_owned(), token.to_owned())];
        if let Some(hint) = token_type_hint {
            form.push(("token_type_hint".to_owned(), hint.to_owned()));
        }
        let response = self.authenticated_post(url, form).await?;
        if !response.status.is_success() {
            return Err(crate::protocol::token_response::parse_error_response(
                &response,
            ));
        }
        match serde_json::from_slice::<serde_json::Value>(&response.body) {
            Ok(serde_json::Value::Object(members))
                if members
                    .get("active")
                    .is_some_and(serde_json::Value::is_boolean) =>
            {
                Ok(members)
            }
            _ => Err(crate::error::InvalidResponse::new(
                Some(response.status.as_u16()),
                "the introspection response is not a JSON object with a boolean `active`",
            )
            .into()),
        }
    }

    /// POSTs `form` to `url` — another endpoint of the authorization server (pushed
    /// authorization, device authorization) — with this client's authentication (a fresh
    /// assertion each time) and, with `dpop`, a DPoP proof of that key: a `use_dpop_nonce`
    /// answer that brings a new nonce is retried once, like a token request. The response is
    /// the caller's to read.
    pub async fn post_authenticated(
        &self,
        url: Url,
        form: Vec<(String, String)>,
        dpop: Option<&DpopKey>,
    ) -> Result<HttpResponse, Error> {
        let Some(key) = dpop else {
            return self.authenticated_post(url, form).await;
        };
        let mut retried = false;
        loop {
            let mut request = self
                .authenticated_request(url.clone(), form.clone())
                .await?;
            let sent = self.add_proof(key, &mut request)?;
            let response = self.transport.send(request).await?;
            self.nonces.update(&url, &response.headers);
            if !retried && !response.status.is_success() {
                let error = crate::protocol::token_response::parse_error_response(&response);
                if asks_for_new_nonce(&Err(error), &response, sent.as_deref()) {
                    retried = true;
                    continue;
                }
            }
            return Ok(response);
        }
    }

    /// The URL of the metadata's endpoint `name` (`pushed_authorization_request_endpoint`,
    /// `device_authorization_endpoint`, `userinfo_endpoint`), its `mtls_endpoint_aliases`
    /// entry for a client with a certificate; `None` when the provider publishes none (or the
    /// endpoint is not found by discovery).
    pub async fn metadata_endpoint(&self, name: &str) -> Result<Option<Url>, Error> {
        let Some(discovery) = self.discovery() else {
            return Ok(None);
        };
        let metadata = discovery.metadata().await?;
        let aliases = metadata.mtls_endpoint_aliases.as_ref();
        let (plain, alias) = match name {
            "pushed_authorization_request_endpoint" => (
                metadata.pushed_authorization_request_endpoint.clone(),
                aliases.and_then(|a| a.pushed_authorization_request_endpoint.clone()),
            ),
            "device_authorization_endpoint" => (
                metadata.device_authorization_endpoint.clone(),
                aliases.and_then(|a| a.device_authorization_endpoint.clone()),
            ),
            "userinfo_endpoint" => (
                metadata.userinfo_endpoint.clone(),
                aliases.and_then(|a| a.userinfo_endpoint.clone()),
            ),
            _ => (None, None),
        };
        Ok(alias.filter(|_| self.mtls_aliases).or(plain))
    }

    /// POSTs `form` to `url` with this client's authentication (a fresh assertion each time).
    async fn authenticated_post(
        &self,
        url: Url,
        form: Vec<(String, String)>,
    ) -> Result<HttpResponse, Error> {
        let request = self.authenticated_request(url, form).await?;
        Ok(self.transport.send(request).await?)
    }

    /// The authenticated form request to `url`.
    async fn authenticated_request(
        &self,
        url: Url,
        mut form: Vec<(String, String)>,
    ) -> Result<HttpRequest, Error> {
        let audience = match &self.assertion_audience {
            Some(audience) => audience.clone(),
            None => self.url().await?.to_string(),
        };
        let authorization = self.auth.authenticate(&mut form, &audience).await?;
        // A form that names the client itself (a pushed authorization request) and an
        // authentication that adds `client_id` too: once is enough (servers refuse repeats).
        let mut seen_client_id = false;
        form.retain(|(name, _)| {
            name != "client_id" || !std::mem::replace(&mut seen_client_id, true)
        });
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form.iter())
            .finish();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        if let Some(authorization) = authorization {
            headers.insert(header::AUTHORIZATION, authorization);
        }
        Ok(HttpRequest {
            method: Method::POST,
            url,
            headers,
            body: Bytes::from(body),
        })
    }

    /// The discovery in use, if the endpoint is found by discovery.
    pub fn discovery(&self) -> Option<&Arc<Discovery>> {
        match &self.location {
            EndpointLocation::Discovery(d) => Some(d),
            EndpointLocation::Url(_) => None,
        }
    }

    /// The exact HTTP request that [`TokenEndpoint::request`] sends to `url` (with a fresh
    /// client assertion, for the assertion methods).
    pub async fn http_request(
        &self,
        url: Url,
        request: &TokenRequest,
    ) -> Result<HttpRequest, Error> {
        let mut form = request.form();
        let audience = self.audience_for(&url);
        let authorization = self.auth.authenticate(&mut form, &audience).await?;
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form.iter())
            .finish();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        if let Some(authorization) = authorization {
            headers.insert(header::AUTHORIZATION, authorization);
        }
        Ok(HttpRequest {
            method: Method::POST,
            url,
            headers,
            body: Bytes::from(body),
        })
    }
}
