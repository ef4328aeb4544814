//! Userinfo (OpenID Connect Core §5.3, PR-06): the provider's claims about the session's user,
//! fetched with the session's access token presented as it was issued — `Bearer`, or `DPoP`
//! with a fresh proof (and the provider's nonce, retried once when it asks for a new one) —
//! and refused unless its `sub` is the ID token's.

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use serde_json::{Map, Value};

use crate::dpop::NonceChallenge;
use crate::error::{Error, InvalidResponse};
use crate::http::HttpRequest;
use crate::source::{Integration, UserTokenSource};

use super::manager::{UserTokenManager, UserTokenParams};
use super::store::SessionKey;

fn invalid(status: Option<u16>, reason: &str) -> Error {
    Error::InvalidResponse(InvalidResponse::new(status, format!("userinfo: {reason}")))
}

impl UserTokenManager {
    /// The userinfo of `session`'s user, whose ID token's `sub` is `sub`: fetched from the
    /// provider's `userinfo_endpoint` (its mTLS alias for a client with a certificate) with the
    /// session's default access token — DPoP-bound tokens with their proof. A 401 renews the
    /// token once; a `use_dpop_nonce` challenge is answered once. The answer is the
    /// provider's and hostile until checked: `200`, `application/json` (a signed userinfo JWT
    /// is refused, not guessed at), a JSON object, and its `sub` must be `sub` (Core §5.3.2):
    /// an answer about someone else is an error.
    pub async fn userinfo(
        &self,
        session: &SessionKey,
        sub: &str,
    ) -> Result<Map<String, Value>, Error> {
        let url = self
            .endpoint()
            .metadata_endpoint("userinfo_endpoint")
            .await?
            .ok_or_else(|| invalid(None, "the provider has no userinfo_endpoint"))?;
        let integration = Integration::new(UserTokenSource::new(
            self,
            session.clone(),
            UserTokenParams::default(),
        ));
        let mut token = self
            .get_access_token(session, &UserTokenParams::default())
            .await?;
        let (mut renewed, mut nonce_retried) = (false, false);
        let response = loop {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
            let presented = integration
                .attach(&token, &Method::GET, &url, &mut headers)
                .await?;
            // The endpoint's transport: a certificate-bound token goes over its certificate.
            let response = self
                .endpoint()
                .transport()
                .send(HttpRequest {
                    method: Method::GET,
                    url: url.clone(),
                    headers,
                    body: Bytes::new(),
                })
                .await?;
            integration.observe(&presented, &url, &response.headers);
            if response.status != StatusCode::UNAUTHORIZED {
                break response;
            }
            match integration.nonce_challenge(&presented, &url, response.status, &response.headers)
            {
                NonceChallenge::Retry if !nonce_retried => {
                    nonce_retried = true;
                    continue;
                }
                NonceChallenge::None if !renewed => {
                    renewed = true;
                    match integration.after_unauthorized(&token, true).await? {
                        Some(fresh) => {
                            token = fresh;
                            continue;
                        }
                        None => break response,
                    }
                }
                _ => break response,
            }
        };
        let status = response.status.as_u16();
        if status != 200 {
            return Err(invalid(Some(status), "the provider did not answer 200"));
        }
        let json = response
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return Err(invalid(
                Some(status),
                "the answer is not application/json (signed userinfo is not supported)",
            ));
        }
        let Ok(Value::Object(claims)) = serde_json::from_slice::<Value>(&response.body) else {
            return Err(invalid(Some(status), "the answer is not a JSON object"));
        };
        if claims.get("sub").and_then(Value::as_str) != Some(sub) {
            return Err(invalid(
                Some(status),
                "its sub is not the ID token's: the answer is about someone else",
            ));
        }
        Ok(claims)
    }
}
