//! ID token validation (OpenID Connect Core §3.1.3.7) against the issuer's JWKS, following key
//! rotation.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use url::Url;

use crate::clock::{Clock, Timestamp};
use crate::error::{sanitize, Error};
use crate::http::{HttpRequest, SharedTransport};
use crate::secret::ct_eq;

/// Validates ID tokens of one issuer for one client.
///
/// Checks the signature against the issuer's JWKS (asymmetric algorithms only: `none` and HMAC
/// are refused), `iss`, `aud` (and `azp` when several audiences), `exp` and `iat` with a leeway
/// (default 60 s) on the injected clock, and the `nonce` of the login. An unknown `kid` makes it
/// fetch the JWKS again (at most every 10 s), so keys can rotate at the provider.
pub struct IdTokenValidator {
    issuer: String,
    client_id: String,
    jwks_uri: Url,
    transport: SharedTransport,
    clock: Arc<dyn Clock>,
    leeway: Duration,
    keys: Mutex<Option<(Arc<JwkSet>, Timestamp)>>,
    fetch: tokio::sync::Mutex<()>,
    last_forced: Mutex<Option<Timestamp>>,
}

impl fmt::Debug for IdTokenValidator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdTokenValidator")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// The claims of a validated ID token.
#[derive(Debug, Clone)]
pub struct IdTokenClaims {
    /// `sub`.
    pub sub: String,
    /// `sid`, when present.
    pub sid: Option<String>,
    /// Every claim.
    pub all: Map<String, Value>,
}

const REFETCH_AFTER: Duration = Duration::from_secs(10);

impl IdTokenValidator {
    /// A validator for tokens of `issuer` for `client_id`, with keys at `jwks_uri`.
    pub fn new(
        issuer: impl Into<String>,
        client_id: impl Into<String>,
        jwks_uri: Url,
        transport: SharedTransport,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            issuer: issuer.into(),
            client_id: client_id.into(),
            jwks_uri,
            transport,
            clock,
            leeway: Duration::from_secs(60),
            keys: Mutex::new(None),
            fetch: tokio::sync::Mutex::new(()),
            last_forced: Mutex::new(None),
        }
    }

    /// The clock skew tolerated on `exp` and `iat`.
    pub fn with_leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    fn invalid(reason: impl Into<String>) -> Error {
        Error::InvalidIdToken(reason.into())
    }

    fn cached(&self) -> Option<(Arc<JwkSet>, Timestamp)> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    async fn fetch_keys(&self, unless_newer_than: Option<Timestamp>) -> Result<Arc<JwkSet>, Error> {
        let _guard = self.fetch.lock().await;
        if let Some((keys, fetched)) = self.cached() {
            match unless_newer_than {
                // First use: another task fetched meanwhile.
                None => return Ok(keys),
                // Another task refetched since this one looked.
                Some(seen) if fetched > seen => return Ok(keys),
                Some(_) => {
                    // An unknown kid: refetch, but at most every REFETCH_AFTER, so that tokens
                    // with made-up kids cannot make us hammer the JWKS.
                    let now = self.clock.now();
                    let mut last = self.last_forced.lock().unwrap_or_else(|e| e.into_inner());
                    if last.is_some_and(|l| now < l.saturating_add(REFETCH_AFTER)) {
                        return Ok(keys);
                    }
                    *last = Some(now);
                }
            }
        }
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        let response = self
            .transport
            .send(HttpRequest {
                method: Method::GET,
                url: self.jwks_uri.clone(),
                headers,
                body: Bytes::new(),
            })
            .await?;
        if !response.status.is_success() {
            return Err(Self::invalid(format!(
                "the JWKS answered HTTP {}",
                response.status.as_u16()
            )));
        }
        let keys: JwkSet = serde_json::from_slice(&response.body).map_err(|e| {
            Self::invalid(format!(
                "the JWKS is not valid: {}",
                sanitize(&e.to_string(), 120)
            ))
        })?;
        let keys = Arc::new(keys);
        *self.keys.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((keys.clone(), self.clock.now()));
        Ok(keys)
    }

    /// Validates `id_token`; `expected_nonce` is the nonce sent in the authorization request.
    pub async fn validate(
        &self,
        id_token: &str,
        expected_nonce: Option<&str>,
    ) -> Result<IdTokenClaims, Error> {
        let header = jsonwebtoken::decode_header(id_token)
            .map_err(|e| Self::invalid(format!("malformed: {e}")))?;
        if !matches!(
            header.alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
                | Algorithm::ES256
                | Algorithm::ES384
                | Algorithm::EdDSA
        ) {
            return Err(Self::invalid(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let kid = header.kid.clone();
        let find = |keys: &JwkSet| match &kid {
            Some(kid) => keys.find(kid).cloned(),
            None if keys.keys.len() == 1 => keys.keys.first().cloned(),
            None => None,
        };
        let (keys, fetched) = match self.cached() {
            Some((keys, fetched)) => (keys, Some(fetched)),
            None => (self.fetch_keys(None).await?, None),
        };
        let jwk = match find(&keys) {
            Some(jwk) => jwk,
            // An unknown key: the provider may have rotated. Fetch again (rate-limited).
            None => find(
                &*self
                    .fetch_keys(fetched.or(Some(Timestamp::default())))
                    .await?,
            )
            .ok_or_else(|| Self::invalid("signed with a key the issuer does not publish"))?,
        };
        let key =
            DecodingKey::from_jwk(&jwk).map_err(|e| Self::invalid(format!("unusable key: {e}")))?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.client_id]);
        validation.validate_exp = false; // checked below, on our clock
        validation.validate_nbf = false;
        validation.required_spec_claims = ["iss", "aud", "sub"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let data = jsonwebtoken::decode::<Map<String, Value>>(id_token, &key, &validation)
            .map_err(|e| Self::invalid(e.to_string()))?;
        let claims = data.claims;
        let now = self.clock.now().as_millis() / 1000;
        let leeway = self.leeway.as_secs();
        match claims.get("exp").and_then(Value::as_u64) {
            Some(exp) if exp + leeway > now => {}
            Some(_) => return Err(Self::invalid("expired")),
            None => return Err(Self::invalid("no exp")),
        }
        if claims
            .get("iat")
            .and_then(Value::as_u64)
            .is_some_and(|iat| iat > now + leeway)
        {
            return Err(Self::invalid("issued in the future"));
        }
        if let Some(Value::Array(audiences)) = claims.get("aud") {
            if audiences.len() > 1
                && claims.get("azp").and_then(Value::as_str) != Some(self.client_id.as_str())
            {
                return Err(Self::invalid(
                    "several audiences and azp is not this client",
                ));
            }
        }
        if let Some(expected) = expected_nonce {
            let nonce = claims
                .get("nonce")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if !ct_eq(nonce.as_bytes(), expected.as_bytes()) {
                return Err(Self::invalid("nonce does not match the login's"));
            }
        }
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .ok_or_else(|| Self::invalid("no sub"))?
            .to_owned();
        let sid = claims.get("sid").and_then(Value::as_str).map(str::to_owned);
        Ok(IdTokenClaims {
            sub,
            sid,
            all: claims,
        })
    }
}
