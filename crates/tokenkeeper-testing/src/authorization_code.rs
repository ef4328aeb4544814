//! `grant_type=authorization_code` (PKCE S256, `dpop_jkt`) and the ID token it issues.
#![allow(clippy::result_large_err)] // handlers answer early with a ready `Response`

use axum::http::StatusCode;
use axum::response::Response;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Map};
use tokenkeeper::Clock as _;

use crate::access_tokens::{cnf, token_answer, NewAccessToken};
use crate::responses::{no_store, oauth_error};
use crate::state::{lock, CodeRecord, ServerState, TestClient};

/// `grant_type=authorization_code`.
pub(crate) fn authorization_code_grant(
    state: &ServerState,
    client: &TestClient,
    form: &[(String, String)],
    jkt: Option<&str>,
) -> Result<Response, Response> {
    let value = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let invalid_grant = |d: &str| oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", d);
    let code = value("code").ok_or_else(|| invalid_grant("code is missing"))?;
    let record = {
        let mut codes = lock(&state.codes);
        let Some(record) = codes.get_mut(code) else {
            return Err(invalid_grant("unknown code"));
        };
        if record.used {
            // A replayed code: revoke what it gave.
            if let Some(rt) = &record.refresh_token {
                if let Some(r) = lock(&state.refresh).tokens.get_mut(rt) {
                    r.revoked = true;
                }
            }
            return Err(invalid_grant("the code was already used"));
        }
        record.used = true;
        record.clone()
    };
    if record.client_id != client.client_id {
        return Err(invalid_grant("the code was issued to another client"));
    }
    if value("redirect_uri") != Some(record.redirect_uri.as_str()) {
        return Err(invalid_grant("redirect_uri does not match"));
    }
    let verifier =
        value("code_verifier").ok_or_else(|| invalid_grant("code_verifier is missing"))?;
    let challenge =
        URL_SAFE_NO_PAD.encode(<sha2::Sha256 as sha2::Digest>::digest(verifier.as_bytes()));
    if challenge != record.challenge {
        return Err(invalid_grant("PKCE verification failed"));
    }
    if record.dpop_jkt.is_some() && record.dpop_jkt.as_deref() != jkt {
        // RFC 9449 §10: the code is bound to the key named at the authorization request.
        return Err(invalid_grant(
            "the proof's key is not the dpop_jkt of the authorization request",
        ));
    }
    if let (Some(rt), Some(jkt)) = (&record.refresh_token, jkt) {
        if let Some(r) = lock(&state.refresh).tokens.get_mut(rt) {
            r.jkt = Some(jkt.to_owned());
        }
    }
    let resources: Vec<&str> = record.resource.iter().map(String::as_str).collect();
    // The login's authentication goes into its access token too (an API may ask for more:
    // RFC 9470).
    let mut top = Map::new();
    top.insert("auth_time".into(), json!(record.auth_time));
    if let Some(acr) = &record.acr {
        top.insert("acr".into(), json!(acr));
    }
    let (access_token, expires_in) = NewAccessToken {
        sub: &record.sub,
        client_id: &client.client_id,
        scope: Some(&record.scope),
        resources: &resources,
        cnf: cnf(jkt, None),
        top,
        ..NewAccessToken::default()
    }
    .sign(state)?;
    let id_token = id_token(state, &record, &client.client_id)?;
    let mut body = token_answer(&access_token, jkt, expires_in, Some(&record.scope));
    body["id_token"] = json!(id_token);
    if let Some(rt) = &record.refresh_token {
        body["refresh_token"] = json!(rt);
    }
    Ok(no_store(StatusCode::OK, body))
}

fn id_token(state: &ServerState, record: &CodeRecord, client_id: &str) -> Result<String, Response> {
    let now = state.clock.now().as_millis() / 1000;
    let mut claims = json!({
        "iss": state.issuer,
        "sub": record.sub,
        "aud": client_id,
        "iat": now,
        "exp": now + 300,
        "auth_time": record.auth_time,
        "sid": record.sid,
    });
    if let Some(acr) = &record.acr {
        claims["acr"] = json!(acr);
    }
    if let Some(nonce) = &record.nonce {
        claims["nonce"] = json!(nonce);
    }
    // Test overrides: a value replaces the claim, `null` removes it.
    for (name, value) in lock(&state.id_token_overrides).iter() {
        match value {
            serde_json::Value::Null => {
                if let Some(map) = claims.as_object_mut() {
                    map.remove(name);
                }
            }
            value => claims[name.as_str()] = value.clone(),
        }
    }
    let key = state.current_key();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, &claims, &key.encoding).map_err(|e| {
        oauth_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            &format!("signing failed: {e}"),
        )
    })
}
