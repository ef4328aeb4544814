//! Pushed authorization requests (RFC 9126, PR-01): the authorization request's parameters
//! go to the provider directly, from the back end, with the client's authentication (and a
//! DPoP proof of the login's key); the browser is sent with only `client_id` and the
//! `request_uri` the provider answered. Nothing of the request — scope, PKCE challenge, state,
//! `dpop_jkt` — travels in the URL, and the provider knows the client sent it.

use std::time::Duration;

use serde_json::Value;
use url::Url;

use crate::dpop::DpopKey;
use crate::error::{Error, InvalidResponse};
use crate::protocol::token_endpoint::TokenEndpoint;

/// What the provider answered a pushed request with. `Debug` does not show the `request_uri`
/// (one use, but a bearer of the login until then).
#[derive(Clone)]
pub struct PushedRequest {
    /// The reference to send the browser with.
    pub request_uri: String,
    /// How long the reference is valid.
    pub expires_in: Duration,
}

impl std::fmt::Debug for PushedRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushedRequest")
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

/// The largest answer read, and the longest `request_uri` accepted.
const MAX_URI: usize = 2048;

/// Pushes `params` to the provider's `url` (its `pushed_authorization_request_endpoint`),
/// authenticated as `endpoint`'s client, with a proof of `dpop` when given. The answer must be
/// `201` (RFC 9126 §2.2; `200` is accepted too) with a JSON object holding a `request_uri` (a
/// printable string of at most 2048 bytes) and a positive `expires_in`; an error answer is the
/// provider's OAuth error.
pub async fn push(
    endpoint: &TokenEndpoint,
    url: Url,
    params: Vec<(String, String)>,
    dpop: Option<&DpopKey>,
) -> Result<PushedRequest, Error> {
    let response = endpoint.post_authenticated(url, params, dpop).await?;
    let status = response.status.as_u16();
    if !matches!(status, 200 | 201) {
        return Err(crate::protocol::token_response::parse_error_response(
            &response,
        ));
    }
    let invalid = |why: &str| -> Error {
        InvalidResponse::new(
            Some(status),
            format!("pushed authorization response: {why}"),
        )
        .into()
    };
    let body: Value = serde_json::from_slice(&response.body).map_err(|_| invalid("not JSON"))?;
    let request_uri = body
        .get("request_uri")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty() && u.len() <= MAX_URI && u.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| invalid("no usable request_uri"))?
        .to_owned();
    let expires_in = body
        .get("expires_in")
        .and_then(Value::as_u64)
        .filter(|s| *s > 0)
        .ok_or_else(|| invalid("no positive expires_in"))?;
    Ok(PushedRequest {
        request_uri,
        expires_in: Duration::from_secs(expires_in.min(86_400)),
    })
}

/// The URL the browser is sent to after a push: the authorization endpoint with `client_id`
/// and `request_uri` only.
pub fn authorization_url(
    authorization_endpoint: &Url,
    client_id: &str,
    pushed: &PushedRequest,
) -> Url {
    let mut url = authorization_endpoint.clone();
    url.query_pairs_mut()
        .append_pair("client_id", client_id)
        .append_pair("request_uri", &pushed.request_uri);
    url
}
