//! The token endpoint client.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method};
use url::Url;

use crate::error::Error;
use crate::http::{redact_url, HttpRequest, SharedTransport};
use crate::protocol::client_auth::ClientAuthentication;
use crate::protocol::discovery::Discovery;
use crate::protocol::token_request::TokenRequest;
use crate::protocol::token_response::{parse_token_response, TokenResponse};

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
#[derive(Clone)]
pub struct TokenEndpoint {
    location: EndpointLocation,
    auth: ClientAuthentication,
    transport: SharedTransport,
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
        }
    }

    /// A client of the token endpoint named by the issuer's discovery metadata.
    pub fn from_discovery(
        discovery: Arc<Discovery>,
        auth: ClientAuthentication,
        transport: SharedTransport,
    ) -> Self {
        Self {
            location: EndpointLocation::Discovery(discovery),
            auth,
            transport,
        }
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
                Ok(discovery.metadata().await?.token_endpoint.clone())
            }
        }
    }

    /// Sends `request` and returns the validated response.
    #[tracing::instrument(name = "tokenkeeper.token_request", skip_all, fields(grant = request.grant().grant_type(), client_id = %self.auth.client_id()))]
    pub async fn request(&self, request: &TokenRequest) -> Result<TokenResponse, Error> {
        let url = self.url().await?;
        let http_request = self.http_request(url, request).await?;
        let response = self.transport.send(http_request).await?;
        let result = parse_token_response(&response);
        if let Err(e) = &result {
            tracing::debug!(error = %e, "token request failed");
        }
        result
    }

    /// Revokes `token` at the revocation endpoint `url` (RFC 7009), authenticating as for the
    /// token endpoint (with a fresh assertion for the assertion methods). A 200 means revoked
    /// (or unknown, which is the same to the caller).
    #[tracing::instrument(name = "tokenkeeper.revoke", skip_all, fields(client_id = %self.auth.client_id()))]
    pub async fn revoke(&self, url: Url, token: &str, token_type_hint: &str) -> Result<(), Error> {
        let mut form = vec![
            ("token".to_owned(), token.to_owned()),
            ("token_type_hint".to_owned(), token_type_hint.to_owned()),
        ];
        let audience = self.url().await?;
        let authorization = self.auth.authenticate(&mut form, audience.as_str()).await?;
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form.iter())
            .finish();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        if let Some(authorization) = authorization {
            headers.insert(header::AUTHORIZATION, authorization);
        }
        let response = self
            .transport
            .send(HttpRequest {
                method: Method::POST,
                url,
                headers,
                body: Bytes::from(body),
            })
            .await?;
        if response.status.is_success() {
            Ok(())
        } else {
            Err(crate::protocol::token_response::parse_error_response(
                &response,
            ))
        }
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
        let authorization = self.auth.authenticate(&mut form, url.as_str()).await?;
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
