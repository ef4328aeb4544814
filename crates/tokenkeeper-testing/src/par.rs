//! Pushed authorization requests (RFC 9126): `POST /par` with the client's authentication and
//! the authorization request's parameters (or a request object), optionally a DPoP proof (RFC
//! 9449 §10.1); answers `201` with a one-time `request_uri` that `/authorize` takes.
#![allow(clippy::result_large_err)] // handlers answer early with a ready `Response`

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::json;
use tokenkeeper::Clock as _;

use crate::client_auth::authenticated_form;
use crate::responses::{no_store, oauth_error};
use crate::state::{lock, PushedRecord, ServerState};

/// How long a `request_uri` is valid (seconds).
const LIFETIME: u64 = 60;

/// `POST /par`.
pub(crate) async fn par(
    State(state): State<Arc<ServerState>>,
    peer: Option<axum::Extension<crate::mtls::PeerCertificate>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match push(&state, peer, &headers, &body) {
        Ok(response) | Err(response) => {
            let mut response = response;
            if let Some(nonce) = state.dpop.current_nonce() {
                if let Ok(value) = HeaderValue::try_from(nonce) {
                    response.headers_mut().insert("dpop-nonce", value);
                }
            }
            response
        }
    }
}

fn push(
    state: &ServerState,
    peer: Option<axum::Extension<crate::mtls::PeerCertificate>>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, Response> {
    let bad = |error: &str, why: &str| oauth_error(StatusCode::BAD_REQUEST, error, why);
    let (form, client) = authenticated_form(state, peer, headers, body)?;
    let mut params: HashMap<String, String> = HashMap::new();
    for (name, value) in &form {
        if matches!(
            name.as_str(),
            "client_secret" | "client_assertion" | "client_assertion_type"
        ) {
            continue;
        }
        if params.insert(name.clone(), value.clone()).is_some() && name != "resource" {
            return Err(bad(
                "invalid_request",
                &format!("parameter {name} is repeated"),
            ));
        }
    }
    if params.contains_key("request_uri") {
        return Err(bad("invalid_request", "request_uri may not be pushed"));
    }
    if let Some(jwt) = params.get("request").cloned() {
        let signed = crate::request_object::verify(state, &client, &jwt)
            .map_err(|why| bad("invalid_request_object", &why))?;
        params = signed;
        params.insert("client_id".into(), client.client_id.clone());
        params.insert("tk.signed".into(), "1".into());
    } else if client.require_signed_request {
        return Err(bad("invalid_request", "this client must sign its requests"));
    }
    if params
        .get("client_id")
        .is_some_and(|id| *id != client.client_id)
    {
        return Err(bad(
            "invalid_request",
            "client_id is not the authenticated client",
        ));
    }
    params.insert("client_id".into(), client.client_id.clone());
    let redirect_ok = params
        .get("redirect_uri")
        .is_some_and(|r| client.redirect_uris.iter().any(|u| u == r));
    if !redirect_ok {
        return Err(bad("invalid_request", "unregistered redirect_uri"));
    }
    // RFC 9449 §10.1: a proof binds the code to its key; with `dpop_jkt` too, they must match.
    let now = state.clock.now().as_millis() / 1000;
    let htu = format!("{}/par", state.issuer);
    match state.dpop.verify(headers, "POST", &htu, None, now) {
        Ok(Some(jkt)) => {
            if params.get("dpop_jkt").is_some_and(|j| *j != jkt) {
                return Err(bad("invalid_request", "dpop_jkt is not the proof's key"));
            }
            params.insert("dpop_jkt".into(), jkt);
        }
        Ok(None) => {}
        Err(crate::dpop::ProofError::UseNonce) => {
            return Err(bad(
                "use_dpop_nonce",
                "Authorization server requires nonce in DPoP proof",
            ))
        }
        Err(crate::dpop::ProofError::Invalid(why)) => return Err(bad("invalid_dpop_proof", &why)),
    }
    let request_uri = format!(
        "urn:ietf:params:oauth:request_uri:{:016x}{:016x}",
        fastrand::u64(..),
        fastrand::u64(..)
    );
    lock(&state.pushed).insert(
        request_uri.clone(),
        PushedRecord {
            client_id: client.client_id.clone(),
            params,
            expires_at: now + LIFETIME,
        },
    );
    state.count("par");
    Ok(no_store(
        StatusCode::CREATED,
        json!({ "request_uri": request_uri, "expires_in": LIFETIME }),
    ))
}

/// Takes the pushed request `request_uri` for `client_id` (once); `None` when unknown, spent,
/// expired or another client's.
pub(crate) fn take(
    state: &ServerState,
    request_uri: &str,
    client_id: Option<&str>,
) -> Option<HashMap<String, String>> {
    let record = lock(&state.pushed).remove(request_uri)?;
    let now = state.clock.now().as_millis() / 1000;
    (record.expires_at > now && client_id == Some(record.client_id.as_str()))
        .then_some(record.params)
}
