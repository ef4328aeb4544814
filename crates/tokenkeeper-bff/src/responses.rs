//! The BFF's own short answers: plain text, never cached; on API paths never a redirect and
//! never a cookie (BF-09).

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

/// A short plain-text answer, never cached.
pub(crate) fn plain(status: StatusCode, message: &'static str) -> Response {
    (status, [(header::CACHE_CONTROL, "no-store")], message).into_response()
}

/// An API answer of the BFF itself: never a redirect, never a cookie (BF-09).
pub(crate) fn api_error(status: StatusCode, message: &'static str) -> Response {
    plain(status, message)
}
