//! Token responses (RFC 6749 §5.1) and error responses (§5.2).

use std::time::Duration;

use serde_json::{Map, Value};

use crate::error::{sanitize, Error, InvalidResponse, OAuthError};
use crate::http::HttpResponse;
use crate::protocol::types::{Scope, TokenType};
use crate::secret::{AccessToken, IdToken, RefreshToken};

/// A successful token response, validated.
#[derive(Clone, Debug)]
pub struct TokenResponse {
    /// `access_token` (never empty).
    pub access_token: AccessToken,
    /// `token_type`, parsed case-insensitively.
    pub token_type: TokenType,
    /// `expires_in`, when present and greater than zero.
    pub expires_in: Option<Duration>,
    /// `refresh_token`, when issued.
    pub refresh_token: Option<RefreshToken>,
    /// `scope` granted, when the server says.
    pub scope: Option<Scope>,
    /// `id_token`, when issued.
    pub id_token: Option<IdToken>,
    /// `issued_token_type` (RFC 8693), when present.
    pub issued_token_type: Option<String>,
    /// Every other member of the response.
    pub extra: Map<String, Value>,
}

impl TokenResponse {
    /// Reads a token endpoint's response: a validated [`TokenResponse`] for a success, a typed
    /// error otherwise (an OAuth error, or an invalid or non-JSON body with its status). Never
    /// panics, whatever the bytes (RS-03; fuzzed).
    pub fn from_http(response: &HttpResponse) -> Result<Self, Error> {
        parse_token_response(response)
    }

    /// How long the refresh token lives, when the server says: `refresh_expires_in` (Keycloak)
    /// or `refresh_token_expires_in` (others), in seconds; neither is standard, so an unusable
    /// value is ignored rather than refused.
    pub fn refresh_expires_in(&self) -> Option<Duration> {
        ["refresh_expires_in", "refresh_token_expires_in"]
            .iter()
            .find_map(|name| match self.extra.get(*name)? {
                Value::Number(n) => n.as_u64(),
                Value::String(s) => s.trim().parse().ok(),
                _ => None,
            })
            .filter(|secs| *secs > 0)
            .map(|secs| Duration::from_secs(secs.min(MAX_EXPIRES_IN)))
    }
}

/// The longest `expires_in` accepted (ten years); larger values are clamped.
const MAX_EXPIRES_IN: u64 = 10 * 365 * 24 * 3600;

/// Reads a token endpoint response: a success, an OAuth error, or a typed failure. Never panics.
pub(crate) fn parse_token_response(response: &HttpResponse) -> Result<TokenResponse, Error> {
    let status = response.status.as_u16();
    if !response.status.is_success() {
        return Err(parse_error_response(response));
    }
    let value: Value = serde_json::from_slice(&response.body).map_err(|e| {
        InvalidResponse::new(
            Some(status),
            format!(
                "token response is not JSON ({}; content-type {:?}): {}",
                body_kind(response),
                content_type(response),
                sanitize(&e.to_string(), 120)
            ),
        )
    })?;
    let Value::Object(mut object) = value else {
        return Err(
            InvalidResponse::new(Some(status), "token response is not a JSON object").into(),
        );
    };
    if object.contains_key("error") {
        // A 200 carrying an error: treat it as the error it is.
        return Err(oauth_error_from(status, &object).into());
    }
    let access_token = match object.remove("access_token") {
        Some(Value::String(s)) if !s.is_empty() => AccessToken::new(s),
        Some(Value::String(_)) => return Err(invalid(status, "`access_token` is empty")),
        Some(_) => return Err(invalid(status, "`access_token` is not a string")),
        None => return Err(invalid(status, "`access_token` is missing")),
    };
    let token_type = match object.remove("token_type") {
        Some(Value::String(s)) if !s.is_empty() => TokenType::parse(&s),
        Some(_) => return Err(invalid(status, "`token_type` is not a non-empty string")),
        None => return Err(invalid(status, "`token_type` is missing")),
    };
    let expires_in = match object.remove("expires_in") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(secs), _) => Some(secs),
            (None, Some(f)) if f.is_finite() && f >= 0.0 => Some(f.floor() as u64),
            _ => return Err(invalid(status, "`expires_in` is not a non-negative number")),
        },
        // Some servers send the number as a string.
        Some(Value::String(s)) => match s.trim().parse::<u64>() {
            Ok(secs) => Some(secs),
            Err(_) => return Err(invalid(status, "`expires_in` is not a number")),
        },
        Some(_) => return Err(invalid(status, "`expires_in` is not a number")),
    }
    .filter(|secs| *secs > 0)
    .map(|secs| Duration::from_secs(secs.min(MAX_EXPIRES_IN)));
    let refresh_token = optional_string(&mut object, "refresh_token", status)?
        .filter(|s| !s.is_empty())
        .map(RefreshToken::new);
    let scope = optional_string(&mut object, "scope", status)?.map(|s| Scope::parse(&s));
    let id_token = optional_string(&mut object, "id_token", status)?.map(IdToken::new);
    let issued_token_type = optional_string(&mut object, "issued_token_type", status)?;
    Ok(TokenResponse {
        access_token,
        token_type,
        expires_in,
        refresh_token,
        scope,
        id_token,
        issued_token_type,
        extra: object,
    })
}

fn optional_string(
    object: &mut Map<String, Value>,
    key: &'static str,
    status: u16,
) -> Result<Option<String>, Error> {
    match object.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(status, &format!("`{key}` is not a string"))),
    }
}

fn invalid(status: u16, reason: &str) -> Error {
    InvalidResponse::new(Some(status), reason.to_owned()).into()
}

/// Reads a non-success response: an OAuth error when the body is a JSON object with `error`,
/// otherwise an invalid-response error naming the status (an HTML 502 page, say).
pub(crate) fn parse_error_response(response: &HttpResponse) -> Error {
    let status = response.status.as_u16();
    match serde_json::from_slice::<Value>(&response.body) {
        Ok(Value::Object(object)) if matches!(object.get("error"), Some(Value::String(_))) => {
            oauth_error_from(status, &object).into()
        }
        _ => InvalidResponse::new(
            Some(status),
            format!(
                "HTTP {status} without an OAuth error body ({}; content-type {:?})",
                body_kind(response),
                content_type(response)
            ),
        )
        .into(),
    }
}

fn oauth_error_from(status: u16, object: &Map<String, Value>) -> OAuthError {
    let text = |key: &str, max: usize| match object.get(key) {
        Some(Value::String(s)) => Some(sanitize(s, max)),
        _ => None,
    };
    OAuthError {
        status,
        error: text("error", 64).unwrap_or_else(|| "invalid_error_code".into()),
        description: text("error_description", 256),
        uri: text("error_uri", 256),
    }
}

fn content_type(response: &HttpResponse) -> String {
    response
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|s| sanitize(s, 64))
        .unwrap_or_default()
}

fn body_kind(response: &HttpResponse) -> String {
    if response.body.is_empty() {
        "empty body".into()
    } else {
        format!("{} bytes", response.body.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::{HeaderMap, StatusCode};

    fn response(status: u16, body: &str) -> HttpResponse {
        HttpResponse {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
            headers: HeaderMap::new(),
            body: Bytes::from(body.to_owned()),
        }
    }

    #[test]
    fn tp_03_token_type_is_case_insensitive_and_required() {
        let ok = parse_token_response(&response(
            200,
            r#"{"access_token":"a","token_type":"bEaReR"}"#,
        ));
        assert!(matches!(ok.map(|r| r.token_type), Ok(TokenType::Bearer)));
        let dpop = parse_token_response(&response(
            200,
            r#"{"access_token":"a","token_type":"dpop"}"#,
        ));
        assert!(matches!(dpop.map(|r| r.token_type), Ok(TokenType::DPoP)));
        let missing = parse_token_response(&response(200, r#"{"access_token":"a"}"#));
        assert!(matches!(missing, Err(Error::InvalidResponse(_))));
        let no_token = parse_token_response(&response(200, r#"{"token_type":"Bearer"}"#));
        assert!(matches!(no_token, Err(Error::InvalidResponse(_))));
    }

    #[test]
    fn refresh_token_lifetime_when_the_server_says() {
        let parse = |body: &str| {
            parse_token_response(&response(200, body))
                .ok()
                .and_then(|r| r.refresh_expires_in())
        };
        assert_eq!(
            parse(r#"{"access_token":"a","token_type":"Bearer","refresh_expires_in":1800}"#),
            Some(Duration::from_secs(1800))
        );
        assert_eq!(
            parse(r#"{"access_token":"a","token_type":"Bearer","refresh_token_expires_in":"60"}"#),
            Some(Duration::from_secs(60))
        );
        for none in [
            r#"{"access_token":"a","token_type":"Bearer"}"#,
            r#"{"access_token":"a","token_type":"Bearer","refresh_expires_in":0}"#,
            r#"{"access_token":"a","token_type":"Bearer","refresh_expires_in":"soon"}"#,
            r#"{"access_token":"a","token_type":"Bearer","refresh_expires_in":-5}"#,
        ] {
            assert_eq!(parse(none), None, "{none}");
        }
    }

    #[test]
    fn tp_04_expires_in_forms() {
        let parse = |body: &str| parse_token_response(&response(200, body)).map(|r| r.expires_in);
        assert_eq!(
            parse(r#"{"access_token":"a","token_type":"Bearer","expires_in":300}"#).ok(),
            Some(Some(Duration::from_secs(300)))
        );
        assert_eq!(
            parse(r#"{"access_token":"a","token_type":"Bearer","expires_in":"60"}"#).ok(),
            Some(Some(Duration::from_secs(60)))
        );
        assert_eq!(
            parse(r#"{"access_token":"a","token_type":"Bearer","expires_in":0}"#).ok(),
            Some(None)
        );
        assert!(parse(r#"{"access_token":"a","token_type":"Bearer","expires_in":-5}"#).is_err());
    }

    #[test]
    fn tp_05_error_body_parsed_and_html_is_typed() {
        let err = parse_token_response(&response(
            400,
            r#"{"error":"invalid_scope","error_description":"no\nway","error_uri":"https://e/x"}"#,
        ));
        match err {
            Err(Error::OAuth(e)) => {
                assert_eq!(e.error, "invalid_scope");
                assert_eq!(e.description.as_deref(), Some("noway"));
                assert_eq!(e.uri.as_deref(), Some("https://e/x"));
                assert_eq!(e.status, 400);
            }
            other => panic!("expected OAuth error, got {other:?}"),
        }
        let html = parse_token_response(&response(502, "<html>Bad Gateway</html>"));
        assert!(matches!(html, Err(Error::InvalidResponse(ref e)) if e.status == Some(502)));
    }
}
