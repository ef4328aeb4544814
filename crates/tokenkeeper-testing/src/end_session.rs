//! RP-initiated logout.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::responses::redirect_with;
use crate::state::{lock, ServerState};

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
