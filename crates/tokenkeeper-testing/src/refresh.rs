//! Refresh tokens: issuing, rotation with reuse detection, revocation, introspection.
#![allow(clippy::result_large_err)] // handlers answer early with a ready `Response`

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

use crate::access_tokens::{cnf, token_answer, NewAccessToken};
use crate::responses::{no_store, oauth_error};
use crate::state::{lock, ServerState, TestClient};

fn invalid_grant(description: &str) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", description)
}

/// `grant_type=refresh_token`.
pub(crate) fn refresh_token_grant(
    state: &ServerState,
    client: &TestClient,
    form: &[(String, String)],
    jkt: Option<&str>,
    x5t: Option<&str>,
) -> Result<Response, Response> {
    let value = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let Some(presented) = value("refresh_token") else {
        return Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "refresh_token is missing",
        ));
    };
    let rotate = state.rotate_refresh_tokens.load(Ordering::Relaxed);
    let refused = |response: Response| {
        state.count("refresh_refused");
        response
    };
    let mut store = lock(&state.refresh);
    let Some(record) = store.tokens.get(presented).cloned() else {
        return Err(refused(invalid_grant("unknown refresh token")));
    };
    if record.client_id != client.client_id {
        return Err(refused(invalid_grant(
            "the refresh token was issued to another client",
        )));
    }
    if record.revoked || store.revoked_families.contains(&record.family) {
        return Err(refused(invalid_grant("the refresh token is revoked")));
    }
    if record.jkt.is_some() && record.jkt.as_deref() != jkt {
        return Err(refused(invalid_grant(
            "the refresh token is bound to another DPoP key",
        )));
    }
    if record.consumed {
        // Reuse of a rotated token: revoke the whole family, newest tokens included.
        store.revoked_families.insert(record.family);
        return Err(refused(invalid_grant(
            "refresh token reuse detected; the grant is revoked",
        )));
    }
    let scope = match (value("scope"), record.scope.as_deref()) {
        (Some(requested), Some(granted)) => {
            let granted: HashSet<&str> = granted.split(' ').collect();
            if let Some(bad) = requested.split(' ').find(|s| !granted.contains(s)) {
                return Err(oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    &format!("scope {bad} was not granted"),
                ));
            }
            Some(requested.to_owned())
        }
        (Some(requested), None) => Some(requested.to_owned()),
        (None, granted) => granted.map(str::to_owned),
    };
    let resources: Vec<&str> = form
        .iter()
        .filter(|(k, _)| k == "resource")
        .map(|(_, v)| v.as_str())
        .collect();
    let (access_token, expires_in) = NewAccessToken {
        sub: &record.sub,
        client_id: &client.client_id,
        scope: scope.as_deref(),
        resources: &resources,
        cnf: cnf(jkt, x5t),
        ..NewAccessToken::default()
    }
    .sign(state)?;
    let refresh_token = if rotate {
        if let Some(r) = store.tokens.get_mut(presented) {
            r.consumed = true;
        }
        let token = store.issue(
            &record.client_id,
            &record.sub,
            record.scope.as_deref(),
            Some(record.family),
        );
        if let Some(r) = store.tokens.get_mut(&token) {
            r.jkt = record.jkt.clone();
        }
        Some(token)
    } else if state.return_refresh_token.load(Ordering::Relaxed) {
        Some(presented.to_owned())
    } else {
        None
    };
    drop(store);
    let mut body = token_answer(&access_token, jkt, expires_in, scope.as_deref());
    if let Some(refresh_token) = refresh_token {
        body["refresh_token"] = json!(refresh_token);
    }
    Ok(no_store(StatusCode::OK, body))
}
