//! ID token validation (OpenID Connect Core §3.1.3.7) against the issuer's JWKS, following key
//! rotation.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use url::Url;

use crate::clock::Clock;
use crate::error::{sanitize, Error};
use crate::http::{HttpRequest, SharedTransport};
use crate::protocol::discovery::FETCH_BACKOFF;
use crate::protocol::refreshing::{Refreshing, Want};
use crate::secret::ct_eq;

/// Validates ID tokens of one issuer for one client.
///
/// Checks (SEC-08):
///
/// - the signature against the issuer's JWKS (asymmetric algorithms only: `none` and HMAC are
///   refused), with a key whose `use` (when present) is `sig` and whose `alg` (when present) is
///   the token's;
/// - `iss`: one string, exactly the issuer;
/// - `aud` contains this client; `azp`, when present, is this client (and is required when
///   there are several audiences);
/// - `exp` and `iat` (both required) with a leeway (default 60 s) on the injected clock;
/// - the `nonce` of the login.
///
/// Keys (SEC-09): the JWKS is kept for the lifetime its `Cache-Control: max-age` gives, within
/// bounds ([`JwksLifetime`]), then read again, so a key the provider removed stops being
/// trusted; concurrent callers share one fetch, and a failed fetch backs off. An unknown `kid`
/// makes it fetch the JWKS again (at most every 10 s), so keys can rotate at the provider.
pub struct IdTokenValidator {
    issuer: String,
    client_id: String,
    jwks: Arc<JwksSource>,
    leeway: Duration,
    clock: Arc<dyn Clock>,
    keys: Refreshing<JwkSet>,
    /// Only these algorithms (a profile's), when set.
    algorithms: Option<Vec<Algorithm>>,
}

/// Where the keys are fetched from (owned, so that a shared fetch can outlive a caller).
struct JwksSource {
    uri: Url,
    transport: SharedTransport,
    lifetime: JwksLifetime,
}

/// How long a fetched JWKS is trusted: the response's `Cache-Control: max-age` within bounds,
/// or the default (SEC-09).
#[derive(Debug, Clone, Copy)]
pub struct JwksLifetime {
    /// Without `max-age`. Default 10 min.
    pub default: Duration,
    /// The shortest lifetime (`no-store`, `no-cache` and small `max-age` become this). Default
    /// 30 s: a JWKS is not fetched for every token.
    pub min: Duration,
    /// The longest lifetime, whatever `max-age` says. Default 24 h: a key the provider removed
    /// stops being trusted within a day at most.
    pub max: Duration,
}

impl Default for JwksLifetime {
    fn default() -> Self {
        Self {
            default: Duration::from_secs(600),
            min: Duration::from_secs(30),
            max: Duration::from_secs(24 * 3600),
        }
    }
}

impl JwksLifetime {
    /// The lifetime for a response with these headers.
    fn of(&self, headers: &HeaderMap) -> Duration {
        let directives: Vec<String> = headers
            .get_all(header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|d| d.trim().to_ascii_lowercase())
            .collect();
        if directives
            .iter()
            .any(|d| d == "no-store" || d == "no-cache")
        {
            return self.min;
        }
        let max_age = directives
            .iter()
            .filter_map(|d| d.strip_prefix("max-age="))
            .find_map(|v| v.trim_matches('"').parse::<u64>().ok());
        match max_age {
            Some(seconds) => Duration::from_secs(seconds).clamp(self.min, self.max),
            None => self.default,
        }
    }
}

impl fmt::Debug for IdTokenValidator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdTokenValidator")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// The claims of a validated ID token. `Debug` shows which claims there are, never their
/// values (SEC-25: they identify a person).
#[derive(Clone)]
pub struct IdTokenClaims {
    /// `sub`.
    pub sub: String,
    /// `sid`, when present.
    pub sid: Option<String>,
    /// Every claim.
    pub all: Map<String, Value>,
}

impl std::fmt::Debug for IdTokenClaims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdTokenClaims")
            .field("claims", &self.all.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl JwksSource {
    async fn fetch(&self) -> Result<(JwkSet, Duration), Error> {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        let response = self
            .transport
            .send(HttpRequest {
                method: Method::GET,
                url: self.uri.clone(),
                headers,
                body: Bytes::new(),
            })
            .await?;
        if !response.status.is_success() {
            return Err(IdTokenValidator::invalid(format!(
                "the JWKS answered HTTP {}",
                response.status.as_u16()
            )));
        }
        let keys: JwkSet = serde_json::from_slice(&response.body).map_err(|e| {
            IdTokenValidator::invalid(format!(
                "the JWKS is not valid: {}",
                sanitize(&e.to_string(), 120)
            ))
        })?;
        Ok((keys, self.lifetime.of(&response.headers)))
    }
}

/// Whether `jwk` may verify a token signed with `alg`: its `use`, when present, is `sig`, and
/// its `alg`, when present, is `alg`.
fn key_allows(jwk: &jsonwebtoken::jwk::Jwk, alg: Algorithm) -> bool {
    use jsonwebtoken::jwk::{KeyAlgorithm, PublicKeyUse};
    let use_ok = matches!(
        jwk.common.public_key_use,
        None | Some(PublicKeyUse::Signature)
    );
    let alg_ok = match jwk.common.key_algorithm {
        None => true,
        Some(key_alg) => {
            let matching = match alg {
                Algorithm::RS256 => KeyAlgorithm::RS256,
                Algorithm::RS384 => KeyAlgorithm::RS384,
                Algorithm::RS512 => KeyAlgorithm::RS512,
                Algorithm::PS256 => KeyAlgorithm::PS256,
                Algorithm::PS384 => KeyAlgorithm::PS384,
                Algorithm::PS512 => KeyAlgorithm::PS512,
                Algorithm::ES256 => KeyAlgorithm::ES256,
                Algorithm::ES384 => KeyAlgorithm::ES384,
                Algorithm::EdDSA => KeyAlgorithm::EdDSA,
                _ => return false,
            };
            key_alg == matching
        }
    };
    use_ok && alg_ok
}

/// The event of a back-channel logout token.
pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// A validated back-channel logout token: whose sessions to end. `Debug` shows which claims
/// it has, not their values.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogoutToken {
    /// `sub`, when present.
    pub sub: Option<String>,
    /// `sid`, when present.
    pub sid: Option<String>,
    /// `jti` (check it for replay).
    pub jti: String,
}

impl std::fmt::Debug for LogoutToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogoutToken")
            .field("sub", &self.sub.is_some())
            .field("sid", &self.sid.is_some())
            .finish_non_exhaustive()
    }
}

/// An unknown `kid` makes the validator fetch the keys again, but not more often than this.
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
            jwks: Arc::new(JwksSource {
                uri: jwks_uri,
                transport,
                lifetime: JwksLifetime::default(),
            }),
            leeway: Duration::from_secs(60),
            keys: Refreshing::new(clock.clone(), FETCH_BACKOFF, "JWKS"),
            clock,
            algorithms: None,
        }
    }

    /// Accepts only tokens signed with one of `algorithms` (FAPI 2.0: PS256, ES256, EdDSA).
    pub fn with_algorithms(mut self, algorithms: &[Algorithm]) -> Self {
        self.algorithms = Some(algorithms.to_vec());
        self
    }

    /// The clock skew tolerated.
    pub fn leeway(&self) -> Duration {
        self.leeway
    }

    /// The clock skew tolerated on `exp` and `iat`.
    pub fn with_leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// How long fetched keys are trusted (see [`JwksLifetime`]).
    pub fn with_jwks_lifetime(mut self, lifetime: JwksLifetime) -> Self {
        if let Some(source) = Arc::get_mut(&mut self.jwks) {
            source.lifetime = lifetime;
        }
        self
    }

    fn invalid(reason: impl Into<String>) -> Error {
        Error::InvalidIdToken(reason.into())
    }

    /// The keys: within their lifetime, or fetched again (one fetch shared by concurrent
    /// callers; failures back off).
    async fn fetch_keys(&self, want: Want) -> Result<Arc<JwkSet>, Error> {
        self.keys
            .get(want, || {
                let source = self.jwks.clone();
                Box::pin(async move { source.fetch().await })
            })
            .await
    }

    /// Checks a JWT of the issuer: an accepted asymmetric `alg`, a key the issuer publishes
    /// (whose `use` and `alg` allow it), the signature, `iss` (one string, exactly the issuer)
    /// and `aud` (this client), and that `required` claims are present.
    async fn verify(&self, jwt: &str, required: &[&str]) -> Result<Map<String, Value>, Error> {
        let header = jsonwebtoken::decode_header(jwt)
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
        if self
            .algorithms
            .as_ref()
            .is_some_and(|allowed| !allowed.contains(&header.alg))
        {
            return Err(Self::invalid(format!(
                "algorithm {:?} is not accepted by the profile",
                header.alg
            )));
        }
        let kid = header.kid.clone();
        let alg = header.alg;
        // A key whose `use` or `alg` (when present) rules out this token is never a candidate
        // (SEC-08).
        let find = |keys: &JwkSet| match &kid {
            Some(kid) => keys.find(kid).filter(|k| key_allows(k, alg)).cloned(),
            None => {
                let mut usable = keys.keys.iter().filter(|k| key_allows(k, alg));
                match (usable.next(), usable.next()) {
                    (Some(only), None) => Some(only.clone()),
                    _ => None,
                }
            }
        };
        let keys = self.fetch_keys(Want::Fresh).await?;
        let jwk = match find(&keys) {
            Some(jwk) => jwk,
            // An unknown key: the provider may have rotated. Fetch again, at most once per
            // REFETCH_AFTER (so made-up kids cannot make us hammer the JWKS).
            None => find(&*self.fetch_keys(Want::Refetch(REFETCH_AFTER)).await?)
                .ok_or_else(|| Self::invalid("signed with a key the issuer does not publish"))?,
        };
        let key =
            DecodingKey::from_jwk(&jwk).map_err(|e| Self::invalid(format!("unusable key: {e}")))?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.client_id]);
        validation.validate_exp = false; // checked by the callers, on our clock
        validation.validate_nbf = false;
        validation.required_spec_claims = required.iter().map(|s| (*s).to_owned()).collect();
        let data = jsonwebtoken::decode::<Map<String, Value>>(jwt, &key, &validation)
            .map_err(|e| Self::invalid(e.to_string()))?;
        let claims = data.claims;
        // `iss` is one string, exactly the issuer (not an array that contains it).
        if claims.get("iss").and_then(Value::as_str) != Some(self.issuer.as_str()) {
            return Err(Self::invalid("iss is not exactly the issuer"));
        }
        Ok(claims)
    }

    /// Validates a back-channel logout token (OpenID Connect Back-Channel Logout 1.0 §2.6):
    /// signature, `iss`, `aud`, `iat` (not in the future, at most `max_age` old), `exp` when
    /// present, `jti`, `events` with the back-channel logout event, `sub` or `sid`, and no
    /// `nonce`. The caller checks `jti` for replay.
    pub async fn validate_logout_token(
        &self,
        token: &str,
        max_age: Duration,
    ) -> Result<LogoutToken, Error> {
        let refuse = |why: &str| Error::InvalidIdToken(format!("logout token: {why}"));
        if let Ok(header) = jsonwebtoken::decode_header(token) {
            if header.typ.as_deref().is_some_and(|t| {
                !t.eq_ignore_ascii_case("logout+jwt") && !t.eq_ignore_ascii_case("JWT")
            }) {
                return Err(refuse("typ is not logout+jwt"));
            }
        }
        let claims = self.verify(token, &["iss", "aud"]).await?;
        let now = self.clock.now().as_millis() / 1000;
        let leeway = self.leeway.as_secs();
        match claims.get("iat").and_then(Value::as_u64) {
            Some(iat) if iat > now + leeway => return Err(refuse("issued in the future")),
            Some(iat) if iat + max_age.as_secs() + leeway < now => return Err(refuse("too old")),
            Some(_) => {}
            None => return Err(refuse("no iat")),
        }
        if let Some(exp) = claims.get("exp") {
            if exp.as_u64().is_none_or(|exp| exp + leeway <= now) {
                return Err(refuse("expired"));
            }
        }
        if claims.contains_key("nonce") {
            return Err(refuse("a logout token must not have a nonce"));
        }
        let event = claims
            .get("events")
            .and_then(Value::as_object)
            .and_then(|events| events.get(BACKCHANNEL_LOGOUT_EVENT));
        if !event.is_some_and(Value::is_object) {
            return Err(refuse("no back-channel logout event"));
        }
        let text = |name: &str| {
            claims
                .get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let (sub, sid) = (text("sub"), text("sid"));
        if sub.is_none() && sid.is_none() {
            return Err(refuse("neither sub nor sid"));
        }
        let jti = text("jti").ok_or_else(|| refuse("no jti"))?;
        Ok(LogoutToken { sub, sid, jti })
    }

    /// Validates `id_token`; `expected_nonce` is the nonce sent in the authorization request.
    pub async fn validate(
        &self,
        id_token: &str,
        expected_nonce: Option<&str>,
    ) -> Result<IdTokenClaims, Error> {
        let claims = self.verify(id_token, &["iss", "aud", "sub"]).await?;
        let now = self.clock.now().as_millis() / 1000;
        let leeway = self.leeway.as_secs();
        match claims.get("exp").and_then(Value::as_u64) {
            Some(exp) if exp + leeway > now => {}
            Some(_) => return Err(Self::invalid("expired")),
            None => return Err(Self::invalid("no exp")),
        }
        match claims.get("iat").and_then(Value::as_u64) {
            Some(iat) if iat > now + leeway => return Err(Self::invalid("issued in the future")),
            Some(_) => {}
            None => return Err(Self::invalid("no iat")),
        }
        match claims.get("azp") {
            // When present, `azp` must be this client, whatever the audiences.
            Some(azp) if azp.as_str() != Some(self.client_id.as_str()) => {
                return Err(Self::invalid("azp is not this client"));
            }
            Some(_) => {}
            None => {
                if let Some(Value::Array(audiences)) = claims.get("aud") {
                    if audiences.len() > 1 {
                        return Err(Self::invalid("several audiences and no azp"));
                    }
                }
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
