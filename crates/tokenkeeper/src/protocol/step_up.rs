//! Step-up authentication (PR-04): what a login asks of the user's authentication —
//! `acr_values` and `max_age` (OpenID Connect Core §3.1.2.1) — and the check that the ID token
//! meets it (`acr` among the values asked for, `auth_time` recent enough); and RFC 9470's
//! challenge, with which an API answers `401 insufficient_user_authentication` naming what it
//! needs.
//!
//! ```
//! use std::time::Duration;
//! use tokenkeeper::protocol::step_up::AuthenticationRequirements;
//!
//! let needs = AuthenticationRequirements::parse_challenge(
//!     r#"Bearer error="insufficient_user_authentication", acr_values="urn:mfa", max_age=300"#,
//! )
//! .expect("an RFC 9470 challenge");
//! assert_eq!(needs.acr_values(), ["urn:mfa"]);
//! assert_eq!(needs.max_age(), Some(Duration::from_secs(300)));
//! ```

use std::time::Duration;

use serde_json::{Map, Value};

use crate::error::{ConfigError, Error};

/// The RFC 9470 error code.
pub const INSUFFICIENT_USER_AUTHENTICATION: &str = "insufficient_user_authentication";

/// The most `acr_values` a login carries, and the longest value.
const MAX_VALUES: usize = 8;
const MAX_VALUE_LEN: usize = 256;

/// What a login asks of the user's authentication: one of `acr_values` (the ID token's `acr`
/// must be one of them) and an authentication at most `max_age` old (the ID token's
/// `auth_time` must say so). Empty: nothing asked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthenticationRequirements {
    acr_values: Vec<String>,
    max_age: Option<Duration>,
}

impl AuthenticationRequirements {
    /// Nothing asked.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks for one of `values` (space-separated, as on the wire). Each is printable ASCII
    /// without spaces or quotes, at most 256 bytes; at most 8.
    pub fn with_acr_values(mut self, values: &str) -> Result<Self, Error> {
        let parsed: Vec<String> = values
            .split(' ')
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .collect();
        if parsed.len() > MAX_VALUES {
            return Err(ConfigError::new("acr_values", "at most 8 values").into());
        }
        if let Some(bad) = parsed.iter().find(|v| !valid_value(v)) {
            return Err(ConfigError::new(
                "acr_values",
                format!(
                    "{:?} is not a usable value (printable ASCII without spaces, quotes or backslashes, at most 256 bytes)",
                    crate::error::sanitize(bad, 40)
                ),
            )
            .into());
        }
        self.acr_values = parsed;
        Ok(self)
    }

    /// Asks for an authentication at most `max_age` old (`max_age=0`: a fresh one).
    pub fn with_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = Some(max_age);
        self
    }

    /// The `acr` values asked for.
    pub fn acr_values(&self) -> &[String] {
        &self.acr_values
    }

    /// `max_age`, when asked.
    pub fn max_age(&self) -> Option<Duration> {
        self.max_age
    }

    /// Whether nothing is asked.
    pub fn is_empty(&self) -> bool {
        self.acr_values.is_empty() && self.max_age.is_none()
    }

    /// The authorization request's parameters: `acr_values` and `max_age`, when asked.
    pub fn params(&self) -> Vec<(String, String)> {
        let mut params = Vec::new();
        if !self.acr_values.is_empty() {
            params.push(("acr_values".to_owned(), self.acr_values.join(" ")));
        }
        if let Some(max_age) = self.max_age {
            params.push(("max_age".to_owned(), max_age.as_secs().to_string()));
        }
        params
    }

    /// Checks a validated ID token's claims against what was asked: `acr` present and one of
    /// the values asked for; `auth_time` present, not in the future (beyond `leeway`) and at
    /// most `max_age` (plus `leeway`) before `now_secs`. A refusal is
    /// [`Error::InsufficientAuthentication`].
    pub fn check(
        &self,
        claims: &Map<String, Value>,
        now_secs: u64,
        leeway: Duration,
    ) -> Result<(), Error> {
        let refuse = |why: &str| Error::InsufficientAuthentication(why.to_owned());
        if !self.acr_values.is_empty() {
            let acr = claims.get("acr").and_then(Value::as_str);
            match acr {
                None => return Err(refuse("the ID token has no acr")),
                Some(acr) if !self.acr_values.iter().any(|v| v == acr) => {
                    return Err(refuse("the ID token's acr is not one asked for"))
                }
                Some(_) => {}
            }
        }
        if let Some(max_age) = self.max_age {
            let leeway = leeway.as_secs();
            match claims.get("auth_time").and_then(Value::as_u64) {
                None => return Err(refuse("the ID token has no auth_time")),
                Some(at) if at > now_secs + leeway => {
                    return Err(refuse("the ID token's auth_time is in the future"))
                }
                Some(at) if at + max_age.as_secs() + leeway < now_secs => {
                    return Err(refuse("the authentication is older than max_age"))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Reads an RFC 9470 challenge: a `WWW-Authenticate` value of the `Bearer` or `DPoP` scheme
    /// whose `error` is `insufficient_user_authentication`, with its `acr_values` and/or
    /// `max_age`. `None` for any other challenge, or one whose values are not usable (a
    /// hostile API gets no say beyond what a well-formed challenge says).
    pub fn parse_challenge(header: &str) -> Option<Self> {
        if header.len() > 4096 {
            return None;
        }
        let (scheme, rest) = header.trim_start().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") && !scheme.eq_ignore_ascii_case("dpop") {
            return None;
        }
        let params = auth_params(rest)?;
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        if get("error") != Some(INSUFFICIENT_USER_AUTHENTICATION) {
            return None;
        }
        let mut needs = Self::new();
        if let Some(values) = get("acr_values") {
            needs = needs.with_acr_values(values).ok()?;
        }
        if let Some(max_age) = get("max_age") {
            let secs: u64 = max_age.parse().ok().filter(|s| *s <= 10 * 365 * 86_400)?;
            needs = needs.with_max_age(Duration::from_secs(secs));
        }
        Some(needs)
    }
}

/// Whether a response's `WWW-Authenticate` headers carry an RFC 9470 challenge: the token was
/// accepted, but the user's authentication is not enough — renewing the token would not help
/// (the HTTP integrations then hand the 401 over as it is).
pub fn is_step_up_challenge(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| AuthenticationRequirements::parse_challenge(v).is_some())
}

/// The requirements of a response's RFC 9470 challenge, if it has one.
pub fn step_up_challenge(headers: &http::HeaderMap) -> Option<AuthenticationRequirements> {
    headers
        .get_all(http::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(AuthenticationRequirements::parse_challenge)
}

fn valid_value(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_VALUE_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

/// The `name=value` / `name="value"` parameters of a challenge (RFC 9110 §11.2); `None` when
/// malformed.
fn auth_params(text: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let eq = rest.find('=')?;
        let name = rest[..eq].trim().to_owned();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return None;
        }
        rest = rest[eq + 1..].trim_start();
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => v.push(chars.next()?.1),
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => v.push(c),
                }
            }
            value = v;
            rest = &quoted[end?..];
        } else {
            let end = rest.find([',', ' ']).unwrap_or(rest.len());
            value = rest[..end].to_owned();
            rest = &rest[end..];
        }
        out.push((name, value));
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix(',') {
            rest = after.trim_start();
        } else if !rest.is_empty() {
            return None;
        }
        if out.len() > 16 {
            return None;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn pr_04_acr_and_auth_time_are_checked() {
        let needs = AuthenticationRequirements::new()
            .with_acr_values("urn:mfa urn:hwk")
            .unwrap_or_else(|e| panic!("{e}"))
            .with_max_age(Duration::from_secs(300));
        let leeway = Duration::from_secs(5);
        assert!(needs
            .check(
                &claims(json!({"acr": "urn:mfa", "auth_time": 1000})),
                1200,
                leeway
            )
            .is_ok());
        for (bad, why) in [
            (json!({"auth_time": 1000}), "no acr"),
            (json!({"acr": "urn:pwd", "auth_time": 1000}), "weak acr"),
            (json!({"acr": "urn:mfa"}), "no auth_time"),
            (json!({"acr": "urn:mfa", "auth_time": 600}), "too old"),
            (json!({"acr": "urn:mfa", "auth_time": 2000}), "future"),
            (
                json!({"acr": ["urn:mfa"], "auth_time": 1000}),
                "acr not a string",
            ),
        ] {
            let e = needs.check(&claims(bad), 1200, leeway).expect_err(why);
            assert!(
                matches!(e, Error::InsufficientAuthentication(_)),
                "{why}: {e}"
            );
        }
        assert!(AuthenticationRequirements::new()
            .check(&Map::new(), 0, leeway)
            .is_ok());
        assert_eq!(
            needs.params(),
            vec![
                ("acr_values".to_owned(), "urn:mfa urn:hwk".to_owned()),
                ("max_age".to_owned(), "300".to_owned())
            ]
        );
    }

    #[test]
    fn pr_04_challenges_are_read_strictly() {
        let read = AuthenticationRequirements::parse_challenge;
        let needs = read(r#"DPoP algs="ES256", error="insufficient_user_authentication", error_description="A different authentication level is required", acr_values="myACR""#)
            .unwrap_or_else(|| panic!("a challenge"));
        assert_eq!(needs.acr_values(), ["myACR"]);
        assert_eq!(
            read(r#"Bearer error="insufficient_user_authentication", max_age=5"#)
                .and_then(|n| n.max_age()),
            Some(Duration::from_secs(5))
        );
        for bad in [
            r#"Bearer error="invalid_token""#,
            r#"Basic error="insufficient_user_authentication""#,
            r#"Bearer error="insufficient_user_authentication", max_age=-1"#,
            r#"Bearer error="insufficient_user_authentication", acr_values="a\"b""#,
            "Bearer error=\"insufficient_user_authentication\", acr_values=\"a\u{7}\"",
            r#"Bearer error="insufficient_user_authentication" acr_values"#,
            r#"Bearer error="insufficient_user_authentication", acr_values="unterminated"#,
        ] {
            assert!(read(bad).is_none(), "{bad}");
        }
        let huge = format!(
            r#"Bearer error="insufficient_user_authentication", acr_values="{}""#,
            "a".repeat(2 << 20)
        );
        assert!(read(&huge).is_none());
    }
}
