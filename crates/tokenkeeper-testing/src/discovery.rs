//! Discovery (OpenID Connect Discovery, RFC 8414) and the JWKS.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::state::{lock, ServerState};

pub(crate) async fn oidc_metadata(State(state): State<Arc<ServerState>>) -> Response {
    if !state
        .oidc_discovery
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        state.count("discovery");
        return StatusCode::NOT_FOUND.into_response();
    }
    metadata(State(state)).await
}

pub(crate) async fn metadata(State(state): State<Arc<ServerState>>) -> Response {
    state.count("discovery");
    let issuer = lock(&state.advertised_issuer)
        .clone()
        .unwrap_or_else(|| state.issuer.clone());
    let base = &state.issuer;
    let mut metadata = json!({
        "issuer": issuer,
        "token_endpoint": format!("{base}/token"),
        "jwks_uri": format!("{base}/jwks"),
        "authorization_endpoint": format!("{base}/authorize"),
        "end_session_endpoint": format!("{base}/end_session"),
        "userinfo_endpoint": format!("{base}/userinfo"),
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": true,
        "subject_types_supported": ["public"],
        "revocation_endpoint": format!("{base}/revoke"),
        "introspection_endpoint": format!("{base}/introspect"),
        "grant_types_supported": ["client_credentials", "refresh_token", "authorization_code", crate::exchange::GRANT, crate::jwt_bearer::GRANT, crate::device::GRANT],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt", "client_secret_jwt", "none"],
        "pushed_authorization_request_endpoint": format!("{base}/par"),
        "require_pushed_authorization_requests": state.require_pushed.load(std::sync::atomic::Ordering::Relaxed),
        "request_parameter_supported": true,
        "request_object_signing_alg_values_supported": ["ES256", "PS256", "EdDSA", "RS256"],
        "device_authorization_endpoint": format!("{base}/device_authorization"),
        "claims_parameter_supported": false,
        "id_token_signing_alg_values_supported": ["ES256"],
        "prompt_values_supported": ["none", "login", "consent"],
        "dpop_signing_alg_values_supported": ["ES256", "ES384", "EdDSA", "PS256", "RS256"],
    });
    if let Some(mtls) = lock(&state.mtls_base).clone() {
        metadata["mtls_endpoint_aliases"] = json!({
            "token_endpoint": format!("{mtls}/token"),
            "revocation_endpoint": format!("{mtls}/revoke"),
            "introspection_endpoint": format!("{mtls}/introspect"),
            "pushed_authorization_request_endpoint": format!("{mtls}/par"),
            "device_authorization_endpoint": format!("{mtls}/device_authorization"),
        });
        metadata["tls_client_certificate_bound_access_tokens"] = json!(true);
        metadata["token_endpoint_auth_methods_supported"] = json!([
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt",
            "none",
            "tls_client_auth",
            "self_signed_tls_client_auth"
        ]);
    }
    Json(metadata).into_response()
}

pub(crate) async fn jwks(State(state): State<Arc<ServerState>>) -> Response {
    state.count("jwks");
    let extra = lock(&state.jwk_parameters).clone();
    let keys: Vec<Value> = lock(&state.keys)
        .iter()
        .map(|k| {
            let mut jwk = k.jwk.clone();
            for (name, value) in &extra {
                match value {
                    Value::Null => {
                        if let Some(map) = jwk.as_object_mut() {
                            map.remove(name);
                        }
                    }
                    value => jwk[name.as_str()] = value.clone(),
                }
            }
            jwk
        })
        .collect();
    let mut response = Json(json!({ "keys": keys })).into_response();
    if let Some(value) = lock(&state.jwks_cache_control)
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        response.headers_mut().insert(header::CACHE_CONTROL, value);
    }
    response
}
