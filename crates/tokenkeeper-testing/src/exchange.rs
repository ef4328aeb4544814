//! Token exchange (RFC 8693) at the test server: validates what the client sends, so that a
//! client bug fails a test.
//!
//! - `subject_token` and `subject_token_type` are required; the subject must be an access
//!   token this server issued and still valid (`invalid_grant` otherwise), or, with the JWT
//!   type, any token it signed;
//! - `actor_token` and `actor_token_type` come together or not at all; an actor token is
//!   verified the same way;
//! - `requested_token_type`, when sent, is an access token or a JWT; `resource` values are
//!   absolute URIs without fragment; every `audience` goes into the issued token's `aud`;
//! - the issued token carries the subject's `sub`, `act: {sub}` for the actor (or the
//!   client), and lives the server's usual lifetime — deliberately not clamped to the
//!   subject's, so that a test shows the client clamps it.
#![allow(clippy::result_large_err)] // handlers answer early with a ready `Response`

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Map, Value};

use crate::access_tokens::{cnf, token_answer, verify, NewAccessToken};
use crate::responses::{no_store, oauth_error};
use crate::state::{lock, ServerState, TestClient};

/// The grant type.
pub(crate) const GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn invalid_request(why: &str) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_request", why)
}

/// Verifies a token given up in the exchange: one this server signed, unexpired.
fn given_up(state: &ServerState, token: &str, ty: &str) -> Result<Map<String, Value>, Response> {
    if ty != ACCESS_TOKEN && ty != JWT {
        return Err(invalid_request("unsupported token type"));
    }
    verify(state, token).map_err(|why| {
        oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            &format!("subject: {why}"),
        )
    })
}

pub(crate) fn token_exchange(
    state: &ServerState,
    client: &TestClient,
    form: &[(String, String)],
    jkt: Option<&str>,
) -> Result<Response, Response> {
    let (Some(subject), Some(subject_type)) = (
        field(form, "subject_token"),
        field(form, "subject_token_type"),
    ) else {
        return Err(invalid_request(
            "subject_token and subject_token_type are required",
        ));
    };
    let subject = given_up(state, subject, subject_type)?;
    let actor = match (field(form, "actor_token"), field(form, "actor_token_type")) {
        (Some(token), Some(ty)) => Some(given_up(state, token, ty)?),
        (None, None) => None,
        _ => {
            return Err(invalid_request(
                "actor_token and actor_token_type go together",
            ))
        }
    };
    let requested = field(form, "requested_token_type");
    if requested.is_some_and(|r| r != ACCESS_TOKEN && r != JWT) {
        return Err(invalid_request("unsupported requested_token_type"));
    }
    let resources: Vec<&str> = form
        .iter()
        .filter(|(k, _)| k == "resource")
        .map(|(_, v)| v.as_str())
        .collect();
    if resources.iter().any(|r| {
        url::Url::parse(r)
            .map(|u| u.fragment().is_some())
            .unwrap_or(true)
    }) {
        return Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_target",
            "resource must be an absolute URI without fragment",
        ));
    }
    let mut targets: Vec<&str> = form
        .iter()
        .filter(|(k, _)| k == "audience")
        .map(|(_, v)| v.as_str())
        .collect();
    targets.extend(&resources);
    let sub = subject
        .get("sub")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let act = actor
        .as_ref()
        .and_then(|a| a.get("sub").and_then(Value::as_str))
        .unwrap_or(&client.client_id);
    let mut extras = Map::new();
    extras.insert("act".into(), json!({ "sub": act }));
    let scope = field(form, "scope");
    let (token, expires_in) = NewAccessToken {
        sub: &sub,
        client_id: &client.client_id,
        scope,
        resources: &targets,
        extras,
        cnf: cnf(jkt, None),
        ..NewAccessToken::default()
    }
    .sign(state)?;
    let issued = match lock(&state.exchange_issued_type).clone() {
        Some(overridden) => overridden,
        None => Some(requested.unwrap_or(ACCESS_TOKEN).to_owned()),
    };
    let mut body = token_answer(&token, jkt, expires_in, scope);
    if let Some(issued) = issued {
        body["issued_token_type"] = json!(issued);
    }
    Ok(no_store(StatusCode::OK, body))
}
