//! The token endpoint: records the request, applies injected faults, checks the form, client
//! authentication and the DPoP proof, then hands the grant to its module.
#![allow(clippy::result_large_err)] // handlers answer early with a ready `Response`

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tokenkeeper::Clock as _;

use crate::client_auth::authenticate;
use crate::faults::Fault;
use crate::responses::oauth_error;
use crate::state::{lock, RecordedRequest, ServerState, TestClient};

/// `POST /token`.
pub(crate) async fn token(
    State(state): State<Arc<ServerState>>,
    peer: Option<axum::Extension<crate::mtls::PeerCertificate>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let peer = peer.and_then(|p| p.0 .0);
    state.count("token");
    let form = crate::responses::form_of(&body);
    {
        let mut recorded = lock(&state.recorded);
        recorded.push(RecordedRequest {
            headers: headers.clone(),
            form: form.clone(),
        });
        if recorded.len() > 100 {
            recorded.remove(0);
        }
    }
    if let Some(grant) = form.iter().find(|(k, _)| k == "grant_type") {
        state.count(&format!("grant:{}", grant.1));
    }
    let latency = *lock(&state.latency);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let fault = match state.next_fault() {
        Some(fault) => apply_fault(fault).await,
        None => None,
    };
    let mut response = match fault {
        Some(response) => response,
        None => match handle_token(&state, &headers, &form, peer.as_deref().map(Vec::as_slice)) {
            Ok(response) => response,
            Err(response) => response,
        },
    };
    if let Some(nonce) = state.dpop.current_nonce() {
        if let Ok(value) = HeaderValue::try_from(nonce) {
            response.headers_mut().insert("dpop-nonce", value);
        }
    }
    response
}

async fn apply_fault(fault: Fault) -> Option<Response> {
    match fault {
        Fault::Latency(delay) => {
            tokio::time::sleep(delay).await;
            None
        }
        Fault::OAuthError {
            status,
            error,
            description,
        } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            Some(oauth_error(
                status,
                &error,
                description.as_deref().unwrap_or(""),
            ))
        }
        Fault::HtmlBody { status } => Some(
            (
                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
                [(header::CONTENT_TYPE, "text/html")],
                "<html><body><h1>502 Bad Gateway</h1></body></html>",
            )
                .into_response(),
        ),
        Fault::MalformedJson => Some(
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                "{\"access_token\": \"abc\", \"token_type\": ",
            )
                .into_response(),
        ),
        Fault::OversizedBody { bytes } => {
            let chunk = Bytes::from(vec![b' '; 8192]);
            let chunks = bytes / 8192 + 1;
            let stream = futures_util::stream::iter(
                std::iter::once(Ok::<_, std::io::Error>(Bytes::from_static(
                    b"{\"access_token\":\"a\",\"token_type\":\"Bearer\",\"pad\":\"",
                )))
                .chain(std::iter::repeat_n(chunk, chunks).map(Ok))
                .chain(std::iter::once(Ok(Bytes::from_static(b"\"}")))),
            );
            Some(
                (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/json")],
                    Body::from_stream(stream),
                )
                    .into_response(),
            )
        }
        Fault::CloseConnection => {
            let stream = futures_util::stream::iter(vec![
                Ok(Bytes::from_static(b"{\"access_token\":\"abc\"")),
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "connection closed by fault injection",
                )),
            ]);
            Some(
                (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/json")],
                    Body::from_stream(stream),
                )
                    .into_response(),
            )
        }
    }
}

fn handle_token(
    state: &ServerState,
    headers: &HeaderMap,
    form: &[(String, String)],
    peer: Option<&[u8]>,
) -> Result<Response, Response> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with("application/x-www-form-urlencoded") {
        return Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (name, _) in form {
        if name != "resource" && name != "audience" && !seen.insert(name.as_str()) {
            return Err(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!("parameter {name} is repeated"),
            ));
        }
    }
    let auth = authenticate(state, headers, form, peer)?;
    // A token requested over mutual TLS is bound to the certificate (RFC 8705 §3).
    let x5t = peer.map(crate::mtls::thumbprint);
    let x5t = x5t.as_deref();
    let jkt = token_request_proof(state, headers, &auth.client)?;
    let jkt = jkt.as_deref();
    let grant = form
        .iter()
        .find(|(k, _)| k == "grant_type")
        .map(|(_, v)| v.as_str());
    match grant {
        Some("client_credentials") => {
            crate::client_credentials::client_credentials(state, &auth.client, form, jkt, x5t)
        }
        Some(crate::jwt_bearer::GRANT) => {
            crate::jwt_bearer::jwt_bearer(state, &auth.client, form, jkt)
        }
        Some(crate::exchange::GRANT) => {
            crate::exchange::token_exchange(state, &auth.client, form, jkt)
        }
        Some("refresh_token") => {
            crate::refresh::refresh_token_grant(state, &auth.client, form, jkt, x5t)
        }
        Some(crate::device::GRANT) => {
            crate::device::device_code_grant(state, &auth.client, form, jkt)
        }
        Some("authorization_code") => {
            crate::authorization_code::authorization_code_grant(state, &auth.client, form, jkt)
        }
        Some(_) => Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant type not supported",
        )),
        None => Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "grant_type is missing",
        )),
    }
}

/// Checks a token request's DPoP proof (after client authentication, so that a nonce retry
/// needs a fresh client assertion); the thumbprint to bind tokens to, if any.
fn token_request_proof(
    state: &ServerState,
    headers: &HeaderMap,
    client: &TestClient,
) -> Result<Option<String>, Response> {
    let now = state.clock.now().as_millis() / 1000;
    let htu = format!("{}/token", state.issuer);
    let jkt = match state.dpop.verify(headers, "POST", &htu, None, now) {
        Ok(jkt) => jkt,
        Err(crate::dpop::ProofError::UseNonce) => {
            return Err(oauth_error(
                StatusCode::BAD_REQUEST,
                "use_dpop_nonce",
                "Authorization server requires nonce in DPoP proof",
            ))
        }
        Err(crate::dpop::ProofError::Invalid(why)) => {
            return Err(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_dpop_proof",
                &why,
            ))
        }
    };
    if jkt.is_none() && client.dpop_required {
        return Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_dpop_proof",
            "this client must send a DPoP proof",
        ));
    }
    if state.dpop_ignored.load(Ordering::Relaxed) {
        return Ok(None);
    }
    Ok(jkt)
}
