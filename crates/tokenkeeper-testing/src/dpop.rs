//! DPoP at the test server (RFC 9449): proof validation for the token endpoint and the test
//! API, nonces, and the RFC 7638 thumbprint tokens are bound to.
//!
//! A proof is accepted only when: there is exactly one `DPoP` header; its JOSE header has
//! `typ=dpop+jwt`, an asymmetric `alg` (ES256, ES384, EdDSA, PS256, RS256) and a public `jwk`
//! (no private members); the signature verifies with that key; `jti` is new; `htm` and `htu`
//! match the request (the `htu` compared after RFC 9449 normalisation); `iat` is within 60 s
//! of the server's clock; `ath` is the hash of the presented token (when one is presented);
//! and `nonce` is the server's current one (when nonces are required).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use axum::http::HeaderMap;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

/// The guarded value, also after a panic elsewhere (the test server keeps serving).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How far `iat` may be from the server's clock, in seconds.
const IAT_WINDOW: u64 = 60;

/// Why a proof was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProofError {
    /// The proof is invalid (the reason, for the error description).
    Invalid(String),
    /// The proof is valid but lacks the current nonce.
    UseNonce,
}

/// The DPoP settings and memory of one party (the authorization server or the test API).
#[derive(Debug)]
pub(crate) struct DpopState {
    pub(crate) nonce_required: AtomicBool,
    nonce: Mutex<String>,
    jtis: Mutex<HashSet<String>>,
    pub(crate) accepted: AtomicU64,
    pub(crate) refused: AtomicU64,
}

impl DpopState {
    pub(crate) fn new() -> Self {
        Self {
            nonce_required: AtomicBool::new(false),
            nonce: Mutex::new(new_nonce()),
            jtis: Mutex::new(HashSet::new()),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// The current nonce, when nonces are required.
    pub(crate) fn current_nonce(&self) -> Option<String> {
        self.nonce_required
            .load(Ordering::Relaxed)
            .then(|| lock(&self.nonce).clone())
    }

    pub(crate) fn rotate_nonce(&self) -> String {
        let nonce = new_nonce();
        *lock(&self.nonce) = nonce.clone();
        nonce
    }

    /// Validates the request's proof, if it has one: `Ok(Some(jkt))` for a valid proof,
    /// `Ok(None)` for none.
    pub(crate) fn verify(
        &self,
        headers: &HeaderMap,
        method: &str,
        htu: &str,
        access_token: Option<&str>,
        now_secs: u64,
    ) -> Result<Option<String>, ProofError> {
        let result = self.verify_inner(headers, method, htu, access_token, now_secs);
        match &result {
            Ok(Some(_)) => self.accepted.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.refused.fetch_add(1, Ordering::Relaxed),
            Ok(None) => 0,
        };
        result
    }

    fn verify_inner(
        &self,
        headers: &HeaderMap,
        method: &str,
        htu: &str,
        access_token: Option<&str>,
        now_secs: u64,
    ) -> Result<Option<String>, ProofError> {
        let invalid = |why: &str| ProofError::Invalid(why.to_owned());
        let mut values = headers.get_all("dpop").iter();
        let Some(proof) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(invalid("more than one DPoP header"));
        }
        let proof = proof.to_str().map_err(|_| invalid("unreadable proof"))?;
        let mut parts = proof.split('.');
        let (Some(header), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid("the proof is not a compact JWS"));
        };
        let header: Map<String, Value> = URL_SAFE_NO_PAD
            .decode(header)
            .ok()
            .and_then(|h| serde_json::from_slice(&h).ok())
            .ok_or_else(|| invalid("unreadable proof header"))?;
        if header.get("typ").and_then(Value::as_str) != Some("dpop+jwt") {
            return Err(invalid("typ is not dpop+jwt"));
        }
        let alg = match header.get("alg").and_then(Value::as_str) {
            Some("ES256") => jsonwebtoken::Algorithm::ES256,
            Some("ES384") => jsonwebtoken::Algorithm::ES384,
            Some("EdDSA") => jsonwebtoken::Algorithm::EdDSA,
            Some("PS256") => jsonwebtoken::Algorithm::PS256,
            Some("RS256") => jsonwebtoken::Algorithm::RS256,
            _ => return Err(invalid("alg is not an accepted asymmetric algorithm")),
        };
        let Some(Value::Object(jwk)) = header.get("jwk") else {
            return Err(invalid("no jwk"));
        };
        if ["d", "p", "q", "dp", "dq", "qi", "k"]
            .iter()
            .any(|m| jwk.contains_key(*m))
        {
            return Err(invalid("the jwk holds a private key"));
        }
        let key: jsonwebtoken::jwk::Jwk = serde_json::from_value(Value::Object(jwk.clone()))
            .map_err(|_| invalid("unusable jwk"))?;
        let key = jsonwebtoken::DecodingKey::from_jwk(&key).map_err(|_| invalid("unusable jwk"))?;
        let mut validation = jsonwebtoken::Validation::new(alg);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let claims = jsonwebtoken::decode::<Map<String, Value>>(proof, &key, &validation)
            .map_err(|_| invalid("the signature does not verify"))?
            .claims;
        let claim = |name: &str| claims.get(name).and_then(Value::as_str);
        if claim("htm") != Some(method) {
            return Err(invalid("htm does not match"));
        }
        if claim("htu").map(normalise_htu).as_deref() != Some(htu) {
            return Err(invalid("htu does not match"));
        }
        let iat = claims
            .get("iat")
            .and_then(Value::as_u64)
            .ok_or_else(|| invalid("no iat"))?;
        if iat + IAT_WINDOW < now_secs || iat > now_secs + IAT_WINDOW {
            return Err(invalid("iat is outside the accepted window"));
        }
        if let Some(token) = access_token {
            let expected = URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()));
            if claim("ath") != Some(expected.as_str()) {
                return Err(invalid("ath does not match the access token"));
            }
        }
        let jti = claim("jti")
            .filter(|j| !j.is_empty() && j.len() <= 256)
            .ok_or_else(|| invalid("no jti"))?;
        if let Some(nonce) = self.current_nonce() {
            if claim("nonce") != Some(nonce.as_str()) {
                return Err(ProofError::UseNonce);
            }
        }
        if !lock(&self.jtis).insert(jti.to_owned()) {
            return Err(invalid("the proof's jti was used before"));
        }
        thumbprint(jwk)
            .map(Some)
            .ok_or_else(|| invalid("unusable jwk"))
    }
}

fn new_nonce() -> String {
    format!("n-{:016x}{:08x}", fastrand::u64(..), fastrand::u32(..))
}

/// An `htu` as RFC 9449 §4.3 compares it: scheme and host lower-case, no default port, no
/// query or fragment.
pub(crate) fn normalise_htu(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(url) => tokenkeeper::dpop::htu(&url),
        Err(_) => String::new(),
    }
}

/// The RFC 7638 thumbprint of a public JWK (EC, OKP, RSA).
pub(crate) fn thumbprint(jwk: &Map<String, Value>) -> Option<String> {
    let members: &[&str] = match jwk.get("kty")?.as_str()? {
        "EC" => &["crv", "kty", "x", "y"],
        "OKP" => &["crv", "kty", "x"],
        "RSA" => &["e", "kty", "n"],
        _ => return None,
    };
    let mut canonical = Map::new();
    for member in members {
        canonical.insert(
            (*member).to_owned(),
            Value::String(jwk.get(*member)?.as_str()?.to_owned()),
        );
    }
    let bytes = serde_json::to_vec(&canonical).ok()?;
    Some(URL_SAFE_NO_PAD.encode(Sha256::digest(bytes)))
}
