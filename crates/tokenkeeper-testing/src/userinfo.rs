//! The userinfo endpoint (OpenID Connect Core §5.3): `GET /userinfo` with one of the server's
//! access tokens — Bearer, or DPoP-bound with a valid proof (`htm` GET, `htu` this endpoint,
//! `ath`). It answers the token's `sub` with `name` and `email` made from it, then the claims
//! set with [`crate::TestServer::set_userinfo_claims`] (which may replace `sub`, for tests of a
//! mismatch). Refusals are 401 with a `WWW-Authenticate` challenge.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tokenkeeper::Clock as _;

use crate::access_tokens::verify;
use crate::state::{lock, ServerState};

fn refuse(scheme: &str, error: &str) -> Response {
    let mut response = StatusCode::UNAUTHORIZED.into_response();
    if let Ok(value) = HeaderValue::try_from(format!(r#"{scheme} error="{error}""#)) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

pub(crate) async fn userinfo(
    State(state): State<Arc<ServerState>>,
    headers: HeaderMap,
) -> Response {
    state.count("userinfo");
    let Some((scheme, token)) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
    else {
        return refuse("Bearer", "invalid_request");
    };
    let Ok(claims) = verify(&state, token) else {
        return refuse("Bearer", "invalid_token");
    };
    let bound = claims
        .get("cnf")
        .and_then(|c| c.get("jkt"))
        .and_then(Value::as_str);
    match bound {
        None if scheme.eq_ignore_ascii_case("bearer") => {}
        None => return refuse("Bearer", "invalid_token"),
        Some(jkt) => {
            if !scheme.eq_ignore_ascii_case("dpop") {
                return refuse("DPoP", "invalid_token");
            }
            let htu = format!("{}/userinfo", state.issuer);
            let now = state.clock.now().as_millis() / 1000;
            match state.dpop.verify(&headers, "GET", &htu, Some(token), now) {
                Ok(Some(proven)) if proven == jkt => {}
                _ => return refuse("DPoP", "invalid_dpop_proof"),
            }
        }
    }
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut answer = json!({
        "sub": sub,
        "name": format!("User {sub}"),
        "email": format!("{sub}@example.com"),
    });
    if let Some(object) = answer.as_object_mut() {
        for (name, value) in lock(&state.userinfo_overrides).iter() {
            object.insert(name.clone(), value.clone());
        }
    }
    Json(answer).into_response()
}
