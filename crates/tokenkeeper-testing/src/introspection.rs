//! RFC 7662 introspection.
#![allow(clippy::result_large_err)] // handlers answer early with a ready `Response`

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::client_auth::authenticated_form;
use crate::responses::oauth_error;
use crate::state::{lock, ServerState};

/// RFC 7662 introspection of refresh tokens (and of this server's access tokens).
pub(crate) async fn introspect(
    State(state): State<Arc<ServerState>>,
    peer: Option<axum::Extension<crate::mtls::PeerCertificate>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = match authenticated_form(&state, peer, &headers, &body) {
        Ok((form, _)) => form,
        Err(response) => return response,
    };
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
