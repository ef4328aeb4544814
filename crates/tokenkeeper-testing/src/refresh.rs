//! Refresh tokens: issuing, rotation with reuse detection, revocation, introspection.
#![allow(clippy::result_large_err)] // handlers answer early with a ready `Response`

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map};

use crate::server::{authenticate_request, lock, oauth_error, ServerState, TestClient};

#[derive(Debug, Clone)]
pub(crate) struct RefreshRecord {
    pub(crate) client_id: String,
    pub(crate) sub: String,
    pub(crate) scope: Option<String>,
    pub(crate) family: u64,
    pub(crate) consumed: bool,
    pub(crate) revoked: bool,
    /// The DPoP key the token is bound to (RFC 9449 §5: refreshes must prove it).
    pub(crate) jkt: Option<String>,
}

#[derive(Debug, Default)]
pub(crate) struct RefreshStore {
    pub(crate) tokens: HashMap<String, RefreshRecord>,
    pub(crate) revoked_families: HashSet<u64>,
    next_family: u64,
}

impl RefreshStore {
    pub(crate) fn issue(
        &mut self,
        client_id: &str,
        sub: &str,
        scope: Option<&str>,
        family: Option<u64>,
    ) -> String {
        let family = family.unwrap_or_else(|| {
            self.next_family += 1;
            self.next_family
        });
        let token = format!("rt-{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        self.tokens.insert(
            token.clone(),
            RefreshRecord {
                client_id: client_id.to_owned(),
                sub: sub.to_owned(),
                scope: scope.map(str::to_owned),
                family,
                consumed: false,
                revoked: false,
                jkt: None,
            },
        );
        token
    }

    pub(crate) fn is_active(&self, token: &str) -> bool {
        self.tokens.get(token).is_some_and(|r| {
            !r.consumed && !r.revoked && !self.revoked_families.contains(&r.family)
        })
    }
}

fn invalid_grant(description: &str) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", description)
}

/// `grant_type=refresh_token`.
pub(crate) fn refresh_token_grant(
    state: &ServerState,
    client: &TestClient,
    form: &[(String, String)],
    jkt: Option<&str>,
    x5t: Option<&str>,
) -> Result<Response, Response> {
    let value = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let Some(presented) = value("refresh_token") else {
        return Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "refresh_token is missing",
        ));
    };
    let rotate = state.rotate_refresh_tokens.load(Ordering::Relaxed);
    let refused = |response: Response| {
        state.count("refresh_refused");
        response
    };
    let mut store = lock(&state.refresh);
    let Some(record) = store.tokens.get(presented).cloned() else {
        return Err(refused(invalid_grant("unknown refresh token")));
    };
    if record.client_id != client.client_id {
        return Err(refused(invalid_grant(
            "the refresh token was issued to another client",
        )));
    }
    if record.revoked || store.revoked_families.contains(&record.family) {
        return Err(refused(invalid_grant("the refresh token is revoked")));
    }
    if record.jkt.is_some() && record.jkt.as_deref() != jkt {
        return Err(refused(invalid_grant(
            "the refresh token is bound to another DPoP key",
        )));
    }
    if record.consumed {
        // Reuse of a rotated token: revoke the whole family, newest tokens included.
        store.revoked_families.insert(record.family);
        return Err(refused(invalid_grant(
            "refresh token reuse detected; the grant is revoked",
        )));
    }
    let scope = match (value("scope"), record.scope.as_deref()) {
        (Some(requested), Some(granted)) => {
            let granted: HashSet<&str> = granted.split(' ').collect();
            if let Some(bad) = requested.split(' ').find(|s| !granted.contains(s)) {
                return Err(oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    &format!("scope {bad} was not granted"),
                ));
            }
            Some(requested.to_owned())
        }
        (Some(requested), None) => Some(requested.to_owned()),
        (None, granted) => granted.map(str::to_owned),
    };
    let resources: Vec<&str> = form
        .iter()
        .filter(|(k, _)| k == "resource")
        .map(|(_, v)| v.as_str())
        .collect();
    let (access_token, expires_in) = crate::server::issue_bound_access_token(
        state,
        &record.sub,
        &client.client_id,
        scope.as_deref(),
        &resources,
        Map::new(),
        crate::server::cnf(jkt, x5t),
    )?;
    let refresh_token = if rotate {
        if let Some(r) = store.tokens.get_mut(presented) {
            r.consumed = true;
        }
        let token = store.issue(
            &record.client_id,
            &record.sub,
            record.scope.as_deref(),
            Some(record.family),
        );
        if let Some(r) = store.tokens.get_mut(&token) {
            r.jkt = record.jkt.clone();
        }
        Some(token)
    } else if state.return_refresh_token.load(Ordering::Relaxed) {
        Some(presented.to_owned())
    } else {
        None
    };
    drop(store);
    let mut body =
        json!({"access_token": access_token, "token_type": crate::server::token_type(jkt)});
    if let Some(expires_in) = expires_in {
        body["expires_in"] = json!(expires_in);
    }
    if let Some(scope) = scope {
        body["scope"] = json!(scope);
    }
    if let Some(refresh_token) = refresh_token {
        body["refresh_token"] = json!(refresh_token);
    }
    let mut response = Json(body).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

fn form_of(body: &Bytes) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// RFC 7009 revocation: 200 for any token, known or not; a refresh token is revoked.
pub(crate) async fn revoke(
    State(state): State<Arc<ServerState>>,
    peer: Option<axum::Extension<crate::mtls::PeerCertificate>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = form_of(&body);
    let peer = peer.and_then(|p| p.0 .0);
    if let Err(response) =
        authenticate_request(&state, &headers, &form, peer.as_deref().map(Vec::as_slice))
    {
        return response;
    }
    if let Some((_, token)) = form.iter().find(|(k, _)| k == "token") {
        let mut store = lock(&state.refresh);
        if let Some(record) = store.tokens.get_mut(token) {
            record.revoked = true;
        }
        *lock(&state.revocations) += 1;
    }
    StatusCode::OK.into_response()
}

/// RFC 7662 introspection of refresh tokens (and of this server's access tokens).
pub(crate) async fn introspect(
    State(state): State<Arc<ServerState>>,
    peer: Option<axum::Extension<crate::mtls::PeerCertificate>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = form_of(&body);
    let peer = peer.and_then(|p| p.0 .0);
    if let Err(response) =
        authenticate_request(&state, &headers, &form, peer.as_deref().map(Vec::as_slice))
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
    match crate::server::verify(&state, token) {
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
