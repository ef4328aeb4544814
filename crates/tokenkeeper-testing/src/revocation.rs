//! RFC 7009 revocation.
#![allow(clippy::result_large_err)] // handlers answer early with a ready `Response`

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::client_auth::authenticated_form;
use crate::state::{lock, ServerState};

/// RFC 7009 revocation: 200 for any token, known or not; a refresh token is revoked.
pub(crate) async fn revoke(
    State(state): State<Arc<ServerState>>,
    peer: Option<axum::Extension<crate::mtls::PeerCertificate>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = match authenticated_form(&state, peer, &headers, &body) {
        Ok((form, _)) => form,
        Err(response) => return response,
    };
    if let Some((_, token)) = form.iter().find(|(k, _)| k == "token") {
        let mut store = lock(&state.refresh);
        if let Some(record) = store.tokens.get_mut(token) {
            record.revoked = true;
        }
        *lock(&state.revocations) += 1;
    }
    StatusCode::OK.into_response()
}
