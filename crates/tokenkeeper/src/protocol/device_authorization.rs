//! The device authorization grant (RFC 8628, PR-05): for CLIs and devices without a browser.
//! The client asks the provider for a device code and a user code, shows the user where to
//! enter it, and polls the token endpoint — no faster than the provider's `interval`, 5 s
//! slower after each `slow_down`, until the user answers or the code expires.
//!
//! ```no_run
//! # async fn run(endpoint: tokenkeeper::TokenEndpoint) -> Result<(), tokenkeeper::Error> {
//! use tokenkeeper::Scope;
//! let device = endpoint
//!     .start_device_authorization(&Scope::parse("openid offline_access"), &[])
//!     .await?;
//! eprintln!("Open {} and enter {}", device.verification_uri, device.user_code);
//! let tokens = endpoint.poll_device_authorization(&device).await?;
//! # let _ = tokens; Ok(()) }
//! ```

use std::time::Duration;

use serde_json::Value;
use url::Url;

use crate::error::{Error, InvalidResponse};
use crate::protocol::token_endpoint::TokenEndpoint;
use crate::protocol::token_request::{Grant, TokenRequest};
use crate::protocol::token_response::TokenResponse;
use crate::protocol::types::Scope;

/// The grant type.
pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// The default polling interval (RFC 8628 §3.2) and the most a provider may ask.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
const MAX_INTERVAL: Duration = Duration::from_secs(300);

/// A device authorization the provider granted: what to show the user, and the device code to
/// poll with. `Debug` leaves the device code out.
#[derive(Clone)]
#[non_exhaustive]
pub struct DeviceAuthorization {
    /// The device code (a secret of this client until the tokens are issued).
    pub device_code: String,
    /// The code the user enters (printable, at most 64 characters).
    pub user_code: String,
    /// Where the user enters it.
    pub verification_uri: Url,
    /// The same with the code filled in, when the provider gives it (for a QR code).
    pub verification_uri_complete: Option<Url>,
    /// How long the codes are valid.
    pub expires_in: Duration,
    /// How long to wait between polls.
    pub interval: Duration,
}

impl std::fmt::Debug for DeviceAuthorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceAuthorization")
            .field("user_code", &self.user_code)
            .field("verification_uri", &self.verification_uri.as_str())
            .field("expires_in", &self.expires_in)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

/// A URL the provider named for the user: `https` (or `http` on a loopback host), without
/// credentials.
fn user_url(value: Option<&Value>) -> Option<Url> {
    let url = Url::parse(value?.as_str()?).ok()?;
    let loopback = crate::client_credentials::config::is_loopback(&url);
    let scheme_ok = url.scheme() == "https" || (url.scheme() == "http" && loopback);
    (scheme_ok
        && url.username().is_empty()
        && url.password().is_none()
        && url.as_str().len() <= 2048)
        .then_some(url)
}

impl TokenEndpoint {
    /// Asks the provider's `device_authorization_endpoint` (found by discovery) for a device
    /// authorization for `scope`, authenticated as this client (`none` for a public client).
    /// The answer is checked: a device code and a printable user code of sane sizes, an https
    /// verification URI (plain http only on loopback), a positive `expires_in`; `interval`
    /// defaults to 5 s and is capped at 5 minutes.
    pub async fn start_device_authorization(
        &self,
        scope: &Scope,
        extra: &[(String, String)],
    ) -> Result<DeviceAuthorization, Error> {
        let url = self
            .metadata_endpoint("device_authorization_endpoint")
            .await?
            .ok_or_else(|| match self.discovery() {
                Some(discovery) => Error::Discovery {
                    issuer: discovery.issuer().to_owned(),
                    reason: "no device_authorization_endpoint".into(),
                },
                None => Error::Config(crate::error::ConfigError::new(
                    "issuer",
                    "the device flow finds its endpoint by discovery: build the client from the issuer",
                )),
            })?;
        let mut form = vec![("scope".to_owned(), scope.to_string())];
        form.extend(extra.iter().cloned());
        let response = self.post_authenticated(url, form, None).await?;
        let status = response.status.as_u16();
        if status != 200 {
            return Err(crate::protocol::token_response::parse_error_response(
                &response,
            ));
        }
        let invalid = |why: &str| -> Error {
            InvalidResponse::new(Some(status), format!("device authorization: {why}")).into()
        };
        let body: Value =
            serde_json::from_slice(&response.body).map_err(|_| invalid("not JSON"))?;
        let text = |name: &str, max: usize| {
            body.get(name)
                .and_then(Value::as_str)
                .filter(|v| {
                    !v.is_empty() && v.len() <= max && v.bytes().all(|b| b.is_ascii_graphic())
                })
                .map(str::to_owned)
        };
        let device_code =
            text("device_code", 2048).ok_or_else(|| invalid("no usable device_code"))?;
        let user_code = text("user_code", 64).ok_or_else(|| invalid("no usable user_code"))?;
        let verification_uri = user_url(body.get("verification_uri"))
            .ok_or_else(|| invalid("no usable verification_uri"))?;
        let verification_uri_complete = user_url(body.get("verification_uri_complete"));
        let expires_in = body
            .get("expires_in")
            .and_then(Value::as_u64)
            .filter(|s| *s > 0)
            .ok_or_else(|| invalid("no positive expires_in"))?;
        let interval = body
            .get("interval")
            .and_then(Value::as_u64)
            .map_or(DEFAULT_INTERVAL, Duration::from_secs)
            .clamp(Duration::from_secs(1), MAX_INTERVAL);
        Ok(DeviceAuthorization {
            device_code,
            user_code,
            verification_uri,
            verification_uri_complete,
            expires_in: Duration::from_secs(expires_in.min(86_400)),
            interval,
        })
    }

    /// Polls the token endpoint for `device`'s tokens (with this endpoint's DPoP key, if any):
    /// waits `interval` before each poll, keeps polling on `authorization_pending`, waits 5 s
    /// longer from then on at each `slow_down` (RFC 8628 §3.5), and stops with the provider's
    /// error on `access_denied`, `expired_token` or any other — or with
    /// [`Error::DeviceCodeExpired`] once `expires_in` has passed without an answer. Runs on
    /// tokio's clock (paused time in tests).
    pub async fn poll_device_authorization(
        &self,
        device: &DeviceAuthorization,
    ) -> Result<TokenResponse, Error> {
        let deadline = tokio::time::Instant::now() + device.expires_in;
        let mut interval = device.interval;
        let request = TokenRequest::new(Grant::Other {
            grant_type: DEVICE_CODE_GRANT.to_owned(),
            params: vec![("device_code".to_owned(), device.device_code.clone())],
        });
        loop {
            if tokio::time::Instant::now() + interval > deadline {
                return Err(Error::DeviceCodeExpired);
            }
            tokio::time::sleep(interval).await;
            match self.request(&request).await {
                Ok(response) => return Ok(response),
                Err(e) => match e.oauth_error() {
                    Some("authorization_pending") => {}
                    Some("slow_down") => {
                        interval = (interval + Duration::from_secs(5)).min(MAX_INTERVAL);
                    }
                    _ => return Err(e),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pr_05_verification_uris_are_checked() {
        let url = |v: &str| user_url(Some(&Value::from(v)));
        assert!(url("https://idp.example/device").is_some());
        assert!(url("http://127.0.0.1:8080/device").is_some());
        for bad in [
            "javascript:alert(1)",
            "http://idp.example/device",
            "https://user:pass@idp.example/device",
            "data:text/html,hi",
            "not a url",
        ] {
            assert!(url(bad).is_none(), "{bad}");
        }
        assert!(url(&format!("https://idp.example/{}", "a".repeat(3000))).is_none());
        assert!(user_url(Some(&Value::from(5))).is_none());
    }
}
