//! Signed request objects (RFC 9101): verified with the client's registered key — `typ`
//! `oauth-authz-req+jwt` when present, an asymmetric `alg`, `iss` the client, `aud` the
//! issuer, `exp` ahead, `nbf` past, at most 60 minutes between them, `jti` once — and read
//! into the authorization request's parameters.

use std::collections::HashMap;

use serde_json::{Map, Value};
use tokenkeeper::Clock as _;

use crate::state::{lock, ServerState, TestClient};

/// Why a request object was refused (`invalid_request_object`).
pub(crate) type Refusal = String;

/// Verifies `jwt` for `client` and returns its parameters (strings; numbers written out; an
/// array's first value).
pub(crate) fn verify(
    state: &ServerState,
    client: &TestClient,
    jwt: &str,
) -> Result<HashMap<String, String>, Refusal> {
    let header = jsonwebtoken::decode_header(jwt).map_err(|_| "malformed request object")?;
    if header
        .typ
        .as_deref()
        .is_some_and(|t| !t.eq_ignore_ascii_case("oauth-authz-req+jwt"))
    {
        return Err("typ is not oauth-authz-req+jwt".into());
    }
    if matches!(
        header.alg,
        jsonwebtoken::Algorithm::HS256
            | jsonwebtoken::Algorithm::HS384
            | jsonwebtoken::Algorithm::HS512
    ) {
        return Err("a request object must be signed with the client's key".into());
    }
    let jwk: jsonwebtoken::jwk::Jwk = client
        .request_object_key
        .clone()
        .or_else(|| client.assertion_key.clone())
        .and_then(|k| serde_json::from_value(k).ok())
        .ok_or("the client has no key for request objects")?;
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).map_err(|_| "unusable client key")?;
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.validate_exp = false; // checked below, on the server's clock
    validation.validate_nbf = false;
    validation.required_spec_claims.clear();
    validation.set_audience(&[state.issuer.as_str()]);
    let claims = jsonwebtoken::decode::<Map<String, Value>>(jwt, &key, &validation)
        .map_err(|e| format!("request object refused: {e}"))?
        .claims;
    if claims.get("iss").and_then(Value::as_str) != Some(client.client_id.as_str()) {
        return Err("iss is not the client".into());
    }
    if claims
        .get("client_id")
        .is_some_and(|c| c.as_str() != Some(client.client_id.as_str()))
    {
        return Err("client_id is not the client".into());
    }
    let now = state.clock.now().as_millis() / 1000;
    let exp = claims.get("exp").and_then(Value::as_u64).ok_or("no exp")?;
    let nbf = claims.get("nbf").and_then(Value::as_u64).ok_or("no nbf")?;
    if exp <= now || nbf > now + 10 || exp.saturating_sub(nbf) > 3600 {
        return Err("exp and nbf are not a valid window of at most 60 minutes".into());
    }
    let jti = claims.get("jti").and_then(Value::as_str).ok_or("no jti")?;
    if !lock(&state.request_jtis).insert(jti.to_owned()) {
        return Err("the request object's jti was used before".into());
    }
    state.count("request_objects");
    let mut params = HashMap::new();
    for (name, value) in claims {
        if matches!(name.as_str(), "iss" | "aud" | "exp" | "nbf" | "iat" | "jti") {
            continue;
        }
        let value = match value {
            Value::String(s) => s,
            Value::Array(values) => match values.into_iter().next() {
                Some(Value::String(s)) => s,
                Some(other) => other.to_string(),
                None => continue,
            },
            other => other.to_string(),
        };
        params.insert(name, value);
    }
    Ok(params)
}
