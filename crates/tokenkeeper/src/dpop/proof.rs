//! DPoP proofs (RFC 9449 §4): `typ=dpop+jwt`, the public key, a fresh `jti`, `htm`, `htu`,
//! `iat`, and `ath` and `nonce` when they apply.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use sha2::{Digest as _, Sha256};
use url::Url;

use super::key::DpopKey;
use crate::clock::Timestamp;
use crate::error::Error;

/// The `htu` of a request to `url` (RFC 9449 §4.2, RFC 3986 §6.2.2–6.2.3, PK-11): scheme and
/// host lower-case (the `url` crate's parsing does that for http(s)), the default port dropped,
/// no query and no fragment, the path as sent (an empty path is `/`).
///
/// ```
/// use tokenkeeper::dpop::htu;
/// let url = "HTTPS://API.Example.COM:443/Items/%7Eone?page=2#top".parse().unwrap();
/// assert_eq!(htu(&url), "https://api.example.com/Items/%7Eone");
/// assert_eq!(htu(&"http://127.0.0.1:8080".parse().unwrap()), "http://127.0.0.1:8080/");
/// ```
pub fn htu(url: &Url) -> String {
    let mut out = String::with_capacity(url.as_str().len());
    out.push_str(url.scheme());
    out.push_str("://");
    out.push_str(url.host_str().unwrap_or_default());
    if let Some(port) = url.port() {
        // `Url::port` is `None` for the scheme's default port.
        out.push(':');
        out.push_str(&port.to_string());
    }
    out.push_str(if url.path().is_empty() {
        "/"
    } else {
        url.path()
    });
    out
}

/// `ath`: base64url(SHA-256(access token)).
pub fn ath(access_token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(access_token.as_bytes()))
}

/// What a proof is for. `Debug` leaves the access token out.
#[derive(Clone, Copy)]
pub struct ProofRequest<'a> {
    /// The HTTP method (`htm`).
    pub method: &'a str,
    /// The request URL (normalised into `htu`).
    pub url: &'a Url,
    /// The access token presented with the request, if any (`ath`).
    pub access_token: Option<&'a str>,
    /// The server's latest nonce, if any.
    pub nonce: Option<&'a str>,
}

impl std::fmt::Debug for ProofRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProofRequest")
            .field("method", &self.method)
            .field("url", &self.url.as_str())
            .field("access_token", &self.access_token.is_some())
            .field("nonce", &self.nonce.is_some())
            .finish()
    }
}

impl DpopKey {
    /// A proof for `request`, issued at `now`, with a fresh random `jti`.
    pub fn proof(&self, request: &ProofRequest<'_>, now: Timestamp) -> Result<String, Error> {
        // Written by hand (no `serde_json::Value` map): a proof is made for every request.
        // Every string goes through serde_json's escaping.
        let mut claims = String::with_capacity(256);
        let mut field = |name: &str, value: &str| -> Result<(), Error> {
            claims.push(if claims.is_empty() { '{' } else { ',' });
            claims.push('"');
            claims.push_str(name);
            claims.push_str("\":");
            claims.push_str(
                &serde_json::to_string(value)
                    .map_err(|e| Error::Internal(format!("proof encoding: {e}")))?,
            );
            Ok(())
        };
        field("jti", &crate::protocol::authorization::random_token(18)?)?;
        field("htm", request.method)?;
        field("htu", &htu(request.url))?;
        if let Some(token) = request.access_token {
            field("ath", &ath(token))?;
        }
        if let Some(nonce) = request.nonce {
            field("nonce", nonce)?;
        }
        claims.push_str(",\"iat\":");
        claims.push_str(&(now.as_millis() / 1000).to_string());
        claims.push('}');
        let mut jws = String::with_capacity(self.proof_header().len() + 512);
        jws.push_str(self.proof_header());
        jws.push('.');
        URL_SAFE_NO_PAD.encode_string(claims.as_bytes(), &mut jws);
        let signature = self.sign(jws.as_bytes())?;
        jws.push('.');
        jws.push_str(&URL_SAFE_NO_PAD.encode(signature));
        Ok(jws)
    }
}
