//! Client authentication at the token, revocation and introspection endpoints: a secret
//! (basic or post), a client assertion (`private_key_jwt`, `client_secret_jwt`) or a TLS client
//! certificate (RFC 8705) — exactly one.
#![allow(clippy::result_large_err)] // handlers answer early with a ready `Response`

use axum::body::Bytes;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use base64::Engine as _;
use serde_json::{Map, Value};
use tokenkeeper::Clock as _;

use crate::access_tokens::unverified_claims;
use crate::mtls::{thumbprint, verify_ca_issued, PeerCertificate};
use crate::responses::{form_of, oauth_error};
use crate::state::{lock, ClientAuthMethod, ServerState, TestClient};

/// The client a request authenticated as.
pub(crate) struct Authenticated {
    pub(crate) client: TestClient,
}

/// A form-posted request's fields and the client it authenticated as (with the certificate the
/// mTLS listener saw, if any, for `tls_client_auth`).
pub(crate) fn authenticated_form(
    state: &ServerState,
    peer: Option<axum::Extension<PeerCertificate>>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(Vec<(String, String)>, TestClient), Response> {
    let form = form_of(body);
    let peer = peer.and_then(|p| p.0 .0);
    let client = authenticate(state, headers, &form, peer.as_deref().map(Vec::as_slice))?.client;
    Ok((form, client))
}

/// Authenticates the client of a request to any endpoint.
pub(crate) fn authenticate(
    state: &ServerState,
    headers: &HeaderMap,
    form: &[(String, String)],
    peer: Option<&[u8]>,
) -> Result<Authenticated, Response> {
    if let Some(authenticated) = authenticate_tls(state, headers, form, peer)? {
        return Ok(authenticated);
    }
    if form.iter().any(|(k, _)| k == "client_assertion_type") {
        if headers.contains_key(header::AUTHORIZATION)
            || form.iter().any(|(k, _)| k == "client_secret")
        {
            return Err(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "client authentication must use only one method",
            ));
        }
        return authenticate_assertion(state, form);
    }
    let basic = match headers.get(header::AUTHORIZATION) {
        Some(value) => {
            let value = value.to_str().unwrap_or_default();
            let Some(encoded) = value.strip_prefix("Basic ") else {
                return Err(oauth_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "unsupported Authorization scheme",
                ));
            };
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .ok()
                .and_then(|d| String::from_utf8(d).ok());
            let Some((id, secret)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
                return Err(oauth_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "malformed Basic credentials",
                ));
            };
            // RFC 6749 §2.3.1: both parts are form-urlencoded.
            let decode = |s: &str| -> String {
                url::form_urlencoded::parse(format!("x={s}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            };
            Some((decode(id), decode(secret)))
        }
        None => None,
    };
    let post_secret = form
        .iter()
        .find(|(k, _)| k == "client_secret")
        .map(|(_, v)| v.clone());
    let post_id = form
        .iter()
        .find(|(k, _)| k == "client_id")
        .map(|(_, v)| v.clone());
    if basic.is_some() && post_secret.is_some() {
        return Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "client authentication must use only one method",
        ));
    }
    let (method, id, secret) = match (basic, post_id, post_secret) {
        (Some((id, secret)), post_id, None) => {
            if post_id.is_some_and(|p| p != id) {
                return Err(oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "client_id does not match the credentials",
                ));
            }
            (ClientAuthMethod::Basic, id, secret)
        }
        (None, Some(id), Some(secret)) => (ClientAuthMethod::Post, id, secret),
        (None, Some(id), None) => {
            // A public client (`none`) sends its `client_id` only.
            let public = lock(&state.clients)
                .get(&id)
                .filter(|c| c.auth_method == ClientAuthMethod::None)
                .cloned();
            return match public {
                Some(client) => Ok(Authenticated { client }),
                None => Err(oauth_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "no client authentication",
                )),
            };
        }
        _ => {
            return Err(oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "no client authentication",
            ));
        }
    };
    let client = lock(&state.clients).get(&id).cloned();
    let Some(client) = client else {
        return Err(oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "unknown client",
        ));
    };
    if client.auth_method != ClientAuthMethod::Any && client.auth_method != method {
        return Err(oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "authentication method not allowed for this client",
        ));
    }
    if client.client_secret.as_bytes() != secret.as_bytes() {
        return Err(oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        ));
    }
    Ok(Authenticated { client })
}

/// Validates a client assertion (RFC 7523 §3): the type, the signature (the client's
/// registered key, or HS256 with its secret), `iss` = `sub` = the client, `aud` (the token
/// endpoint or the issuer), `exp` (present, not past, at most 10 minutes ahead) and `jti`
/// (present, each once).
fn authenticate_assertion(
    state: &ServerState,
    form: &[(String, String)],
) -> Result<Authenticated, Response> {
    let refuse = |why: &str| oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", why);
    let value = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if value("client_assertion_type")
        != Some(tokenkeeper::protocol::client_assertion::JWT_BEARER_ASSERTION)
    {
        return Err(refuse("unsupported client_assertion_type"));
    }
    let assertion = value("client_assertion").ok_or_else(|| refuse("no client_assertion"))?;
    let header =
        jsonwebtoken::decode_header(assertion).map_err(|_| refuse("malformed client_assertion"))?;
    let unverified =
        unverified_claims(assertion).ok_or_else(|| refuse("malformed client_assertion"))?;
    let iss = unverified
        .get("iss")
        .and_then(Value::as_str)
        .ok_or_else(|| refuse("no iss"))?
        .to_owned();
    if value("client_id").is_some_and(|id| id != iss) {
        return Err(refuse("client_id is not the assertion's iss"));
    }
    let client = lock(&state.clients)
        .get(&iss)
        .cloned()
        .ok_or_else(|| refuse("unknown client"))?;
    let key = match (client.auth_method, header.alg) {
        (ClientAuthMethod::ClientSecretJwt, jsonwebtoken::Algorithm::HS256) => {
            jsonwebtoken::DecodingKey::from_secret(client.client_secret.as_bytes())
        }
        (ClientAuthMethod::PrivateKeyJwt, alg)
            if !matches!(
                alg,
                jsonwebtoken::Algorithm::HS256
                    | jsonwebtoken::Algorithm::HS384
                    | jsonwebtoken::Algorithm::HS512
            ) =>
        {
            let jwk: jsonwebtoken::jwk::Jwk = client
                .assertion_key
                .clone()
                .and_then(|k| serde_json::from_value(k).ok())
                .ok_or_else(|| refuse("the client has no usable key"))?;
            jsonwebtoken::DecodingKey::from_jwk(&jwk).map_err(|_| refuse("unusable client key"))?
        }
        _ => return Err(refuse("authentication method not allowed for this client")),
    };
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.validate_exp = false; // checked below, on the server's clock
    validation.required_spec_claims.clear();
    let token_endpoint = format!("{}/token", state.issuer);
    // The token endpoint, the issuer (FAPI 2.0), or the endpoint called (pushed and device
    // authorization).
    let par_endpoint = format!("{}/par", state.issuer);
    let device_endpoint = format!("{}/device_authorization", state.issuer);
    validation.set_audience(&[
        token_endpoint.as_str(),
        state.issuer.as_str(),
        par_endpoint.as_str(),
        device_endpoint.as_str(),
    ]);
    let claims = jsonwebtoken::decode::<Map<String, Value>>(assertion, &key, &validation)
        .map_err(|_| refuse("client assertion refused"))?
        .claims;
    if claims.get("sub").and_then(Value::as_str) != Some(iss.as_str()) {
        return Err(refuse("sub is not the client"));
    }
    let now = state.clock.now().as_millis() / 1000;
    match claims.get("exp").and_then(Value::as_u64) {
        Some(exp) if exp + 15 >= now && exp <= now + 600 => {}
        Some(_) => return Err(refuse("the assertion expired or lives too long")),
        None => return Err(refuse("no exp")),
    }
    let jti = claims
        .get("jti")
        .and_then(Value::as_str)
        .ok_or_else(|| refuse("no jti"))?;
    if !lock(&state.assertion_jtis).insert(jti.to_owned()) {
        return Err(refuse("the assertion's jti was used before"));
    }
    state.count("client_assertions");
    Ok(Authenticated { client })
}

/// Client authentication with the TLS client certificate, for clients registered for it
/// (`Ok(None)`: not such a request; the other methods apply). The request carries `client_id`
/// and no other credentials (RFC 8705 §2).
fn authenticate_tls(
    state: &ServerState,
    headers: &HeaderMap,
    form: &[(String, String)],
    peer: Option<&[u8]>,
) -> Result<Option<Authenticated>, Response> {
    let other_credentials = headers.contains_key(header::AUTHORIZATION)
        || form
            .iter()
            .any(|(k, _)| k == "client_secret" || k == "client_assertion_type");
    let Some(id) = form.iter().find(|(k, _)| k == "client_id").map(|(_, v)| v) else {
        return Ok(None);
    };
    let Some(client) = lock(&state.clients).get(id).cloned() else {
        return Ok(None);
    };
    let refuse = |why: &str| oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", why);
    let ok = match client.auth_method {
        ClientAuthMethod::TlsClientAuth | ClientAuthMethod::SelfSignedTlsClientAuth
            if other_credentials =>
        {
            return Err(refuse("client authentication must use only one method"));
        }
        ClientAuthMethod::TlsClientAuth => {
            let peer = peer.ok_or_else(|| refuse("no client certificate"))?;
            let dns = client.tls_dns.as_deref().unwrap_or_default();
            verify_ca_issued(peer, dns).map_err(|why| refuse(&why))?;
            true
        }
        ClientAuthMethod::SelfSignedTlsClientAuth => {
            let peer = peer.ok_or_else(|| refuse("no client certificate"))?;
            if client.tls_thumbprint.as_deref() != Some(thumbprint(peer).as_str()) {
                return Err(refuse("not the client's registered certificate"));
            }
            true
        }
        _ => false,
    };
    Ok(ok.then_some(Authenticated { client }))
}
