//! What the operations listener asks of the BFF (BF-22): its readiness (the provider's
//! metadata loaded, the session store reachable) and its administration API, served by
//! [`tokenkeeper_proxy::ops::Ops`] on an address of its own.
//!
//! The administration API, under `/admin/`, behind the listener's bearer secret:
//!
//! - `GET /admin/sessions?sub=…&sid=…` lists the sessions of a user (`sub`), of a provider
//!   session (`sid`), or of both: `{"sessions": [{"sub", "sid", "created_at", "expires_at"}]}`
//!   (seconds since the Unix epoch) and `frontend` (the frontend's name). Never a
//!   session's cookie value, never a token.
//! - `DELETE /admin/sessions?sub=…&sid=…` ends them, as a logout does: each session is removed,
//!   its refresh token revoked at the provider and its WebSocket relays closed:
//!   `{"ended": n}`.
//!
//! At least one of `sub` and `sid` is required (there is no "all sessions"), each at most once,
//! and no other parameter: anything else is 400, with a short reason.

use std::sync::Arc;

use http::{Method, StatusCode};
use serde_json::json;
use tokenkeeper_proxy::ops::{admin_json, AdminApi, CheckResult, Readiness};

use crate::bff::Bff;

/// The longest `sub` or `sid` an administrator may ask for (bytes).
const MAX_VALUE: usize = 1024;

/// The BFFs (frontends) served now: the operations listener asks on each request, so that a
/// reload's frontends are the ones checked and administered.
pub(crate) type Current = Arc<dyn Fn() -> Vec<Bff> + Send + Sync>;

impl Bff {
    /// The readiness checks of `/readyz`: `discovery` (the provider's metadata is loaded, or
    /// can be now) and `session_store` (the session store answers: Redis is reachable). A
    /// failing check's reason is generic; the log has the error.
    pub fn readiness(&self) -> Readiness {
        let bff = self.clone();
        readiness_of(Arc::new(move || vec![bff.clone()]))
    }

    /// The administration API (see the module's documentation), for
    /// [`tokenkeeper_proxy::ops::Ops::admin`].
    pub fn admin_api(&self) -> AdminApi {
        let bff = self.clone();
        admin_of(Arc::new(move || vec![bff.clone()]))
    }
}

/// The readiness checks of the current frontends: `discovery` per frontend
/// (`discovery:<name>` when there are several) and `session_store` once per distinct store.
pub(crate) fn readiness_of(current: Current) -> Readiness {
    Arc::new(move || {
        let bffs = current();
        Box::pin(async move {
            let several = bffs.len() > 1;
            let mut checks = Vec::with_capacity(bffs.len() + 1);
            for bff in &bffs {
                let discovery: CheckResult = match bff.oidc().provider_metadata().await {
                    Ok(_) => Ok(()),
                    Err(error) => {
                        tracing::warn!(frontend = bff.name(), %error, "readiness: the provider's metadata cannot be had");
                        Err("the provider's metadata is not loaded (see the log)".to_owned())
                    }
                };
                let name = if several {
                    format!("discovery:{}", bff.name())
                } else {
                    "discovery".to_owned()
                };
                checks.push((name, discovery));
            }
            // The frontends share one store (each under its own names): one check says it.
            if let Some(bff) = bffs.first() {
                let store: CheckResult = match bff.sessions().check().await {
                    Ok(()) => Ok(()),
                    Err(error) => {
                        tracing::warn!(%error, "readiness: the session store cannot be reached");
                        Err("the session store cannot be reached (see the log)".to_owned())
                    }
                };
                checks.push(("session_store".to_owned(), store));
            }
            checks
        })
    })
}

/// The administration API over the current frontends' sessions.
pub(crate) fn admin_of(current: Current) -> AdminApi {
    Arc::new(move |method, path, query| {
        let bffs = current();
        Box::pin(async move { admin(&bffs, method, &path, query.as_deref()).await })
    })
}

/// One administration request.
async fn admin(
    bffs: &[Bff],
    method: Method,
    path: &str,
    query: Option<&str>,
) -> http::Response<tokenkeeper_proxy::ProxyBody> {
    if path != "/admin/sessions" {
        return admin_json(StatusCode::NOT_FOUND, json!({"error": "not_found"}));
    }
    let (sub, sid) = match selection(query.unwrap_or_default()) {
        Ok(selected) => selected,
        Err(reason) => {
            return admin_json(
                StatusCode::BAD_REQUEST,
                json!({"error": "invalid_request", "reason": reason}),
            )
        }
    };
    match method {
        Method::GET => {
            let mut listed = Vec::new();
            for bff in bffs {
                match bff.sessions().find(sub.as_deref(), sid.as_deref()).await {
                    Ok(sessions) => listed.extend(sessions.iter().map(|s| {
                        json!({
                            "frontend": bff.name(),
                            "sub": s.sub,
                            "sid": s.sid,
                            "created_at": s.created_at / 1000,
                            "expires_at": s.expires_at / 1000,
                        })
                    })),
                    Err(error) => return unavailable(&error),
                }
            }
            admin_json(StatusCode::OK, json!({ "sessions": listed }))
        }
        Method::DELETE => {
            let mut ended = 0;
            for bff in bffs {
                match bff.end_sessions(sub.as_deref(), sid.as_deref()).await {
                    Ok(n) => {
                        if n > 0 {
                            tracing::info!(
                                frontend = bff.name(),
                                ended = n,
                                "sessions ended by an administrator"
                            );
                        }
                        ended += n;
                    }
                    Err(error) => return unavailable(&error),
                }
            }
            admin_json(StatusCode::OK, json!({ "ended": ended }))
        }
        _ => {
            let mut refused = admin_json(
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"error": "method_not_allowed"}),
            );
            refused.headers_mut().insert(
                http::header::ALLOW,
                http::HeaderValue::from_static("GET, DELETE"),
            );
            refused
        }
    }
}

fn unavailable(error: &dyn std::fmt::Display) -> http::Response<tokenkeeper_proxy::ProxyBody> {
    tracing::warn!(%error, "administration: the session store is unavailable");
    admin_json(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({"error": "unavailable"}),
    )
}

/// `sub` and `sid` from the query: at least one, each at most once, non-empty, at most
/// [`MAX_VALUE`] bytes, no control characters; no other parameter.
fn selection(query: &str) -> Result<(Option<String>, Option<String>), &'static str> {
    let (mut sub, mut sid) = (None, None);
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let slot = match name.as_ref() {
            "sub" => &mut sub,
            "sid" => &mut sid,
            _ => return Err("only sub and sid are accepted"),
        };
        if slot.is_some() {
            return Err("sub and sid may each be given once");
        }
        if value.is_empty() || value.len() > MAX_VALUE || value.chars().any(char::is_control) {
            return Err("sub and sid must be 1 to 1024 bytes, without control characters");
        }
        *slot = Some(value.into_owned());
    }
    if sub.is_none() && sid.is_none() {
        return Err("give sub, sid or both");
    }
    Ok((sub, sid))
}

#[cfg(test)]
mod tests {
    use super::selection;

    #[test]
    fn the_selection_needs_sub_or_sid_once_each_and_nothing_else() {
        assert_eq!(selection("sub=alice"), Ok((Some("alice".to_owned()), None)));
        assert_eq!(
            selection("sid=s%201&sub=a"),
            Ok((Some("a".to_owned()), Some("s 1".to_owned())))
        );
        for bad in [
            "",
            "sub=",
            "sub=a&sub=b",
            "user=a",
            "sub=a%0Ab",
            &format!("sub={}", "a".repeat(1025)),
        ] {
            assert!(selection(bad).is_err(), "{bad}");
        }
    }
}
