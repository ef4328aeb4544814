//! RFC 7662 introspection.
#![allow(clippy::result_large_err)] // handlers answer early with a ready `Response`

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::client_auth::authenticate;
use crate::responses::{form_of, oauth_error};
use crate::state::{lock, ServerState};

/// RFC 7662 introspection of refresh tokens (and of this server's access tokens).
pub(crate) async fn introspect(
    State(state): State<Arc<ServerState>>,
    peer: Option<axum::Extension<crate::mtls::PeerCertificate>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = form_of(&body);
    let peer = peer.and_then(|p| p.0 .0);
    if let Err(response) = authenticate(&state, &headers, &form, peer.as_deref().map(Vec::as_slice))
    {
        return response;
    }
    let Some((_, token)) = form.iter().find(|(k, _)| k == "token") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "token is missing",
        );
    };
    let store = lock(&state.refresh);
    if let Some(record) = store.tokens.get(token) {
        let active = store.is_active(token);
        return Json(json!({"active": active, "sub": record.sub, "client_id": record.client_id, "token_type": "refresh_token"})).into_response();
    }
    drop(store);
    match crate::access_tokens::verify(&state, token) {
        Ok(claims) => {
            let mut body = json!({"active": true, "token_type": "access_token"});
            for key in ["sub", "client_id", "scope", "aud", "exp"] {
                if let Some(v) = claims.get(key) {
                    body[key] = v.clone();
                }
            }
            Json(body).into_response()
        }
        Err(_) => Json(json!({"active": false})).into_response(),
    }
}
