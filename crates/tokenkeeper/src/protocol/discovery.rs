//! Authorization server metadata: OpenID Connect Discovery 1.0 and RFC 8414.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use serde::Deserialize;
use url::Url;

use crate::clock::Clock;
use crate::error::{sanitize, Error};
use crate::http::{HttpRequest, SharedTransport};
use crate::protocol::refreshing::{Refreshing, Want};

/// The metadata of an authorization server (the fields tokenkeeper uses; the rest is in
/// [`ProviderMetadata::extra`]).
#[derive(Clone, Debug, Deserialize)]
#[non_exhaustive]
pub struct ProviderMetadata {
    /// `issuer`; equal to the configured issuer, or the metadata is refused.
    pub issuer: String,
    /// `token_endpoint`.
    pub token_endpoint: Url,
    /// `authorization_endpoint`.
    #[serde(default)]
    pub authorization_endpoint: Option<Url>,
    /// `jwks_uri`.
    #[serde(default)]
    pub jwks_uri: Option<Url>,
    /// `revocation_endpoint` (RFC 7009).
    #[serde(default)]
    pub revocation_endpoint: Option<Url>,
    /// `introspection_endpoint` (RFC 7662).
    #[serde(default)]
    pub introspection_endpoint: Option<Url>,
    /// `userinfo_endpoint`.
    #[serde(default)]
    pub userinfo_endpoint: Option<Url>,
    /// `end_session_endpoint` (RP-initiated logout).
    #[serde(default)]
    pub end_session_endpoint: Option<Url>,
    /// `token_endpoint_auth_methods_supported`.
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
    /// `mtls_endpoint_aliases` (RFC 8705 §5): the endpoints to use with a client certificate.
    #[serde(default)]
    pub mtls_endpoint_aliases: Option<MtlsEndpointAliases>,
    /// `pushed_authorization_request_endpoint` (RFC 9126).
    #[serde(default)]
    pub pushed_authorization_request_endpoint: Option<Url>,
    /// `require_pushed_authorization_requests` (RFC 9126 §5): every authorization request must
    /// be pushed.
    #[serde(default)]
    pub require_pushed_authorization_requests: bool,
    /// `device_authorization_endpoint` (RFC 8628).
    #[serde(default)]
    pub device_authorization_endpoint: Option<Url>,
    /// Every other member.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// The endpoints a client with a TLS certificate uses instead (RFC 8705 §5). Each must be
/// `https`.
#[derive(Clone, Debug, Default, Deserialize)]
#[non_exhaustive]
pub struct MtlsEndpointAliases {
    /// `token_endpoint`.
    #[serde(default)]
    pub token_endpoint: Option<Url>,
    /// `revocation_endpoint`.
    #[serde(default)]
    pub revocation_endpoint: Option<Url>,
    /// `introspection_endpoint`.
    #[serde(default)]
    pub introspection_endpoint: Option<Url>,
    /// `pushed_authorization_request_endpoint`.
    #[serde(default)]
    pub pushed_authorization_request_endpoint: Option<Url>,
    /// `device_authorization_endpoint`.
    #[serde(default)]
    pub device_authorization_endpoint: Option<Url>,
    /// `userinfo_endpoint`.
    #[serde(default)]
    pub userinfo_endpoint: Option<Url>,
}

/// Fetches and caches an issuer's metadata.
///
/// - The metadata is fetched on first use, kept for `lifetime` (default one hour) and then
///   fetched again; concurrent callers share one fetch (they wait on the same request, not in
///   turn).
/// - A failed fetch is remembered with a backoff (1 s, doubling, up to 1 min, jittered): until
///   it runs out, callers get the stale metadata if there is any — else the error — at once,
///   and the failure is logged.
/// - `/.well-known/openid-configuration` is tried first, then the RFC 8414
///   `/.well-known/oauth-authorization-server` form.
/// - The `issuer` of the document must equal the configured issuer exactly (OIDC Discovery
///   §4.3, RFC 8414 §3.3), else it is refused.
/// - Plain `http` (SEC-10): an `https` issuer's metadata must name only `https` endpoints; an
///   `http` issuer and its endpoints are accepted on loopback hosts only, unless
///   [`Discovery::allow_insecure_http`].
pub struct Discovery {
    source: Arc<Source>,
    lifetime: Duration,
    cache: Refreshing<ProviderMetadata>,
}

/// Where and how the metadata is fetched (owned, so that a shared fetch can outlive a caller).
struct Source {
    issuer: String,
    issuer_url: Url,
    transport: SharedTransport,
    allow_insecure_http: bool,
}

impl fmt::Debug for Discovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Discovery")
            .field("issuer", &self.source.issuer)
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

/// The default time metadata is kept before it is fetched again.
pub const DEFAULT_METADATA_LIFETIME: Duration = Duration::from_secs(3600);

/// Backoff after a failed metadata or key-set fetch.
pub(crate) const FETCH_BACKOFF: crate::client_credentials::BackoffPolicy =
    crate::client_credentials::BackoffPolicy {
        base: Duration::from_secs(1),
        max: Duration::from_secs(60),
    };

impl Discovery {
    /// Discovery for `issuer`. Fails when `issuer` is not an http(s) URL without query or
    /// fragment.
    pub fn new(
        issuer: impl Into<String>,
        transport: SharedTransport,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, crate::error::ConfigError> {
        let issuer = issuer.into();
        let issuer_url = Url::parse(&issuer).map_err(|e| {
            crate::error::ConfigError::new("issuer", format!("{issuer:?} is not a URL: {e}"))
        })?;
        if !matches!(issuer_url.scheme(), "https" | "http")
            || issuer_url.query().is_some()
            || issuer_url.fragment().is_some()
        {
            return Err(crate::error::ConfigError::new(
                "issuer",
                format!("{issuer:?} must be an http(s) URL without query or fragment"),
            ));
        }
        Ok(Self {
            source: Arc::new(Source {
                issuer,
                issuer_url,
                transport,
                allow_insecure_http: false,
            }),
            lifetime: DEFAULT_METADATA_LIFETIME,
            cache: Refreshing::new(clock, FETCH_BACKOFF, "discovery metadata"),
        })
    }

    /// Sets how long metadata is kept before it is fetched again.
    pub fn with_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// Accepts a plain-`http` issuer and endpoints on hosts other than loopback (off by
    /// default: only for a private network you trust).
    pub fn allow_insecure_http(mut self, allow: bool) -> Self {
        if let Some(source) = Arc::get_mut(&mut self.source) {
            source.allow_insecure_http = allow;
        }
        self
    }

    /// The configured issuer.
    pub fn issuer(&self) -> &str {
        &self.source.issuer
    }

    /// The metadata: cached, or fetched now.
    pub async fn metadata(&self) -> Result<Arc<ProviderMetadata>, Error> {
        self.cache
            .get(Want::Fresh, || {
                let source = self.source.clone();
                let lifetime = self.lifetime;
                Box::pin(async move { source.fetch().await.map(|m| (m, lifetime)) })
            })
            .await
    }

    /// The well-known URLs tried, in order.
    pub fn well_known_urls(&self) -> Vec<Url> {
        self.source.well_known_urls()
    }
}

impl Source {
    fn well_known_urls(&self) -> Vec<Url> {
        let base = self.issuer_url.clone();
        let path = base.path().trim_end_matches('/').to_owned();
        let mut oidc = base.clone();
        oidc.set_path(&format!("{path}/.well-known/openid-configuration"));
        let mut oauth = base;
        oauth.set_path(&format!("/.well-known/oauth-authorization-server{path}"));
        vec![oidc, oauth]
    }

    async fn fetch(&self) -> Result<ProviderMetadata, Error> {
        let mut last_error = None;
        for url in self.well_known_urls() {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
            let request = HttpRequest {
                method: Method::GET,
                url,
                headers,
                body: Bytes::new(),
            };
            let response = match self.transport.send(request).await {
                Ok(r) => r,
                Err(e) => return Err(self.error(format!("{e}"))),
            };
            if response.status == StatusCode::NOT_FOUND {
                last_error = Some(self.error("metadata document not found (HTTP 404)".into()));
                continue;
            }
            if !response.status.is_success() {
                return Err(self.error(format!("HTTP {}", response.status.as_u16())));
            }
            let metadata: ProviderMetadata =
                serde_json::from_slice(&response.body).map_err(|e| {
                    self.error(format!(
                        "invalid metadata: {}",
                        sanitize(&e.to_string(), 160)
                    ))
                })?;
            if metadata.issuer != self.issuer {
                return Err(self.error(format!(
                    "the metadata names issuer {:?}, which is not the configured issuer",
                    sanitize(&metadata.issuer, 200)
                )));
            }
            self.check_schemes(&metadata)?;
            return Ok(metadata);
        }
        Err(last_error.unwrap_or_else(|| self.error("no metadata".into())))
    }

    /// SEC-10: no plain-http endpoint for an https issuer; plain http only on loopback hosts
    /// unless allowed.
    fn check_schemes(&self, metadata: &ProviderMetadata) -> Result<(), Error> {
        let https_issuer = self.issuer_url.scheme() == "https";
        if !https_issuer
            && !self.allow_insecure_http
            && !crate::client_credentials::config::is_loopback(&self.issuer_url)
        {
            return Err(self.error(
                "the issuer is plain http on a host that is not loopback (allow it explicitly with `allow_insecure_http`)".into(),
            ));
        }
        let endpoints = [
            ("token_endpoint", Some(&metadata.token_endpoint)),
            (
                "authorization_endpoint",
                metadata.authorization_endpoint.as_ref(),
            ),
            ("jwks_uri", metadata.jwks_uri.as_ref()),
            ("revocation_endpoint", metadata.revocation_endpoint.as_ref()),
            (
                "introspection_endpoint",
                metadata.introspection_endpoint.as_ref(),
            ),
            ("userinfo_endpoint", metadata.userinfo_endpoint.as_ref()),
            (
                "end_session_endpoint",
                metadata.end_session_endpoint.as_ref(),
            ),
            (
                "pushed_authorization_request_endpoint",
                metadata.pushed_authorization_request_endpoint.as_ref(),
            ),
            (
                "device_authorization_endpoint",
                metadata.device_authorization_endpoint.as_ref(),
            ),
        ];
        if let Some(aliases) = &metadata.mtls_endpoint_aliases {
            for (name, url) in [
                ("token_endpoint", &aliases.token_endpoint),
                ("revocation_endpoint", &aliases.revocation_endpoint),
                ("introspection_endpoint", &aliases.introspection_endpoint),
                (
                    "pushed_authorization_request_endpoint",
                    &aliases.pushed_authorization_request_endpoint,
                ),
                (
                    "device_authorization_endpoint",
                    &aliases.device_authorization_endpoint,
                ),
                ("userinfo_endpoint", &aliases.userinfo_endpoint),
            ] {
                if url.as_ref().is_some_and(|u| u.scheme() != "https") {
                    return Err(self.error(format!(
                        "the metadata's mtls_endpoint_aliases.{name} is not https"
                    )));
                }
            }
        }
        for (name, url) in endpoints {
            let Some(url) = url else { continue };
            let ok = match url.scheme() {
                "https" => true,
                "http" if https_issuer => false,
                "http" => {
                    self.allow_insecure_http || crate::client_credentials::config::is_loopback(url)
                }
                _ => false,
            };
            if !ok {
                return Err(self.error(format!(
                    "the metadata's {name} is {}, which this issuer may not use (SEC-10)",
                    crate::http::redact_url(url)
                )));
            }
        }
        Ok(())
    }

    fn error(&self, reason: String) -> Error {
        Error::Discovery {
            issuer: self.issuer.clone(),
            reason,
        }
    }
}
