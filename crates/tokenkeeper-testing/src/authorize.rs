//! The authorization code flow: a programmable login (no UI), PKCE S256, ID tokens,
//! RP-initiated logout.
#![allow(clippy::result_large_err)] // handlers answer early with a ready `Response`

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokenkeeper::Clock as _;

use crate::responses::redirect_with;
use crate::state::{lock, CodeRecord, ServerState};

/// `GET /authorize`: reads the request — a pushed one (`request_uri`, RFC 9126), a request
/// object (`request`, RFC 9101) or plain parameters, as the server and the client demand —
/// "logs in" the programmed user and redirects back with `code`, `state` and `iss` (RFC 9207).
pub(crate) async fn authorize(
    State(state): State<Arc<ServerState>>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let params = match resolve(&state, params) {
        Ok(params) => params,
        Err(response) => return response,
    };
    let sub = lock(&state.login).clone();
    let page = state.login_page.load(std::sync::atomic::Ordering::Relaxed);
    if page && params.get("prompt").map(String::as_str) != Some("none") {
        return login_page(&state, params);
    }
    issue_code(&state, &params, sub)
}

/// The request's parameters: taken from the pushed request, or read from the request object,
/// or as they came — refused when the server or the client demands a pushed or signed request
/// and this one is not.
fn resolve(
    state: &ServerState,
    params: HashMap<String, String>,
) -> Result<HashMap<String, String>, Response> {
    let refuse = |why: &str| (StatusCode::BAD_REQUEST, why.to_owned()).into_response();
    let client_id = params.get("client_id").cloned();
    let client = client_id
        .as_deref()
        .and_then(|id| lock(&state.clients).get(id).cloned())
        .ok_or_else(|| refuse("unknown client"))?;
    let (how, resolved) = if let Some(uri) = params.get("request_uri") {
        let mut pushed = crate::par::take(state, uri, client_id.as_deref())
            .ok_or_else(|| refuse("invalid_request_uri"))?;
        let how = if pushed.remove("tk.signed").is_some() {
            "pushed+signed"
        } else {
            "pushed"
        };
        (how, pushed)
    } else {
        if state
            .require_pushed
            .load(std::sync::atomic::Ordering::Relaxed)
            || client.require_pushed
        {
            return Err(refuse(
                "invalid_request: pushed authorization requests are required",
            ));
        }
        match params.get("request") {
            Some(jwt) => {
                let signed = crate::request_object::verify(state, &client, jwt)
                    .map_err(|why| refuse(&format!("invalid_request_object: {why}")))?;
                ("signed", signed)
            }
            None if client.require_signed_request => {
                return Err(refuse(
                    "invalid_request: a signed request object is required",
                ))
            }
            None => ("plain", params),
        }
    };
    *lock(&state.last_authorization) = Some((how.to_owned(), resolved.clone()));
    Ok(resolved)
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The minimal login page (development): a user name; the authorization request waits on the
/// server under an interaction id the form carries.
fn login_page(state: &ServerState, params: HashMap<String, String>) -> Response {
    let interaction = format!(
        "interaction-{:016x}{:016x}",
        fastrand::u64(..),
        fastrand::u64(..)
    );
    let now = state.clock.now().as_millis() / 1000;
    lock(&state.pushed).insert(
        interaction.clone(),
        crate::state::PushedRecord {
            client_id: params.get("client_id").cloned().unwrap_or_default(),
            params,
            expires_at: now + 600,
        },
    );
    let hidden = format!(
        "<input type=hidden name=\"interaction\" value=\"{}\">",
        html_escape(&interaction)
    );
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
    axum::extract::Form(mut form): axum::extract::Form<HashMap<String, String>>,
) -> Response {
    let interaction = form.remove("interaction").unwrap_or_default();
    let pending = lock(&state.pushed).remove(&interaction);
    let now = state.clock.now().as_millis() / 1000;
    let Some(params) = pending
        .filter(|p| p.expires_at > now && interaction.starts_with("interaction-"))
        .map(|p| p.params)
    else {
        return (StatusCode::BAD_REQUEST, "no login in progress").into_response();
    };
    let user = form
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
    let (acr, auth_time) = authenticate_user(state, &get);
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
            acr,
            auth_time,
        },
    );
    redirect_with(
        redirect_uri,
        &[("code", &code), ("state", &state_param), ("iss", &iss)],
    )
}

/// The user's authentication for this request (PR-04): a login asking (`acr_values`) for the
/// step-up `acr` gets it, with a fresh authentication; one whose `max_age` the last
/// authentication exceeds, or with `prompt=login`, authenticates again. The `acr` and
/// `auth_time` of the ID token.
fn authenticate_user<'a>(
    state: &ServerState,
    get: &impl Fn(&str) -> Option<&'a str>,
) -> (Option<String>, u64) {
    let now = state.clock.now().as_millis() / 1000;
    let mut auth = lock(&state.authentication);
    let requested: Vec<&str> = get("acr_values").unwrap_or_default().split(' ').collect();
    let stepped = auth
        .step_up_acr
        .as_deref()
        .is_some_and(|s| requested.contains(&s));
    let max_age = get("max_age").and_then(|m| m.parse::<u64>().ok());
    let stale = match (auth.auth_time, max_age) {
        (None, _) => true,
        (Some(at), Some(max_age)) => now.saturating_sub(at) > max_age,
        (Some(_), None) => false,
    };
    if stepped || stale || get("prompt") == Some("login") {
        auth.auth_time = Some(now);
    }
    let acr = if stepped {
        auth.step_up_acr.clone()
    } else {
        auth.acr.clone()
    };
    (acr, auth.auth_time.unwrap_or(now))
}
