//! The device authorization grant (RFC 8628): `POST /device_authorization` gives a device
//! code, a user code and where the user goes; the user approves at `/device` (a minimal page)
//! or the test does ([`crate::TestServer::approve_device`]); the device polls the token
//! endpoint and hears `authorization_pending`, `slow_down` (polling faster than `interval`,
//! which then grows by 5 s), `access_denied`, `expired_token`, or gets its tokens once.
#![allow(clippy::result_large_err)] // handlers answer early with a ready `Response`

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokenkeeper::Clock as _;

use crate::access_tokens::{cnf, token_answer, NewAccessToken};
use crate::client_auth::authenticated_form;
use crate::responses::{no_store, oauth_error};
use crate::state::{lock, DeviceRecord, DeviceStatus, ServerState, TestClient};

/// The grant type.
pub(crate) const GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// Letters of user codes: no vowels, no look-alikes (RFC 8628 §6.1).
const USER_CODE_ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";

fn user_code() -> String {
    let mut code = String::new();
    for i in 0..8 {
        if i == 4 {
            code.push('-');
        }
        code.push(USER_CODE_ALPHABET[fastrand::usize(..USER_CODE_ALPHABET.len())] as char);
    }
    code
}

/// `POST /device_authorization`.
pub(crate) async fn device_authorization(
    State(state): State<Arc<ServerState>>,
    peer: Option<axum::Extension<crate::mtls::PeerCertificate>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (form, client) = match authenticated_form(&state, peer, &headers, &body) {
        Ok(authenticated) => authenticated,
        Err(response) => return response,
    };
    let scope = form
        .iter()
        .find(|(k, _)| k == "scope")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| "openid".into());
    let (interval, expires_in) = *lock(&state.device_timing);
    let now = state.clock.now().as_millis() / 1000;
    let device_code = format!("dc-{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
    let user_code = user_code();
    lock(&state.devices).insert(
        device_code.clone(),
        DeviceRecord {
            client_id: client.client_id.clone(),
            scope,
            user_code: user_code.clone(),
            status: DeviceStatus::Pending,
            expires_at: now + expires_in,
            interval,
            last_poll_ms: None,
        },
    );
    state.count("device_authorization");
    let verification_uri = format!("{}/device", state.issuer);
    no_store(
        StatusCode::OK,
        json!({
            "device_code": device_code,
            "user_code": user_code,
            "verification_uri": verification_uri,
            "verification_uri_complete": format!("{verification_uri}?user_code={user_code}"),
            "expires_in": expires_in,
            "interval": interval,
        }),
    )
}

/// Approves (`sub`) or denies (`None`) the pending authorization with `user_code`.
pub(crate) fn decide(state: &ServerState, user_code: &str, sub: Option<&str>) -> bool {
    let wanted = user_code.trim().to_ascii_uppercase();
    let mut devices = lock(&state.devices);
    let Some(record) = devices
        .values_mut()
        .find(|r| r.user_code == wanted && r.status == DeviceStatus::Pending)
    else {
        return false;
    };
    record.status = match sub {
        Some(sub) => DeviceStatus::Approved(sub.to_owned()),
        None => DeviceStatus::Denied,
    };
    true
}

/// `grant_type=urn:ietf:params:oauth:grant-type:device_code`.
pub(crate) fn device_code_grant(
    state: &ServerState,
    client: &TestClient,
    form: &[(String, String)],
    jkt: Option<&str>,
) -> Result<Response, Response> {
    state.count("device_poll");
    let error = |code: &str, why: &str| oauth_error(StatusCode::BAD_REQUEST, code, why);
    let code = form
        .iter()
        .find(|(k, _)| k == "device_code")
        .map(|(_, v)| v.as_str())
        .ok_or_else(|| error("invalid_request", "device_code is missing"))?;
    let now_ms = state.clock.now().as_millis();
    let (sub, scope) = {
        let mut devices = lock(&state.devices);
        let record = devices
            .get_mut(code)
            .filter(|r| r.client_id == client.client_id)
            .ok_or_else(|| error("invalid_grant", "unknown device_code"))?;
        if record.expires_at * 1000 <= now_ms {
            return Err(error("expired_token", "the device code expired"));
        }
        let too_soon = record
            .last_poll_ms
            .is_some_and(|last| now_ms < last + record.interval * 1000);
        record.last_poll_ms = Some(now_ms);
        if too_soon {
            record.interval += 5;
            state.count("device_slow_down");
            return Err(error("slow_down", "polling too fast"));
        }
        match record.status.clone() {
            DeviceStatus::Pending => {
                return Err(error(
                    "authorization_pending",
                    "the user has not answered yet",
                ))
            }
            DeviceStatus::Denied => return Err(error("access_denied", "the user refused")),
            DeviceStatus::Done => return Err(error("invalid_grant", "the device code was used")),
            DeviceStatus::Approved(sub) => {
                record.status = DeviceStatus::Done;
                (sub, record.scope.clone())
            }
        }
    };
    let (access_token, expires_in) = NewAccessToken {
        sub: &sub,
        client_id: &client.client_id,
        scope: Some(&scope),
        cnf: cnf(jkt, None),
        ..NewAccessToken::default()
    }
    .sign(state)?;
    let mut body = token_answer(&access_token, jkt, expires_in, Some(&scope));
    if scope.split(' ').any(|s| s == "offline_access") {
        let refresh = lock(&state.refresh).issue(&client.client_id, &sub, Some(&scope), None);
        if let (Some(jkt), Some(r)) = (jkt, lock(&state.refresh).tokens.get_mut(&refresh)) {
            r.jkt = Some(jkt.to_owned());
        }
        body["refresh_token"] = json!(refresh);
    }
    Ok(no_store(StatusCode::OK, body))
}

/// `GET /device`: a page asking for the user code and a user name (development only: any
/// name is accepted).
pub(crate) async fn verification_page(
    axum::extract::Query(query): axum::extract::Query<HashMap<String, String>>,
) -> Response {
    let code: String = query
        .get("user_code")
        .map(|c| {
            c.chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                .take(16)
                .collect()
        })
        .unwrap_or_default();
    let body = format!(
        "<!doctype html><meta charset=utf-8><title>Connect a device</title>\
         <h1>Connect a device</h1><form method=post action=\"/device\">\
         <label>Code <input id=user_code name=user_code value=\"{code}\"></label>\
         <label>User name <input id=username name=username value=alice></label>\
         <button id=approve name=decision value=approve>Approve</button>\
         <button id=deny name=decision value=deny>Deny</button></form>"
    );
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// `POST /device`: the page's answer.
pub(crate) async fn verification_form(
    State(state): State<Arc<ServerState>>,
    axum::extract::Form(form): axum::extract::Form<HashMap<String, String>>,
) -> Response {
    let code = form.get("user_code").cloned().unwrap_or_default();
    let user = form
        .get("username")
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty() && u.len() <= 64 && u.chars().all(|c| c.is_ascii_graphic()));
    let approve = form.get("decision").map(String::as_str) == Some("approve");
    let done = match (approve, user) {
        (true, Some(user)) => decide(&state, &code, Some(&user)),
        (false, _) => decide(&state, &code, None),
        (true, None) => false,
    };
    if done {
        (StatusCode::OK, "Done: you may return to your device.").into_response()
    } else {
        (StatusCode::BAD_REQUEST, "Unknown or used code.").into_response()
    }
}
