//! `grant_type=client_credentials`.
#![allow(clippy::result_large_err)] // handlers answer early with a ready `Response`

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Map, Value};

use crate::access_tokens::{cnf, token_answer, NewAccessToken};
use crate::responses::{no_store, oauth_error};
use crate::state::{ServerState, TestClient};

pub(crate) fn client_credentials(
    state: &ServerState,
    client: &TestClient,
    form: &[(String, String)],
    jkt: Option<&str>,
    x5t: Option<&str>,
) -> Result<Response, Response> {
    let scope = form
        .iter()
        .find(|(k, _)| k == "scope")
        .map(|(_, v)| v.clone());
    if let (Some(scope), Some(allowed)) = (&scope, &client.allowed_scopes) {
        if let Some(bad) = scope.split(' ').find(|s| !allowed.iter().any(|a| a == s)) {
            return Err(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                &format!("scope {bad} is not allowed"),
            ));
        }
    }
    let resources: Vec<&str> = form
        .iter()
        .filter(|(k, _)| k == "resource")
        .map(|(_, v)| v.as_str())
        .collect();
    for resource in &resources {
        if url::Url::parse(resource)
            .map(|u| u.fragment().is_some())
            .unwrap_or(true)
        {
            return Err(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_target",
                "resource must be an absolute URI without fragment",
            ));
        }
    }
    let extras: Map<String, Value> = form
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "grant_type" | "scope" | "resource" | "client_id" | "client_secret"
            )
        })
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let (token, expires_in) = NewAccessToken {
        sub: &client.client_id,
        client_id: &client.client_id,
        scope: scope.as_deref(),
        resources: &resources,
        extras,
        cnf: cnf(jkt, x5t),
        ..NewAccessToken::default()
    }
    .sign(state)?;
    let body = token_answer(&token, jkt, expires_in, scope.as_deref());
    Ok(no_store(StatusCode::OK, body))
}
