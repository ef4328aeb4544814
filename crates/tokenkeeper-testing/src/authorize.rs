//! The authorization code flow: a programmable login (no UI), PKCE S256, ID tokens,
//! RP-initiated logout.
#![allow(clippy::result_large_err)] // handlers answer early with a ready `Response`

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Map};
use tokenkeeper::Clock as _;

use crate::server::{issue_access_token, lock, oauth_error, ServerState, TestClient};

#[derive(Debug, Clone)]
pub(crate) struct CodeRecord {
    client_id: String,
    redirect_uri: String,
    sub: String,
    sid: String,
    scope: String,
    nonce: Option<String>,
    challenge: String,
    resource: Option<String>,
    used: bool,
    refresh_token: Option<String>,
    /// `dpop_jkt` of the authorization request: the code exchange must prove this key.
    dpop_jkt: Option<String>,
}

fn redirect_with(redirect_uri: &str, params: &[(&str, &str)]) -> Response {
    let mut url = match url::Url::parse(redirect_uri) {
        Ok(u) => u,
        Err(_) => return StatusCode::BAD_REQUEST.into_response(),
    };
    {
        let mut query = url.query_pairs_mut();
        for (k, v) in params {
            query.append_pair(k, v);
        }
    }
    Redirect::to(url.as_str()).into_response()
}

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

/// `grant_type=authorization_code`.
pub(crate) fn authorization_code_grant(
    state: &ServerState,
    client: &TestClient,
    form: &[(String, String)],
    jkt: Option<&str>,
) -> Result<Response, Response> {
    let value = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let invalid_grant = |d: &str| oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", d);
    let code = value("code").ok_or_else(|| invalid_grant("code is missing"))?;
    let record = {
        let mut codes = lock(&state.codes);
        let Some(record) = codes.get_mut(code) else {
            return Err(invalid_grant("unknown code"));
        };
        if record.used {
            // A replayed code: revoke what it gave.
            if let Some(rt) = &record.refresh_token {
                if let Some(r) = lock(&state.refresh).tokens.get_mut(rt) {
                    r.revoked = true;
                }
            }
            return Err(invalid_grant("the code was already used"));
        }
        record.used = true;
        record.clone()
    };
    if record.client_id != client.client_id {
        return Err(invalid_grant("the code was issued to another client"));
    }
    if value("redirect_uri") != Some(record.redirect_uri.as_str()) {
        return Err(invalid_grant("redirect_uri does not match"));
    }
    let verifier =
        value("code_verifier").ok_or_else(|| invalid_grant("code_verifier is missing"))?;
    let challenge =
        URL_SAFE_NO_PAD.encode(<sha2::Sha256 as sha2::Digest>::digest(verifier.as_bytes()));
    if challenge != record.challenge {
        return Err(invalid_grant("PKCE verification failed"));
    }
    if record.dpop_jkt.is_some() && record.dpop_jkt.as_deref() != jkt {
        // RFC 9449 §10: the code is bound to the key named at the authorization request.
        return Err(invalid_grant(
            "the proof's key is not the dpop_jkt of the authorization request",
        ));
    }
    if let (Some(rt), Some(jkt)) = (&record.refresh_token, jkt) {
        if let Some(r) = lock(&state.refresh).tokens.get_mut(rt) {
            r.jkt = Some(jkt.to_owned());
        }
    }
    let resources: Vec<&str> = record.resource.iter().map(String::as_str).collect();
    let (access_token, expires_in) = issue_access_token(
        state,
        &record.sub,
        &client.client_id,
        Some(&record.scope),
        &resources,
        Map::new(),
        jkt,
    )?;
    let id_token = id_token(state, &record, &client.client_id)?;
    let mut body = json!({
        "access_token": access_token,
        "token_type": crate::server::token_type(jkt),
        "id_token": id_token,
        "scope": record.scope,
    });
    if let Some(expires_in) = expires_in {
        body["expires_in"] = json!(expires_in);
    }
    if let Some(rt) = &record.refresh_token {
        body["refresh_token"] = json!(rt);
    }
    let mut response = Json(body).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

fn id_token(state: &ServerState, record: &CodeRecord, client_id: &str) -> Result<String, Response> {
    let now = state.clock.now().as_millis() / 1000;
    let mut claims = json!({
        "iss": state.issuer,
        "sub": record.sub,
        "aud": client_id,
        "iat": now,
        "exp": now + 300,
        "auth_time": now,
        "sid": record.sid,
    });
    if let Some(nonce) = &record.nonce {
        claims["nonce"] = json!(nonce);
    }
    // Test overrides: a value replaces the claim, `null` removes it.
    for (name, value) in lock(&state.id_token_overrides).iter() {
        match value {
            serde_json::Value::Null => {
                if let Some(map) = claims.as_object_mut() {
                    map.remove(name);
                }
            }
            value => claims[name.as_str()] = value.clone(),
        }
    }
    let key = state.current_key();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, &claims, &key.encoding).map_err(|e| {
        oauth_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            &format!("signing failed: {e}"),
        )
    })
}

/// `GET /end_session` (RP-initiated logout): counts, then redirects to
/// `post_logout_redirect_uri` when given.
pub(crate) async fn end_session(
    State(state): State<Arc<ServerState>>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    *lock(&state.end_sessions) += 1;
    match params.get("post_logout_redirect_uri") {
        Some(uri) => {
            let state_param = params.get("state").cloned().unwrap_or_default();
            redirect_with(uri, &[("state", &state_param)])
        }
        None => (StatusCode::OK, "signed out").into_response(),
    }
}
