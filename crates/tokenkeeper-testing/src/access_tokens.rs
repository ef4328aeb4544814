//! The access tokens the server signs (ES256 JWTs, bound to a DPoP key or a certificate when
//! asked) and verifies.
#![allow(clippy::result_large_err)] // handlers answer early with a ready `Response`

use std::sync::atomic::Ordering;

use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine as _;
use serde_json::{json, Map, Value};
use tokenkeeper::Clock as _;

use crate::responses::oauth_error;
use crate::state::{lock, ServerState};

/// Verifies an access token this server issued (signature, issuer, expiry); its claims.
pub(crate) fn verify(state: &ServerState, token: &str) -> Result<Map<String, Value>, String> {
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_issuer(&[&state.issuer]);
    validation.validate_aud = false;
    validation.validate_exp = false;
    let kid = jsonwebtoken::decode_header(token)
        .map_err(|e| format!("invalid token: {e}"))?
        .kid
        .unwrap_or_default();
    let key = state.key_by_kid(&kid).ok_or("unknown signing key")?;
    let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding, &validation)
        .map_err(|e| format!("invalid token: {e}"))?;
    let now = state.clock.now().as_millis() / 1000;
    match data.claims.get("exp").and_then(Value::as_u64) {
        Some(exp) if exp > now => Ok(data.claims),
        Some(_) => Err("token expired".into()),
        None => Err("token has no exp".into()),
    }
}

/// `Bearer`, or `DPoP` for a token bound to a key.
pub(crate) fn token_type(jkt: Option<&str>) -> &'static str {
    if jkt.is_some() {
        "DPoP"
    } else {
        "Bearer"
    }
}

/// An access-token answer's fields (RFC 6749 §5.1): `access_token`, `token_type` (`DPoP` when
/// bound to `jkt`), and `expires_in` and `scope` when there are any; grants add theirs.
pub(crate) fn token_answer(
    access_token: &str,
    jkt: Option<&str>,
    expires_in: Option<u64>,
    scope: Option<&str>,
) -> Value {
    let mut body = json!({"access_token": access_token, "token_type": token_type(jkt)});
    if let Some(expires_in) = expires_in {
        body["expires_in"] = json!(expires_in);
    }
    if let Some(scope) = scope {
        body["scope"] = json!(scope);
    }
    body
}

/// The claims of a JWT, read without checking anything (to find out who signed it).
pub(crate) fn unverified_claims(jwt: &str) -> Option<Map<String, Value>> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The `cnf` claim of a token bound to a DPoP key (`jkt`) and/or a certificate (`x5t#S256`).
pub(crate) fn cnf(jkt: Option<&str>, x5t: Option<&str>) -> Option<Value> {
    let mut cnf = Map::new();
    if let Some(jkt) = jkt {
        cnf.insert("jkt".into(), json!(jkt));
    }
    if let Some(x5t) = x5t {
        cnf.insert("x5t#S256".into(), json!(x5t));
    }
    (!cnf.is_empty()).then_some(Value::Object(cnf))
}

/// An access token to sign: whom it is for and what it carries.
#[derive(Default)]
pub(crate) struct NewAccessToken<'a> {
    pub(crate) sub: &'a str,
    pub(crate) client_id: &'a str,
    pub(crate) scope: Option<&'a str>,
    /// Its audiences (the request's `resource`s); none: this server's `/api`.
    pub(crate) resources: &'a [&'a str],
    /// Claims under `ext` (what a client-credentials request added, an exchange's `act`).
    pub(crate) extras: Map<String, Value>,
    /// `cnf`: bound to a DPoP key and/or a certificate (see [`cnf`]).
    pub(crate) cnf: Option<Value>,
    /// More top-level claims (a login's `acr` and `auth_time`).
    pub(crate) top: Map<String, Value>,
}

impl NewAccessToken<'_> {
    /// Signs it (an ES256 JWT of type `at+jwt`); returns it with the `expires_in` to announce.
    pub(crate) fn sign(self, state: &ServerState) -> Result<(String, Option<u64>), Response> {
        let Self {
            sub,
            client_id,
            scope,
            resources,
            extras,
            cnf,
            top,
        } = self;
        let expires_in = *lock(&state.expires_in);
        let now = state.clock.now().as_millis() / 1000;
        let lifetime = expires_in.unwrap_or(3600);
        let seq = state.seq.fetch_add(1, Ordering::Relaxed);
        let aud = match resources.len() {
            0 => json!(format!("{}/api", state.issuer)),
            1 => json!(resources[0]),
            _ => json!(resources),
        };
        let mut claims = json!({
            "iss": state.issuer,
            "sub": sub,
            "client_id": client_id,
            "aud": aud,
            "iat": now,
            "exp": now + lifetime,
            "jti": format!("at-{seq}-{}", fastrand::u64(..)),
        });
        if let Some(scope) = scope {
            claims["scope"] = json!(scope);
        }
        if !extras.is_empty() {
            claims["ext"] = Value::Object(extras);
        }
        if let Some(cnf) = cnf {
            claims["cnf"] = cnf;
        }
        for (name, value) in top {
            claims[name.as_str()] = value;
        }
        let key = state.current_key();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(key.kid.clone());
        header.typ = Some("at+jwt".into());
        let token = jsonwebtoken::encode(&header, &claims, &key.encoding).map_err(|e| {
            oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                &format!("signing failed: {e}"),
            )
        })?;
        Ok((token, expires_in))
    }
}
