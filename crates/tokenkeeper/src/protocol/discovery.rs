//! Authorization server metadata: OpenID Connect Discovery 1.0 and RFC 8414.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use serde::Deserialize;
use url::Url;

use crate::clock::{Clock, Timestamp};
use crate::error::{sanitize, Error};
use crate::http::{HttpRequest, SharedTransport};

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
    /// Every other member.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Fetches and caches an issuer's metadata.
///
/// The metadata is fetched on first use, kept for `lifetime` (default one hour) and then fetched
/// again; concurrent callers share one fetch. If a refetch fails while stale metadata is at hand,
/// the stale metadata keeps being used (and the failure is logged) until a fetch succeeds.
/// `/.well-known/openid-configuration` is tried first, then the RFC 8414
/// `/.well-known/oauth-authorization-server` form. The `issuer` of the document must equal the
/// configured issuer exactly (OIDC Discovery §4.3, RFC 8414 §3.3), else it is refused.
pub struct Discovery {
    issuer: String,
    issuer_url: Url,
    transport: SharedTransport,
    clock: Arc<dyn Clock>,
    lifetime: Duration,
    cached: Mutex<Option<(Arc<ProviderMetadata>, Timestamp)>>,
    fetch_lock: tokio::sync::Mutex<()>,
}

impl fmt::Debug for Discovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Discovery")
            .field("issuer", &self.issuer)
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

/// The default time metadata is kept before it is fetched again.
pub const DEFAULT_METADATA_LIFETIME: Duration = Duration::from_secs(3600);

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
            issuer,
            issuer_url,
            transport,
            clock,
            lifetime: DEFAULT_METADATA_LIFETIME,
            cached: Mutex::new(None),
            fetch_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// Sets how long metadata is kept before it is fetched again.
    pub fn with_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// The configured issuer.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    fn fresh(&self, now: Timestamp) -> Option<Arc<ProviderMetadata>> {
        let cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        cached
            .as_ref()
            .filter(|(_, fetched)| now < fetched.saturating_add(self.lifetime))
            .map(|(m, _)| m.clone())
    }

    fn stale(&self) -> Option<Arc<ProviderMetadata>> {
        let cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        cached.as_ref().map(|(m, _)| m.clone())
    }

    /// The metadata: cached, or fetched now.
    pub async fn metadata(&self) -> Result<Arc<ProviderMetadata>, Error> {
        if let Some(m) = self.fresh(self.clock.now()) {
            return Ok(m);
        }
        let _guard = self.fetch_lock.lock().await;
        if let Some(m) = self.fresh(self.clock.now()) {
            return Ok(m);
        }
        match self.fetch().await {
            Ok(metadata) => {
                let metadata = Arc::new(metadata);
                *self.cached.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((metadata.clone(), self.clock.now()));
                Ok(metadata)
            }
            Err(error) => match self.stale() {
                Some(stale) => {
                    tracing::warn!(issuer = %self.issuer, %error, "discovery refresh failed; using the metadata fetched before");
                    Ok(stale)
                }
                None => Err(error),
            },
        }
    }

    /// The well-known URLs tried, in order.
    pub fn well_known_urls(&self) -> Vec<Url> {
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
            return Ok(metadata);
        }
        Err(last_error.unwrap_or_else(|| self.error("no metadata".into())))
    }

    fn error(&self, reason: String) -> Error {
        Error::Discovery {
            issuer: self.issuer.clone(),
            reason,
        }
    }
}
