//! The authorization code flow: a programmable login (no UI), PKCE S256, ID tokens,
//! RP-initiated logout.
#![allow(clippy::result_large_err)] // handlers answer early with a ready `Response`

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::responses::redirect_with;
use crate::state::{lock, CodeRecord, ServerState};

/// `GET /authorize`: checks the request, "logs in" the programmed user and redirects back with
/// `code`, `state` and `iss` (RFC 9207).
pub(crate) async fn authorize(
    State(state): State<Arc<ServerState>>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let sub = lock(&state.login).clone();
    let page = state.login_page.load(std::sync::atomic::Ordering::Relaxed);
    if page && params.get("prompt").map(String::as_str) != Some("none") {
        return login_page(&params);
    }
    issue_code(&state, &params, sub)
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The minimal login page (development): a user name, and the authorization request's
/// parameters carried along.
fn login_page(params: &HashMap<String, String>) -> Response {
    let hidden: String = params
        .iter()
        .map(|(k, v)| {
            format!(
                "<input type=hidden name=\"{}\" value=\"{}\">",
                html_escape(k),
                html_escape(v)
            )
        })
        .collect();
    let body = format!(
        "<!doctype html><meta charset=utf-8><title>Sign in</title>\
         <style>body{{font:16px system-ui;margin:3em auto;max-width:22em}}input,button{{font:inherit;padding:.4em;margin:.3em 0;width:100%}}</style>\
         <h1>Development identity provider</h1><p>Any user name signs in (no password).</p>\
         <form method=post action=\"/authorize/login\">{hidden}\
         <label>User name <input id=username name=username value=alice autofocus></label>\
         <button id=sign-in type=submit>Sign in</button></form>"
    );
    (
        [
            (axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (axum::http::header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// `POST /authorize/login`: the login page's form; logs `username` in.
pub(crate) async fn login_form(
    State(state): State<Arc<ServerState>>,
    axum::extract::Form(mut params): axum::extract::Form<HashMap<String, String>>,
) -> Response {
    let user = params
        .remove("username")
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty() && u.len() <= 64 && u.chars().all(|c| c.is_ascii_graphic()));
    if user.is_some() {
        // The provider's own "session": a later `prompt=none` finds the user signed in.
        (*lock(&state.login)).clone_from(&user);
    }
    issue_code(&state, &params, user)
}

/// Checks an authorization request and redirects back with a code for `sub` (or the error
/// `login_required` without one).
fn issue_code(
    state: &ServerState,
    params: &HashMap<String, String>,
    sub: Option<String>,
) -> Response {
    let get = |k: &str| params.get(k).map(String::as_str);
    let client = get("client_id").and_then(|id| lock(&state.clients).get(id).cloned());
    let Some(client) = client else {
        return (StatusCode::BAD_REQUEST, "unknown client").into_response();
    };
    let Some(redirect_uri) =
        get("redirect_uri").filter(|r| client.redirect_uris.iter().any(|u| u == r))
    else {
        // Never redirect to an unregistered URI.
        return (StatusCode::BAD_REQUEST, "unregistered redirect_uri").into_response();
    };
    let state_param = get("state").unwrap_or_default().to_owned();
    let iss = state.issuer.clone();
    let fail = |error: &str| {
        redirect_with(
            redirect_uri,
            &[("error", error), ("state", &state_param), ("iss", &iss)],
        )
    };
    if get("response_type") != Some("code") {
        return fail("unsupported_response_type");
    }
    if get("code_challenge_method") != Some("S256")
        || get("code_challenge").is_none_or(|c| c.len() < 43)
    {
        return fail("invalid_request");
    }
    let Some(sub) = sub else {
        return fail("login_required");
    };
    let code = format!("code-{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
    let scope = get("scope").unwrap_or("openid").to_owned();
    let refresh_token = scope
        .split(' ')
        .any(|s| s == "offline_access")
        .then(|| lock(&state.refresh).issue(&client.client_id, &sub, Some(&scope), None));
    lock(&state.codes).insert(
        code.clone(),
        CodeRecord {
            client_id: client.client_id.clone(),
            redirect_uri: redirect_uri.to_owned(),
            sub,
            sid: format!("sid-{:x}", fastrand::u64(..)),
            scope,
            nonce: get("nonce").map(str::to_owned),
            challenge: get("code_challenge").unwrap_or_default().to_owned(),
            resource: get("resource").map(str::to_owned),
            used: false,
            refresh_token,
            // A server without DPoP support ignores `dpop_jkt` as it ignores proofs.
            dpop_jkt: get("dpop_jkt")
                .filter(|_| {
                    !state
                        .dpop_ignored
                        .load(std::sync::atomic::Ordering::Relaxed)
                })
                .map(str::to_owned),
        },
    );
    redirect_with(
        redirect_uri,
        &[("code", &code), ("state", &state_param), ("iss", &iss)],
    )
}
