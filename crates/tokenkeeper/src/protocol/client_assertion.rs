//! Client assertions (RFC 7523 §2.2): `private_key_jwt` through a [`ClientAssertionProvider`]
//! (a key of ours, a KMS or an HSM), and `client_secret_jwt`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use futures_util::future::BoxFuture;
use serde_json::{json, Value};

use crate::clock::{Clock, TokioClock};
use crate::dpop::DpopKey;
use crate::error::Error;
use crate::secret::ClientSecret;

/// The `client_assertion_type` of JWT assertions.
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// What an assertion is for: one request of `client_id` to the authorization server named
/// `audience` (its token endpoint URL).
#[derive(Debug, Clone, Copy)]
pub struct AssertionContext<'a> {
    /// The client (`iss` and `sub`).
    pub client_id: &'a str,
    /// The audience (`aud`).
    pub audience: &'a str,
}

/// Makes client assertions for `private_key_jwt`. It is called for **every** request — token
/// requests, their retries, revocation and introspection — and must return a fresh assertion
/// each time (a new `jti`: servers accept each once). Implement it to sign in a KMS or an HSM;
/// [`PrivateKeyJwt`] signs with a key in this process.
pub trait ClientAssertionProvider: Send + Sync + fmt::Debug + 'static {
    /// A fresh signed assertion for `context` (a compact JWS).
    fn assertion<'a>(
        &'a self,
        context: &'a AssertionContext<'a>,
    ) -> BoxFuture<'a, Result<String, Error>>;

    /// The JWS algorithm of the key (`ES256`, `PS256`, ...), when known: the FAPI 2.0 profile
    /// refuses a key of another algorithm than PS256, ES256 or EdDSA. Default: unknown.
    fn algorithm(&self) -> Option<&str> {
        None
    }

    /// Signs `claims` as a JWT of type `typ` (a compact JWS): a signed request object
    /// (RFC 9101, `typ` `oauth-authz-req+jwt`). Default: not supported — a provider that only
    /// makes assertions cannot sign request objects, and a client configured for them is
    /// refused when its manager is built.
    fn sign_jwt<'a>(
        &'a self,
        typ: &'a str,
        claims: &'a Value,
    ) -> BoxFuture<'a, Result<String, Error>> {
        let _ = (typ, claims);
        Box::pin(async {
            Err(Error::Config(crate::error::ConfigError::new(
                "private_key_jwt",
                "this client assertion provider cannot sign request objects",
            )))
        })
    }

    /// Whether [`ClientAssertionProvider::sign_jwt`] is implemented.
    fn signs_jwts(&self) -> bool {
        false
    }
}

/// The claims of an assertion: `iss` = `sub` = the client, `aud`, `iat`, a short `exp` and a
/// fresh `jti` (PK-06).
fn claims(
    context: &AssertionContext<'_>,
    now_secs: u64,
    lifetime: Duration,
) -> Result<Value, Error> {
    Ok(json!({
        "iss": context.client_id,
        "sub": context.client_id,
        "aud": context.audience,
        "iat": now_secs,
        "exp": now_secs + lifetime.as_secs().max(1),
        "jti": crate::protocol::authorization::random_token(18)?,
    }))
}

fn segment(value: &Value) -> Result<String, Error> {
    serde_json::to_vec(value)
        .map(|json| URL_SAFE_NO_PAD.encode(json))
        .map_err(|e| Error::Internal(format!("assertion encoding: {e}")))
}

/// `private_key_jwt` with a key in this process (ES256 by default, or any algorithm of
/// [`DpopKey`]); `kid` names the key when the server holds several.
///
/// ```
/// use tokenkeeper::dpop::{DpopAlgorithm, DpopKey};
/// use tokenkeeper::PrivateKeyJwt;
/// let signer = PrivateKeyJwt::new(DpopKey::generate(DpopAlgorithm::ES256)?).with_kid("key-2026");
/// # let _ = signer; Ok::<(), tokenkeeper::Error>(())
/// ```
pub struct PrivateKeyJwt {
    key: Arc<DpopKey>,
    kid: Option<String>,
    lifetime: Duration,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for PrivateKeyJwt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKeyJwt")
            .field("key", &self.key)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl PrivateKeyJwt {
    /// Signs assertions with `key`; each lives 60 s.
    pub fn new(key: DpopKey) -> Self {
        Self {
            key: Arc::new(key),
            kid: None,
            lifetime: Duration::from_secs(60),
            clock: Arc::new(TokioClock::new()),
        }
    }

    /// Names the key (`kid` in the header).
    pub fn with_kid(mut self, kid: impl Into<String>) -> Self {
        self.kid = Some(kid.into());
        self
    }

    /// Uses `clock` for `iat` and `exp`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The public key, as a JWK to register at the authorization server.
    pub fn public_jwk(&self) -> Value {
        let mut jwk = self.key.public_jwk().clone();
        jwk.insert("alg".into(), self.key.algorithm().as_str().into());
        jwk.insert("use".into(), "sig".into());
        if let Some(kid) = &self.kid {
            jwk.insert("kid".into(), kid.clone().into());
        }
        Value::Object(jwk)
    }
}

impl PrivateKeyJwt {
    /// A compact JWS of `claims` with `typ`, signed with the key.
    fn sign(&self, typ: &str, claims: &Value) -> Result<String, Error> {
        let mut header = json!({"alg": self.key.algorithm().as_str(), "typ": typ});
        if let Some(kid) = &self.kid {
            header["kid"] = kid.clone().into();
        }
        let mut jws = segment(&header)?;
        jws.push('.');
        jws.push_str(&segment(claims)?);
        let signature = self.key.sign(jws.as_bytes())?;
        jws.push('.');
        jws.push_str(&URL_SAFE_NO_PAD.encode(signature));
        Ok(jws)
    }
}

impl ClientAssertionProvider for PrivateKeyJwt {
    fn assertion<'a>(
        &'a self,
        context: &'a AssertionContext<'a>,
    ) -> BoxFuture<'a, Result<String, Error>> {
        Box::pin(async move {
            let now = self.clock.now().as_millis() / 1000;
            self.sign("JWT", &claims(context, now, self.lifetime)?)
        })
    }

    fn algorithm(&self) -> Option<&str> {
        Some(self.key.algorithm().as_str())
    }

    fn sign_jwt<'a>(
        &'a self,
        typ: &'a str,
        claims: &'a Value,
    ) -> BoxFuture<'a, Result<String, Error>> {
        Box::pin(async move { self.sign(typ, claims) })
    }

    fn signs_jwts(&self) -> bool {
        true
    }
}

/// A `client_secret_jwt` assertion (HS256 with the client secret) for `context`, issued at
/// `now_secs` (PK-13).
pub(crate) fn client_secret_jwt(
    secret: &ClientSecret,
    context: &AssertionContext<'_>,
    now_secs: u64,
) -> Result<String, Error> {
    let mut jws = segment(&json!({"alg": "HS256", "typ": "JWT"}))?;
    jws.push('.');
    jws.push_str(&segment(&claims(
        context,
        now_secs,
        Duration::from_secs(60),
    )?)?);
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.secret().as_bytes());
    let tag = aws_lc_rs::hmac::sign(&key, jws.as_bytes());
    jws.push('.');
    jws.push_str(&URL_SAFE_NO_PAD.encode(tag.as_ref()));
    Ok(jws)
}

/// An assertion read from a file: a workload identity token that the platform writes and
/// rotates (Kubernetes projected service-account tokens, cloud workload identity). The file is
/// read on first use and read again whenever its modification time or length changes, so a
/// rotated token is picked up at the next token request; an unchanged file is not read again.
///
/// The token is used as it is (its `aud` and lifetime are the platform's); it serves as the
/// JWT bearer grant's assertion ([`ClientConfig::jwt_bearer_grant`](crate::ClientConfig::jwt_bearer_grant))
/// or as a client assertion ([`ClientConfig::private_key_jwt`](crate::ClientConfig::private_key_jwt),
/// for providers that federate workload identities that way).
///
/// ```
/// use tokenkeeper::FileAssertion;
/// let assertion = FileAssertion::new("/var/run/secrets/tokens/idp-token");
/// # let _ = assertion;
/// ```
pub struct FileAssertion {
    path: std::path::PathBuf,
    /// The last read: (modification time, length, content).
    last: std::sync::Mutex<Option<(std::time::SystemTime, u64, Arc<str>)>>,
}

/// Assertion files larger than this are refused (a JWT is a few kilobytes).
const MAX_ASSERTION_FILE: u64 = 64 * 1024;

impl fmt::Debug for FileAssertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileAssertion")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl FileAssertion {
    /// Reads assertions from `path`.
    pub fn new(path: impl Into<std::path::PathBuf>) -> Self {
        Self {
            path: path.into(),
            last: std::sync::Mutex::new(None),
        }
    }

    fn error(&self, reason: impl fmt::Display) -> Error {
        crate::error::ConfigError::new(
            "assertion_file",
            format!("{}: {reason}", self.path.display()),
        )
        .into()
    }

    /// The file's token: the last read when the file has not changed since, else read now.
    pub fn read(&self) -> Result<Arc<str>, Error> {
        let metadata = std::fs::metadata(&self.path).map_err(|e| self.error(e.kind()))?;
        if metadata.len() > MAX_ASSERTION_FILE {
            return Err(self.error("larger than 64 KiB"));
        }
        let modified = metadata.modified().ok();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let (Some(modified), Some((seen, len, token))) = (modified, last.as_ref()) {
            if *seen == modified && *len == metadata.len() {
                return Ok(token.clone());
            }
        }
        let text = std::fs::read_to_string(&self.path).map_err(|e| self.error(e.kind()))?;
        let token = text.trim();
        if token.is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(self.error("does not hold one token"));
        }
        let token: Arc<str> = Arc::from(token);
        *last = modified.map(|m| (m, metadata.len(), token.clone()));
        Ok(token)
    }
}

impl ClientAssertionProvider for FileAssertion {
    fn assertion<'a>(
        &'a self,
        _context: &'a AssertionContext<'a>,
    ) -> BoxFuture<'a, Result<String, Error>> {
        Box::pin(async move { self.read().map(|t| t.to_string()) })
    }
}
