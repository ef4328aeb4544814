//! A protected API on the mTLS listener, for tests of certificate-bound tokens (RFC 8705 §3).

use std::sync::Arc;

use crate::access_tokens::verify;
use crate::state::ServerState;

/// `GET /mtls-api/…` (on the mTLS listener): a protected API that accepts a certificate-bound
/// token only over the certificate it is bound to (`cnf.x5t#S256`); 200 with the token's
/// `sub`, 401 otherwise.
pub(crate) async fn mtls_api(
    axum::extract::State(state): axum::extract::State<Arc<ServerState>>,
    peer: Option<axum::Extension<crate::mtls::PeerCertificate>>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    state.count("mtls_api");
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let peer = peer.and_then(|p| p.0 .0);
    let (Some(token), Some(peer)) = (token, peer) else {
        return (
            StatusCode::UNAUTHORIZED,
            "a bound token and its certificate",
        )
            .into_response();
    };
    let Ok(claims) = verify(&state, token) else {
        return (StatusCode::UNAUTHORIZED, "invalid token").into_response();
    };
    let bound = claims
        .get("cnf")
        .and_then(|c| c.get("x5t#S256"))
        .and_then(serde_json::Value::as_str);
    if bound != Some(crate::mtls::thumbprint(&peer).as_str()) {
        state.count("mtls_api_refused");
        return (
            StatusCode::UNAUTHORIZED,
            "not the certificate the token is bound to",
        )
            .into_response();
    }
    axum::Json(serde_json::json!({ "sub": claims.get("sub") })).into_response()
}
