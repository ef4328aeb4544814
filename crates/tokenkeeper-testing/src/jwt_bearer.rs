//! The JWT bearer grant (RFC 7523 §2.1) at the test server, validating the assertion:
//!
//! - signed by this server's own keys with `iss` = the issuer (a workload identity token
//!   from a platform the server trusts: the test plays both), or by a registered client's
//!   key with `iss` = that client (an assertion signed by the workload itself);
//! - `aud` holds the token endpoint or the issuer; `exp` is present and not past; `sub` is
//!   present and becomes the issued token's `sub`.
#![allow(clippy::result_large_err)] // handlers answer early with a ready `Response`

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value};
use tokenkeeper::Clock as _;

use crate::access_tokens::{cnf, token_answer, unverified_claims, NewAccessToken};
use crate::responses::{no_store, oauth_error};
use crate::state::{lock, ServerState, TestClient};

/// The grant type.
pub(crate) const GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

fn invalid_grant(why: &str) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", why)
}

/// The assertion's verified claims.
fn verify_assertion(state: &ServerState, assertion: &str) -> Result<Map<String, Value>, Response> {
    let header =
        jsonwebtoken::decode_header(assertion).map_err(|_| invalid_grant("malformed assertion"))?;
    let unverified =
        unverified_claims(assertion).ok_or_else(|| invalid_grant("malformed assertion"))?;
    let iss = unverified
        .get("iss")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid_grant("no iss"))?;
    let key = if iss == state.issuer {
        let kid = header.kid.clone().unwrap_or_default();
        state
            .key_by_kid(&kid)
            .ok_or_else(|| invalid_grant("unknown signing key"))?
            .decoding
            .clone()
    } else {
        let jwk: jsonwebtoken::jwk::Jwk = lock(&state.clients)
            .get(iss)
            .and_then(|c| c.assertion_key.clone())
            .and_then(|k| serde_json::from_value(k).ok())
            .ok_or_else(|| invalid_grant("untrusted issuer"))?;
        jsonwebtoken::DecodingKey::from_jwk(&jwk).map_err(|_| invalid_grant("unusable key"))?
    };
    if matches!(
        header.alg,
        jsonwebtoken::Algorithm::HS256
            | jsonwebtoken::Algorithm::HS384
            | jsonwebtoken::Algorithm::HS512
    ) {
        return Err(invalid_grant("symmetric assertions are not accepted"));
    }
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.validate_exp = false; // checked below, on the server's clock
    validation.required_spec_claims.clear();
    let token_endpoint = format!("{}/token", state.issuer);
    validation.set_audience(&[token_endpoint.as_str(), state.issuer.as_str()]);
    let claims = jsonwebtoken::decode::<Map<String, Value>>(assertion, &key, &validation)
        .map_err(|_| invalid_grant("assertion refused"))?
        .claims;
    let now = state.clock.now().as_millis() / 1000;
    match claims.get("exp").and_then(Value::as_u64) {
        Some(exp) if exp + 15 >= now => Ok(claims),
        Some(_) => Err(invalid_grant("the assertion expired")),
        None => Err(invalid_grant("no exp")),
    }
}

pub(crate) fn jwt_bearer(
    state: &ServerState,
    client: &TestClient,
    form: &[(String, String)],
    jkt: Option<&str>,
) -> Result<Response, Response> {
    let Some(assertion) = form.iter().find(|(k, _)| k == "assertion").map(|(_, v)| v) else {
        return Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "assertion is required",
        ));
    };
    let claims = verify_assertion(state, assertion)?;
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid_grant("no sub"))?;
    let scope = form
        .iter()
        .find(|(k, _)| k == "scope")
        .map(|(_, v)| v.as_str());
    let (token, expires_in) = NewAccessToken {
        sub,
        client_id: &client.client_id,
        scope,
        cnf: cnf(jkt, None),
        ..NewAccessToken::default()
    }
    .sign(state)?;
    Ok(no_store(
        StatusCode::OK,
        token_answer(&token, jkt, expires_in, None),
    ))
}
