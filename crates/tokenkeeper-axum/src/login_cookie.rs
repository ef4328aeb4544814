//! The login cookie: everything a login in progress needs, sealed in the browser (SEC-13).
//!
//! Between `/login` and its callback the server keeps nothing: the PKCE verifier, the nonce,
//! the return URL, the `prompt`, the DPoP login key and the `state` itself travel in a
//! short-lived cookie, sealed with AES-256-GCM (so the browser can neither read nor change
//! them) and bound to the cookie's name. So anonymous requests to `/login` cannot fill a store
//! or push out a real user's login: there is nothing to fill.
//!
//! A sealed value can be larger than a browser keeps in one cookie (about 4 KiB: a return URL
//! may be up to 8 KiB), so it is split over up to [`MAX_CHUNKS`] cookies: `<name>` (whose first
//! character is the number of parts) and `<name>.1`, `<name>.2`, …

use std::sync::Arc;

use axum::http::{header, HeaderMap, HeaderValue};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tokenkeeper::{Encryption, Timestamp};

/// What a login keeps until its callback.
#[derive(Serialize, Deserialize)]
pub(crate) struct PendingLogin {
    /// The `state` of the authorization request (compared with the callback's).
    pub(crate) state: String,
    pub(crate) nonce: String,
    pub(crate) verifier: String,
    pub(crate) return_url: String,
    /// The `prompt` the login was started with (`none`: a silent login).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) prompt: Option<String>,
    /// [`tokenkeeper::user::LoginDpop::to_bytes`], base64url: with per-session keys, the login's
    /// private key (which reaches the key store only when the login completes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) dpop: Option<String>,
    /// When the login expires (ms since the epoch): a copied cookie is worth nothing after
    /// this, whatever its `Max-Age` said.
    pub(crate) expires_at: u64,
    /// What the caller asked to get back at the callback ([`crate::Oidc::start_login_replacing`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) replaces: Option<String>,
    /// The `acr_values` the login asked for (PR-04).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) acr_values: Option<String>,
    /// The `max_age` the login asked for, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) max_age: Option<u64>,
}

impl PendingLogin {
    /// What the login asked of the user's authentication.
    pub(crate) fn requirements(
        &self,
    ) -> Result<tokenkeeper::protocol::step_up::AuthenticationRequirements, tokenkeeper::Error>
    {
        let mut requirements = tokenkeeper::protocol::step_up::AuthenticationRequirements::new();
        if let Some(values) = &self.acr_values {
            requirements = requirements.with_acr_values(values)?;
        }
        if let Some(max_age) = self.max_age {
            requirements = requirements.with_max_age(std::time::Duration::from_secs(max_age));
        }
        Ok(requirements)
    }
}

impl std::fmt::Debug for PendingLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingLogin")
            .field("prompt", &self.prompt)
            .field("dpop", &self.dpop.is_some())
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// How many cookies one sealed login may take.
pub(crate) const MAX_CHUNKS: usize = 4;

/// The value bytes of one cookie (browsers keep at least 4096 bytes of name and value).
const CHUNK: usize = 3800;

/// Seals and opens login cookies.
#[derive(Clone)]
pub(crate) struct LoginCookie {
    name: String,
    secure: bool,
    encryption: Arc<Encryption>,
}

impl LoginCookie {
    pub(crate) fn new(name: &str, secure: bool, encryption: Arc<Encryption>) -> Self {
        Self {
            name: name.to_owned(),
            secure,
            encryption,
        }
    }

    fn aad(&self) -> Vec<u8> {
        let mut aad = b"tokenkeeper login cookie v1 ".to_vec();
        aad.extend_from_slice(self.name.as_bytes());
        aad
    }

    fn chunk_name(&self, i: usize) -> String {
        if i == 0 {
            self.name.to_owned()
        } else {
            format!("{}.{i}", self.name)
        }
    }

    fn set_cookie(&self, name: &str, value: &str, max_age: u64) -> Option<HeaderValue> {
        let secure = if self.secure { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
        ))
        .ok()
    }

    /// The `Set-Cookie` values that hand `pending` to the browser for `max_age` seconds; an
    /// error when it is too large for [`MAX_CHUNKS`] cookies.
    pub(crate) fn seal(
        &self,
        pending: &PendingLogin,
        max_age: u64,
    ) -> Result<Vec<HeaderValue>, String> {
        let json = serde_json::to_vec(pending).map_err(|e| e.to_string())?;
        let sealed = self
            .encryption
            .seal(&self.aad(), &json)
            .map_err(|e| e.to_string())?;
        let text = URL_SAFE_NO_PAD.encode(sealed);
        // The first cookie carries the number of parts, then the first part.
        let parts: Vec<&str> = text
            .as_bytes()
            .chunks(CHUNK)
            .map(|c| std::str::from_utf8(c).unwrap_or_default())
            .collect();
        if parts.len() > MAX_CHUNKS {
            return Err(format!(
                "the login is too large for its cookie ({} bytes sealed)",
                text.len()
            ));
        }
        parts
            .iter()
            .enumerate()
            .map(|(i, part)| {
                let value = if i == 0 {
                    format!("{}{part}", parts.len())
                } else {
                    (*part).to_owned()
                };
                self.set_cookie(&self.chunk_name(i), &value, max_age)
                    .ok_or_else(|| "a login cookie is not a header value".to_owned())
            })
            .collect()
    }

    /// The value of the cookie `name` in `headers`, if there is exactly one.
    fn value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
        let mut found = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v);
        let first = found.next()?;
        // Two cookies of one name (one planted by a sibling domain): trust neither.
        found.next().is_none().then_some(first)
    }

    /// The pending login sealed in this request's login cookies, if they are there, open with
    /// our key, and have not expired at `now`.
    pub(crate) fn open(&self, headers: &HeaderMap, now: Timestamp) -> Option<PendingLogin> {
        let first = Self::value(headers, &self.name)?;
        let count = first.chars().next()?.to_digit(10)? as usize;
        if count == 0 || count > MAX_CHUNKS {
            return None;
        }
        let mut text = String::with_capacity(count * CHUNK);
        text.push_str(&first[1..]);
        for i in 1..count {
            let part = Self::value(headers, &self.chunk_name(i))?;
            if part.len() > CHUNK {
                return None;
            }
            text.push_str(part);
        }
        if text.len() > MAX_CHUNKS * CHUNK {
            return None;
        }
        let sealed = URL_SAFE_NO_PAD.decode(text.as_bytes()).ok()?;
        let json = self.encryption.open(&self.aad(), &sealed)?;
        let pending: PendingLogin = serde_json::from_slice(&json).ok()?;
        (pending.expires_at > now.as_millis()).then_some(pending)
    }

    /// `Set-Cookie` values that delete every login cookie.
    pub(crate) fn clear(&self) -> Vec<HeaderValue> {
        (0..MAX_CHUNKS)
            .filter_map(|i| self.set_cookie(&self.chunk_name(i), "", 0))
            .collect()
    }
}

/// The login-cookie key derived from the client secret (HKDF-SHA-256), so that every instance
/// of a fleet configured with the same client opens the others' login cookies; `None` for an
/// empty secret.
pub(crate) fn derived_key(client_id: &str, secret: &str) -> Option<Encryption> {
    use aws_lc_rs::hkdf::{Salt, HKDF_SHA256};
    if secret.is_empty() {
        return None;
    }
    let salt = Salt::new(HKDF_SHA256, b"tokenkeeper-axum login cookie");
    let prk = salt.extract(secret.as_bytes());
    let info = [client_id.as_bytes()];
    let okm = prk.expand(&info, HKDF_SHA256).ok()?;
    let mut key = [0u8; 32];
    okm.fill(&mut key).ok()?;
    Encryption::new("login", &key).ok()
}

/// A random login-cookie key for this process.
pub(crate) fn random_key() -> Result<Encryption, tokenkeeper::Error> {
    use aws_lc_rs::rand::SecureRandom as _;
    let mut key = [0u8; 32];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| tokenkeeper::Error::Internal("no randomness for a key".into()))?;
    Encryption::new("login", &key).map_err(tokenkeeper::Error::from)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pending(return_url: &str) -> PendingLogin {
        PendingLogin {
            state: "st".into(),
            nonce: "n".into(),
            verifier: "v".into(),
            return_url: return_url.into(),
            prompt: None,
            dpop: None,
            expires_at: 2_000,
            replaces: None,
            acr_values: None,
            max_age: None,
        }
    }

    fn as_request(set_cookies: &[HeaderValue]) -> HeaderMap {
        let cookie = set_cookies
            .iter()
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
            .collect::<Vec<_>>()
            .join("; ");
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, cookie.parse().unwrap());
        headers
    }

    #[test]
    fn sealed_logins_open_once_split_and_expire() {
        let cookie = LoginCookie::new("tk.login", false, Arc::new(random_key().unwrap()));
        let long = format!("/{}", "a".repeat(8 * 1024 - 1));
        let set = cookie.seal(&pending(&long), 600).unwrap();
        assert!(set.len() > 1 && set.len() <= MAX_CHUNKS);
        assert!(set.iter().all(|v| v.len() < 4000));
        let opened = cookie
            .open(&as_request(&set), Timestamp::from_millis(1_000))
            .unwrap();
        assert_eq!(opened.return_url, long);
        assert!(cookie
            .open(&as_request(&set), Timestamp::from_millis(2_000))
            .is_none());
        // Another key (another client), or a changed byte: nothing.
        let other = LoginCookie::new("tk.login", false, Arc::new(random_key().unwrap()));
        assert!(other
            .open(&as_request(&set), Timestamp::from_millis(1_000))
            .is_none());
        let short = cookie.seal(&pending("/"), 600).unwrap();
        let mut tampered = short[0].to_str().unwrap().to_owned();
        tampered.replace_range(20..21, if &tampered[20..21] == "A" { "B" } else { "A" });
        let tampered = [HeaderValue::from_str(&tampered).unwrap()];
        assert!(cookie
            .open(&as_request(&tampered), Timestamp::from_millis(1_000))
            .is_none());
        assert!(cookie
            .open(&as_request(&short), Timestamp::from_millis(1_000))
            .is_some());
    }
}
